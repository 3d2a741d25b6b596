"""The Twisted side of the policy daemon without sockets: protocol, reload, service tree.

One real-socket smoke test at the end runs the command as a subprocess on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock, StringTransport

from exmilter.cli import main
from exmilter.config import load
from exmilter.metrics import PolicyMetrics
from exmilter.policy.service import PolicyFactory, Runtime, build, sd_notify, split_group
from tests.conftest import SERVER

ROOT = Path(__file__).resolve().parent.parent

CONFIG = SERVER + """\
default_connectors: true
accepted_domains:
  - domain_name: labs.local
receive_connectors:
  - name: Relay
    transport_role: FrontendTransport
    usage: Custom
    bindings: [0.0.0.0:25]
    remote_ip_ranges: [10.83.4.56]
    permission_groups: [AnonymousUsers]
    permissions:
      - user: NT AUTHORITY\\ANONYMOUS LOGON
        extended_rights: [ms-Exch-SMTP-Accept-Any-Recipient]
policyd:
  max_line_length: 256
  max_attributes: 16
"""

RELAY = "EXCH01\\Relay"
DENIED = b"action=550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain\n\n"


def rcpt(client: str = "10.83.4.56", recipient: str = "x@gmail.com", instance: str = "i1") -> bytes:
    return (f"request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address={client}\n"
            f"policy_context=*:25\ninstance={instance}\nrecipient={recipient}\nhelo_name=h\n\n").encode()


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


class Harness:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.registry = CollectorRegistry()
        self.notes: list[str] = []
        self.runtime = Runtime(str(path), load(path), PolicyMetrics(self.registry),
                               run_blocking=lambda f, *a: defer.maybeDeferred(f, *a), notify=self.notes.append)
        self.reactor = MemoryReactorClock()
        self.factory = PolicyFactory(self.runtime, self.reactor)

    def connect(self) -> tuple[object, StringTransport]:
        proto = self.factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        return proto, transport

    def value(self, name: str, **labels: str) -> float:
        return sample(self.registry, name, **labels)


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    path = tmp_path / "exmilter.yaml"
    path.write_text(CONFIG)
    return Harness(path)


def test_request_and_answer(h):
    proto, t = h.connect()
    assert h.value("exmilter_policy_connections") == 1
    proto.dataReceived(rcpt())
    assert t.value() == b"action=OK\n\n"
    assert not t.disconnecting
    proto.dataReceived(rcpt("203.0.113.9", instance="i2"))
    assert t.value() == b"action=OK\n\n" + DENIED
    assert h.value("exmilter_policy_requests_total", protocol_state="RCPT") == 2
    assert h.value("exmilter_policy_decisions_total", connector=RELAY, stage="RCPT", code="250") == 1
    assert h.value("exmilter_policy_decisions_total", connector="EXCH01\\Default Frontend EXCH01",
                   stage="RCPT", code="550") == 1
    assert h.value("exmilter_policy_decision_seconds_count") == 2
    proto.connectionLost(None)
    assert h.value("exmilter_policy_connections") == 0


def test_pipelined_and_byte_by_byte(h):
    proto, t = h.connect()
    proto.dataReceived(rcpt() + rcpt("203.0.113.9", instance="i2"))
    assert t.value() == b"action=OK\n\n" + DENIED
    t.clear()
    for b in rcpt(instance="i3"):
        proto.dataReceived(bytes([b]))
    assert t.value() == b"action=OK\n\n"


def test_resent_request_answered_same_and_counted_once(h):
    proto, t = h.connect()
    proto.dataReceived(rcpt())
    proto2, t2 = h.connect()  # Postfix reconnects after a timeout and sends it again
    proto2.dataReceived(rcpt())
    assert t.value() == t2.value() == b"action=OK\n\n"
    assert h.value("exmilter_policy_decisions_total", connector=RELAY, stage="RCPT", code="250") == 1
    assert h.value("exmilter_policy_duplicate_requests_total", protocol_state="RCPT") == 1
    assert h.value("exmilter_policy_requests_total", protocol_state="RCPT") == 2


@pytest.mark.parametrize(
    "data",
    [b"x" * 300, b"a=" + b"b" * 300 + b"\n\n", b"".join(b"a%d=1\n" % i for i in range(17)) + b"\n",
     b"garbage\n\n", b"recipient=\xff\n\n"],
    ids=["unterminated", "oversize-line", "too-many-attributes", "garbage", "non-utf8"],
)
def test_malformed_input_closes_only_that_connection(h, data):
    proto, t = h.connect()
    proto.dataReceived(data)
    assert t.value() == b""
    assert t.disconnecting
    assert h.value("exmilter_policy_protocol_errors_total") == 1
    proto.dataReceived(rcpt())  # anything after is ignored
    assert t.value() == b""
    other, t2 = h.connect()
    other.dataReceived(rcpt())
    assert t2.value() == b"action=OK\n\n"


def test_requests_before_the_bad_input_are_answered(h):
    proto, t = h.connect()
    proto.dataReceived(rcpt() + b"garbage\n\n")
    assert t.value() == b"action=OK\n\n"
    assert t.disconnecting


def test_exception_while_deciding_closes_without_answer(h, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("bug")

    monkeypatch.setattr(h.runtime.decider, "decide", boom)
    proto, t = h.connect()
    proto.dataReceived(rcpt() + rcpt())
    assert t.value() == b""
    assert t.disconnecting
    assert h.value("exmilter_policy_internal_errors_total") == 1


def test_idle_connection_is_closed(h):
    proto, t = h.connect()
    h.reactor.advance(h.factory.idle_timeout - 1)
    proto.dataReceived(rcpt())
    h.reactor.advance(h.factory.idle_timeout - 1)
    assert not t.disconnecting
    h.reactor.advance(2)
    assert t.disconnecting


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=120) | st.sampled_from([rcpt(), b"\n", b"=\n", b"a=b\n"]), max_size=8))
def test_hypothesis_malformed_input_never_crashes(h, chunks):
    proto, t = h.connect()
    for c in chunks:
        proto.dataReceived(c)
    answers = t.value()
    # every answer is a complete action; otherwise the connection was closed
    assert answers == b"" or answers.endswith(b"\n\n")
    assert all(line.startswith(b"action=") for line in answers.split(b"\n") if line)
    proto.connectionLost(None)


# -- reload -------------------------------------------------------------------------------------


def test_good_reload_swaps_configuration(h):
    proto, t = h.connect()
    proto.dataReceived(rcpt(instance="a"))
    assert t.value() == b"action=OK\n\n"
    h.path.write_text(CONFIG.replace("10.83.4.56", "10.83.4.99"))
    result = []
    h.runtime.reload().addCallback(result.append)
    assert result == [True]
    assert h.runtime.current.number == 2
    t.clear()
    proto.dataReceived(rcpt(instance="b"))
    assert t.value() == DENIED
    assert h.value("exmilter_config_reloads_total") == 1
    assert h.value("exmilter_config_reload_failures_total") == 0
    assert h.value("exmilter_config_generation") == 2
    assert h.value("exmilter_config_info", generation="2", source=str(h.path)) == 1
    assert h.value("exmilter_config_info", generation="1", source=str(h.path)) == 0
    assert h.notes == ["RELOADING=1", "READY=1"]


@pytest.mark.parametrize("bad", ["server: [", "receive_connectors: 3\n", "", "\xff"])
def test_bad_reload_keeps_old_configuration(h, bad):
    old = h.runtime.current
    h.path.write_text(CONFIG + bad if bad != "" else "")
    result = []
    h.runtime.reload().addCallback(result.append)
    assert result == [False]
    assert h.runtime.current is old
    proto, t = h.connect()
    proto.dataReceived(rcpt())
    assert t.value() == b"action=OK\n\n"
    assert h.value("exmilter_config_reloads_total") == 1
    assert h.value("exmilter_config_reload_failures_total") == 1
    assert h.value("exmilter_config_last_reload_successful") == 0
    assert h.value("exmilter_config_generation") == 1


def test_missing_file_on_reload_keeps_old(h):
    h.path.unlink()
    result = []
    h.runtime.reload().addCallback(result.append)
    assert result == [False]
    assert h.runtime.current.number == 1


def test_reloads_while_one_runs_collapse_into_one_more(h):
    pending: list[defer.Deferred] = []

    def later(f, *a):
        d = defer.Deferred()
        pending.append(d)
        d.addCallback(lambda _: f(*a))
        return d

    h.runtime._run_blocking = later
    h.runtime.reload()
    h.runtime.reload()
    h.runtime.reload()
    assert len(pending) == 1
    pending[0].callback(None)
    assert len(pending) == 2  # exactly one queued reload started
    pending[1].callback(None)
    assert h.runtime.current.number == 3


# -- service tree -------------------------------------------------------------------------------


def test_build_listens_everywhere_then_notifies_ready(h, tmp_path):
    reactor = MemoryReactorClock()
    notes: list[str] = []
    sock = str(tmp_path / "policy.sock")
    daemon = build(reactor, h.runtime, ["tcp:10040:interface=127.0.0.1", f"unix:{sock}:mode=660"],
                   "tcp:9142:interface=127.0.0.1", notify=notes.append, signals=False)
    daemon.top.startService()
    assert [(p[0], p[3]) for p in reactor.tcpServers] == [(10040, "127.0.0.1"), (9142, "127.0.0.1")]
    assert reactor.unixServers[0][0] == sock
    assert reactor.unixServers[0][3] == 0o660
    assert notes and notes[0].startswith("READY=1")
    daemon.top.stopService()


def test_build_without_metrics(h):
    reactor = MemoryReactorClock()
    daemon = build(reactor, h.runtime, ["tcp:10040"], None, notify=lambda m: None, signals=False)
    daemon.top.startService()
    assert daemon.metrics is None
    assert [p[0] for p in reactor.tcpServers] == [10040]


def test_split_group():
    assert split_group("unix:/run/x.sock:mode=660:group=postfix") == ("unix:/run/x.sock:mode=660", "postfix")
    assert split_group("tcp:10040:interface=127.0.0.1") == ("tcp:10040:interface=127.0.0.1", None)


def test_sd_notify(tmp_path):
    assert sd_notify("READY=1", {}) is False
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(path)
        assert sd_notify("READY=1", {"NOTIFY_SOCKET": path}) is True
        assert s.recv(100) == b"READY=1"
    assert sd_notify("READY=1", {"NOTIFY_SOCKET": path}) is False  # nobody listening: logged, not raised


# -- the command ----------------------------------------------------------------------------------


def test_command_refuses_bad_config(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(SERVER + "receive_connectors: 3\nbogus: 1\n")
    assert main(["policyd", "-c", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:" in err and "error" in err


def test_command_refuses_bad_endpoint(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(CONFIG)
    assert main(["policyd", "-c", str(good), "--listen", "nonsense:1", "--metrics", "none"]) == 2
    assert "nonsense:1" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_smoke_real_daemon(tmp_path):
    """Start the command, answer over TCP, reload on SIGHUP, stop on SIGTERM with status 0."""
    cfg = tmp_path / "exmilter.yaml"
    cfg.write_text(CONFIG)
    port = _free_port()
    notify = tmp_path / "notify"
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(str(notify))
    ns.settimeout(15)
    env = dict(os.environ, NOTIFY_SOCKET=str(notify))
    proc = subprocess.Popen([sys.executable, "-m", "exmilter.cli", "policyd", "-c", str(cfg),
                             "--listen", f"tcp:{port}:interface=127.0.0.1", "--metrics", "none"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert ns.recv(200).startswith(b"READY=1")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(rcpt() + rcpt("203.0.113.9", instance="z"))
            got = b""
            while got.count(b"\n\n") < 2:
                got += c.recv(4096)
            assert got == b"action=OK\n\n" + DENIED
            cfg.write_text("server: [")
            proc.send_signal(signal.SIGHUP)
            assert ns.recv(200) == b"RELOADING=1"
            assert ns.recv(200) == b"READY=1"
            c.sendall(rcpt(instance="y"))
            assert c.recv(4096) == b"action=OK\n\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        err = proc.stderr.read().decode()
        assert "reload refused" in err and "keeping configuration generation 1" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ns.close()


def test_command_exits_1_when_a_listener_cannot_bind(tmp_path):
    cfg = tmp_path / "exmilter.yaml"
    cfg.write_text(CONFIG)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "exmilter.cli", "policyd", "-c", str(cfg),
                            "--listen", f"tcp:{port}:interface=127.0.0.1", "--metrics", "none"],
                           cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "cannot start" in r.stderr and "Address already in use" in r.stderr
