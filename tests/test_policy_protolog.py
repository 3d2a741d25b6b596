"""The protocol log from the policy daemon: rows per stage for Verbose connectors only, readable by replay."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

from exmilter.config import loads
from exmilter.engine import Engine
from exmilter.logs import w3c
from exmilter.logs.events import LogWriteFailed
from exmilter.logs.files import Writers
from exmilter.logs.protocol import MemorySink, ProtocolLog
from exmilter.logs.replay import Replayer
from exmilter.model import Right
from exmilter.policy.decide import Decider
from exmilter.policy.protolog import Recorder, open_recorder

CONFIG = """\
server: {name: EX01, fqdn: mail.contoso.com, domain: CONTOSO}
default_connectors: true
accepted_domains: [contoso.com]
receive_connectors:
  - name: Relay
    transport_role: FrontendTransport
    usage: Custom
    bindings: [0.0.0.0:25]
    remote_ip_ranges: [10.1.0.0/16]
    permission_groups: [AnonymousUsers]
    protocol_logging_level: Verbose
    permissions:
      - user: NT AUTHORITY\\ANONYMOUS LOGON
        extended_rights: [ms-Exch-SMTP-Accept-Any-Recipient]
  - name: Quiet
    transport_role: FrontendTransport
    usage: Custom
    bindings: [0.0.0.0:25]
    remote_ip_ranges: [10.2.0.0/16]
    permission_groups: [AnonymousUsers]
"""
T0 = w3c.parse_timestamp("2026-12-02T15:00:00Z")


def _req(state: str, client: str, **attrs: str) -> dict[str, str]:
    base = {
        "request": "smtpd_access_policy",
        "protocol_state": state,
        "protocol_name": "ESMTP",
        "client_address": client,
        "client_port": "40000",
        "server_address": "127.0.0.1",
        "server_port": "2525",  # moved by the sandbox; the context names the binding
        "policy_context": "*:25",
        "helo_name": "app01",
        "sender": "app@contoso.com",
    }
    base.update(attrs)
    return base


def _session(client: str, rec: Recorder, engine: Engine, decider: Decider) -> None:
    for state, attrs in (
        ("CONNECT", {"helo_name": "", "sender": ""}),
        ("MAIL", {"size": "1200"}),
        ("RCPT", {"recipient": "x@fabrikam.example", "instance": f"t-{client}"}),
        ("RCPT", {"recipient": "bad@@x", "instance": f"t-{client}"}),
        (
            "END-OF-MESSAGE",
            {"size": "1300", "instance": f"t-{client}", "queue_id": "4F9D21E0F", "recipient_count": "1"},
        ),
    ):
        req = _req(state, client, **attrs)  # a new instance per session: Postfix's is per transaction
        rec.record(engine, req, decider.decide(engine, req))


def test_rows_for_a_verbose_connector_and_nothing_for_the_others() -> None:
    engine = Engine(loads(CONFIG, "c.yaml").organization)
    sink = MemorySink()
    rec = Recorder(ProtocolLog(sink), clock=lambda: T0)
    decider = Decider(lambda: T0)
    _session("10.2.0.9", rec, engine, decider)  # Quiet: protocol_logging_level None
    assert sink.rows == []
    _session("10.1.2.3", rec, engine, decider)
    rows = [line.split(",", 6)[3:] for line in sink.lines()]
    events = [(r[0], r[3].split(",", 1)[0] + "," + r[3].split(",", 1)[1]) for r in rows]
    assert [r[1:3] for r in rows[:1]] == [["127.0.0.1:25", "10.1.2.3:40000"]]  # the context's port, not the moved one
    assert [e for _, e in events] == [
        "+,,",
        "*,SMTPSubmit SMTPAcceptAnyRecipient SMTPAcceptAnySender SMTPAcceptAuthoritativeDomainSender "
        "AcceptRoutingHeaders,Set Session Permissions",
        ">,220 mail.contoso.com Microsoft ESMTP MAIL Service ready,",
        "<,EHLO app01,",
        "<,MAIL FROM:<app@contoso.com> SIZE=1200,",
        ">,250 2.1.0 Sender OK,",
        "<,RCPT TO:<x@fabrikam.example>,",
        ">,250 2.1.5 Recipient OK,",
        "<,RCPT TO:<bad@@x>,",
        ">,501 5.1.3 Invalid address,",
        ">,250 2.6.0 Queued mail for delivery,",
    ]
    assert [r[0] for r in rows] == [str(i) for i in range(11)]
    assert all(line.split(",")[1] == "EX01\\Relay" for line in sink.lines())
    # What the daemon wrote replays against the same configuration with no difference.
    text = "".join(t for _, t in sink.rows)
    names = "date-time,connector-id,session-id,sequence-number,local-endpoint,remote-endpoint,event,data,context"

    replayer = Replayer(engine)
    replayer.feed(dict(zip(names.split(","), r, strict=True)) for r in csv.reader(text.splitlines()))
    report = replayer.finish()
    assert (report.sessions, report.differing) == (1, [])


def test_authentication_adds_a_row_and_new_permissions() -> None:
    cfg = CONFIG.replace(
        "permission_groups: [AnonymousUsers]\n    protocol_logging_level: Verbose",
        "permission_groups: [AnonymousUsers, ExchangeUsers]\n    protocol_logging_level: Verbose\n"
        "    auth_mechanism: [Tls, BasicAuth]",  # a login this connector can accept
    )
    cfg += "users:\n  - name: svc\n    addresses: [svc@contoso.com]\n"
    engine = Engine(loads(cfg, "c.yaml").organization)
    sink = MemorySink()
    rec = Recorder(ProtocolLog(sink), clock=lambda: T0)
    req = _req("MAIL", "10.1.2.3", sasl_username="svc", sasl_method="LOGIN", sender="svc@contoso.com")
    rec.record(engine, req, Decider(lambda: T0).decide(engine, req))
    lines = [line.split(",", 7)[6:] for line in sink.lines()]
    assert lines[3] == ["*", "svc,authenticated"]
    assert lines[4][0] == "*" and lines[4][1].endswith("Set Session Permissions")
    assert (
        lines[4][1] == "SMTPSubmit SMTPAcceptAnyRecipient BypassAntiSpam AcceptRoutingHeaders,Set Session Permissions"
    )


def test_open_recorder_reports_failures_and_counts_them(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = CONFIG + f"logs: {{receive_protocol_log_path: {blocker}/RECV}}\n"
    org = loads(cfg, "c.yaml").organization
    engine = Engine(org)
    reported: list[LogWriteFailed] = []
    writers = Writers()
    rec = open_recorder(org, reported.append, writers)
    assert rec is not None
    decider = Decider(lambda: T0)
    for client in ("10.1.2.3", "10.1.2.4", "10.1.2.5"):
        _session(client, rec, engine, decider)  # mail is decided; nothing raises
    writers.flush()
    assert writers.failures == 3 * 11  # every row lost, counted; the report is rate-limited
    writers.close()
    assert len(reported) == 1 and reported[0].log == "protocol" and reported[0].directory == f"{blocker}/RECV"


def test_no_path_no_recorder() -> None:
    org = loads(CONFIG + "logs: {receive_protocol_log_path: ''}\n", "c.yaml").organization
    assert open_recorder(org, print, Writers()) is None


# -- RECEIVE rows from the policy daemon ---------------------------------------------------------------


def _receive_rows(cfg: str, client: str, **attrs: str) -> list[dict[str, str]]:
    from exmilter.logs.tracking import FIELDS, TrackingLog
    from exmilter.policy.receipts import Receipts

    engine = Engine(loads(cfg, "c.yaml").organization)
    sink = MemorySink()
    receipts = Receipts(TrackingLog(sink, "mail.contoso.com"), "mail.contoso.com", clock=lambda: T0)
    decider = Decider(lambda: T0)
    steps = [
        ("MAIL", {}),
        ("RCPT", {"recipient": "a@fabrikam.example", "instance": "q1"}),
        ("RCPT", {"recipient": "b@fabrikam.example", "instance": "q1"}),
        ("RCPT", {"recipient": "bad@@x", "instance": "q1"}),  # refused: not a recipient of the message
        ("END-OF-MESSAGE", {"size": "1300", "instance": "q1", "queue_id": "4F9D21E0F", "recipient_count": "2"}),
    ]
    for state, extra in steps:
        req = _req(state, client, **{**extra, **attrs})
        receipts.record(engine, req, decider.decide(engine, req))
    return [dict(zip(FIELDS, next(csv.reader([line])), strict=True)) for line in sink.lines()]


def test_receive_row_of_an_anonymous_relay() -> None:
    [row] = _receive_rows(CONFIG, "10.1.2.3")
    assert (row["event-id"], row["source"], row["connector-id"], row["internal-message-id"]) == (
        "RECEIVE",
        "SMTP",
        "EX01\\Relay",
        "4F9D21E0F",
    )
    assert (row["message-info"], row["directionality"]) == ("00A:", "Incoming")
    assert (row["recipient-address"], row["recipient-count"], row["total-bytes"]) == (
        "a@fabrikam.example;b@fabrikam.example",
        "2",
        "1300",
    )
    assert (row["client-ip"], row["client-hostname"], row["sender-address"]) == ("10.1.2.3", "app01", "app@contoso.com")


def test_receive_row_of_an_authenticated_submission_is_internal() -> None:
    cfg = CONFIG.replace(
        "permission_groups: [AnonymousUsers]\n    protocol_logging_level: Verbose",
        "permission_groups: [AnonymousUsers, ExchangeUsers]\n    protocol_logging_level: Verbose\n"
        "    auth_mechanism: [Tls, BasicAuth]",  # a login this connector can accept
    )
    cfg += "users:\n  - name: svc\n    addresses: [app@contoso.com]\n"
    [row] = _receive_rows(cfg, "10.1.2.3", sasl_username="svc", sasl_method="LOGIN", encryption_protocol="TLSv1.3")
    assert (row["message-info"], row["directionality"]) == ("06I:", "Originating")
    [plain] = _receive_rows(cfg, "10.1.2.3", sasl_username="svc", sasl_method="LOGIN")
    assert plain["message-info"] == "07I:"


def test_no_receive_row_for_a_refused_message() -> None:
    cfg = CONFIG.replace(
        "remote_ip_ranges: [10.1.0.0/16]", "remote_ip_ranges: [10.1.0.0/16]\n    max_message_size: 64KB"
    )
    rows = _receive_rows(cfg, "10.1.2.3", size="100000")  # over 64 KB: refused at end of data, so no RECEIVE
    assert rows == []


def test_a_reload_that_changes_logs_says_a_restart_is_needed(tmp_path: Path) -> None:
    """The log writers are opened at start: a reload changing ``logs:`` is applied otherwise
    and says so; one that does not change it says nothing."""
    from twisted.internet import defer

    from exmilter.config import load
    from exmilter.logs.events import Event, RestartNeeded
    from exmilter.policy.metrics import NullMetrics
    from exmilter.policy.reload import Runtime

    path = tmp_path / "exmilter.yaml"
    path.write_text(CONFIG)
    seen: list[Event] = []
    rt = Runtime(
        str(path),
        load(path),
        NullMetrics(),
        run_blocking=lambda f, *a: defer.maybeDeferred(f, *a),
        log_sink=seen.append,
    )
    path.write_text(CONFIG.replace("10.2.0.0/16", "10.3.0.0/16"))
    rt.reload()
    assert [e for e in seen if isinstance(e, RestartNeeded)] == []
    path.write_text(CONFIG + "logs: {message_tracking_log_path: /srv/trk}\n")
    rt.reload()
    assert [e for e in seen if isinstance(e, RestartNeeded)] == [RestartNeeded("logs", str(path))]
    assert rt.current.number == 3


def test_permissions_rows_use_the_decisions_session_without_asking_the_engine_again() -> None:
    """The daemon passes the session its decision was made with: the ``Set Session Permissions``
    rows are its rights (a session pinned across a reload keeps its connector's), and the engine
    is not asked to select the connector a second time."""
    engine = Engine(loads(CONFIG, "c.yaml").organization)
    sink = MemorySink()
    rec = Recorder(ProtocolLog(sink), clock=lambda: T0)
    decider = Decider(lambda: T0)
    req = _req("CONNECT", "10.1.2.3", helo_name="", sender="")
    d = decider.decide(engine, req)
    session = decider.session
    assert session is not None and session.rights
    chosen = Right.SMTPSubmit  # not what the engine would compute: proves where the row comes from

    class Asked(Exception):
        pass

    def ask(*_a: object, **_k: object) -> None:
        raise Asked

    engine.open_session = ask  # type: ignore[method-assign]  # asking again would fail the test
    rec.record(engine, req, d, session)
    rec.record(engine, req, d, dataclasses.replace(session, rights=chosen))  # a CONNECT: a new session
    rows = [line.split(",", 7)[6:] for line in sink.lines()]
    perms = [r[1] for r in rows if r[0] == "*"]
    assert perms == [
        session.rights.tokens() + ",Set Session Permissions",
        "SMTPSubmit,Set Session Permissions",
    ]


def test_receive_lists_the_deciders_accepted_recipients() -> None:
    """In the daemon the receipts keep no table of their own: the decider's answers say which
    recipients of the transaction were accepted (in order, refusals and re-sends left out)."""
    from exmilter.logs.tracking import FIELDS, TrackingLog
    from exmilter.policy.receipts import Receipts

    engine = Engine(loads(CONFIG, "c.yaml").organization)
    sink = MemorySink()
    decider = Decider(lambda: T0)
    receipts = Receipts(
        TrackingLog(sink, "mail.contoso.com"),
        "mail.contoso.com",
        clock=lambda: T0,
        recipients=decider.accepted_recipients,
    )
    for state, extra in (
        ("MAIL", {"instance": "q1"}),
        ("RCPT", {"recipient": "a@fabrikam.example", "instance": "q1"}),
        ("RCPT", {"recipient": "bad@@x", "instance": "q1"}),
        ("RCPT", {"recipient": "b@fabrikam.example", "instance": "q1"}),
        ("RCPT", {"recipient": "a@fabrikam.example", "instance": "q1"}),  # re-sent: answered from memory
        ("END-OF-MESSAGE", {"size": "1300", "instance": "q1", "queue_id": "4F9D21E0F", "recipient_count": "2"}),
    ):
        req = _req(state, "10.1.2.3", **extra)
        receipts.record(engine, req, decider.decide(engine, req), decider.session)
    [line] = sink.lines()
    row = dict(zip(FIELDS, next(csv.reader([line])), strict=True))
    assert row["recipient-address"] == "a@fabrikam.example;b@fabrikam.example"
    assert row["recipient-count"] == "2"
    assert decider.accepted_recipients("unknown") is None
