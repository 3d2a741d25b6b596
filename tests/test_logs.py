"""Typed log events (exmilter.logs): every kind has a severity and a text line, the line is
today's (docs/policyd.md, "Logs"), values from the network are escaped only by the sink,
and the shared modules load without Twisted."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys

import pytest
from twisted.logger import LogLevel, formatEvent

from exmilter.limits import POLICY_MAX_REQUESTS_PER_TURN
from exmilter.logs import events as ev
from exmilter.logs.levels import NAMES, Severity, severity
from exmilter.logs.text import MESSAGES, message
from exmilter.logs.twistedlog import EVENT_KEY, LOG_LEVELS, twisted_sink
from exmilter.replies import CONFIGURATION_PROBLEM, UNABLE_TO_RELAY


def kinds() -> list[type[ev.Event]]:
    """Every kind of event exmilter.logs.events defines."""
    return sorted(
        (v for v in vars(ev).values() if isinstance(v, type) and issubclass(v, ev.Event) and v is not ev.Event),
        key=lambda c: c.__name__,
    )


def decision(**changes: object) -> ev.PolicyDecision:
    fields = {
        "conn": 12,
        "seq": 3,
        "stage": "RCPT",
        "connector": "EXCH01\\Default Frontend EXCH01",
        "client": "203.0.113.9",
        "sender": "a@example.net",
        "recipient": "x@gmail.com",
        "queue_id": "4QABC",
        "instance": "1a2b.3c4d.0",
        "action": UNABLE_TO_RELAY.line,
        "reply": UNABLE_TO_RELAY,
        "note": "",
        "duplicate": False,
    }
    return ev.PolicyDecision(**{**fields, **changes})  # type: ignore[arg-type]  # the table's values, by name


#: One of each kind, the text line it reads as, and its severity.
LINES = [
    (
        decision(),
        "c12.3 4QABC: RCPT client=203.0.113.9 connector='EXCH01\\\\Default Frontend EXCH01' from=<a@example.net> "
        "to=<x@gmail.com>: 550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain",
        Severity.INFO,
    ),
    (
        decision(duplicate=True, connector="", sender="", action="OK", reply=None, queue_id=""),
        "c12.3 RCPT client=203.0.113.9 connector='-' from=<> to=<x@gmail.com>: OK (re-sent request, same answer)",
        Severity.INFO,
    ),
    (
        decision(
            note="unusable policy_context 'Internet'",
            action="451 4.3.5 Server configuration problem",
            reply=CONFIGURATION_PROBLEM,
            connector="",
        ),
        "c12.3 4QABC: RCPT client=203.0.113.9 connector='-' from=<a@example.net> "
        "to=<x@gmail.com>: 451 4.3.5 Server configuration problem (unusable policy_context 'Internet')",
        Severity.ERROR,  # every mail through that listener gets 451: the admin must act
    ),
    (
        decision(note="request='junk' is not smtpd_access_policy", action="DUNNO", reply=None, queue_id=""),
        "c12.3 RCPT client=203.0.113.9 connector='EXCH01\\\\Default Frontend EXCH01' from=<a@example.net> "
        "to=<x@gmail.com>: DUNNO (request='junk' is not smtpd_access_policy)",
        Severity.WARNING,
    ),
    (
        ev.LogWriteFailed(
            "protocol", "/var/log/exmilter/ProtocolLog/SmtpReceive", "[Errno 28] No space left on device"
        ),
        "cannot write the protocol log in /var/log/exmilter/ProtocolLog/SmtpReceive: [Errno 28] No space left on "
        "device; rows are dropped and counted, mail flows",
        Severity.ERROR,
    ),
    (
        ev.ProtocolViolation(7, "line longer than 4096 bytes"),
        "c7: line longer than 4096 bytes; closing the connection",
        Severity.WARNING,
    ),
    (
        ev.ReadPaused(7, "unsent_answers"),
        "c7: the client is not reading its answers (over 64 KiB unsent): reading paused until it does",
        Severity.INFO,
    ),
    (
        ev.ReadPaused(7, "pipelined_requests"),
        f"c7: more than {POLICY_MAX_REQUESTS_PER_TURN} requests in one read: answered {POLICY_MAX_REQUESTS_PER_TURN} "
        "per reactor turn, reading paused meanwhile",
        Severity.INFO,
    ),
    (ev.IdleTimeout(7, 1200.0), "c7: no request for 1200s, closing", Severity.INFO),
    (ev.RequestTimeout(7, 10.0), "c7: request incomplete after 10s; closing", Severity.WARNING),
    (
        ev.CloseTimeout(7, 10.0),
        "c7: the client did not read the last answers within 10s of closing; dropping the connection",
        Severity.WARNING,
    ),
    (
        ev.ConnectionsRefused(3, 1000, 1000, "policyd.max_connections"),
        "refused 3 policy connection(s): 1000 open, the limit is 1000 (policyd.max_connections); Postfix retries, "
        "then answers its default_action (451 4.3.5)",
        Severity.WARNING,
    ),
    (
        ev.ConnectionCapSet(40, "policyd.max_connections", False),
        "accepting up to 40 policy connections (policyd.max_connections)",
        Severity.INFO,
    ),
    (
        ev.ConnectionCapSet(960, "auto: … raise LimitNOFILE", True),
        "accepting up to 960 policy connections (auto: … raise LimitNOFILE)",
        Severity.WARNING,
    ),
    (ev.ReloadStarted("/etc/exmilter/exmilter.yaml"), "reloading /etc/exmilter/exmilter.yaml", Severity.INFO),
    (
        ev.ConfigWarning("x.yaml:3:5: warning: open-relay: receive_connectors[0]: relays"),
        "x.yaml:3:5: warning: open-relay: receive_connectors[0]: relays",
        Severity.WARNING,
    ),
    (
        ev.ReloadLoaded(2, "/etc/exmilter/exmilter.yaml", 7),
        "configuration generation 2 loaded from /etc/exmilter/exmilter.yaml (7 receive connectors)",
        Severity.INFO,
    ),
    (
        ev.ReloadRefused("x.yaml:1:1: server: expected a mapping"),
        "reload refused: x.yaml:1:1: server: expected a mapping",
        Severity.ERROR,
    ),
    (ev.GenerationKept(1), "keeping configuration generation 1", Severity.ERROR),
    (ev.GenerationInUse(2), "configuration generation 2 is in use", Severity.ERROR),
    (
        ev.RestartNeeded("policyd.listen/metrics", "/etc/exmilter/exmilter.yaml"),
        "policyd.listen/metrics changed in /etc/exmilter/exmilter.yaml: restart the daemon to apply",
        Severity.WARNING,
    ),
    (
        ev.Listening("policy service", "tcp:10040:interface=127.0.0.1"),
        "policy service listening on tcp:10040:interface=127.0.0.1",
        Severity.INFO,
    ),
    (
        ev.Ready(1, "/etc/exmilter/exmilter.yaml"),
        "ready: configuration generation 1 from /etc/exmilter/exmilter.yaml",
        Severity.INFO,
    ),
    (
        ev.NotifyFailed("/run/systemd/notify", "[Errno 111] Connection refused"),
        "cannot notify systemd at /run/systemd/notify: [Errno 111] Connection refused",
        Severity.WARNING,
    ),
    (
        ev.CoverageUnavailable("/run/exmilter/coverage.sock", "[Errno 2] No such file or directory"),
        "coverage socket /run/exmilter/coverage.sock: [Errno 2] No such file or directory; judging every session here",
        Severity.WARNING,
    ),
    (
        ev.WatchdogProbeFailed("unix:/run/exmilter/policy.sock", "timed out"),
        "watchdog: unix:/run/exmilter/policy.sock does not answer (timed out); not feeding systemd's watchdog",
        Severity.ERROR,
    ),
    (
        ev.StartFailed("Couldn't listen on 127.0.0.1:10040: [Errno 98] Address already in use."),
        "cannot start: Couldn't listen on 127.0.0.1:10040: [Errno 98] Address already in use.",
        Severity.CRITICAL,
    ),
]


@pytest.mark.parametrize(
    ("event", "line", "level"), LINES, ids=[f"{type(e).__name__}-{i}" for i, (e, _, _) in enumerate(LINES)]
)
def test_each_event_reads_as_todays_line(event, line, level):
    assert message(event) == line
    assert severity(event) is level
    assert format(event) == line  # what generic formatters (twisted.logger's formatEvent) get


def test_every_kind_has_a_line_a_severity_and_a_golden_test():
    assert {type(e) for e, _, _ in LINES} == set(kinds())
    assert set(MESSAGES) == set(kinds())
    for kind in kinds():
        assert dataclasses.is_dataclass(kind) and kind.__dataclass_params__.frozen, kind  # type: ignore[attr-defined]  # set by @dataclass


def test_an_unknown_kind_is_a_bug_not_a_silent_line():
    @dataclasses.dataclass(frozen=True)
    class Unheard(ev.Event):
        pass

    with pytest.raises(TypeError, match="no severity for Unheard"):
        severity(Unheard())
    with pytest.raises(KeyError):
        message(Unheard())


def test_the_decision_event_is_a_frozen_dataclass_with_its_fields_in_order():
    """Its ``__init__`` is written by hand (the refusal path's cost): it must take exactly the
    dataclass's fields, in order, and the instance must stay frozen, comparable, hashable."""
    names = [f.name for f in dataclasses.fields(ev.PolicyDecision)]
    params = list(inspect.signature(ev.PolicyDecision).parameters.values())
    assert [p.name for p in params] == names
    assert [p.annotation for p in params] == [f.type for f in dataclasses.fields(ev.PolicyDecision)]
    assert all(p.default is p.empty for p in params)
    values = [object() for _ in names]
    e = ev.PolicyDecision(*values)  # type: ignore[arg-type]  # any value shows where it lands
    assert [getattr(e, n) for n in names] == values
    a = decision()
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.sender = "b@example.net"  # type: ignore[misc]  # that it is refused is the point
    assert a == decision() and hash(a) == hash(decision()) and a != decision(seq=4)
    assert dataclasses.replace(a, duplicate=True).duplicate is True
    assert dataclasses.asdict(a)["queue_id"] == "4QABC"  # what a JSON sink works from


HOSTILE = "a@example.net\r2026-01-01T00:00:00+0000 [exmilter.policyd#info] c9.9 RCPT: OK\x1b[2J"


def test_events_carry_values_as_they_came_and_the_sink_escapes_them():
    e = decision(sender=HOSTILE, client="203.0.113.9\x00", note="ctx '\x1b'")
    assert e.sender == HOSTILE  # the event is the fact, not its rendering
    line = message(e)
    assert line.isprintable()
    assert "from=<a@example.net\\r2026-01-01T00:00:00+0000 [exmilter.policyd#info] c9.9 RCPT: OK\\x1b[2J>" in line
    assert "client=203.0.113.9\\x00 " in line and line.endswith(" (ctx '\\x1b')")
    assert message(ev.ProtocolViolation(1, "bad name '\x1b'")) == "c1: bad name '\\x1b'; closing the connection"


def test_levels_map_to_twisted_and_to_the_names_in_the_line():
    assert set(LOG_LEVELS) == set(Severity) == set(NAMES)
    assert {s: LOG_LEVELS[s].name for s in Severity} == NAMES
    assert [int(s) for s in sorted(Severity)] == [2, 3, 4, 6, 7]  # syslog's crit, err, warning, info, debug


def test_the_twisted_sink_publishes_the_event_unformatted():
    published: list[dict] = []

    class Logger:
        namespace = "exmilter.policyd"
        observer = published.append

    emit = twisted_sink(Logger())  # type: ignore[arg-type]  # only namespace and observer are used
    e = ev.ConnectionCapSet(960, "auto", True)
    emit(e)
    emit(ev.ReloadRefused("x.yaml:1:1: server: expected a mapping"))
    first, second = published
    assert first[EVENT_KEY] is e
    assert (first["log_level"], second["log_level"]) == (LogLevel.warn, LogLevel.error)
    assert first["log_namespace"] == "exmilter.policyd" and isinstance(first["log_time"], float)
    assert formatEvent(first) == "accepting up to 960 policy connections (auto)"


SHARED = (
    "exmilter.logs.events",
    "exmilter.logs.levels",
    "exmilter.logs.text",
    "exmilter.logs.escape",
    "exmilter.runtime.generation",
    "exmilter.runtime.metrics",
    "exmilter.runtime.notify",
)


def test_what_both_daemons_share_loads_without_twisted():
    """The threaded milter may not import Twisted: these modules must not pull it in."""
    code = (
        f"import sys\nfor m in {SHARED!r}: __import__(m)\n"
        "print(sorted({n.split('.')[0] for n in sys.modules} & {'twisted', 'zope', 'milter', 'Milter'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
