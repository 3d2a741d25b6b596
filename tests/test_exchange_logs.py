"""Exchange's protocol and tracking logs: golden files from the spec (§5.1, §5.2), hourly names,
rotation by size and age with a fake clock, and writing that never fails the caller."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from exmilter.limits import PROTOCOL_LOG_MAX_AGE_DAYS
from exmilter.logs import protocol as P
from exmilter.logs import tracking as T
from exmilter.logs import w3c
from exmilter.model import Right

DATA = Path(__file__).parent / "data" / "logs"
T0 = w3c.parse_timestamp("2023-01-11T16:00:04.113Z")


def _settings(directory: Path, prefix: str = "RECV", *, file: int = 10 << 20, total: int = 250 << 20, days: int = 30):
    return w3c.LogFileSettings(str(directory), prefix, file, total, days)


def _spec_session(sink: w3c.RowSink) -> None:
    """The spec's §5.1 sample session, event by event, as a front end would log it."""
    log = P.ProtocolLog(sink)
    s = log.session(
        "EX01\\Default Frontend EX01", "192.0.2.10", 25, "198.51.100.7", 50123, T0, session_id="08D675E58CA1DA38"
    )
    s.connect(T0)
    rights = (
        Right.SMTPSubmit
        | Right.SMTPAcceptAnySender
        | Right.SMTPAcceptAuthoritativeDomainSender
        | Right.AcceptRoutingHeaders
    )
    s.permissions(rights, T0 + 0.001)
    s.sent("220 mail.contoso.com Microsoft ESMTP MAIL Service ready at Wed, 11 Jan 2023 17:00:04 +0100", T0 + 0.001)
    s.received("EHLO client.example", T0 + 0.007)
    s.received("MAIL FROM:<app@fabrikam.example>", T0 + 0.012)
    s.received("RCPT TO:<x@fabrikam.example>", T0 + 0.017)
    s.info("Tarpit for '0.00:00:05'", T0 + 0.017)
    s.sent("550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain", T0 + 5.018)
    s.disconnect(P.REMOTE, T0 + 5.027)


def test_protocol_log_golden_file(tmp_path: Path) -> None:
    log = w3c.HourlyLog(_settings(tmp_path), P.protocol_header)
    _spec_session(log)
    log.close()
    assert os.listdir(tmp_path) == ["RECV2023011116-1.LOG"]
    assert (tmp_path / "RECV2023011116-1.LOG").read_bytes() == (DATA / "RECV2023011116-1.LOG").read_bytes()


def test_golden_file_holds_the_spec_sample_rows_verbatim() -> None:
    """The spec's excerpt (§5.1, copied verbatim into tests/data/logs/spec-5.1-*.txt) elides
    connector, session and endpoints with '…': filled in, each of its rows is a row of the
    golden file, byte for byte, and the header is the spec's."""
    rows = (DATA / "spec-5.1-excerpt.txt").read_text(encoding="utf-8").splitlines()
    golden = (DATA / "RECV2023011116-1.LOG").read_bytes().decode().split("\r\n")
    header = (DATA / "spec-5.1-header.txt").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 7 and len(header) == 5
    assert golden[:5] == header
    for r in rows:
        r = r.replace(",…,", ",EX01\\Default Frontend EX01,08D675E58CA1DA38,", 1)
        r = r.replace(",…,", ",192.0.2.10:25,198.51.100.7:50123,", 1)
        assert r in golden


def test_multiline_reply_is_one_row_joined_by_spaces() -> None:
    sink = P.MemorySink()
    s = P.ProtocolLog(sink).session("S\\C", "2001:db8::1", 25, "2001:db8::7", 40000, T0, session_id="0" * 16)
    s.sent("250-mail.contoso.com Hello [198.51.100.7]\r\n250-SIZE\r\n250 PIPELINING", T0)
    s.received('MAIL FROM:<"a,b"@x.example>\x1b[2J', T0)
    assert sink.lines() == [
        "2023-01-11T16:00:04.113Z,S\\C,0000000000000000,0,2001:db8::1:25,2001:db8::7:40000,>,"
        "250-mail.contoso.com Hello [198.51.100.7] 250-SIZE 250 PIPELINING,",
        "2023-01-11T16:00:04.113Z,S\\C,0000000000000000,1,2001:db8::1:25,2001:db8::7:40000,<,"
        '"MAIL FROM:<""a,b""@x.example>\\x1b[2J",',
    ]


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("plain", "plain"),
        ("a,b", '"a,b"'),
        ('say "hi"', '"say ""hi"""'),
        ("line\r\nbreak", "line break"),
        ("x,\ny", '"x, y"'),
        ("", ""),
    ],
)
def test_csv_field_quoting(value: str, written: str) -> None:
    assert w3c.field(value) == written


def test_session_ids_are_16_hex_ticks_and_strictly_increasing() -> None:
    ids = P.SessionIds()
    a, b, c = ids.next(T0), ids.next(T0), ids.next(T0 - 10)
    assert all(re.fullmatch(r"[0-9A-F]{16}", x) for x in (a, b, c))
    assert a < b < c
    assert int(a, 16) == int(T0 * 10_000_000) + 621_355_968_000_000_000
    assert P.SessionIds().next(w3c.parse_timestamp("2019-01-28T10:00:00Z")).startswith("08D6")


def test_timestamps_and_hour_names() -> None:
    assert w3c.timestamp(T0) == "2023-01-11T16:00:04.113Z"
    assert w3c.timestamp(T0 + 0.9996) == "2023-01-11T16:00:05.113Z"
    assert w3c.hour_stamp(T0) == "2023011116"
    assert w3c.parse_file_name("RECV2023011116-1.LOG") == ("RECV", "2023011116", 1)
    assert w3c.parse_file_name("MSGTRKMS2022091915-12.LOG") == ("MSGTRKMS", "2022091915", 12)
    assert w3c.parse_file_name("notes.txt") is None


def test_hourly_files_and_rotation_by_size(tmp_path: Path) -> None:
    log = w3c.HourlyLog(_settings(tmp_path, file=600), P.protocol_header)
    s = P.ProtocolLog(log).session("S\\C", "127.0.0.1", 25, "127.0.0.2", 1000, T0)
    for i in range(6):
        s.received(f"NOOP {i}", T0 + i)
    s.received("NOOP next hour", T0 + 3600)
    log.close()
    names = sorted(os.listdir(tmp_path))
    assert names == ["RECV2023011116-1.LOG", "RECV2023011116-2.LOG", "RECV2023011117-1.LOG"]
    for n in names:
        text = (tmp_path / n).read_bytes().decode()
        assert text.startswith("#Software: Microsoft Exchange Server\r\n")
        assert len(text.encode()) <= 600
    assert "#Date: 2023-01-11T17:00:04.113Z" in (tmp_path / "RECV2023011117-1.LOG").read_bytes().decode()
    # A restarted writer appends to the hour's newest file, without a second header.
    again = w3c.HourlyLog(_settings(tmp_path, file=600), P.protocol_header)
    again.write(T0 + 3601, "x\r\n")
    again.close()
    assert (tmp_path / "RECV2023011117-1.LOG").read_text().count("#Software") == 1


def test_age_and_directory_limits_delete_the_oldest_files(tmp_path: Path) -> None:
    old = tmp_path / "RECV2022110116-1.LOG"
    old.write_text("old\r\n")
    other = tmp_path / "MSGTRK2022110116-1.LOG"  # another log's file is not ours to delete
    other.write_text("keep\r\n")
    log = w3c.HourlyLog(_settings(tmp_path, file=400, total=1000, days=PROTOCOL_LOG_MAX_AGE_DAYS), P.protocol_header)
    for h in range(6):
        log.write(T0 + h * 3600, "row\r\n")
    log.close()
    names = sorted(n for n in os.listdir(tmp_path) if n.startswith("RECV"))
    assert not old.exists()
    assert other.exists()
    assert names[-1] == "RECV2023011121-1.LOG"
    assert sum((tmp_path / n).stat().st_size for n in names) <= 1000
    assert len(names) < 6


def test_unusable_directory_counts_failures_and_recovers(tmp_path: Path) -> None:
    """A path that cannot be a directory (a file is in the way): every row is refused with an
    OSError, counted, reported once per interval; once the obstacle is gone, rows flow again."""
    blocker = tmp_path / "logs"
    blocker.write_text("not a directory")
    seen: list[OSError] = []
    log = w3c.HourlyLog(_settings(blocker), P.protocol_header, on_failure=lambda where, e: seen.append(e))
    sink = w3c.BackgroundLog(log)
    s = P.ProtocolLog(sink).session("S\\C", "127.0.0.1", 25, "127.0.0.2", 1000, T0)
    for _ in range(5):
        s.received("NOOP", T0)  # never raises
    sink.flush()
    assert log.failures == 5 and sink.failures == 5
    assert len(seen) == 1
    blocker.unlink()
    s.received("NOOP", T0)
    sink.flush()
    sink.close()
    assert log.written == 1
    assert (blocker / "RECV2023011116-1.LOG").read_bytes().endswith(b",<,NOOP,\r\n")


def test_background_queue_full_drops_and_counts(tmp_path: Path) -> None:
    log = w3c.HourlyLog(_settings(tmp_path), P.protocol_header)
    sink = w3c.BackgroundLog(log, max_queued=1)
    results = [sink.write(T0, "x\r\n") for _ in range(200)]
    sink.flush()
    sink.close()
    assert results.count(False) == sink.dropped
    assert log.written + sink.dropped == 200


# -- message tracking ------------------------------------------------------------------------------------

FACTS = T.MessageFacts(
    time=w3c.parse_timestamp("2023-01-11T16:00:05.250Z"),
    queue_id="4F9D21E0F",
    connector_id="EX01\\SMTP Relay Script",
    client_ip="10.1.2.3",
    client_hostname="app01.contoso.com",
    server_ip="192.0.2.10",
    server_hostname="EX01.contoso.com",
    sender="app@contoso.com",
    recipients=("a@fabrikam.example", "b@contoso.com"),
    size=2048,
    message_id="<1234@app01.contoso.com>",
    subject="Nightly report, part 1",
    auth_mechanism="00",
    auth_as="Anonymous",
    session_id="08D675E58CA1DA38",
    session_start=T0,
    message_number=1,
)


def test_tracking_log_golden_file(tmp_path: Path) -> None:
    log = w3c.HourlyLog(_settings(tmp_path, "MSGTRK"), T.tracking_header)
    tl = T.TrackingLog(log, "EX01.contoso.com")
    tl.receive(FACTS)
    tl.outcome(
        T.Outcome(
            time=FACTS.time + 1,
            event="SEND",
            queue_id="4F9D21E0F",
            recipients=("a@fabrikam.example",),
            status="250 2.0.0 Ok: queued as 77AB",
            sender="app@contoso.com",
            message_id="<1234@app01.contoso.com>",
            relay="mx.fabrikam.example",
            relay_ip="203.0.113.25",
        )
    )
    log.close()
    assert os.listdir(tmp_path) == ["MSGTRK2023011116-1.LOG"]
    got = (tmp_path / "MSGTRK2023011116-1.LOG").read_bytes()
    assert got == (DATA / "MSGTRK2023011116-1.LOG").read_bytes()


def test_tracking_fields_are_the_specs() -> None:
    line = (DATA / "spec-5.2-fields.txt").read_text(encoding="utf-8").strip()
    assert line == "#Fields: " + ",".join(T.FIELDS)


@pytest.mark.parametrize(
    ("mech", "auth_as", "domain", "info"),
    [
        ("00", "Anonymous", "", "00A:"),
        ("06", "Internal", "", "06I:"),
        ("10", "Internal", "", "10I:"),
        ("0c", "Internal", "", "0cI:"),
        ("02", "Partner", "contoso.com", "02P:contoso.com"),
    ],
)
def test_message_info(mech: str, auth_as: str, domain: str, info: str) -> None:
    assert T.message_info(mech, auth_as, domain) == info


def test_rows_read_back(tmp_path: Path) -> None:
    rows = list(w3c.read_rows(str(DATA / "RECV2023011116-1.LOG")))
    assert len(rows) == 9
    assert (
        rows[2]["data"] == "220 mail.contoso.com Microsoft ESMTP MAIL Service ready at Wed, 11 Jan 2023 17:00:04 +0100"
    )
    assert rows[8]["context"] == "Remote"
    trk = list(w3c.read_rows(str(DATA / "MSGTRK2023011116-1.LOG")))
    assert trk[0]["message-subject"] == "Nightly report, part 1"
    assert trk[0]["message-info"] == "00A:"
    assert trk[0]["source-context"] == "08D675E58CA1DA38;2023-01-11T16:00:04.113Z;1"


def test_message_info_of_sessions_from_the_engine() -> None:
    """Spec §4.2/§4.4 and seed mistakes 5a/5b: anonymous relay is 00A:, ExternalAuthoritative 10I:,
    an AUTH login 06I: under TLS and 07I: without, an authenticated sender holding Any-Sender
    without Authentication-Flag is Anonymous."""
    from exmilter.config import loads
    from exmilter.engine import Engine

    org = loads(
        """\
server: {name: EX01, fqdn: mail.contoso.com, domain: CONTOSO}
accepted_domains: [contoso.com]
users: [{name: svc, addresses: [svc@contoso.com]}]
receive_connectors:
  - {name: Relay, transport_role: FrontendTransport, usage: Custom, bindings: ["0.0.0.0:25"],
     remote_ip_ranges: [10.1.0.0/16], permission_groups: [AnonymousUsers],
     permissions: [{user: "NT AUTHORITY\\\\ANONYMOUS LOGON", extended_rights: [ms-Exch-SMTP-Accept-Any-Recipient]}]}
  - {name: Secured, transport_role: FrontendTransport, usage: Custom, bindings: ["0.0.0.0:25"],
     remote_ip_ranges: [10.2.0.0/16], auth_mechanism: [Tls, ExternalAuthoritative],
     permission_groups: [ExchangeServers]}
  - {name: Users, transport_role: FrontendTransport, usage: Custom, bindings: ["0.0.0.0:587"],
     remote_ip_ranges: [0.0.0.0-255.255.255.255], auth_mechanism: [Tls, BasicAuth], permission_groups: [ExchangeUsers]}
  - {name: AnySender, transport_role: FrontendTransport, usage: Custom, bindings: ["0.0.0.0:2525"],
     remote_ip_ranges: [0.0.0.0-255.255.255.255], auth_mechanism: [Tls, BasicAuth], permission_groups: [ExchangeUsers],
     permissions: [{user: svc, extended_rights: [ms-Exch-SMTP-Accept-Any-Sender]}]}
""",
        "c.yaml",
    ).organization
    engine = Engine(org)

    def info(port: int, client: str, user: str | None = None, tls: bool = False) -> str:
        s = engine.open_session(None, port, client, auth_user=user, tls=tls)
        as_ = T.auth_as(s)
        return T.message_info(T.auth_mechanism(s, as_), as_)

    assert info(25, "10.1.2.3") == "00A:"
    assert info(25, "10.2.2.3") == "10I:"
    assert info(587, "192.0.2.1", "svc", tls=True) == "06I:"
    assert info(587, "192.0.2.1", "svc") == "07I:"
    assert info(2525, "192.0.2.1", "svc", tls=True) == "06A:"


def test_background_writer_writes_an_hours_rows_in_pieces_within_the_file_limit(tmp_path: Path) -> None:
    """The writer joins a drain's rows and writes them in few calls, cut at row ends so no file
    passes its size limit; a write holding two rows counts two; rows of the next hour go to its file."""
    log = w3c.HourlyLog(_settings(tmp_path, file=600), P.protocol_header)
    sink = w3c.BackgroundLog(log, interval=3600)
    s = P.ProtocolLog(sink).session("S\\C", "127.0.0.1", 25, "127.0.0.2", 1000, T0)
    for i in range(10):
        s.exchange(f"NOOP {i}", "250 2.0.0 OK", T0 + i)  # two rows per write
    s.received("NOOP next hour", T0 + 3600)
    sink.close()
    assert log.written == 21 and log.failures == 0
    names = sorted(os.listdir(tmp_path))
    assert names[-1] == "RECV2023011117-1.LOG" and len(names) > 2
    text = "".join((tmp_path / n).read_bytes().decode() for n in names)
    assert all(len((tmp_path / n).read_bytes()) <= 600 for n in names)
    seqs = [line.split(",")[3] for line in text.splitlines() if not line.startswith("#")]
    assert seqs == [str(i) for i in range(21)]
