"""The protocol log the milter writes (spec §5.1), through its libmilter callbacks
(Milter.testctx, no MTA), with a fixed clock: exact rows per session, Verbose connectors only,
the tracking row naming the same session, and lost rows counted in the milter's metric."""

from __future__ import annotations

import email
from collections.abc import Iterator
from pathlib import Path

import Milter
import pytest
from Milter.testctx import TestCtx as MilterTestCtx
from prometheus_client import CollectorRegistry

from exmilter import replies as R
from exmilter.config import load
from exmilter.logs.files import Writers, open_protocol_log
from exmilter.logs.protocol import MemorySink, ProtocolLog, SessionIds
from exmilter.logs.tracking import TrackingLog
from exmilter.logs.w3c import read_rows
from exmilter.milter.callbacks import ExchangeMilter, Shared
from exmilter.milter.coverage import CoverageSender
from exmilter.milter.macros import TlsFacts
from exmilter.milter.metrics import MilterMetrics
from exmilter.milter.protolog import tls_context
from exmilter.runtime.generation import Generations
from tests.conftest import EXAMPLE

T0 = 1_670_000_000.0  # 2022-12-02T16:53:20Z
SESSION = "08DAD485B7754000"  # T0 in .NET ticks
DEFAULT_FRONTEND = "EXCH01\\Default Frontend EXCH01"
PERMISSIONS = "SMTPSubmit SMTPAcceptAnySender SMTPAcceptAuthoritativeDomainSender AcceptRoutingHeaders"
BANNER = "220 exch01.labs.local Microsoft ESMTP MAIL Service ready"


class Logs:
    def __init__(self) -> None:
        self.protocol = MemorySink()
        self.tracking = MemorySink()

    def rows(self) -> list[tuple[str, str, str]]:
        """(event, data, context) of each row, after checking the constant fields."""
        out = []
        for i, line in enumerate(self.protocol.lines()):
            fields = next(iter(__import__("csv").reader([line])))
            assert fields[0] == "2022-12-02T16:53:20.000Z"
            assert fields[2:4] == [SESSION, str(i)]  # one session, numbered from 0
            out.append((fields[6], fields[7], fields[8]))
        return out


@pytest.fixture
def logs() -> Iterator[Logs]:
    metrics = MilterMetrics(CollectorRegistry())
    events: list[object] = []
    out = Logs()
    shared = Shared(
        Generations(str(EXAMPLE), load(EXAMPLE), metrics, events.append),
        metrics,
        CoverageSender(None),
        events.append,
        tracking=TrackingLog(out.tracking, "exch01.labs.local"),
        protocol=ProtocolLog(out.protocol),
        session_ids=SessionIds(),
        clock=lambda: T0,
    )
    old = Milter.factory
    Milter.factory = lambda: ExchangeMilter(shared)
    yield out
    Milter.factory = old


def connected(client: str = "203.0.113.9", context: str = "*:25", helo: str = "client.test") -> MilterTestCtx:
    c = MilterTestCtx()
    for k, v in {
        "{daemon_name}": context,
        "{daemon_addr}": "10.83.4.10",
        "{client_addr}": client,
        "{client_port}": "40000",
    }.items():
        c._setsymval(k, v)
    assert c._connect(ip=client, helo=helo) == Milter.CONTINUE
    return c


def message(c: MilterTestCtx, headers: list[tuple[str, str]]) -> int:
    """DATA, the header block and end of data; libmilter's answer at end of data."""
    assert c._data() == Milter.CONTINUE
    for name, value in headers:
        c._header(name, value)
    rc = c._eoh()
    if rc != Milter.CONTINUE:
        return int(rc)
    c._msg = email.message_from_string("".join(f"{n}: {v}\n" for n, v in headers) + "\nhello\n")
    return int(c._eom())


OPENING = [
    ("+", "", ""),
    ("*", PERMISSIONS, "Set Session Permissions"),
    (">", BANNER, ""),
    ("<", "EHLO client.test", ""),
]


def test_refused_relay_and_an_accepted_message_row_by_row(logs: Logs) -> None:
    c = connected()
    assert c._envfrom("<a@fabrikam.example>", "SIZE=100", "BODY=8BITMIME") == Milter.CONTINUE
    assert c._envrcpt("<x@gmail.example>") == Milter.REJECT
    assert c._envrcpt("<postmaster@labs.local>") == Milter.CONTINUE
    headers = [("Message-ID", "<1@app.example>"), ("From", "a@fabrikam.example"), ("Subject", "x")]
    assert message(c, headers) == Milter.CONTINUE
    c._close()
    assert logs.rows() == [
        *OPENING,
        ("<", "MAIL FROM:<a@fabrikam.example> SIZE=100 BODY=8BITMIME", ""),
        (">", "250 2.1.0 Sender OK", ""),
        ("<", "RCPT TO:<x@gmail.example>", ""),
        (">", "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain", ""),
        ("<", "RCPT TO:<postmaster@labs.local>", ""),
        (">", "250 2.1.5 Recipient OK", ""),
        ("<", "DATA", ""),
        (">", "354 Start mail input; end with <CRLF>.<CRLF>", ""),
        ("*", "receiving message with InternetMessageId <1@app.example>", ""),
        (">", "250 2.6.0 Queued mail for delivery", ""),
        ("-", "", "Remote"),
    ]
    fields = logs.protocol.lines()[0].split(",")
    assert (fields[1], fields[4], fields[5]) == (DEFAULT_FRONTEND, "10.83.4.10:25", "203.0.113.9:40000")
    # the RECEIVE row names the same session (source-context <session-id>;<start>;<n>)
    (receive,) = [r for _, r in logs.tracking.rows]
    assert f",{SESSION};2022-12-02T16:53:20.000Z;1," in receive
    assert ",x@gmail.example" not in receive  # refused recipients are not tracked


def test_header_block_refusal_says_why_before_the_reply(logs: Logs) -> None:
    c = connected()
    c._envfrom("<a@fabrikam.example>")
    c._envrcpt("<postmaster@labs.local>")
    hops = [("Received", f"from hop{i}.example by mx") for i in range(61)]
    assert message(c, [*hops, ("From", "a@fabrikam.example")]) == Milter.REJECT
    assert logs.rows()[-2:] == [
        ("*", "ReceivedHeadersLength: 61 > MaxHopCount: 60", ""),
        (">", "554 5.4.6 Hop count exceeded - possible mail loop", ""),
    ]
    assert logs.tracking.rows == []  # refused in SMTP: no tracking row (spec §5.2)


def test_starttls_seen_in_the_second_ehlo_and_a_login_with_its_permissions(logs: Logs) -> None:
    c = connected()
    c._setsymval("{tls_version}", "TLSv1.3")
    c._setsymval("{cipher}", "TLS_AES_256_GCM_SHA384")
    assert c._helo("client.test") == Milter.CONTINUE
    c._setsymval("{auth_authen}", "svc-mailer")
    c._setsymval("{auth_type}", "LOGIN")
    # svc-mailer has no Submit on Default Frontend (ExchangeUsers is not among its groups)
    assert c._envfrom("<svc-mailer@labs.local>") == Milter.REJECT
    rows = logs.rows()
    anonymous = rows[1][1]
    assert rows[4:] == [
        ("<", "STARTTLS", ""),
        (">", "220 2.0.0 Ready to start TLS", ""),
        ("*", "", "TLS protocol TLSv1.3 negotiation succeeded using cipher TLS_AES_256_GCM_SHA384"),
        ("<", "EHLO client.test", ""),
        ("*", "svc-mailer", "authenticated"),
        ("*", rows[9][1], "Set Session Permissions"),
        ("<", "MAIL FROM:<svc-mailer@labs.local>", ""),
        (">", R.SUBMIT_DENIED.line, ""),
    ]
    assert rows[9][1] != anonymous  # the login's own rights on Default Frontend


def test_only_verbose_connectors_write(logs: Logs) -> None:
    """Client Frontend logs None, as on a new Exchange server (spec §1.4)."""
    c = connected(context="*:587")
    assert c._envfrom("<svc-mailer@labs.local>") == Milter.REJECT  # 530 5.7.57: not authenticated yet
    c._close()
    assert logs.protocol.rows == []
    assert logs.tracking.rows == []


def test_a_reply_that_closes_is_a_local_disconnect(logs: Logs, monkeypatch) -> None:
    c = connected()
    priv = c.getpriv()
    monkeypatch.setattr(priv.session.engine, "mail", lambda *a, **k: R.MESSAGE_RATE_EXCEEDED)
    assert c._envfrom("<a@fabrikam.example>") == Milter.TEMPFAIL
    c._close()
    assert R.MESSAGE_RATE_EXCEEDED.close
    assert logs.rows()[-2:] == [(">", R.MESSAGE_RATE_EXCEEDED.line, ""), ("-", "", "Local")]


def test_tls_context_without_a_cipher() -> None:
    assert tls_context(TlsFacts("TLSv1.2")) == "TLS protocol TLSv1.2 negotiation succeeded"


def test_unwritable_directory_is_counted_in_the_milter_metric(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the log directory should be\n")
    org = load(EXAMPLE).organization
    from dataclasses import replace

    writers = Writers()
    failures: list[str] = []
    plog = open_protocol_log(
        replace(org.logs, receive_protocol_log_path=str(blocker / "SmtpReceive")),
        writers,
        lambda where, e: failures.append(where),
    )
    assert plog is not None
    registry = CollectorRegistry()
    MilterMetrics(registry).watch_log_failures(writers.failures_by_log)  # as the daemon registers it
    s = plog.session(DEFAULT_FRONTEND, "127.0.0.1", 25, "127.0.0.2", 1000, T0)
    s.connect(T0)
    s.disconnect("Remote", T0)
    writers.flush()
    assert registry.get_sample_value("exmilter_milter_log_write_failures_total", {"log": "protocol"}) == 2
    assert registry.get_sample_value("exmilter_milter_log_write_failures_total", {"log": "tracking"}) == 0
    assert failures == [str(blocker / "SmtpReceive")]
    writers.close()


def test_rows_written_to_files_read_back_as_exchange_rows(tmp_path: Path) -> None:
    org = load(EXAMPLE).organization
    from dataclasses import replace

    writers = Writers()
    plog = open_protocol_log(replace(org.logs, receive_protocol_log_path=str(tmp_path)), writers)
    assert plog is not None
    s = plog.session(DEFAULT_FRONTEND, "127.0.0.1", 25, "127.0.0.2", 1000, T0, session_id=SESSION)
    s.connect(T0)
    s.sent("550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain", T0)
    writers.close()
    (name,) = [p.name for p in tmp_path.iterdir()]
    assert name == "RECV2022120216-1.LOG"
    rows = list(read_rows(str(tmp_path / name)))
    assert [(r["session-id"], r["sequence-number"], r["event"]) for r in rows] == [
        (SESSION, "0", "+"),
        (SESSION, "1", ">"),
    ]
