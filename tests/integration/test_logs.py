"""Exchange's protocol log written by the sandbox's policy daemon (policy-only), replayed, and
an unwritable log directory that loses rows but no mail (issue 15, Tests)."""

from __future__ import annotations

import smtplib
import time
import uuid
from pathlib import Path

from exmilter.config import load
from exmilter.engine import Engine
from exmilter.logs.replay import replay
from exmilter.logs.w3c import log_files, read_rows
from exmilter.sandbox import Sandbox
from tests.integration.helpers import free_offset, message, send, wait_counted, wait_delivered

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
    # ... and not in tracking (spec §5.2): no queue id, no RECEIVE (the tracking log is written for
    # the accepted messages of the other tests in the same sandbox; none names this recipient)
    from exmilter.logs.query import TrackingFilter, search

    assert list(search([str(sandbox.tracking_log_dir)], TrackingFilter(recipients=(rcpt,)))) == []
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
        wait_counted(sb, "exmilter_policy_log_write_failures_total", log="protocol")
        text = sb.policyd_log.read_text()
        assert "[exmilter.policyd#error] cannot write the protocol log in" in text


def _tracked(directory: Path, queue_id: str, events: set[str], timeout: float = 30) -> list[dict[str, str]]:
    from exmilter.logs.query import TrackingFilter, search

    deadline = time.monotonic() + timeout
    while True:
        rows = list(search([str(directory)], TrackingFilter(queue_id=queue_id))) if directory.exists() else []
        if events <= {r["event-id"] for r in rows}:
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"{queue_id}: {[r['event-id'] for r in rows]} in {directory}, wanted {events}")
        time.sleep(0.2)


def test_anonymous_relay_is_tracked_from_receive_to_delivery(sandbox: Sandbox, capsys) -> None:
    """Seed 003's anonymous relay (here the Monitoring connector on *:2526): RECEIVE with the
    connector and 00A:, then DELIVER for the same queue id with the message id Postfix logged;
    ``exmilter track --start -10m`` lists both."""
    from exmilter import cli

    rcpt = f"t-{uuid.uuid4().hex[:12]}@gmail.com"
    mid = f"<{uuid.uuid4().hex}@monitor.labs.local>"
    m = message("monitor@labs.local", [rcpt])
    m["Message-ID"] = mid
    with smtplib.SMTP("127.0.0.1", sandbox.port("*:2526"), source_address=("127.0.0.13", 0), timeout=30) as s:
        s.ehlo("monitor.labs.local")
        code, reply = s.data(m.as_bytes()) if s.mail("monitor@labs.local")[0] == s.rcpt(rcpt)[0] == 250 else (0, b"")
    assert code == 250, reply
    queue_id = reply.decode().rsplit(" ", 1)[1]
    d = wait_delivered(sandbox, queue_id)
    rows = _tracked(sandbox.tracking_log_dir, queue_id, {"RECEIVE", "DELIVER"})
    receive = next(r for r in rows if r["event-id"] == "RECEIVE")
    deliver = next(r for r in rows if r["event-id"] == "DELIVER")
    assert (receive["connector-id"], receive["message-info"], receive["sender-address"]) == (
        "EXCH01\\Monitoring (EXCH01)",
        "00A:",
        "monitor@labs.local",
    )
    assert (receive["recipient-address"], receive["client-ip"]) == (rcpt, "127.0.0.13")
    assert deliver["recipient-address"] == rcpt
    assert mid.encode() in d.content
    assert deliver["message-id"] == mid  # the id Postfix's cleanup logged for the queue id
    capsys.readouterr()
    assert cli.main(["track", "--path", str(sandbox.tracking_log_dir), "--start", "-10m", "--recipients", rcpt]) == 0
    table = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in table[2:]] == ["RECEIVE", "DELIVER"]
    assert "EXCH01\\Monitoring (EXCH01) 00A:" in table[2]
