"""Operational logging: syslog priorities journald understands, JSON lines, the queue id on decisions."""

from __future__ import annotations

import io
import json
import os

from twisted.logger import Logger, LogLevel

from exmilter.logs import events as ev
from exmilter.logs.journal import journal_attached
from exmilter.logs.twistedlog import StderrObserver, log_levels, twisted_sink
from exmilter.replies import CONFIGURATION_PROBLEM, UNABLE_TO_RELAY


def _decision(**changes: object) -> ev.PolicyDecision:
    fields: dict = dict(
        conn=3,
        seq=1,
        stage="RCPT",
        connector="EXCH01\\Default Frontend EXCH01",
        client="203.0.113.9",
        sender="a@example.net",
        recipient="x@gmail.com",
        queue_id="4F9D21E0F",
        instance="i",
        action=UNABLE_TO_RELAY.line,
        reply=UNABLE_TO_RELAY,
        note="",
        duplicate=False,
    )
    fields.update(changes)
    return ev.PolicyDecision(**fields)


UNUSABLE = _decision(
    connector="",
    queue_id="",
    reply=CONFIGURATION_PROBLEM,
    action=CONFIGURATION_PROBLEM.line,
    note="unusable policy_context 'Internet'",
)


def _emit(observer: StderrObserver, *events: ev.Event) -> None:
    logger = Logger(namespace="exmilter.policyd", observer=observer)
    publish = twisted_sink(logger)
    for e in events:
        publish(e)


def test_journal_priority_prefix_lets_journalctl_p_err_select_errors() -> None:
    out = io.StringIO()
    obs = StderrObserver(out, log_levels(False), priority_prefix=True)
    _emit(obs, _decision(), UNUSABLE, ev.ReloadRefused("f.yaml:3:1: bogus: unknown key"), ev.GenerationKept(4))
    lines = out.getvalue().splitlines()
    assert [line[:3] for line in lines] == ["<6>", "<3>", "<3>", "<3>"]
    assert lines[0].endswith(
        "[exmilter.policyd#info] c3.1 4F9D21E0F: RCPT client=203.0.113.9 "
        "connector='EXCH01\\\\Default Frontend EXCH01' from=<a@example.net> to=<x@gmail.com>: "
        "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain"
    )
    assert "[exmilter.policyd#error] reload refused: f.yaml:3:1: bogus: unknown key" in lines[2]
    # "journalctl -p err": priority 3 and below
    assert [line for line in lines if int(line[1]) <= 3] == lines[1:]


def test_json_lines_carry_the_typed_fields_and_priority() -> None:
    out = io.StringIO()
    obs = StderrObserver(out, log_levels(False), json=True)
    _emit(obs, _decision(recipient="x@gmail.com\x1b[2J\u202e"), UNUSABLE)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["event"] == "PolicyDecision" and first["priority"] == 6 and first["level"] == "info"
    assert first["queue_id"] == "4F9D21E0F" and first["reply"] == UNABLE_TO_RELAY.line
    assert first["recipient"] == "x@gmail.com\x1b[2J\u202e"  # the value as it came, JSON-escaped
    assert "\x1b" not in out.getvalue() and "\u202e" not in out.getvalue()
    assert first["message"].startswith("c3.1 4F9D21E0F: RCPT")
    assert (second["priority"], second["level"], second["connector"]) == (3, "error", "")


def test_unusable_context_is_an_error_on_twisted_logger() -> None:
    seen: list[dict] = []
    publish = twisted_sink(Logger(namespace="exmilter.policyd", observer=seen.append))
    publish(UNUSABLE)
    publish(_decision())
    assert [e["log_level"] for e in seen] == [LogLevel.error, LogLevel.info]


def test_untyped_events_and_failures_in_json() -> None:
    out = io.StringIO()
    obs = StderrObserver(out, log_levels(False), json=True)
    Logger(namespace="x", observer=obs).error("boom {n}", n=1)
    line = json.loads(out.getvalue())
    assert (line["message"], line["priority"], line["namespace"]) == ("boom 1", 3, "x")


def test_journal_detection(tmp_path) -> None:
    """Only the very stream systemd connected counts: a redirected stderr inherits the variable."""
    with (tmp_path / "journal").open("w") as journal, (tmp_path / "file").open("w") as other:
        st = os.fstat(journal.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert journal_attached(env, journal.fileno())
        assert not journal_attached(env, other.fileno())
        assert not journal_attached({}, journal.fileno())
        assert not journal_attached({"JOURNAL_STREAM": "garbage"}, journal.fileno())


def test_log_write_failures_metric() -> None:
    from exmilter.policy.metrics import NullMetrics, PolicyMetrics, watch_log_failures
    from exmilter.runtime.metrics import exposition, new_registry

    m = PolicyMetrics(new_registry())
    counts = {"protocol": 3, "tracking": 0}
    watch_log_failures(m, lambda: counts)
    assert m.registry is not None
    text = exposition(m.registry)[0].decode()
    assert 'exmilter_policy_log_write_failures_total{log="protocol"} 3.0' in text
    counts["protocol"] = 5  # read at scrape time
    assert 'exmilter_policy_log_write_failures_total{log="protocol"} 5.0' in exposition(m.registry)[0].decode()
    watch_log_failures(NullMetrics(), lambda: counts)  # metrics off: nothing to register, no error
