"""The policy daemon's bounds without sockets: unsent answers, work per turn, request and
idle deadlines, the connection cap, and escaping of request text in the logs.

The same bounds against the kernel (a client that never reads, a slow drip, the N+1th
connection) are in tests/test_policy_abuse.py.
"""

from __future__ import annotations

import io
import resource
import socket
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from twisted.internet import defer
from twisted.internet.abstract import FileDescriptor
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher

from exmilter.config import ConfigError, load, loads
from exmilter.deployment import plan_listeners
from exmilter.limits import LOG_VALUE_MAX as MAX_VALUE
from exmilter.limits import POLICY_FD_RESERVE as FD_RESERVE
from exmilter.limits import POLICY_MAX_REQUESTS_PER_TURN as MAX_REQUESTS_PER_TURN
from exmilter.limits import POLICY_OUTPUT_BUFFER as OUTPUT_BUFFER
from exmilter.limits import POLICY_REFUSAL_LOG_INTERVAL as REFUSAL_LOG_INTERVAL
from exmilter.logs import events as ev
from exmilter.logs.escape import escape, printable_lines
from exmilter.logs.text import message
from exmilter.logs.twistedlog import EVENT_KEY, StderrObserver, log_levels
from exmilter.policy import limits
from exmilter.policy.connection import PolicyProtocol
from exmilter.policy.factory import PolicyFactory
from exmilter.policy.limits import connection_cap, postfix_connections, raise_open_files_limit
from exmilter.policy.metrics import PolicyMetrics
from exmilter.policy.reload import Runtime
from exmilter.postfix.listeners import connection_limits
from tests.conftest import EXAMPLE, SERVER, org_from
from tests.policy_fixtures import CONNECTORS, RELAY_554, answer, rcpt_wire

OK = answer("OK")
DENIED = answer(RELAY_554)


def config(**policyd: object) -> str:
    """The shared test configuration with these ``policyd`` settings (small framing limits)."""
    settings = {"max_line_length": 256, "max_attributes": 16, **policyd}
    return SERVER + CONNECTORS + "policyd:\n" + "".join(f"  {k}: {v}\n" for k, v in settings.items())


class Transport(StringTransport):
    """Records abortConnection() (closing now, unsent bytes dropped) apart from loseConnection()."""

    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class Harness:
    """The daemon's factory on a memory reactor; connections on StringTransports."""

    def __init__(self, path: Path, fd_limit: int | None = 1 << 20) -> None:
        self.path = path
        self.registry = CollectorRegistry()
        self.runtime = Runtime(
            str(path),
            load(path),
            PolicyMetrics(self.registry),
            run_blocking=lambda f, *a: defer.maybeDeferred(f, *a),
            fd_limit=lambda: fd_limit,
        )
        self.reactor = MemoryReactorClock()
        self.factory = PolicyFactory(self.runtime, self.reactor)

    def connect(self, transport: StringTransport | None = None) -> tuple[PolicyProtocol, Transport]:
        proto = self.factory.buildProtocol(None)
        assert proto is not None, "refused"
        t = transport or Transport()
        proto.makeConnection(t)
        return proto, t

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def harness(tmp_path: Path, **policyd: object) -> Harness:
    path = tmp_path / "exmilter.yaml"
    path.write_text(config(**policyd))
    return Harness(path)


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return harness(tmp_path, max_connections=3, request_timeout=5, idle_timeout=60)


@pytest.fixture
def logged() -> list[dict]:
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def lines(events: list[dict]) -> list[str]:
    """What the daemon's own log observer writes for these events, without the timestamps."""
    out = io.StringIO()
    observer = StderrObserver(out, log_levels(True))
    for e in events:
        observer(e)
    return [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]


# -- configuration ----------------------------------------------------------------------------------


def test_defaults_and_settings(tmp_path):
    default = loads(SERVER + CONNECTORS).organization.policyd
    assert (default.max_connections, default.request_timeout, default.idle_timeout) == (None, 10, 1200)
    org = loads(config(max_connections="auto", request_timeout=30, idle_timeout=400)).organization.policyd
    assert (org.max_connections, org.request_timeout, org.idle_timeout) == (None, 30, 400)
    assert loads(config(max_connections=250)).organization.policyd.max_connections == 250


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("max_connections", "lots", "policyd.max_connections: 'lots' is not an integer (or auto)"),
        ("max_connections", 0, "policyd.max_connections: 0 is out of range 1-10000000 (or auto)"),
        ("request_timeout", 0, "policyd.request_timeout: 0 is out of range 1-3600"),
        ("idle_timeout", 5, "policyd.idle_timeout: 5 is out of range 10-86400"),
    ],
)
def test_bad_settings_are_located_errors(key, value, problem):
    with pytest.raises(ConfigError) as e:
        loads(config(**{key: value}), "exmilter.yaml")
    line = config(**{key: value}).splitlines().index(f"  {key}: {value}") + 1
    assert f"exmilter.yaml:{line}:{len(key) + 5}: {problem}" in [str(p) for p in e.value.problems]


# -- (a) unsent answers and work per turn --------------------------------------------------------------


def test_the_bound_on_unsent_answers_is_twisteds_write_buffer():
    """The protocol relies on Twisted pausing its producer above bufferSize; say so if it changes."""
    assert FileDescriptor.bufferSize == OUTPUT_BUFFER


def test_the_protocol_is_its_transports_streaming_producer(h):
    proto, t = h.connect()
    assert t.producer is proto and t.streaming


def test_unsent_answers_pause_reading_until_they_are_written(h, logged):
    proto, t = h.connect()
    proto.pauseProducing()  # what Twisted does when over bufferSize of answers wait unsent
    assert t.producerState == "paused"
    assert h.value("exmilter_policy_read_pauses_total", reason="unsent_answers") == 1
    proto.resumeProducing()  # Twisted: everything written
    assert t.producerState == "producing"
    proto.pauseProducing()
    proto.resumeProducing()
    assert h.value("exmilter_policy_read_pauses_total", reason="unsent_answers") == 2
    assert lines(logged) == [
        "[exmilter.policyd#info] c1: the client is not reading its answers "
        "(over 64 KiB unsent): reading paused until it does"
    ]  # once per connection


def pipelined(n: int) -> bytes:
    return b"".join(rcpt_wire(instance=f"i{i}") for i in range(n))


def test_a_pipelined_read_is_answered_one_batch_per_reactor_turn(h, logged):
    n = 2 * MAX_REQUESTS_PER_TURN + 5
    proto, t = h.connect()
    other, t2 = h.connect()
    proto.dataReceived(pipelined(n))
    assert t.value() == OK * MAX_REQUESTS_PER_TURN
    assert t.producerState == "paused"  # no more input until the backlog is answered
    other.dataReceived(rcpt_wire("203.0.113.9", instance="other"))  # another connection's turn comes in between
    assert t2.value() == DENIED
    h.reactor.advance(0)  # a memory reactor runs each turn's follow-up at once: both batches
    assert t.value() == OK * n
    assert t.producerState == "producing"
    assert h.value("exmilter_policy_read_pauses_total", reason="pipelined_requests") == 2
    assert lines(logged)[:1] == [
        f"[exmilter.policyd#info] c1: more than {MAX_REQUESTS_PER_TURN} requests in one read: answered "
        f"{MAX_REQUESTS_PER_TURN} per reactor turn, reading paused meanwhile"
    ]


def test_the_next_batch_waits_for_unsent_answers(h):
    proto, t = h.connect()
    proto.dataReceived(pipelined(MAX_REQUESTS_PER_TURN + 3))
    proto.pauseProducing()
    h.reactor.advance(0)
    h.reactor.advance(0)
    assert t.value() == OK * MAX_REQUESTS_PER_TURN  # nothing more answered while the client does not read
    proto.resumeProducing()
    assert t.producerState == "paused"  # still a backlog: it is answered first
    h.reactor.advance(0)
    assert t.value() == OK * (MAX_REQUESTS_PER_TURN + 3)
    assert t.producerState == "producing"


def test_a_partial_request_after_a_batch_is_completed_later(h):
    proto, t = h.connect()
    data = pipelined(MAX_REQUESTS_PER_TURN + 1) + b"protocol_state=RC"
    proto.dataReceived(data)
    h.reactor.advance(0)
    assert t.value() == OK * (MAX_REQUESTS_PER_TURN + 1)
    assert t.producerState == "producing"
    proto.dataReceived(b"PT\n\n")
    assert t.value().endswith(answer("451 4.3.5 Server configuration problem"))


class SocketTransport(Transport):
    """A StringTransport whose getHandle() is a real socket, like tcp.Connection's."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock

    def getHandle(self) -> socket.socket:
        return self.sock


def test_straight_socket_writes_resume_once_twisted_has_written_everything(h):
    ours, peer = socket.socketpair()
    with ours, peer:
        proto, t = h.connect(SocketTransport(ours))
        proto._socket = None  # as after a short send: answers go through Twisted
        proto.dataReceived(rcpt_wire())
        assert t.value() == OK
        proto.pauseProducing()
        proto.resumeProducing()  # Twisted's buffer is empty: writing straight is in order again
        proto.dataReceived(rcpt_wire(instance="i2"))
        assert t.value() == OK
        peer.setblocking(False)
        assert peer.recv(100) == OK


# -- (b) the request deadline and the idle timeout ---------------------------------------------------


def test_a_slow_drip_is_closed_at_the_request_deadline(h, logged):
    proto, t = h.connect()
    data = rcpt_wire()
    for i in range(5):  # one byte a second: bytes do not extend the deadline
        proto.dataReceived(data[i : i + 1])
        h.reactor.advance(0.99)
    assert not t.disconnecting
    h.reactor.advance(0.06)
    assert t.disconnecting and t.aborted
    assert t.producer is None
    assert h.value("exmilter_policy_timeouts_total", kind="request") == 1
    assert lines(logged)[-1] == "[exmilter.policyd#warn] c1: request incomplete after 5s; closing"


def test_each_request_has_its_own_deadline(h):
    proto, t = h.connect()
    a, b = rcpt_wire(instance="a"), rcpt_wire(instance="b")
    proto.dataReceived(a[:10])
    h.reactor.advance(4)
    proto.dataReceived(a[10:] + b[:10])  # the first completes, the second starts now
    h.reactor.advance(4)
    assert not t.disconnecting
    proto.dataReceived(b[10:])
    h.reactor.advance(30)  # complete: no deadline runs
    assert not t.disconnecting
    assert t.value() == OK * 2


def test_whole_requests_never_start_a_deadline(h):
    proto, t = h.connect()
    for i in range(10):
        proto.dataReceived(rcpt_wire(instance=str(i)))
        h.reactor.advance(4)
    assert not t.disconnecting
    assert h.reactor.getDelayedCalls() == [proto._idle]  # the idle timer only


def test_bytes_without_a_complete_request_do_not_restart_the_idle_timeout(tmp_path):
    h = harness(tmp_path, request_timeout=3600, idle_timeout=60)
    proto, t = h.connect()
    proto.dataReceived(rcpt_wire())
    h.reactor.advance(50)
    proto.dataReceived(b"p")  # a byte, no request
    h.reactor.advance(10)
    assert t.disconnecting and t.aborted
    assert h.value("exmilter_policy_timeouts_total", kind="idle") == 1


def test_a_client_that_never_reads_the_last_answers_is_dropped_after_the_close(h, logged):
    proto, t = h.connect()
    proto.dataReceived(rcpt_wire() + b"garbage\n\n")
    assert t.value() == OK
    assert t.disconnecting and not t.aborted  # answers already due are written first
    assert t.producer is None  # a paused producer would hold the close in Twisted
    h.reactor.advance(5)
    assert t.aborted
    assert h.value("exmilter_policy_timeouts_total", kind="close") == 1
    proto.connectionLost(None)
    assert h.reactor.getDelayedCalls() == []


def test_connection_lost_cancels_every_timer(h):
    proto, _ = h.connect()
    proto.dataReceived(pipelined(MAX_REQUESTS_PER_TURN + 1) + b"x")
    assert len(h.reactor.getDelayedCalls()) == 3  # idle, request deadline, next batch
    proto.connectionLost(None)
    assert h.reactor.getDelayedCalls() == []
    assert h.value("exmilter_policy_connections") == 0


# -- (c) the connection cap ----------------------------------------------------------------------------


def test_connections_above_the_cap_are_refused_at_once(h, logged):
    assert h.value("exmilter_policy_max_connections") == 3
    conns = [h.connect() for _ in range(3)]
    assert h.factory.buildProtocol(None) is None  # Twisted closes the socket at once
    assert h.value("exmilter_policy_refused_connections_total") == 1
    assert lines(logged)[-1] == (
        "[exmilter.policyd#warn] refused 1 policy connection(s): 3 open, the limit is 3 "
        "(policyd.max_connections); Postfix retries, then answers its default_action (451 4.3.5)"
    )
    conns[0][0].connectionLost(None)
    proto, t = h.connect()  # room again
    proto.dataReceived(rcpt_wire())
    assert t.value() == OK


def test_refusals_are_logged_once_per_interval_with_their_count(h, logged):
    for _ in range(3):
        h.connect()
    for _ in range(5):
        assert h.factory.buildProtocol(None) is None
    refusals = [line for line in lines(logged) if "refused" in line]
    assert len(refusals) == 1 and "refused 1 " in refusals[0]
    h.reactor.advance(REFUSAL_LOG_INTERVAL)
    refusals = [line for line in lines(logged) if "refused" in line]
    assert len(refusals) == 2 and "refused 4 " in refusals[1]
    h.reactor.advance(REFUSAL_LOG_INTERVAL)  # nothing refused since: no line, the timer stops
    assert len([line for line in lines(logged) if "refused" in line]) == 2
    assert h.factory._refusal_line is None
    assert h.value("exmilter_policy_refused_connections_total") == 5


def test_a_reload_changes_the_cap_for_new_connections(h, logged):
    for _ in range(3):
        h.connect()
    h.path.write_text(config(max_connections=4))
    result: list[bool] = []
    h.runtime.reload().addCallback(result.append)
    assert result == [True]
    assert h.value("exmilter_policy_max_connections") == 4
    assert "[exmilter.policyd#info] accepting up to 4 policy connections (policyd.max_connections)" in lines(logged)
    h.connect()
    assert h.factory.buildProtocol(None) is None


# -- the default cap: what the rendered Postfix can open -------------------------------------------------


def rendered_total(org) -> int | None:
    """Σ maxproc of the services render-postfix writes (None: one is unlimited)."""
    totals = [connection_limits(p, org).total for p in plan_listeners(org)]
    return None if 0 in totals else sum(totals)


EXACT_AND_WILD = """\
receive_connectors:
  - name: Wild
    transport_role: FrontendTransport
    usage: Custom
    bindings: [0.0.0.0:2525, "[::]:2525"]
    remote_ip_ranges: [10.0.0.0/8]
    max_inbound_connection: 7
  - name: Exact
    transport_role: FrontendTransport
    usage: Custom
    bindings: [10.0.0.5:2525]
    remote_ip_ranges: [192.168.0.0/16]
    max_inbound_connection: 11
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("default_connectors: true\n", 25000),  # five listeners of 5000
        (CONNECTORS, 40000),  # *:25 serves Default Frontend and Relay: 10000
        (EXACT_AND_WILD, 32),  # 10.0.0.5:2525 serves both (18), the server's other addresses Wild only (7 + 7)
        (EXACT_AND_WILD.replace("max_inbound_connection: 11", "max_inbound_connection: unlimited"), None),
    ],
    ids=["defaults", "fixture", "exact-and-wildcard", "unlimited"],
)
def test_postfix_connections_is_the_rendered_maxproc_total(text, expected):
    """Computed in linear time without the renderer's planning, and the same number."""
    org = org_from(text)
    assert postfix_connections(org) == rendered_total(org) == expected


def test_postfix_connections_of_the_example_configuration():
    org = load(EXAMPLE).organization
    assert postfix_connections(org) == rendered_total(org) == 40000


def test_a_listener_without_a_process_limit_leaves_the_open_files_limit():
    org = org_from(EXACT_AND_WILD.replace("max_inbound_connection: 7", "max_inbound_connection: unlimited"))
    assert postfix_connections(org) is None
    cap = connection_cap(org, 1024)
    assert cap.limit == 1024 - FD_RESERVE and not cap.clamped
    assert cap.reason == (
        f"auto: some listener has no process limit (maxproc 0); the open-files limit 1024 less {FD_RESERVE} kept free"
    )


@pytest.mark.parametrize(
    ("policyd", "fd_limit", "limit", "clamped", "reason"),
    [
        ("", 1 << 20, 27500, False, "auto: up to 25000 smtpd processes in the rendered master.cf (maxproc), plus 10 %"),
        (
            "",
            1024,
            960,
            True,
            "auto: up to 25000 smtpd processes in the rendered master.cf (maxproc), plus 10 % "
            "would be 27500, but the open-files limit is 1024 (64 kept free): raise LimitNOFILE",
        ),
        ("", None, 27500, False, "auto: up to 25000 smtpd processes in the rendered master.cf (maxproc), plus 10 %"),
        ("policyd:\n  max_connections: 40\n", 1024, 40, False, "policyd.max_connections"),
        (
            "policyd:\n  max_connections: 4000\n",
            1024,
            960,
            True,
            "policyd.max_connections would be 4000, but the open-files limit is 1024 (64 kept free): raise LimitNOFILE",
        ),
    ],
)
def test_connection_cap(policyd, fd_limit, limit, clamped, reason):
    cap = connection_cap(org_from("default_connectors: true\n" + policyd), fd_limit)
    assert (cap.limit, cap.clamped, cap.reason) == (limit, clamped, reason)


def test_small_totals_get_at_least_ten_spare_connections():
    org = org_from(
        EXACT_AND_WILD.replace("Wild", "W").replace('bindings: [0.0.0.0:2525, "[::]:2525"]', "bindings: [0.0.0.0:2626]")
    )
    assert postfix_connections(org) == 18
    assert connection_cap(org, None).limit == 28


def test_the_daemon_raises_its_soft_open_files_limit_to_the_hard_one(monkeypatch):
    limit = [1024, 524288]
    monkeypatch.setattr(resource, "getrlimit", lambda what: tuple(limit))
    monkeypatch.setattr(resource, "setrlimit", lambda what, value: limit.__setitem__(slice(None), value))
    assert raise_open_files_limit() == 524288
    assert limit == [524288, 524288]
    monkeypatch.setattr(limits.resource, "setrlimit", lambda what, value: (_ for _ in ()).throw(ValueError("no")))
    limit[:] = [1024, 4096]
    assert raise_open_files_limit() == 1024  # not allowed: the soft limit stays, and the cap follows it


# -- item 7: request text in the logs -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "logged"),
    [
        ("a@example.net", "a@example.net"),
        ("jörg@straße.de", "jörg@straße.de"),  # printable non-ASCII stays readable
        ("a\r\nb", "a\\r\\nb"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("nul\x00del\x7fc1\x85", "nul\\x00del\\x7fc1\\x85"),
        ("tab\there", "tab\\there"),
        ("rlo\u202eoverride\u2028sep\ufeff", "rlo\\u202eoverride\\u2028sep\\ufeff"),
        ("back\\slash\\x1b", "back\\\\slash\\\\x1b"),  # a literal backslash cannot pass for an escape
        ("surrogate\udcff", "surrogate\\udcff"),
        ("\U000e0001tag", "\\U000e0001tag"),
        ("x" * (MAX_VALUE + 7), "x" * MAX_VALUE + "…[+7]"),
        ("\x00" * (MAX_VALUE + 1), "\\x00" * MAX_VALUE + "…[+1]"),
    ],
)
def test_escape(value, logged):
    assert escape(value) == logged
    assert escape(value).isprintable()


def test_printable_lines_keeps_newlines_and_escapes_the_rest():
    assert printable_lines("one\ntwo\x1b[2J\tthree\\x") == "one\ntwo\\x1b[2J\\tthree\\x"
    assert printable_lines("plain") == "plain"


#: What a request can carry in its values: anything but LF, which ends the line (a line
#: without "=" then closes the connection); a CR alone returns a terminal to the line start.
HOSTILE = {
    "sender": "a@example.net\r2026-01-01T00:00:00+0000 [exmilter.policyd#info] c9.9 RCPT: OK",
    "recipient": "x@gmail.com\x1b]0;owned\x07\x1b[2J",
    "helo_name": "h\x00\x7f\x9b",
    "client_address": "203.0.113.9\x00",
    "policy_context": "*:25\x1b[1m",
}


def test_control_characters_from_a_request_never_reach_the_log(h, logged):
    proto, t = h.connect()
    base = {"request": "smtpd_access_policy", "protocol_state": "RCPT", "instance": "i1"}
    for attrs in (
        {**base, **HOSTILE},
        {**base, **HOSTILE, "client_address": "203.0.113.9", "policy_context": "*:25", "instance": "i2"},
    ):
        proto.dataReceived("".join(f"{k}={v}\n" for k, v in attrs.items()).encode() + b"\n")
    assert t.value() == answer("451 4.3.5 Server configuration problem") + answer("501 5.1.3 Invalid address")
    written = lines(logged)
    assert written == [
        "[exmilter.policyd#error] c1.1 RCPT client=203.0.113.9\\x00 connector='-' "
        "from=<a@example.net\\r2026-01-01T00:00:00+0000 [exmilter.policyd#info] c9.9 RCPT: OK> "
        "to=<x@gmail.com\\x1b]0;owned\\x07\\x1b[2J>: 451 4.3.5 Server configuration problem "
        "(unusable policy_context '*:25\\\\x1b[1m': '*:25\\\\x1b[1m' is not a listener context "
        "(forms: *:25, 10.1.1.1:25, [::1]:25))",
        "[exmilter.policyd#info] c1.2 RCPT client=203.0.113.9 connector='EXCH01\\\\Default Frontend EXCH01' "
        "from=<a@example.net\\r2026-01-01T00:00:00+0000 [exmilter.policyd#info] c9.9 RCPT: OK> "
        "to=<x@gmail.com\\x1b]0;owned\\x07\\x1b[2J>: 501 5.1.3 Invalid address",
    ]
    for e in logged:
        assert message(e[EVENT_KEY]).isprintable()  # what any other observer of the events gets, too
    logged.clear()
    proto.dataReceived(b"\x1b[2J\x00=\x07\n\n")  # a bad name: the connection closes, the error is logged
    assert lines(logged) == [
        "[exmilter.policyd#warn] c1: not a name=value attribute: bad name '\\\\x1b[2J\\\\x00'; closing the connection"
    ]


def test_the_log_observer_escapes_whatever_an_event_carries():
    """A second guard: text formatted elsewhere (an exception message, a traceback) cannot
    inject a line or an escape sequence either; newlines become continuation lines."""
    out = io.StringIO()
    observer = StderrObserver(out, log_levels(False))
    from twisted.logger import LogLevel

    observer(
        {
            "log_level": LogLevel.info,
            "log_namespace": "n",
            "log_time": 0.0,
            EVENT_KEY: ev.ConfigWarning("a\x1b[2Jb\nc\rd"),
        }
    )
    observer(
        {
            "log_level": LogLevel.warn,
            "log_namespace": "n",
            "log_time": 0.0,
            "log_format": "bad {x}",
            "x": "\x00\x1b]0;t\x07",
        }
    )
    observer(
        {
            "log_level": LogLevel.error,
            "log_namespace": "n",
            "log_time": 0.0,
            "log_format": "multi {x}",
            "x": "line\nnext\x1b[0m",
        }
    )
    assert [line.split(" ", 1)[-1] for line in out.getvalue().splitlines()] == [
        "[n#info] a\\x1b[2Jb",
        "\tc\\rd",
        "[n#warn] bad \\x00\\x1b]0;t\\x07",
        "[n#error] multi line",
        "\tnext\\x1b[0m",
    ]
