"""The real ``exmilter sandbox`` command, run as a subprocess behind a DNS trap (issue 10, items 3, 9, 10).

One sandbox process for the module, with its own state directory and port offset, run
in a mount namespace whose resolver is :class:`tests.integration.dns_trap.DnsTrap`:

- its private Postfix is configured off the network and makes no DNS query, whatever
  the traffic (banners come at once, clients are ``unknown[127.0.0.x]``);
- SIGHUP with any kind of broken file is reported, with its location, and never stops
  it: the old rules keep serving, and a later good file reloads;
- a policy daemon killed with SIGKILL is restarted by the sandbox by itself;
- SIGTERM stops everything and leaves no process behind.

The last test stops the sandbox; the trap's count covers the process's whole life.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.dns_trap import DnsTrap, in_namespace
from tests.integration.helpers import HOST, free_offset, send, wait_delivered
from tests.test_sandbox_reload import BREAKAGES, NOT_RELOADED, first_line_pattern

CONFIG = Path(__file__).resolve().parent.parent / "data" / "integration.yaml"
REPO = Path(__file__).resolve().parent.parent.parent
RELAY_DENIED = "550 5.7.54 <{}>: Recipient address rejected: SMTP; Unable to relay recipient in non-accepted domain"
#: The banner of a client whose name Postfix does not look up arrives at once; a lookup
#: against the trap's dead resolver would cost RESOLVER_TIMEOUT (2 s) or more.
PROMPT = 1.0
START_TIMEOUT = 60


class Output:
    """Every line the sandbox prints (stdout and stderr), collected by a thread."""

    def __init__(self, stream: object) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def join(self, timeout: float) -> None:
        """Wait until the stream has ended (the process exited) and every line is in."""
        self._thread.join(timeout)

    def mark(self) -> int:
        with self._cond:
            return len(self.lines)

    def since(self, mark: int) -> list[str]:
        with self._cond:
            return self.lines[mark:]

    def wait_for(self, pattern: str, since: int = 0, timeout: float = 30) -> int:
        """The index of the first line from ``since`` on that matches ``pattern`` (a regex)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(since, len(self.lines)):
                    if re.search(pattern, self.lines[i]):
                        return i
                left = deadline - time.monotonic()
                if left <= 0:
                    printed = "\n".join(self.lines)
                    raise AssertionError(f"no line matching {pattern!r}; the sandbox printed:\n{printed}")
                self._cond.wait(left)


@dataclass
class Running:
    proc: subprocess.Popen[str]
    config: Path
    state: Path
    trap: DnsTrap
    out: Output
    description: dict = field(default_factory=dict)

    @property
    def etc(self) -> Path:
        return self.state / "postfix" / "etc"

    @property
    def delivered(self) -> Path:
        return self.state / "delivered"

    def port(self, context: str) -> int:
        listen = next(x["listen"] for x in self.description["listeners"] if x["context"] == context)
        return int(listen.rsplit(":", 1)[1])

    def policyd_pid(self) -> int:
        return int((self.state / "policyd.pid").read_text())

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(self.description["policyd"]["metrics"], timeout=10) as r:
            text = r.read().decode()
        return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples if s.name == name)

    def wait_metric(self, name: str, above: float, timeout: float = 15) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.metric(name)
            if value > above:
                return value
            time.sleep(0.05)
        raise AssertionError(f"{name} stayed at {above}")

    def sighup(self, expect: str, timeout: float = 30) -> list[str]:
        """SIGHUP, then the lines printed up to the first that matches ``expect``."""
        mark = self.out.mark()
        self.proc.send_signal(signal.SIGHUP)
        end = self.out.wait_for(expect, mark, timeout)
        return self.out.since(mark)[: end - mark + 1]


def processes_of(state: Path) -> list[tuple[int, str]]:
    """Every process of this sandbox: its Postfix (MAIL_CONFIG), or its directory in the command line."""
    found = []
    mail_config = f"MAIL_CONFIG={state / 'postfix' / 'etc'}".encode()
    base = str(state.parent).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if mail_config in environ.split(b"\0") or base in cmdline:
            found.append((int(entry.name), cmdline.replace(b"\0", b" ").decode(errors="replace").strip()))
    return found


def kill_leftovers(state: Path) -> None:
    """After a failed test: stop this sandbox's Postfix and processes (by PID, ours only)."""
    if not processes_of(state):
        return
    subprocess.run(
        ["postfix", "-c", str(state / "postfix" / "etc"), "stop"],
        capture_output=True,
        timeout=60,
        env={**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"},
    )
    for pid, _ in processes_of(state):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def running() -> Iterator[Running]:
    base = Path(tempfile.mkdtemp(prefix="exmilter-cmd-", dir="/tmp"))
    base.chmod(0o755)
    config, state = base / "exmilter.yaml", base / "state"
    shutil.copyfile(CONFIG, config)
    trap = DnsTrap()
    resolv, nsswitch = trap.write_files(base)
    command = [
        sys.executable,
        "-m",
        "exmilter.cli",
        "sandbox",
        "-c",
        str(config),
        "--state-dir",
        str(state),
        "--port-offset",
        str(free_offset(config)),
    ]
    proc = subprocess.Popen(
        in_namespace(resolv, nsswitch, command), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, cwd=REPO, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    out = Output(proc.stdout)
    run = Running(proc, config, state, trap, out)
    try:
        out.wait_for(r"^Try it:$", timeout=START_TIMEOUT)
        run.description = json.loads((state / "sandbox.json").read_text())
        yield run
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        kill_leftovers(state)
        trap.close()
        shutil.rmtree(base, ignore_errors=True)


def postconf(run: Running, *args: str) -> list[str]:
    return subprocess.run(
        ["postconf", "-c", str(run.etc), *args], capture_output=True, text=True, check=True, timeout=30,
        env={**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"},
    ).stdout.splitlines()  # fmt: skip


#: The main.cf values that keep the private instance off the network (docs/sandbox.md).
OFFLINE = {
    "smtpd_peername_lookup": "no",
    "smtp_dns_support_level": "disabled",
    "lmtp_dns_support_level": "disabled",
    "dnssec_probe": "",
    "relayhost": "",
    "inet_protocols": "ipv4",
    "append_dot_mydomain": "no",
    "default_transport": "exdeliver",
    "relay_transport": "exdeliver",
    "local_transport": "exdeliver",
    "virtual_transport": "exdeliver",
}
#: The only daemons the instance runs: none of them resolves a name on its own (no
#: smtp/lmtp client, postscreen, dnsblog or tlsproxy; tlsmgr only seeds and caches TLS for smtpd).
DAEMONS = {"smtpd", "pickup", "cleanup", "qmgr", "trivial-rewrite", "bounce", "verify", "proxymap", "showq",
           "error", "discard", "anvil", "scache", "postlogd", "pipe", "tlsmgr"}  # fmt: skip


def test_the_private_postfix_is_configured_off_the_network(running: Running) -> None:
    settings = dict(line.split(" =", 1) for line in postconf(running, "-n"))
    assert {k: settings.get(k, "(default)").strip() for k in OFFLINE} == OFFLINE
    services = [line.split() for line in postconf(running, "-M")]
    assert {s[7] for s in services} <= DAEMONS, services
    assert all(s[4] == "n" for s in services), "a chroot daemon would read another resolv.conf"
    overrides = postconf(running, "-P")
    assert not [o for o in overrides if re.search(r"/(smtpd_peername_lookup|\w*dns\w*|relayhost) =", o)], overrides


def test_no_dns_query_and_banners_at_once(running: Running) -> None:
    """Every listener, several clients, accepted, relayed and refused mail: not one query."""
    clients = ["127.0.0.1", "127.0.0.20", "127.0.0.56", "127.0.0.30", "127.0.5.7", "127.0.0.13", "127.0.0.44"]
    slowest = 0.0
    for lst in running.description["listeners"]:
        for source in clients:
            started = time.monotonic()
            with socket.create_connection(
                (HOST, running.port(lst["context"])), timeout=30, source_address=(source, 0)
            ) as s:
                s.settimeout(30)
                banner = s.recv(512)
            slowest = max(slowest, time.monotonic() - started)
            assert banner.startswith((b"220 ", b"421 ", b"451 ")), (lst, source, banner)
    port = running.port("*:25")
    relayed = send(port, "127.0.0.56", "app@labs.local", [f"d-{uuid.uuid4().hex[:12]}@gmail.com"])
    internal = send(port, "127.0.0.20", "someone@example.com", [f"d-{uuid.uuid4().hex[:12]}@labs.local"])
    rcpt = f"d-{uuid.uuid4().hex[:12]}@gmail.com"
    refused = send(port, "127.0.0.30", "app@labs.local", [rcpt])
    assert refused.reply == RELAY_DENIED.format(rcpt)
    for out in (relayed, internal):
        assert out.stage == "queued", out
        wait_delivered(running.delivered, out.queue_id)
    assert running.trap.queries == []
    assert slowest < PROMPT, f"a banner took {slowest:.2f} s"
    maillog = (running.state / "postfix" / "log" / "maillog").read_text()
    for source in clients:
        assert f"connect from unknown[{source}]" in maillog
    assert "connect from localhost[" not in maillog  # 127.0.0.1 is not even looked up in /etc/hosts


def test_sighup_with_broken_files_never_stops_the_sandbox(running: Running) -> None:
    good = running.config.read_text()
    pid = running.policyd_pid()
    for name, breaking, first_line in BREAKAGES:
        failures = running.metric("exmilter_config_reload_failures_total")
        if running.config.is_dir():
            running.config.rmdir()
        running.config.write_text(good)  # each breakage starts from the good file, unannounced
        breaking(running.config)
        lines = running.sighup(re.escape(NOT_RELOADED.format(running.config)))
        assert re.match(first_line_pattern(first_line, running.config), lines[0]), (name, lines)
        assert running.proc.poll() is None, name
        running.wait_metric("exmilter_config_reload_failures_total", failures)  # the daemon refused it too
        assert running.policyd_pid() == pid, name  # and did not die over it
        rcpt = f"h-{uuid.uuid4().hex[:12]}@gmail.com"
        out = send(running.port("*:25"), "127.0.0.56", "app@labs.local", [rcpt])  # the old rules serve
        assert out.rcpt_replies == ["250 2.1.5 Ok"], (name, out)
    if running.config.is_dir():
        running.config.rmdir()
    # A later good file reloads: 127.0.0.70 may relay from now on.
    generation = running.metric("exmilter_config_generation")
    running.config.write_text(good.replace("127.0.0.60-127.0.0.69]", "127.0.0.60-127.0.0.70]"))
    running.sighup(re.escape(f"{running.config} reloaded (the policy daemon re-reads it)"))
    running.wait_metric("exmilter_config_generation", generation)
    rcpt = f"h-{uuid.uuid4().hex[:12]}@gmail.com"
    out = send(running.port("*:25"), "127.0.0.70", "app@labs.local", [rcpt])
    assert out.rcpt_replies == ["250 2.1.5 Ok"]
    assert wait_delivered(running.delivered, out.queue_id).connector == "EXCH01\\SMTP Relay (EXCH01)"
    running.config.write_text(good)
    running.sighup(re.escape(f"{running.config} reloaded"))


def test_a_killed_policy_daemon_is_restarted_by_the_sandbox(running: Running) -> None:
    old = running.policyd_pid()
    mark = running.out.mark()
    os.kill(old, signal.SIGKILL)
    running.out.wait_for(
        re.escape(
            f"the policy daemon (pid {old}) was killed by SIGKILL; restarting it in 1 s (restart 1 of at most 5 "
            "within 60 s). Meanwhile: Postfix keeps running and answers 451 4.3.5"
        ),
        mark,
    )
    done = running.out.wait_for(r"^the policy daemon was restarted \(pid \d+\) and serves again$", mark)
    new = int(re.findall(r"\d+", running.out.lines[done])[0])
    assert new != old and running.policyd_pid() == new
    assert json.loads((running.state / "sandbox.json").read_text())["policyd"]["pid"] == new
    rcpt = f"k-{uuid.uuid4().hex[:12]}@gmail.com"
    ok = send(running.port("*:25"), "127.0.0.56", "app@labs.local", [rcpt])
    assert ok.rcpt_replies == ["250 2.1.5 Ok"]
    wait_delivered(running.delivered, ok.queue_id)
    no = send(running.port("*:25"), "127.0.0.30", "app@labs.local", [rcpt])
    assert no.reply == RELAY_DENIED.format(rcpt)


def test_sigterm_stops_everything_and_no_query_was_ever_made(running: Running) -> None:
    ours = processes_of(running.state)
    assert {p for p, _ in ours} >= {running.proc.pid, running.policyd_pid()}
    assert any("master" in cmd for _, cmd in ours), ours  # Postfix's master is found too
    mark = running.out.mark()
    os.killpg(running.proc.pid, signal.SIGTERM)  # to its whole process group, as a terminal or init would
    assert running.proc.wait(60) == 0
    running.out.join(10)
    # The daemon saw no signal of its own (a session of its own), so nothing "died" meanwhile.
    assert running.out.since(mark) == ["stopping...", "stopped"]
    deadline = time.monotonic() + 5  # a Postfix child may take a moment to act on its master's exit
    while processes_of(running.state) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_of(running.state) == []
    assert not (running.state / "policyd.pid").exists()
    assert running.trap.queries == []
