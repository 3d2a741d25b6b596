"""The Twisted side of the policy daemon without sockets: protocol, reload, service tree.

One real-socket smoke test at the end runs the command as a subprocess on 127.0.0.1.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, LogLevel, formatEvent, formatTime, globalLogPublisher
from twisted.python.failure import Failure

from exmilter.cli import main
from exmilter.config import load
from exmilter.logs import events as ev
from exmilter.logs.text import message
from exmilter.logs.twistedlog import EVENT_KEY, StderrObserver, log_levels, twisted_sink
from exmilter.policy import connection
from exmilter.policy.daemon import build, choose_metrics
from exmilter.policy.factory import PolicyFactory
from exmilter.policy.metrics import NullMetrics, PolicyMetrics
from exmilter.policy.reload import Runtime
from exmilter.policy.service import split_group
from exmilter.runtime.notify import sd_notify
from tests.conftest import SERVER
from tests.policy_fixtures import CONFIG_FILE, RELAY, RELAY_554, answer, private_logs, rcpt_wire

ROOT = Path(__file__).resolve().parent.parent

DENIED = answer(RELAY_554)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


class Harness:
    def __init__(self, path: Path, metrics: PolicyMetrics | NullMetrics | None = None) -> None:
        self.path = path
        self.registry = CollectorRegistry()
        self.notes: list[str] = []
        self.runtime = Runtime(
            str(path),
            load(path),
            metrics or PolicyMetrics(self.registry),
            run_blocking=lambda f, *a: defer.maybeDeferred(f, *a),
            notify=self.notes.append,
        )
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
    path.write_text(CONFIG_FILE)
    return Harness(path)


@pytest.fixture
def logged() -> list[dict]:
    """Every twisted.logger event published during the test."""
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def texts(events: list[dict]) -> list[str]:
    return [formatEvent(e) for e in events]


def decisions(events: list[dict]) -> list[dict]:
    """The events that are policy decisions."""
    return [e for e in events if isinstance(e.get(EVENT_KEY), ev.PolicyDecision)]


def decision_lines(events: list[dict]) -> list[str]:
    """The text of each decision's line, as the text sink writes it."""
    return [message(e[EVENT_KEY]) for e in decisions(events)]


def test_request_and_answer(h):
    proto, t = h.connect()
    assert h.value("exmilter_policy_connections") == 1
    proto.dataReceived(rcpt_wire())
    assert t.value() == b"action=OK\n\n"
    assert not t.disconnecting
    proto.dataReceived(rcpt_wire("203.0.113.9", instance="i2"))
    assert t.value() == b"action=OK\n\n" + DENIED
    assert h.value("exmilter_policy_requests_total", stage="RCPT") == 2
    assert h.value("exmilter_policy_decisions_total", connector=RELAY, stage="RCPT", code="250") == 1
    assert (
        h.value(
            "exmilter_policy_decisions_total", connector="EXCH01\\Default Frontend EXCH01", stage="RCPT", code="550"
        )
        == 1
    )
    assert h.value("exmilter_policy_decision_seconds_count") == 2
    proto.connectionLost(None)
    assert h.value("exmilter_policy_connections") == 0


def test_pipelined_and_byte_by_byte(h):
    proto, t = h.connect()
    proto.dataReceived(rcpt_wire() + rcpt_wire("203.0.113.9", instance="i2"))
    assert t.value() == b"action=OK\n\n" + DENIED
    t.clear()
    for b in rcpt_wire(instance="i3"):
        proto.dataReceived(bytes([b]))
    assert t.value() == b"action=OK\n\n"


def test_resent_request_answered_same_and_counted_once(h):
    proto, t = h.connect()
    proto.dataReceived(rcpt_wire())
    proto2, t2 = h.connect()  # Postfix reconnects after a timeout and sends it again
    proto2.dataReceived(rcpt_wire())
    assert t.value() == t2.value() == b"action=OK\n\n"
    assert h.value("exmilter_policy_decisions_total", connector=RELAY, stage="RCPT", code="250") == 1
    assert h.value("exmilter_policy_duplicate_requests_total", stage="RCPT") == 1
    assert h.value("exmilter_policy_requests_total", stage="RCPT") == 2


@pytest.mark.parametrize(
    "data",
    [
        b"x" * 300,
        b"a=" + b"b" * 300 + b"\n\n",
        b"".join(b"a%d=1\n" % i for i in range(17)) + b"\n",
        b"garbage\n\n",
        b"recipient=\xff\n\n",
    ],
    ids=["unterminated", "oversize-line", "too-many-attributes", "garbage", "non-utf8"],
)
def test_malformed_input_closes_only_that_connection(h, data):
    proto, t = h.connect()
    proto.dataReceived(data)
    assert t.value() == b""
    assert t.disconnecting
    assert h.value("exmilter_policy_protocol_errors_total") == 1
    proto.dataReceived(rcpt_wire())  # anything after is ignored
    assert t.value() == b""
    other, t2 = h.connect()
    other.dataReceived(rcpt_wire())
    assert t2.value() == b"action=OK\n\n"


def test_requests_before_the_bad_input_are_answered(h):
    proto, t = h.connect()
    proto.dataReceived(rcpt_wire() + b"garbage\n\n")
    assert t.value() == b"action=OK\n\n"
    assert t.disconnecting


def test_exception_while_deciding_closes_without_answer(h, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("bug")

    monkeypatch.setattr(h.runtime.decider, "decide", boom)
    proto, t = h.connect()
    proto.dataReceived(rcpt_wire() + rcpt_wire())
    assert t.value() == b""
    assert t.disconnecting
    assert h.value("exmilter_policy_internal_errors_total") == 1


def test_refusals_and_resends_are_logged_one_line_each(h, logged):
    proto, t = h.connect()
    proto.dataReceived(rcpt_wire() + rcpt_wire("203.0.113.9", instance="i2"))  # OK (not logged), refused
    again, t2 = h.connect()
    again.dataReceived(rcpt_wire("203.0.113.9", instance="i2"))  # Postfix re-sent it on a new connection
    assert t.value() == b"action=OK\n\n" + DENIED
    assert t2.value() == DENIED
    lines = decisions(logged)
    assert decision_lines(lines) == [
        "c1.2 RCPT client=203.0.113.9 connector='EXCH01\\\\Default Frontend EXCH01' from=<> to=<x@gmail.com>: "
        + RELAY_554,
        "c2.1 RCPT client=203.0.113.9 connector='EXCH01\\\\Default Frontend EXCH01' from=<> to=<x@gmail.com>: "
        + RELAY_554
        + " (re-sent request, same answer)",
    ]
    for e in lines:  # ordinary events: any twisted.logger observer renders the same text
        assert e["log_level"] is LogLevel.info
        assert e["log_namespace"] == "exmilter.policyd"
        assert formatEvent(e) == message(e[EVENT_KEY])


def test_unplaceable_request_logged_with_its_note(h, logged):
    proto, t = h.connect()
    proto.dataReceived(rcpt_wire().replace(b"policy_context=*:25", b"policy_context=Internet"))
    assert t.value() == b"action=451 4.3.5 Server configuration problem\n\n"
    assert decision_lines(logged) == [
        "c1.1 RCPT client=10.83.4.56 connector='-' from=<> to=<x@gmail.com>: 451 4.3.5 Server configuration "
        "problem (unusable policy_context 'Internet': 'Internet' is not a listener context "
        "(forms: *:25, 10.1.1.1:25, [::1]:25))"
    ]


def test_verbose_logs_accepted_decisions_too(h, logged):
    h.runtime.verbose = True
    proto, _ = h.connect()
    proto.dataReceived(rcpt_wire())
    assert decision_lines(logged) == [
        "c1.1 RCPT client=10.83.4.56 connector='EXCH01\\\\Relay' from=<> to=<x@gmail.com>: OK"
    ]


def test_idle_connection_is_closed(h):
    proto, t = h.connect()
    idle = proto.idle_timeout
    assert idle == 1200  # the default: above Postfix's max_ttl (docs/policyd.md, Limits)
    h.reactor.advance(idle - 1)
    proto.dataReceived(rcpt_wire())  # an answered request restarts it
    h.reactor.advance(idle - 1)
    assert not t.disconnecting
    h.reactor.advance(2)
    assert t.disconnecting
    assert h.value("exmilter_policy_timeouts_total", kind="idle") == 1


# -- answers written straight to the socket ------------------------------------------------------


class SocketTransport(StringTransport):
    """A StringTransport whose getHandle() is a real socket, like tcp.Connection's."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock

    def getHandle(self) -> socket.socket:
        return self.sock


class ShortSocket(socket.socket):
    """Takes at most ``limit`` bytes per send, or raises ``error``."""

    limit = 5
    error: OSError | None = None

    def send(self, data: bytes, flags: int = 0) -> int:  # type: ignore[override]  # bytes only here
        if self.error is not None:
            raise self.error
        return super().send(data[: self.limit], flags)


def connect_socket(h: Harness, sock: socket.socket) -> tuple[object, SocketTransport]:
    proto = h.factory.buildProtocol(None)
    transport = SocketTransport(sock)
    proto.makeConnection(transport)
    return proto, transport


def recv_all(sock: socket.socket) -> bytes:
    sock.setblocking(False)
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return b""


def test_answers_go_straight_to_the_socket(h):
    ours, peer = socket.socketpair()
    with ours, peer:
        proto, t = connect_socket(h, ours)
        proto.dataReceived(rcpt_wire())
        proto.dataReceived(rcpt_wire("203.0.113.9", instance="i2") + rcpt_wire(instance="i3"))
        assert recv_all(peer) == b"action=OK\n\n" + DENIED + b"action=OK\n\n"
        assert t.value() == b""  # nothing queued in Twisted


def test_a_short_send_hands_the_rest_and_everything_after_to_twisted(h):
    a, peer = socket.socketpair()
    ours = ShortSocket(fileno=a.detach())
    with ours, peer:
        proto, t = connect_socket(h, ours)
        proto.dataReceived(rcpt_wire())
        assert recv_all(peer) == b"actio"
        assert t.value() == b"n=OK\n\n"  # the rest, in order, through transport.write
        ShortSocket.limit = 1000
        try:
            proto.dataReceived(rcpt_wire(instance="i2"))
        finally:
            ShortSocket.limit = 5
        assert recv_all(peer) == b""  # never around bytes Twisted still holds
        assert t.value() == b"n=OK\n\naction=OK\n\n"


@pytest.mark.parametrize("error", [BlockingIOError(11, "EAGAIN"), BrokenPipeError(32, "EPIPE")])
def test_a_send_error_leaves_the_answer_to_twisted(h, error):
    a, peer = socket.socketpair()
    ours = ShortSocket(fileno=a.detach())
    ours.error = error
    with ours, peer:
        proto, t = connect_socket(h, ours)
        proto.dataReceived(rcpt_wire())
        assert t.value() == b"action=OK\n\n"
        assert recv_all(peer) == b""


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=120) | st.sampled_from([rcpt_wire(), b"\n", b"=\n", b"a=b\n"]), max_size=8))
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
    proto.dataReceived(rcpt_wire(instance="a"))
    assert t.value() == b"action=OK\n\n"
    h.path.write_text(CONFIG_FILE.replace("10.83.4.56", "10.83.4.99"))
    result = []
    h.runtime.reload().addCallback(result.append)
    assert result == [True]
    assert h.runtime.current.number == 2
    t.clear()
    proto.dataReceived(rcpt_wire(instance="b"))
    assert t.value() == DENIED
    assert h.value("exmilter_config_reloads_total") == 1
    assert h.value("exmilter_config_reload_failures_total") == 0
    assert h.value("exmilter_config_generation") == 2
    fingerprint = h.runtime.current.fingerprint
    assert fingerprint and h.value("exmilter_config_info", source=str(h.path), fingerprint=fingerprint) == 1
    assert h.notes == ["RELOADING=1", "READY=1"]


@pytest.mark.parametrize("bad", ["server: [", "receive_connectors: 3\n", "", "\xff"])
def test_bad_reload_keeps_old_configuration(h, bad):
    old = h.runtime.current
    h.path.write_text(CONFIG_FILE + bad if bad != "" else "")
    result = []
    h.runtime.reload().addCallback(result.append)
    assert result == [False]
    assert h.runtime.current is old
    proto, t = h.connect()
    proto.dataReceived(rcpt_wire())
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


def defer_blocking_calls(h: Harness) -> list[defer.Deferred]:
    """Reload's blocking load waits until the test fires its Deferred (one per call, in order)."""
    pending: list[defer.Deferred] = []

    def later(f, *a):
        d = defer.Deferred()
        pending.append(d)
        d.addCallback(lambda _: f(*a))
        return d

    h.runtime._run_blocking = later
    return pending


def test_reloads_while_one_runs_collapse_into_one_more(h):
    pending = defer_blocking_calls(h)
    h.runtime.reload()
    h.runtime.reload()
    h.runtime.reload()
    assert len(pending) == 1
    pending[0].callback(None)
    assert len(pending) == 2  # exactly one queued reload started
    pending[1].callback(None)
    assert h.runtime.current.number == 3


def test_exception_in_swap_ends_the_reload_and_keeps_the_old_generation(h, logged, monkeypatch):
    old = h.runtime.current

    def broken(result):
        raise RuntimeError("bug while swapping")

    monkeypatch.setattr(h.runtime, "_swap", broken)
    result = []
    h.runtime.reload().addBoth(result.append)
    assert result == [False]
    assert h.runtime.current is old  # the generation in use is the very same object: nothing swapped
    assert h.runtime._reloading is None
    assert h.notes == ["RELOADING=1", "READY=1"]
    assert h.value("exmilter_config_reload_failures_total") == 1
    assert h.value("exmilter_config_last_reload_successful") == 0
    failures = [e for e in logged if "log_failure" in e]
    assert [formatEvent(e) for e in failures] == ["reload failed: unexpected error"]
    assert failures[0]["log_failure"].check(RuntimeError)
    assert "keeping configuration generation 1" in texts(logged)
    proto, t = h.connect()
    proto.dataReceived(rcpt_wire())
    assert t.value() == b"action=OK\n\n"  # still serving on the old configuration

    monkeypatch.undo()
    h.path.write_text(CONFIG_FILE.replace("10.83.4.56", "10.83.4.99"))
    result.clear()
    h.runtime.reload().addBoth(result.append)  # the next reload runs
    assert result == [True]
    assert h.runtime.current.number == 2
    assert h.notes == ["RELOADING=1", "READY=1", "RELOADING=1", "READY=1"]


def test_exception_after_the_swap_reports_the_generation_in_use(h, logged, monkeypatch):
    def broken(generation, source, **_):
        raise RuntimeError("metrics bug")

    monkeypatch.setattr(h.runtime.metrics, "config_loaded", broken)
    result = []
    h.runtime.reload().addBoth(result.append)
    assert result == [False]
    assert h.runtime.current.number == 2
    assert h.runtime._reloading is None
    assert "configuration generation 2 is in use" in texts(logged)


def test_exception_while_refusing_a_bad_file_ends_the_reload(h, logged, monkeypatch):
    monkeypatch.setattr(h.runtime, "_refused", lambda failure: 1 / 0)
    h.path.write_text("server: [")
    result = []
    h.runtime.reload().addBoth(result.append)
    assert result == [False]
    assert h.runtime.current.number == 1
    assert h.runtime._reloading is None
    assert "keeping configuration generation 1" in texts(logged)


def test_queued_reload_runs_after_a_failed_one(h, monkeypatch):
    pending = defer_blocking_calls(h)
    calls = []

    def swap_once_broken(result):
        calls.append(result)
        if len(calls) == 1:
            raise RuntimeError("bug")
        return Runtime._swap(h.runtime, result)

    monkeypatch.setattr(h.runtime, "_swap", swap_once_broken)
    h.runtime.reload()
    h.runtime.reload()  # SIGHUP during the reload: queued
    pending[0].callback(None)
    assert h.runtime.current.number == 1
    assert len(pending) == 2  # the queued reload started despite the exception
    pending[1].callback(None)
    assert h.runtime.current.number == 2
    assert h.runtime._reloading is None


# -- metrics off ----------------------------------------------------------------------------------


class _Untouchable(NullMetrics):
    """Metrics off, and any per-request use would raise."""

    def request(self, state: str) -> None:
        raise AssertionError("request() called with metrics off")

    def duplicate(self, state: str) -> None:
        raise AssertionError("duplicate() called with metrics off")

    def decision(self, connector: str, stage: str, code: str) -> None:
        raise AssertionError("decision() called with metrics off")

    latency = property(lambda self: pytest.fail("latency used with metrics off"))


def test_metrics_off_answers_the_same_and_records_nothing(tmp_path, monkeypatch):
    path = tmp_path / "exmilter.yaml"
    path.write_text(CONFIG_FILE)
    h = Harness(path, _Untouchable())
    assert not h.factory.metered
    monkeypatch.setattr(connection.time, "perf_counter", lambda: pytest.fail("timed a decision with metrics off"))
    proto, t = h.connect()
    proto.dataReceived(rcpt_wire() + rcpt_wire("203.0.113.9", instance="i2"))
    proto2, t2 = h.connect()
    proto2.dataReceived(rcpt_wire())  # a re-send
    assert t.value() == b"action=OK\n\n" + DENIED
    assert t2.value() == b"action=OK\n\n"
    proto.dataReceived(b"garbage\n\n")
    assert t.disconnecting
    proto.connectionLost(None)
    h.path.write_text(CONFIG_FILE.replace("10.83.4.56", "10.83.4.99"))
    result = []
    h.runtime.reload().addCallback(result.append)
    assert result == [True]
    assert h.runtime.metrics.registry is None  # nothing to serve


def test_metrics_off_builds_no_metrics_listener(tmp_path):
    path = tmp_path / "exmilter.yaml"
    path.write_text(CONFIG_FILE)
    h = Harness(path, NullMetrics())
    reactor = MemoryReactorClock()
    daemon = build(reactor, h.runtime, ["tcp:10040"], None, notify=lambda m: None, signals=False)
    daemon.top.startService()
    assert daemon.metrics is None
    assert [p[0] for p in reactor.tcpServers] == [10040]
    with pytest.raises(ValueError, match=r"^metrics endpoint 'tcp:9142' given, but metrics are disabled$"):
        build(MemoryReactorClock(), h.runtime, ["tcp:10040"], "tcp:9142", notify=lambda m: None, signals=False)


def test_command_chooses_metrics():
    assert isinstance(choose_metrics(False), NullMetrics)
    on = choose_metrics(True)
    assert isinstance(on, PolicyMetrics) and on.enabled
    assert on.registry.get_sample_value("exmilter_config_last_reload_successful") == 1


# -- the log observer -------------------------------------------------------------------------------


def _observed(verbose: bool, *emit) -> str:
    out = io.StringIO()
    observer = StderrObserver(out, log_levels(verbose))
    globalLogPublisher.addObserver(observer)
    try:
        for e in emit:
            e()
    finally:
        globalLogPublisher.removeObserver(observer)
    return out.getvalue()


def _stamp_free(text: str) -> list[str]:
    """The lines with their timestamp checked against Twisted's formatTime and removed."""
    out = []
    for line in text.splitlines():
        if line.startswith("\t"):
            out.append(line)
            continue
        stamp, rest = line.split(" ", 1)
        assert stamp == formatTime(time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")))
        out.append(rest)
    return out


#: The daemon's sink: typed events published in its namespace.
emit = twisted_sink(Logger(namespace="exmilter.policyd"))


def refusal(sender: str) -> ev.PolicyDecision:
    return ev.PolicyDecision(1, 2, "RCPT", "", "1.2.3.4", sender, "", "", "", "550 5.7.54 x", None, "", False)


def test_observer_writes_typed_events_without_a_format_string():
    before = time.time()
    text = _observed(False, lambda: emit(refusal("{not a format}")))
    after = time.time()
    assert _stamp_free(text) == [
        "[exmilter.policyd#info] c1.2 RCPT client=1.2.3.4 connector='-' from=<{not a format}> to=<>: 550 5.7.54 x"
    ]
    assert text.split(" ", 1)[0] in {formatTime(before), formatTime(after)}


def test_observer_renders_other_events_like_twisteds_text_observer():
    log = Logger(namespace="exmilter.test")
    try:
        raise ValueError("broken")
    except ValueError:
        failure = Failure()
    text = _observed(
        False,
        lambda: log.info("generation {n} loaded", n=2),
        lambda: log.debug("hidden {x}", x=1),
        lambda: log.warn("restart to apply"),
        lambda: log.failure("reload failed", failure),
        lambda: emit(ev.ReloadRefused("two\nlines")),
    )
    lines = _stamp_free(text)
    assert lines[:2] == ["[exmilter.test#info] generation 2 loaded", "[exmilter.test#warn] restart to apply"]
    assert lines[2] == "[exmilter.test#critical] reload failed"
    assert lines[3] == "\tTraceback (most recent call last):"
    # the traceback's own last newline leaves an empty continuation line, as textFileLogObserver did
    assert lines[-4:] == [
        "\tbuiltins.ValueError: broken",
        "\t",
        "[exmilter.policyd#error] reload refused: two",
        "\tlines",
    ]
    assert all(line.startswith("\t") for line in lines[3:-2])


def test_observer_levels():
    log = Logger(namespace="exmilter.test")
    quiet = _observed(False, lambda: log.debug("d"), lambda: log.info("i"), lambda: log.error("e"))
    loud = _observed(True, lambda: log.debug("d"), lambda: log.info("i"), lambda: log.error("e"))
    assert _stamp_free(quiet) == ["[exmilter.test#info] i", "[exmilter.test#error] e"]
    assert _stamp_free(loud) == ["[exmilter.test#debug] d", "[exmilter.test#info] i", "[exmilter.test#error] e"]


def test_observer_formats_the_time_once_per_second(monkeypatch):
    out = io.StringIO()
    observer = StderrObserver(out, log_levels(False))
    calls = []
    real = time.strftime
    monkeypatch.setattr(time, "strftime", lambda *a: calls.append(a) or real(*a))
    for t in (1_800_000_000.1, 1_800_000_000.9, 1_800_000_001.0):
        observer({"log_level": LogLevel.info, "log_namespace": "n", "log_time": t, EVENT_KEY: ev.ConfigWarning("x")})
    assert len(calls) == 2
    assert [line.split(" ", 1)[0] for line in out.getvalue().splitlines()] == [
        formatTime(1_800_000_000),
        formatTime(1_800_000_000),
        formatTime(1_800_000_001),
    ]


# -- service tree -------------------------------------------------------------------------------


def test_build_listens_everywhere_then_notifies_ready(h, tmp_path):
    reactor = MemoryReactorClock()
    notes: list[str] = []
    sock = str(tmp_path / "policy.sock")
    daemon = build(
        reactor,
        h.runtime,
        ["tcp:10040:interface=127.0.0.1", f"unix:{sock}:mode=660"],
        "tcp:9142:interface=127.0.0.1",
        notify=notes.append,
        signals=False,
    )
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
    good.write_text(CONFIG_FILE)
    assert main(["policyd", "-c", str(good), "--listen", "nonsense:1", "--metrics", "none"]) == 2
    assert "nonsense:1" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_smoke_real_daemon(tmp_path):
    """Start the command, answer over TCP, reload on SIGHUP, stop on SIGTERM with status 0."""
    cfg = tmp_path / "exmilter.yaml"
    cfg.write_text(CONFIG_FILE + private_logs(tmp_path))
    port = _free_port()
    notify = tmp_path / "notify"
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(str(notify))
    ns.settimeout(15)
    env = dict(os.environ, NOTIFY_SOCKET=str(notify))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exmilter.cli",
            "policyd",
            "-c",
            str(cfg),
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--metrics",
            "none",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert ns.recv(200).startswith(b"READY=1")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(rcpt_wire() + rcpt_wire("203.0.113.9", instance="z"))
            got = b""
            while got.count(b"\n\n") < 2:
                got += c.recv(4096)
            assert got == b"action=OK\n\n" + DENIED
            cfg.write_text("server: [")
            proc.send_signal(signal.SIGHUP)
            assert ns.recv(200) == b"RELOADING=1"
            assert ns.recv(200) == b"READY=1"
            c.sendall(rcpt_wire(instance="y"))
            assert c.recv(4096) == b"action=OK\n\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        err = proc.stderr.read().decode()
        assert "reload refused" in err and "keeping configuration generation 1" in err
        refusals = [line.split(" ", 1)[1] for line in err.splitlines() if " c1." in line]
        assert refusals == [
            "[exmilter.policyd#info] c1.2 RCPT client=203.0.113.9 "
            "connector='EXCH01\\\\Default Frontend EXCH01' from=<> to=<x@gmail.com>: " + RELAY_554
        ]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ns.close()


def test_command_exits_1_when_a_listener_cannot_bind(tmp_path):
    cfg = tmp_path / "exmilter.yaml"
    cfg.write_text(CONFIG_FILE + private_logs(tmp_path))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "exmilter.cli",
                "policyd",
                "-c",
                str(cfg),
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                "--metrics",
                "none",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert r.returncode == 1
    assert "cannot start" in r.stderr and "Address already in use" in r.stderr
