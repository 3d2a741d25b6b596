"""The systemd units (systemd/): systemd-analyze verify, the reload that validates first and
fails on a refused file, the watchdog fed only while the daemon answers, socket activation
without a socket, and --listen not silently replacing the file's listeners.

systemd-analyze comes with Debian's systemd package; the test fails, not skips, without it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from exmilter.sandbox.ports import free_port
from tests.policy_fixtures import CONFIG_FILE

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "systemd"
SERVICE = UNITS / "exmilter-policyd.service"
EXMILTER = [sys.executable, "-m", "exmilter.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def unit_root(tmp_path: Path, units: list[Path]) -> Path:
    """A root directory with the host's system units, ``units`` and the commands they run."""
    root = tmp_path / "root"
    system = root / "usr/lib/systemd/system"
    shutil.copytree("/lib/systemd/system", system, symlinks=True)
    for unit in units:
        shutil.copy(unit, system / unit.name)
    for command in ("/usr/bin/exmilter", "/bin/kill"):
        (root / command[1:]).parent.mkdir(parents=True, exist_ok=True)
        (root / command[1:]).write_text("#!/bin/sh\n")
        (root / command[1:]).chmod(0o755)
    return root


def systemd_analyze_verify(root: Path, *names: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is missing (Debian's systemd package)"
    return subprocess.run([tool, f"--root={root}", "verify", "--man=no", *names], capture_output=True, text=True)


def test_units_pass_systemd_analyze_verify(tmp_path):
    units = sorted(UNITS.glob("*.service")) + sorted(UNITS.glob("*.socket"))
    assert SERVICE in units
    proc = systemd_analyze_verify(unit_root(tmp_path, units), *(u.name for u in units))
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")


def test_systemd_analyze_verify_can_fail(tmp_path):
    """The check above is not vacuous: a unit with a mistake is reported."""
    broken = tmp_path / "exmilter-broken.service"
    broken.write_text(SERVICE.read_text().replace("Type=notify", "Type=notifyy"))
    proc = systemd_analyze_verify(unit_root(tmp_path, [broken]), broken.name)
    assert "Failed to parse service type, ignoring: notifyy" in proc.stdout + proc.stderr


def directives(name: str) -> list[str]:
    return [line.split("=", 1)[1] for line in SERVICE.read_text().splitlines() if line.startswith(f"{name}=")]


def test_unit_settings_the_issue_asks_for():
    text = SERVICE.read_text()
    assert "Before=postfix@-.service postfix.service\n" in text  # Debian's real Postfix unit
    assert directives("LimitNOFILE") == ["65536"]
    assert directives("WatchdogSec") == ["30s"]
    (start,) = directives("ExecStart")
    assert "--listen" not in start  # the file's listeners, not the unit's
    assert directives("ExecReload")[0].startswith("/usr/bin/exmilter check -c /etc/exmilter/exmilter.yaml")
    milter = (UNITS / "exmilter-milter.service").read_text().splitlines()
    assert [line for line in milter if line.startswith("WatchdogSec=")] == ["WatchdogSec=30s"]


class Daemon:
    """``exmilter policyd`` on a temp file, a UNIX policy socket and a loopback metrics port."""

    def __init__(self, tmp_path: Path, env: dict[str, str] | None = None) -> None:
        self.config = tmp_path / "exmilter.yaml"
        self.config.write_text(CONFIG_FILE)
        self.sock = tmp_path / "policy.sock"
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                *EXMILTER,
                "policyd",
                "-c",
                str(self.config),
                "--listen",
                f"unix:{self.sock}",
                "--metrics",
                f"tcp:{self.port}:interface=127.0.0.1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**ENV, **(env or {})},
        )
        wait_for(lambda: self.metric("exmilter_config_generation") is not None or self.proc.poll() is not None)
        assert self.proc.poll() is None, self.stop()

    def metric(self, name: str) -> float | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=10) as r:
                body = r.read().decode()
        except OSError:
            return None
        for line in body.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        return err


def wait_for(predicate, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def run_exec_reload(daemon: Daemon) -> int:
    """The unit's ExecReload= lines in order, as systemd runs them: the first failure fails the reload."""
    for line in directives("ExecReload"):
        line = line.replace("$MAINPID", str(daemon.proc.pid)).replace("/etc/exmilter/exmilter.yaml", str(daemon.config))
        argv = shlex.split(line)
        argv = [*EXMILTER, *argv[1:]] if argv[0] == "/usr/bin/exmilter" else argv
        code = subprocess.run(argv, capture_output=True, env=ENV).returncode
        if code != 0:
            return code
    return 0


def test_reload_of_a_refused_file_fails_and_a_good_one_is_loaded(tmp_path):
    daemon = Daemon(tmp_path)
    try:
        daemon.config.write_text(CONFIG_FILE + "bogus: 1\n")
        assert run_exec_reload(daemon) == 2  # systemctl reload fails
        time.sleep(0.5)
        assert daemon.metric("exmilter_config_reloads_total") == 0  # the daemon was not even signalled
        daemon.config.write_text(CONFIG_FILE.replace("10.83.4.56", "10.83.4.57"))
        assert run_exec_reload(daemon) == 0
        wait_for(lambda: daemon.metric("exmilter_config_generation") == 2)
        assert daemon.metric("exmilter_config_last_reload_successful") == 1
    finally:
        daemon.stop()


def notifications(sd: socket.socket, seconds: float) -> list[tuple[float, str]]:
    """What arrives on the notify socket ``sd`` (its timeout short) during ``seconds``, timed."""
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with contextlib.suppress(TimeoutError):
            out.append((time.monotonic(), sd.recv(4096).decode()))
    return out


def test_watchdog_is_fed_only_while_the_daemon_answers(tmp_path):
    notify = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sd:
        sd.bind(str(notify))
        sd.settimeout(0.1)
        daemon = Daemon(tmp_path, {"NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "400000"})  # every 0.2 s
        try:
            messages: list[tuple[float, str]] = []

            def drain(seconds: float) -> None:
                messages.extend(notifications(sd, seconds))

            drain(1.5)
            assert any(m.startswith("READY=1") for _, m in messages)
            assert sum(m == "WATCHDOG=1" for _, m in messages) >= 2
            daemon.sock.unlink()  # the listener can no longer be reached: no more pings
            gone = time.monotonic()
            drain(1.5)
            late = [t for t, m in messages if m == "WATCHDOG=1" and t > gone + 0.5]
            assert late == []
        finally:
            err = daemon.stop()
    assert f"watchdog: unix:{daemon.sock} does not answer" in err
    assert err.count("does not answer") == 1  # one line per outage


def test_socket_activation_without_a_socket_is_a_message_not_a_traceback(tmp_path):
    config = tmp_path / "exmilter.yaml"
    config.write_text(CONFIG_FILE)
    proc = subprocess.run(
        [*EXMILTER, "policyd", "-c", str(config), "--listen", "systemd:domain=UNIX:index=0", "--metrics", "none"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        "systemd:domain=UNIX:index=0: systemd passed no socket with that index (socket activation: "
        "start the daemon through its .socket unit, docs/operations.md)\n"
    )


@pytest.mark.parametrize(("file_listen", "warned"), [(None, False), ("unix:/run/other.sock", True)])
def test_listen_on_the_command_line_does_not_silently_replace_the_file(tmp_path, file_listen, warned):
    config = tmp_path / "exmilter.yaml"
    text = CONFIG_FILE + (f"  listen: [{file_listen}]\n" if file_listen else "")
    config.write_text(text)
    proc = subprocess.run(
        [*EXMILTER, "policyd", "-c", str(config), "--listen", "bogus:endpoint", "--metrics", "none"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert proc.returncode == 2  # the bogus endpoint: refused before anything starts
    line = f"exmilter policyd: --listen bogus:endpoint replaces policyd.listen from {config} ({file_listen})"
    assert (line in proc.stderr) is warned, proc.stderr


def test_socket_activation_serves_on_the_socket_systemd_passes(tmp_path):
    """What exmilter-policyd.socket plus the documented drop-in do, with systemd's own
    systemd-socket-activate (which passes the socket as fd 3, LISTEN_FDS and LISTEN_FDNAMES)."""
    tool = shutil.which("systemd-socket-activate")
    assert tool, "systemd-socket-activate is missing (Debian's systemd package)"
    config = tmp_path / "exmilter.yaml"
    config.write_text(CONFIG_FILE)
    sock = tmp_path / "policy.sock"
    proc = subprocess.Popen(
        [
            tool,
            "--fdname=exmilter-policyd.socket",
            "-l",
            str(sock),
            *EXMILTER,
            "policyd",
            "-c",
            str(config),
            "--listen",
            "systemd:domain=UNIX:index=0",
            "--metrics",
            "none",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        wait_for(lambda: sock.exists() or proc.poll() is not None)
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(str(sock))  # accepted by systemd-socket-activate, which then starts the daemon
            s.sendall(
                b"request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=10.83.4.56\n"
                b"recipient=x@gmail.com\ninstance=i1\npolicy_context=*:25\n\n"
            )
            assert s.recv(4096) == b"action=OK\n\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert "policy service listening on systemd:domain=UNIX:index=0" in err


def test_milter_watchdog_is_fed_only_while_libmilter_answers(tmp_path):
    """The real milter with systemd's watchdog variables: pings while its negotiation over its
    own socket is answered, none once the socket is gone, one log line for the outage."""
    config = tmp_path / "exmilter.yaml"
    config.write_text(CONFIG_FILE)
    sock = tmp_path / "milter.sock"
    notify = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sd:
        sd.bind(str(notify))
        sd.settimeout(0.1)
        proc = subprocess.Popen(
            [
                *EXMILTER,
                "milter",
                "-c",
                str(config),
                "--listen",
                f"unix:{sock}",
                "--metrics",
                "none",
                "--coverage",
                "none",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**ENV, "NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "400000"},  # a probe every 0.2 s
        )
        try:
            messages: list[tuple[float, str]] = []

            def drain(seconds: float) -> None:
                messages.extend(notifications(sd, seconds))

            drain(2.0)
            assert any(m.startswith("READY=1") for _, m in messages)
            assert sum(m == "WATCHDOG=1" for _, m in messages) >= 3
            sock.unlink()  # Postfix could no longer reach it: no more pings
            gone = time.monotonic()
            drain(1.5)
            assert [t for t, m in messages if m == "WATCHDOG=1" and t > gone + 0.5] == []
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
    assert f"watchdog: unix:{sock} does not answer ([Errno 2] No such file or directory)" in err
    assert err.count("does not answer") == 1  # one line per outage
