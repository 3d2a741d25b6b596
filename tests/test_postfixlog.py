"""Delivery outcomes from Postfix's log lines: parsing, events per status, following a rotating file."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from exmilter import cli
from exmilter.logs.postfixlog import DeliveryTracker, Follower, outcomes, parse_line
from exmilter.logs.tracking import Outcome

NOW = time.mktime((2026, 12, 2, 15, 0, 0, 0, 0, -1))

#: Lines as Postfix 3.7's maillog_file writes them (seen in a sandbox run), plus SEND/DEFER/FAIL/DSN.
MAILLOG = (Path(__file__).parent / "data" / "logs" / "maillog").read_text()


def _events(text: str) -> list[Outcome]:
    return list(outcomes(iter(text.splitlines()), DeliveryTracker(), NOW))


def test_each_status_becomes_its_tracking_event() -> None:
    got = [(o.event, o.queue_id, o.recipients, o.message_id, o.relay, o.relay_ip, o.status) for o in _events(MAILLOG)]
    assert got == [
        ("DELIVER", "A635A20C0B4", ("ok@y.test",), "<20261202140913.005933@vm>", "", "", "2.0.0 sent (y.test)"),
        (
            "SEND",
            "A635A20C0B4",
            ("b@fabrikam.example",),
            "<20261202140913.005933@vm>",
            "mx.fabrikam.example",
            "203.0.113.25",
            "2.0.0 sent (250 2.0.0 Ok: queued as 77AB)",
        ),
        (
            "DEFER",
            "B11120C0B5",
            ("c@slow.example",),
            "",
            "",
            "",
            "4.4.1 deferred (connect to slow.example[198.51.100.1]:25: Connection timed out)",
        ),
        (
            "FAIL",
            "B11120C0B6",
            ("d@gone.example",),
            "",
            "mx.gone.example",
            "198.51.100.2",
            "5.1.1 bounced (host mx.gone.example[198.51.100.2] said: 550 5.1.1 User unknown "
            "(in reply to RCPT TO command))",
        ),
        ("DSN", "B11120C0B6", (), "", "", "", "sender non-delivery notification: C22220C0B7"),
    ]
    first = _events(MAILLOG)[0]
    assert (first.sender, first.size) == ("a@x.test", 589)
    assert _events(MAILLOG)[-1].related == "C22220C0B7"


@pytest.mark.parametrize(
    ("line", "year"),
    [
        ("Dec 31 23:59:59 mx postfix/qmgr[1]: ABCDEF123: removed", 2025),  # read on 2 Jan: last year's
        ("Jan  2 00:00:01 mx postfix/qmgr[1]: ABCDEF123: removed", 2026),
    ],
)
def test_classic_stamps_get_the_right_year(line: str, year: int) -> None:
    parsed = parse_line(line, time.mktime((2026, 1, 2, 12, 0, 0, 0, 0, -1)))
    assert parsed is not None and time.localtime(parsed.time).tm_year == year


@pytest.mark.parametrize(
    ("stamp", "read_after", "offset"),
    [
        ("01:48:21.412345", 0.5, 0.412345),  # syslog's high precision: kept
        ("01:48:21", 0.5, 0.5),  # whole seconds read within the second: the time it was read
        ("01:48:21", 30.0, 0.999),  # read later (or a backfill): the end of its second
    ],
)
def test_classic_stamps_sort_after_a_receive_of_the_same_second(stamp: str, read_after: float, offset: float) -> None:
    """Postfix's maillog_file writes whole seconds: a delivery must not sort before the RECEIVE
    row the milter stamped at 01:48:21.4 for the same message."""
    base = time.mktime((2026, 12, 8, 1, 48, 21, 0, 0, -1))
    p = parse_line(f"Dec  8 {stamp} mx postfix/qmgr[1]: ABCDEF123: removed", base + read_after)
    assert p is not None and p.time - base == pytest.approx(offset)


def test_iso_stamps_and_long_queue_ids() -> None:
    p = parse_line("2026-12-02T14:09:13.123456+00:00 mx postfix-in/qmgr[9]: 4dZ3Lq0Zbvz9rvd: removed", NOW)
    assert p is not None and (p.queue_id, p.program, p.text) == ("4dZ3Lq0Zbvz9rvd", "postfix-in/qmgr", "removed")
    assert p.time == 1796220553.123456
    assert parse_line("garbage", NOW) is None


def test_follower_follows_appends_and_rotation(tmp_path: Path) -> None:
    log = tmp_path / "maillog"
    log.write_text(
        "Dec 02 14:00:00 mx postfix/discard[1]: OLD000001: to=<old@y>, relay=none, delay=0, "
        "delays=0, dsn=2.0.0, status=sent (y)\n"
    )
    seen: list[Outcome] = []
    f = Follower(str(log), seen.append, poll=0.01, clock=lambda: NOW)
    t = f.start()
    lines = MAILLOG.splitlines(keepends=True)

    def wait_for(n: int) -> None:
        deadline = time.monotonic() + 10
        while len(seen) < n and time.monotonic() < deadline:
            time.sleep(0.01)

    time.sleep(0.1)
    with log.open("a") as w:
        w.writelines(lines[:4])
    wait_for(1)
    log.rename(tmp_path / "maillog.1")  # rotation: the new file is read from its start
    log.write_text("".join(lines[4:6]))
    wait_for(3)
    f.stop.set()
    t.join(5)
    assert [o.event for o in seen] == ["DELIVER", "SEND", "DEFER"]  # not the line before the start
    assert not t.is_alive()


def test_follow_maillog_once_writes_tracking_events(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "maillog"
    log.write_text(MAILLOG)
    track = tmp_path / "trk"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "server: {name: EX01, fqdn: ex01.contoso.com}\naccepted_domains: [contoso.com]\n"
        f"logs: {{message_tracking_log_path: {track}}}\n"
    )
    assert cli.main(["follow-maillog", "-c", str(cfg), "--once", str(log)]) == 0
    assert cli.main(["track", "--path", str(track), "--queue-id", "A635A20C0B4", "--json"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split('"event-id": "')[1].split('"')[0] for line in out] == ["DELIVER", "SEND"]
    assert all('"message-id": "<20261202140913.005933@vm>"' in line for line in out)


def test_follower_reads_a_file_that_appears_later_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "maillog"
    seen: list[Outcome] = []
    f = Follower(str(log), seen.append, poll=0.01, clock=lambda: NOW)
    t = f.start()
    time.sleep(0.1)
    log.write_text(MAILLOG)
    deadline = time.monotonic() + 10
    while len(seen) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    f.stop.set()
    t.join(5)
    assert [o.event for o in seen] == ["DELIVER", "SEND", "DEFER", "FAIL", "DSN"]
    assert f.errors >= 1
