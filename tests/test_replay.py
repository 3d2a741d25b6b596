"""``exmilter replay``: Exchange protocol logs rebuilt into sessions and judged with a new configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exmilter import cli
from exmilter.config import loads
from exmilter.engine import Engine
from exmilter.logs.replay import Replayer, format_text, replay, reply_key, split_endpoint
from exmilter.logs.w3c import field, read_rows

DATA = Path(__file__).parent / "data" / "logs"

CONFIG = """\
server: {name: EX01, fqdn: mail.contoso.com, domain: CONTOSO}
default_connectors: true
accepted_domains: [contoso.com]
receive_connectors:
  - name: SMTP Relay Script
    transport_role: FrontendTransport
    usage: Custom
    bindings: [0.0.0.0:25, "[::]:25"]
    remote_ip_ranges: [RANGES]
    permission_groups: [AnonymousUsers]
    permissions:
      - user: NT AUTHORITY\\ANONYMOUS LOGON
        extended_rights: [ms-Exch-SMTP-Accept-Any-Recipient]
"""
WITH_RANGE = CONFIG.replace("RANGES", "10.1.0.0/16, 2001:db8:10::/48")
WITHOUT_V4 = CONFIG.replace("RANGES", "2001:db8:10::/48")

HEADER = (
    "#Software: Microsoft Exchange Server\r\n#Version: 15.0.0.0\r\n#Log-type: SMTP Receive Protocol Log\r\n"
    "#Date: {date}\r\n"
    "#Fields: date-time,connector-id,session-id,sequence-number,local-endpoint,remote-endpoint,event,data,context\r\n"
)
ANON = "SMTPSubmit SMTPAcceptAnyRecipient SMTPAcceptAnySender SMTPAcceptAuthoritativeDomainSender AcceptRoutingHeaders"
DEFAULT = "SMTPSubmit SMTPAcceptAnySender SMTPAcceptAuthoritativeDomainSender AcceptRoutingHeaders"


def _rows(
    connector: str, sid: str, local: str, remote: str, start_seq: int, rows: list[tuple[str, str, str, str]]
) -> str:
    out = []
    for i, (when, event, data, context) in enumerate(rows):
        out.append(
            f"{when},EX01\\{connector},{sid},{start_seq + i},{local},{remote},{event},{field(data)},{context}\r\n"
        )
    return "".join(out)


def _handmade(d: Path) -> None:
    """Three sessions over two hourly files: an IPv4 relay client whose session crosses the
    hour, an IPv6 relay client (multi-line EHLO reply, a quoted 220), and an outside client
    refused at RCPT on Default Frontend."""
    relay = "10.1.2.3:51000"
    first = _rows(
        "SMTP Relay Script",
        "08DAF3ECE7159810",
        "192.0.2.10:25",
        relay,
        0,
        [
            ("2023-01-11T16:59:58.000Z", "+", "", ""),
            ("2023-01-11T16:59:58.001Z", "*", ANON, "Set Session Permissions"),
            (
                "2023-01-11T16:59:58.001Z",
                ">",
                "220 mail.contoso.com Microsoft ESMTP MAIL Service ready at Wed, 11 Jan 2023 17:59:58 +0100",
                "",
            ),
            ("2023-01-11T16:59:58.010Z", "<", "EHLO app01", ""),
            (
                "2023-01-11T16:59:58.011Z",
                ">",
                "250-mail.contoso.com Hello [10.1.2.3] 250-SIZE 37748736 250 PIPELINING",
                "",
            ),
            ("2023-01-11T16:59:59.000Z", "<", "MAIL FROM:<app@contoso.com> SIZE=1200", ""),
            ("2023-01-11T16:59:59.001Z", ">", "250 2.1.0 Sender OK", ""),
        ],
    )
    v6 = _rows(
        "SMTP Relay Script",
        "08DAF3ECE7159811",
        "2001:db8::10:25",
        "2001:db8:10::7:40000",
        0,
        [
            ("2023-01-11T16:59:59.500Z", "+", "", ""),
            ("2023-01-11T16:59:59.501Z", "*", ANON, "Set Session Permissions"),
            ("2023-01-11T16:59:59.510Z", "<", "EHLO [IPv6:2001:db8:10::7]", ""),
            ("2023-01-11T16:59:59.511Z", ">", "250  mail.contoso.com Hello [2001:db8:10::7] SIZE PIPELINING", ""),
            (
                "2023-01-11T16:59:59.515Z",
                "*",
                "TLS protocol SP_PROT_TLS1_2_SERVER negotiation succeeded using bulk encryption algorithm "
                "CALG_AES_256 with strength 256 bits, MAC hash algorithm CALG_SHA_384 with strength 384 bits",
                "TLS negotiation succeeded",
            ),
            ("2023-01-11T16:59:59.520Z", "<", "MAIL FROM:<ops@contoso.com>", ""),
            ("2023-01-11T16:59:59.520Z", "<", "RCPT TO:<someone@fabrikam.example>", ""),
            ("2023-01-11T16:59:59.521Z", ">", "250 2.1.0 Sender OK", ""),
            ("2023-01-11T16:59:59.521Z", ">", "250 2.1.5 Recipient OK", ""),
            ("2023-01-11T16:59:59.600Z", "-", "", "Remote"),
        ],
    )
    (d / "RECV2023011116-1.LOG").write_bytes((HEADER.format(date="2023-01-11T16:00:00.000Z") + first + v6).encode())
    second = _rows(
        "SMTP Relay Script",
        "08DAF3ECE7159810",
        "192.0.2.10:25",
        relay,
        7,
        [
            ("2023-01-11T17:00:00.100Z", "<", "RCPT TO:<ext@fabrikam.example>", ""),
            ("2023-01-11T17:00:00.101Z", ">", "250 2.1.5 Recipient OK", ""),
            ("2023-01-11T17:00:00.200Z", "<", "DATA", ""),
            ("2023-01-11T17:00:00.201Z", ">", "354 Start mail input; end with <CRLF>.<CRLF>", ""),
            ("2023-01-11T17:00:00.400Z", ">", "250 2.6.0 <x@app01> [InternalId=1] Queued mail for delivery", ""),
            ("2023-01-11T17:00:00.500Z", "<", "QUIT", ""),
            ("2023-01-11T17:00:00.501Z", ">", "221 2.0.0 Service closing transmission channel", ""),
            ("2023-01-11T17:00:00.502Z", "-", "", "Local"),
        ],
    )
    outside = _rows(
        "Default Frontend EX01",
        "08DAF3ECE7159900",
        "192.0.2.10:25",
        "203.0.113.9:1234",
        0,
        [
            ("2023-01-11T17:10:00.000Z", "+", "", ""),
            ("2023-01-11T17:10:00.001Z", "*", DEFAULT, "Set Session Permissions"),
            ("2023-01-11T17:10:00.010Z", "<", "HELO x", ""),
            ("2023-01-11T17:10:00.011Z", ">", "250 mail.contoso.com Hello [203.0.113.9]", ""),
            ("2023-01-11T17:10:00.020Z", "<", "MAIL FROM:<>", ""),
            ("2023-01-11T17:10:00.021Z", ">", "250 2.1.0 Sender OK", ""),
            ("2023-01-11T17:10:00.030Z", "<", "RCPT TO:<x@fabrikam.example>", ""),
            ("2023-01-11T17:10:05.031Z", ">", "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain", ""),
            ("2023-01-11T17:10:05.040Z", "-", "", "Remote"),
        ],
    )
    (d / "RECV2023011117-1.LOG").write_bytes(
        (HEADER.format(date="2023-01-11T17:00:00.000Z") + second + outside).encode()
    )


def _engine(text: str) -> Engine:
    return Engine(loads(text, "replay.yaml").organization)


def test_spec_sample_replays_without_differences() -> None:
    report = replay(_engine(WITH_RANGE), [str(DATA / "RECV2023011116-1.LOG")])
    assert (report.sessions, report.differing) == (1, [])
    [inv] = report.inventory.values()
    assert (inv.client, inv.old_connector, inv.new_connector, inv.sessions) == (
        "198.51.100.7",
        "Default Frontend EX01",
        "Default Frontend EX01",
        1,
    )


def test_handmade_logs_replay_without_differences_on_the_same_configuration(tmp_path: Path) -> None:
    _handmade(tmp_path)
    seen = []
    report = replay(_engine(WITH_RANGE), [str(tmp_path)], progress=seen.append)
    assert report.differing == [] and report.unreadable == []
    assert report.sessions == 3
    assert [(p.files_done, p.files) for p in seen] == [(1, 2), (2, 2)]
    assert sorted((e.client, e.old_connector, e.sessions) for e in report.inventory.values()) == [
        ("10.1.2.3", "SMTP Relay Script", 1),
        ("2001:db8:10::7", "SMTP Relay Script", 1),
        ("203.0.113.9", "Default Frontend EX01", 1),
    ]


def test_one_range_removed_reports_those_sessions(tmp_path: Path) -> None:
    _handmade(tmp_path)
    report = replay(_engine(WITHOUT_V4), [str(tmp_path)])
    groups = report.grouped()
    assert list(groups) == [("10.1.2.3", "SMTP Relay Script")]
    [s] = groups[("10.1.2.3", "SMTP Relay Script")]
    assert s.new_connector == "Default Frontend EX01"
    assert [(d.stage, d.command, d.exchange, d.exmilter) for d in s.differences] == [
        ("connector", "", "SMTP Relay Script", "Default Frontend EX01"),
        ("permissions", "", " ".join(sorted(ANON.split())), " ".join(sorted(DEFAULT.split()))),
        (
            "RCPT",
            "RCPT TO:<ext@fabrikam.example>",
            "250 2.1.5 Recipient OK",
            "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain",
        ),
    ]


def test_session_without_its_end_is_judged_at_the_end(tmp_path: Path) -> None:
    _handmade(tmp_path)
    (tmp_path / "RECV2023011117-1.LOG").unlink()
    report = replay(_engine(WITHOUT_V4), [str(tmp_path)])
    assert report.sessions == 2
    assert [s.session_id for s in report.differing] == ["08DAF3ECE7159810"]


def test_command_exit_status_json_and_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    _handmade(logs)
    cfg = tmp_path / "exmilter.yaml"
    cfg.write_text(WITH_RANGE)
    assert cli.main(["replay", "-c", str(cfg), str(logs)]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("3 session(s) from 34 row(s); 0 session(s) would differ")
    assert "replay: 2/2 files" in out.err
    cfg.write_text(WITHOUT_V4)
    assert cli.main(["replay", "-c", str(cfg), "--json", "--quiet", str(logs)]) == 1
    out = capsys.readouterr()
    data = json.loads(out.out)
    assert [s["client"] for s in data["differing"]] == ["10.1.2.3"]
    assert out.err == ""
    assert cli.main(["replay", "-c", str(cfg), str(tmp_path / "none")]) == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.10:25", ("192.0.2.10", 25)),
        ("2001:db8::10:25", ("2001:db8::10", 25)),
        ("[2001:db8::1]:587", ("2001:db8::1", 587)),
    ],
)
def test_endpoints(text: str, expected: tuple[str, int]) -> None:
    assert split_endpoint(text) == expected


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("550 5.7.54 SMTP; Unable to relay", ("550", "5.7.54")),
        ("250-mail Hello 250 SIZE", ("250", "")),
        ("354 Start mail input", ("354", "")),
        ("421 4.4.2 closing", ("421", "4.4.2")),
        ("hello", None),
    ],
)
def test_reply_keys(text: str, key: tuple[str, str] | None) -> None:
    assert reply_key(text) == key


def test_reader_handles_quotes_and_multiline_rows(tmp_path: Path) -> None:
    _handmade(tmp_path)
    rows = list(read_rows(str(tmp_path / "RECV2023011116-1.LOG")))
    assert rows[2]["data"].startswith("220 mail.contoso.com Microsoft ESMTP MAIL Service ready at Wed, 11 Jan")
    assert rows[11]["data"].endswith("strength 256 bits, MAC hash algorithm CALG_SHA_384 with strength 384 bits")
    assert rows[11]["context"] == "TLS negotiation succeeded"
    r = Replayer(_engine(WITH_RANGE))
    r.feed(rows)
    assert r.finish().sessions == 2


def test_spec_sample_rcpt_is_compared_even_without_the_mail_reply() -> None:
    """The excerpt has no reply for EHLO and MAIL: 5.7.54 answers only RCPT, so it is paired
    with the RCPT (not the oldest pending command), and a configuration that accepts
    fabrikam.example shows the difference there."""
    accepting = WITH_RANGE.replace(
        "accepted_domains: [contoso.com]", "accepted_domains: [contoso.com, fabrikam.example]"
    )
    report = replay(_engine(accepting), [str(DATA / "RECV2023011116-1.LOG")])
    [s] = report.differing
    assert [(d.stage, d.command, d.exmilter) for d in s.differences] == [
        ("RCPT", "RCPT TO:<x@fabrikam.example>", "250 2.1.5 Recipient OK")
    ]


def test_many_differing_sessions_are_counted_not_all_kept(tmp_path: Path) -> None:
    from exmilter.limits import REPLAY_MAX_SESSIONS_PER_GROUP

    n = REPLAY_MAX_SESSIONS_PER_GROUP + 5
    body = "".join(
        _rows(
            "SMTP Relay Script",
            f"08DAF3ECE71{i:05X}",
            "192.0.2.10:25",
            "10.1.2.3:5000",
            0,
            [("2023-01-11T16:10:00.000Z", "+", "", ""), ("2023-01-11T16:10:01.000Z", "-", "", "Remote")],
        )
        for i in range(n)
    )
    (tmp_path / "RECV2023011116-1.LOG").write_bytes((HEADER.format(date="2023-01-11T16:00:00.000Z") + body).encode())
    report = replay(_engine(WITHOUT_V4), [str(tmp_path)])
    assert report.total_differing == n and len(report.differing) == REPLAY_MAX_SESSIONS_PER_GROUP
    text = "\n".join(format_text(report, limit=3))
    assert f"{n} session(s) would differ" in text and f"… and {n - 3} more" in text


def test_tracking_logs_give_the_end_of_data_size(tmp_path: Path) -> None:
    """A message Exchange queued whose size (from MSGTRK, joined on source-context) is over the
    new connector's limit: reported at end of data."""
    _handmade(tmp_path)
    small = WITH_RANGE.replace(
        "permission_groups: [AnonymousUsers]", "permission_groups: [AnonymousUsers]\n    max_message_size: 64KB"
    )
    from exmilter.logs import tracking as T
    from exmilter.logs.w3c import row

    trk = T.tracking_header(0) + row(
        T.receive_row(
            T.MessageFacts(
                time=1673456400.4,
                queue_id="1",
                connector_id="EX01\\SMTP Relay Script",
                client_ip="10.1.2.3",
                client_hostname="app01",
                server_ip="192.0.2.10",
                server_hostname="ex01",
                sender="app@contoso.com",
                recipients=("ext@fabrikam.example",),
                size=200_000,
                message_id="<x@app01>",
                subject="",
                auth_mechanism="00",
                auth_as="Anonymous",
                session_id="08DAF3ECE7159810",
                message_number=1,
            )
        )
    )
    (tmp_path / "MSGTRK2023011117-1.LOG").write_text(trk)
    without = replay(_engine(small), [str(tmp_path)])
    assert without.differing == []  # MAIL had SIZE=1200: within the limit
    report = replay(_engine(small), [str(tmp_path)], [str(tmp_path)])
    [s] = report.differing
    assert [(d.stage, d.exmilter) for d in s.differences] == [
        ("END-OF-DATA", "552 5.3.4 Message size exceeds fixed maximum message size")
    ]


SUBMISSION = """\
server: {name: EX01, fqdn: mail.contoso.com, domain: CONTOSO}
accepted_domains: [contoso.com]
users:
  - {name: svc, addresses: [svc@contoso.com]}
receive_connectors:
  - name: Submission
    transport_role: FrontendTransport
    usage: Custom
    bindings: [0.0.0.0:587]
    remote_ip_ranges: [0.0.0.0-255.255.255.255]
    auth_mechanism: [Tls, BasicAuth, BasicAuthRequireTLS]
    permission_groups: [ExchangeUsers]
    require_tls: true
"""


def test_starttls_and_auth_change_the_session_they_are_judged_as(tmp_path: Path) -> None:
    """After STARTTLS (220) the session is under TLS, after ``*,<user>,authenticated`` it is that
    user's: MAIL needs TLS here and relaying needs the login, so both must be followed."""
    rows = [
        ("2023-01-11T16:00:00.000Z", "+", "", ""),
        ("2023-01-11T16:00:00.001Z", "*", "", "Set Session Permissions"),
        ("2023-01-11T16:00:00.010Z", "<", "EHLO laptop", ""),
        ("2023-01-11T16:00:00.011Z", ">", "250-mail.contoso.com Hello 250 STARTTLS", ""),
        ("2023-01-11T16:00:00.020Z", "<", "STARTTLS", ""),
        ("2023-01-11T16:00:00.021Z", ">", "220 2.0.0 SMTP server ready", ""),
        ("2023-01-11T16:00:00.030Z", "<", "EHLO laptop", ""),
        ("2023-01-11T16:00:00.031Z", ">", "250-mail.contoso.com Hello 250 AUTH LOGIN", ""),
        ("2023-01-11T16:00:00.040Z", "<", "AUTH LOGIN", ""),
        ("2023-01-11T16:00:00.041Z", ">", "334 <authentication response>", ""),
        ("2023-01-11T16:00:00.050Z", "*", "svc", "authenticated"),
        ("2023-01-11T16:00:00.050Z", ">", "235 2.7.0 Authentication successful", ""),
        ("2023-01-11T16:00:00.060Z", "<", "MAIL FROM:<svc@contoso.com>", ""),
        ("2023-01-11T16:00:00.061Z", ">", "250 2.1.0 Sender OK", ""),
        ("2023-01-11T16:00:00.070Z", "<", "RCPT TO:<x@fabrikam.example>", ""),
        ("2023-01-11T16:00:00.071Z", ">", "250 2.1.5 Recipient OK", ""),
        ("2023-01-11T16:00:00.080Z", "-", "", "Local"),
    ]
    body = _rows("Submission", "08DAF3ECE7150001", "192.0.2.10:587", "198.51.100.20:50000", 0, rows)
    (tmp_path / "RECV2023011116-1.LOG").write_bytes((HEADER.format(date="2023-01-11T16:00:00.000Z") + body).encode())
    report = replay(_engine(SUBMISSION), [str(tmp_path)])
    assert report.differing == []
    # The same session without its STARTTLS rows: MAIL would now be refused (TLS required).
    plain = [r for r in rows if r[2] not in ("STARTTLS", "220 2.0.0 SMTP server ready")]
    body = _rows("Submission", "08DAF3ECE7150001", "192.0.2.10:587", "198.51.100.20:50000", 0, plain)
    (tmp_path / "RECV2023011116-1.LOG").write_bytes((HEADER.format(date="2023-01-11T16:00:00.000Z") + body).encode())
    [s] = replay(_engine(SUBMISSION), [str(tmp_path)]).differing
    assert s.differences[0].stage == "MAIL"
    assert s.differences[0].exmilter == "451 4.7.3 STARTTLS is required to send mail"
    # ... and without the login: the session is anonymous, which this connector does not let submit.
    anonymous = [r for r in rows if r[3] != "authenticated"]
    body = _rows("Submission", "08DAF3ECE7150001", "192.0.2.10:587", "198.51.100.20:50000", 0, anonymous)
    (tmp_path / "RECV2023011116-1.LOG").write_bytes((HEADER.format(date="2023-01-11T16:00:00.000Z") + body).encode())
    [s] = replay(_engine(SUBMISSION), [str(tmp_path)]).differing
    assert [d.stage for d in s.differences] == ["MAIL", "RCPT"]
    assert s.differences[0].exmilter.startswith("530 5.7.57")


@pytest.mark.parametrize(
    ("fact", "refusal"),
    [
        ("ReceivedHeadersLength: 61 > MaxHopCount: 60", "554 5.4.6 Hop count exceeded - possible mail loop"),
        ("LocalHopCount: 6 > MaxLocalHopCount: 5", "554 5.4.6 Hop count exceeded - possible mail loop"),
        ("HeaderSize: 300000 > MaxHeaderSize: 262144", "552 5.3.4 Header size exceeds fixed maximum size"),
    ],
)
def test_header_facts_of_the_log_decide_end_of_data(tmp_path: Path, fact: str, refusal: str) -> None:
    """Spec §5.1's ``*`` texts before a refusal say what the header block held: the refusal
    replays without difference, and a limit raised in the new file shows as one."""
    from exmilter import replies as R

    assert refusal in (R.HOP_COUNT_EXCEEDED.line, R.HEADER_SIZE_EXCEEDED.line)
    rows = [
        ("2023-01-11T16:00:00.000Z", "+", "", ""),
        ("2023-01-11T16:00:00.001Z", "*", ANON, "Set Session Permissions"),
        ("2023-01-11T16:00:00.010Z", "<", "EHLO app01", ""),
        ("2023-01-11T16:00:00.060Z", "<", "MAIL FROM:<app@contoso.com>", ""),
        ("2023-01-11T16:00:00.061Z", ">", "250 2.1.0 Sender OK", ""),
        ("2023-01-11T16:00:00.070Z", "<", "RCPT TO:<x@fabrikam.example>", ""),
        ("2023-01-11T16:00:00.071Z", ">", "250 2.1.5 Recipient OK", ""),
        ("2023-01-11T16:00:00.080Z", "<", "DATA", ""),
        ("2023-01-11T16:00:00.081Z", ">", "354 Start mail input; end with <CRLF>.<CRLF>", ""),
        ("2023-01-11T16:00:00.090Z", "*", fact, ""),
        ("2023-01-11T16:00:00.091Z", ">", refusal, ""),
        ("2023-01-11T16:00:00.100Z", "-", "", "Remote"),
    ]
    body = _rows("SMTP Relay Script", "08DAF3ECE7150002", "192.0.2.10:25", "10.1.2.3:50000", 0, rows)
    (tmp_path / "RECV2023011116-1.LOG").write_bytes((HEADER.format(date="2023-01-11T16:00:00.000Z") + body).encode())
    assert replay(_engine(WITH_RANGE), [str(tmp_path)]).differing == []
    raised = WITH_RANGE.replace(
        "permission_groups: [AnonymousUsers]",
        "permission_groups: [AnonymousUsers]\n    max_hop_count: 100\n    max_local_hop_count: 10\n"
        "    max_header_size: 1MB",
    )
    [s] = replay(_engine(raised), [str(tmp_path)]).differing
    assert [(d.stage, d.exmilter) for d in s.differences] == [("END-OF-DATA", "250 2.6.0 Queued mail for delivery")]
