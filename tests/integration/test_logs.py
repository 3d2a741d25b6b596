"""Exchange's protocol log written by the sandbox's policy daemon (policy-only), replayed, and
an unwritable log directory that loses rows but no mail (issue 15, Tests)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from exmilter.config import load
from exmilter.engine import Engine
from exmilter.logs.replay import replay
from exmilter.logs.w3c import log_files, read_rows
from exmilter.sandbox import Sandbox
from tests.integration.helpers import free_offset, metric, send, wait_delivered

DEFAULT_FRONTEND = "EXCH01\\Default Frontend EXCH01"


def _rows_for(directory: Path, client_port_rcpt: str, timeout: float = 20) -> list[dict[str, str]]:
    """The rows of the session that sent RCPT TO:<client_port_rcpt> (waiting for the writer thread)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [r for f in log_files([str(directory)], "RECV") for r in read_rows(f)] if directory.exists() else []
        sid = next((r["session-id"] for r in rows if r["data"] == f"RCPT TO:<{client_port_rcpt}>"), None)
        if sid is not None:
            mine = [r for r in rows if r["session-id"] == sid]
            if mine[-1]["event"] == ">" and mine[-1]["data"].startswith(("5", "2")) and len(mine) > 5:
                return mine
        if time.monotonic() > deadline:
            raise AssertionError(f"no protocol-log session for {client_port_rcpt} in {directory}")
        time.sleep(0.1)


def test_refused_relay_is_in_the_protocol_log_and_replays_without_difference(sandbox: Sandbox) -> None:
    rcpt = f"t-{uuid.uuid4().hex[:12]}@gmail.com"
    out = send(sandbox.port("*:25"), "127.0.0.20", "someone@example.com", [rcpt])
    assert out.stage == "rcpt"
    rows = _rows_for(sandbox.protocol_log_dir, rcpt)
    assert {r["connector-id"] for r in rows} == {DEFAULT_FRONTEND}
    assert rows[0]["event"] == "+" and rows[0]["remote-endpoint"].startswith("127.0.0.20:")
    assert rows[0]["local-endpoint"] == "127.0.0.1:25"  # the binding's port, not the sandbox's moved one
    assert rows[1]["context"] == "Set Session Permissions"
    assert [(r["event"], r["data"]) for r in rows[-2:]] == [
        ("<", f"RCPT TO:<{rcpt}>"),
        (">", "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain"),
    ]
    name = Path(log_files([str(sandbox.protocol_log_dir)], "RECV")[-1]).name
    assert name.startswith("RECV") and name.endswith("-1.LOG") and len(name) == len("RECV2026120215-1.LOG")
    report = replay(Engine(load(sandbox.config).organization), [str(sandbox.protocol_log_dir)])
    assert report.sessions >= 1 and report.differing == [], report.differing[:3]


def test_unwritable_protocol_log_loses_rows_not_mail(config_path: Path) -> None:
    base = config_path.parent / "unwritable-logs"
    base.mkdir(exist_ok=True)
    base.chmod(0o755)
    blocker = base / "not-a-directory"
    blocker.write_text("a file where the log directory should be\n")
    with Sandbox(
        config_path, base / "state", free_offset(config_path), policyd_args=("--protocol-log-path", str(blocker))
    ) as sb:
        ok = send(sb.port("*:25"), "127.0.0.20", "someone@example.com", [f"t-{uuid.uuid4().hex[:8]}@labs.local"])
        assert ok.stage == "queued", ok
        wait_delivered(sb, ok.queue_id)
        refused = send(sb.port("*:25"), "127.0.0.20", "someone@example.com", [f"t-{uuid.uuid4().hex[:8]}@gmail.com"])
        assert refused.stage == "rcpt" and "5.7.54" in refused.reply
        deadline = time.monotonic() + 20
        while metric(sb, "exmilter_policy_log_write_failures_total", log="protocol") == 0:
            assert time.monotonic() < deadline, "no write failure counted"
            time.sleep(0.2)
        text = sb.policyd_log.read_text()
        assert "[exmilter.policyd#error] cannot write the protocol log in" in text
