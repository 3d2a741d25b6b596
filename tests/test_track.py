"""``exmilter track``: filters as Get-MessageTrackingLog's, relative times, file pruning, table and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exmilter import cli
from exmilter.logs import tracking as T
from exmilter.logs import w3c
from exmilter.logs.query import TrackingFilter, parse_when, search, table

T0 = w3c.parse_timestamp("2023-01-11T16:00:05.250Z")


def _facts(i: int, t: float, **kw: object) -> T.MessageFacts:
    base: dict = dict(
        time=t,
        queue_id=f"QID{i}",
        connector_id="EX01\\SMTP Relay Script" if i % 2 else "EX01\\Client Frontend EX01",
        client_ip="10.1.2.3",
        client_hostname="app01",
        server_ip="192.0.2.10",
        server_hostname="ex01.contoso.com",
        sender=f"App{i}@Contoso.com",
        recipients=(f"r{i}@fabrikam.example", "shared@contoso.com"),
        size=100 + i,
        message_id=f"<m{i}@contoso.com>",
        subject=f"subject, {i}",
        auth_mechanism="00" if i % 2 else "06",
        auth_as="Anonymous" if i % 2 else "Internal",
    )
    base.update(kw)
    return T.MessageFacts(**base)


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    log = w3c.HourlyLog(w3c.LogFileSettings(str(tmp_path), "MSGTRK", 10 << 20, 1 << 30, 30), T.tracking_header)
    tl = T.TrackingLog(log, "ex01.contoso.com")
    for i in range(6):
        t = T0 + i * 1800  # three hourly files
        tl.receive(_facts(i, t))
        tl.outcome(T.Outcome(t + 1, "DELIVER" if i % 3 else "DEFER", f"QID{i}", (f"r{i}@fabrikam.example",), "250 ok"))
    log.close()
    return tmp_path


def _ids(rows) -> list[tuple[str, str]]:
    return [(r["internal-message-id"], r["event-id"]) for r in rows]


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (TrackingFilter(queue_id="qid2"), [("QID2", "RECEIVE"), ("QID2", "DELIVER")]),
        (TrackingFilter(sender="app3@contoso.COM"), [("QID3", "RECEIVE")]),
        (TrackingFilter(sender="app"), []),  # whole addresses, not substrings
        (TrackingFilter(recipients=("R4@fabrikam.example",)), [("QID4", "RECEIVE"), ("QID4", "DELIVER")]),
        (TrackingFilter(recipients=("nobody@x", "r5@fabrikam.example")), [("QID5", "RECEIVE"), ("QID5", "DELIVER")]),
        (TrackingFilter(event_id="defer"), [("QID0", "DEFER"), ("QID3", "DEFER")]),
        (TrackingFilter(message_id="m1@contoso.com"), [("QID1", "RECEIVE")]),
        (TrackingFilter(message_id="<m1@contoso.com>"), [("QID1", "RECEIVE")]),
        (
            TrackingFilter(connector="smtp relay script", event_id="RECEIVE"),
            [("QID1", "RECEIVE"), ("QID3", "RECEIVE"), ("QID5", "RECEIVE")],
        ),
        (TrackingFilter(connector="EX01\\SMTP Relay Script", queue_id="QID3"), [("QID3", "RECEIVE")]),
        (
            TrackingFilter(start=T0 + 3600, end=T0 + 5400, event_id="RECEIVE"),
            [("QID2", "RECEIVE"), ("QID3", "RECEIVE")],
        ),
    ],
)
def test_filters(logdir: Path, flt: TrackingFilter, expected: list) -> None:
    assert _ids(search([str(logdir)], flt)) == expected


def test_files_outside_the_time_range_are_not_opened(logdir: Path) -> None:
    first = logdir / "MSGTRK2023011116-1.LOG"
    first.write_bytes(b"\xff garbage that would not parse, 2099-01-01T00:00:00.000Z\n")
    rows = list(search([str(logdir)], TrackingFilter(start=T0 + 3600)))
    assert rows and all(r["date-time"] >= "2023-01-11T17" for r in rows)


@pytest.mark.parametrize(
    ("text", "offset"), [("-10m", -600), ("-2h", -7200), ("-1d", -86400), ("-30s", -30), ("-1.5h", -5400)]
)
def test_relative_times(text: str, offset: float) -> None:
    assert parse_when(text, 1000.0) == 1000.0 + offset


def test_absolute_times() -> None:
    assert parse_when("2023-01-11T16:00:05.250Z", 0) == T0
    with pytest.raises(ValueError, match="expected -10m"):
        parse_when("yesterday", 0)


def test_table_has_exchange_columns(logdir: Path) -> None:
    lines = list(table(search([str(logdir)], TrackingFilter(queue_id="QID1"))))
    assert lines[0].split() == [
        "Timestamp",
        "EventId",
        "Source",
        "QueueId",
        "ConnectorId",
        "MessageInfo",
        "Sender",
        "Recipients",
        "MessageSubject",
    ]
    assert (
        "RECEIVE SMTP        QID1    EX01\\SMTP Relay Script 00A:" in lines[2]
        and "00A:" in lines[2]
        and "r1@fabrikam.example, shared@contoso.com" in lines[2]
    )


def test_command_json_and_errors(logdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["track", "--path", str(logdir), "--queue-id", "QID0", "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(r["event-id"], r["message-info"]) for r in rows] == [("RECEIVE", "06I:"), ("DEFER", "")]
    assert rows[0]["message-subject"] == "subject, 0"
    assert cli.main(["track", "--path", str(logdir), "--start", "soon"]) == 2
    assert "expected -10m" in capsys.readouterr().err
    assert cli.main(["track", "--path", str(logdir / "nope")]) == 2


def test_command_reads_the_path_from_the_configuration(logdir: Path, tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "exmilter.yaml"
    cfg.write_text(
        "server: {name: EX01, fqdn: ex01.contoso.com}\naccepted_domains: [contoso.com]\n"
        f"logs: {{message_tracking_log_path: {logdir}}}\n"
    )
    assert cli.main(["track", "-c", str(cfg), "--sender", "app5@contoso.com"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and "QID5" in out[2]


def test_relative_start_is_a_value_not_an_option(logdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--start -10m`` exactly as the seeds write Get-MessageTrackingLog's -Start (AddMinutes(-10))."""
    assert cli.main(["track", "--path", str(logdir), "--start", "-10m", "--end", "-1s"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("Timestamp")


def test_summary_is_one_line_per_message_with_its_final_event(logdir: Path, capsys) -> None:
    assert cli.main(["track", "--path", str(logdir), "--summary", "--json"]) == 0
    got = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(m["QueueId"], m["FinalEvent"], m["MessageInfo"]) for m in got] == [
        ("QID0", "DEFER", "06I:"),
        ("QID1", "DELIVER", "00A:"),
        ("QID2", "DELIVER", "06I:"),
        ("QID3", "DEFER", "00A:"),
        ("QID4", "DELIVER", "06I:"),
        ("QID5", "DELIVER", "00A:"),
    ]
    assert got[1]["ConnectorId"] == "EX01\\SMTP Relay Script" and got[1]["Sender"] == "App1@Contoso.com"
    assert got[1]["Recipients"] == "r1@fabrikam.example, shared@contoso.com"
    assert cli.main(["track", "--path", str(logdir), "--summary", "--queue-id", "QID3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "Received",
        "QueueId",
        "ConnectorId",
        "MessageInfo",
        "Sender",
        "Recipients",
        "FinalEvent",
        "FinalStatus",
        "MessageId",
    ]
    assert len(lines) == 3 and "QID3" in lines[2] and "DEFER" in lines[2]


def test_the_milter_s_and_the_policy_daemon_s_files_of_one_hour_merge_in_time_order(tmp_path: Path) -> None:
    """RECEIVE is the milter's (MSGTRKMT), the delivery the policy daemon's (MSGTRK): a message's
    rows come in time order, whichever file they are in."""
    policy = w3c.HourlyLog(w3c.LogFileSettings(str(tmp_path), "MSGTRK", 10 << 20, 1 << 30, 30), T.tracking_header)
    milter = w3c.HourlyLog(w3c.LogFileSettings(str(tmp_path), "MSGTRKMT", 10 << 20, 1 << 30, 30), T.tracking_header)
    for i in range(3):
        t = T0 + i * 10
        T.TrackingLog(milter, "ex01").receive(_facts(i, t))
        T.TrackingLog(policy, "ex01").outcome(T.Outcome(t + 0.5, "DELIVER", f"QID{i}", ("r@x",), "250 ok"))
    T.TrackingLog(policy, "ex01").outcome(T.Outcome(T0 + 4000, "DELIVER", "QID9", ("r@x",), "250 ok"))  # next hour
    policy.close()
    milter.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "MSGTRK2023011116-1.LOG",
        "MSGTRK2023011117-1.LOG",
        "MSGTRKMT2023011116-1.LOG",
    ]
    assert _ids(search([str(tmp_path)], TrackingFilter())) == [
        ("QID0", "RECEIVE"),
        ("QID0", "DELIVER"),
        ("QID1", "RECEIVE"),
        ("QID1", "DELIVER"),
        ("QID2", "RECEIVE"),
        ("QID2", "DELIVER"),
        ("QID9", "DELIVER"),
    ]
