"""The acceptance check: a refused reload reaches journald at priority err (``journalctl -p err``).

The daemon runs as a real process with stderr on a file that plays the journal's stream
(``JOURNAL_STREAM`` names its device and inode, as systemd does); journald reads the ``<N>``
at the start of each line as the priority (sd-daemon(3)).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from exmilter.config.loader import TOP_KEYS
from exmilter.sandbox.ports import free_port, wait_port

CONFIG = "server: {name: EX01, fqdn: ex01.contoso.com}\ndefault_connectors: true\naccepted_domains: [contoso.com]\n"


def _wait_for(path: Path, text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while text not in (content := path.read_text()):
        assert time.monotonic() < deadline, content
        time.sleep(0.05)
    return content


def test_refused_reload_is_priority_err_in_the_journal(tmp_path: Path) -> None:
    cfg = tmp_path / "exmilter.yaml"
    cfg.write_text(CONFIG + f"logs: {{receive_protocol_log_path: {tmp_path}/p, message_tracking_log_path: ''}}\n")
    port = free_port()
    journal = tmp_path / "journal"
    with journal.open("w") as stream:
        st = os.fstat(stream.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        cmd = [
            sys.executable,
            "-m",
            "exmilter.cli",
            "policyd",
            "-c",
            str(cfg),
            "--metrics",
            "none",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
        ]
        proc = subprocess.Popen(cmd, stderr=stream, stdout=subprocess.DEVNULL, env=env)
    try:
        assert wait_port(port, 30, "127.0.0.1", lambda: proc.poll() is None)
        _wait_for(journal, "ready: configuration generation 1")
        cfg.write_text(CONFIG + "bogus: 1\n")
        proc.send_signal(signal.SIGHUP)
        text = _wait_for(journal, "keeping configuration generation 1")
    finally:
        proc.terminate()
        proc.wait(30)
    lines = text.splitlines()
    assert all(line[:1] == "<" and line[2:3] == ">" for line in lines), lines
    errors = [line for line in lines if int(line[1]) <= 3]  # journalctl -p err
    assert [line.split("] ", 1)[1] for line in errors] == [
        f"reload refused: {cfg}:4:1: bogus: unknown key; expected one of {', '.join(TOP_KEYS)}",
        "keeping configuration generation 1",
    ]
    assert any(line.startswith("<6>") and "ready: configuration generation 1" in line for line in lines)
