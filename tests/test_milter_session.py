"""The milter's per-connection logic without an MTA: macros -> session -> typed verdicts and
header edits, table-driven from the spec (§3.4-§3.7, §4)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from exmilter import replies as R
from exmilter.engine import Engine
from exmilter.headers import Add, Remove
from exmilter.milter.macros import AuthFacts, TlsFacts, auth_facts, connect_facts, queue_id, tls_facts
from exmilter.milter.session import CONTINUE, Accept, MilterSession, Refuse, mail_parameter, wire
from exmilter.replies import Reply
from tests.conftest import FakeClock, org_from

CONFIG = """
accepted_domains:
  - {domain_name: contoso.com}
  - {domain_name: partner-hosted.example, domain_type: ExternalRelay}
users:
  - {name: bob, addresses: [bob@contoso.com], send_as: [shared@contoso.com]}
receive_connectors:
  - name: Front
    bindings: 0.0.0.0:25
    remote_ip_ranges: 0.0.0.0/0
    permission_groups: [AnonymousUsers, ExchangeServers]
    max_header_size: 1KB
    max_message_size: 64KB
    max_hop_count: 3
    max_local_hop_count: 1
    fqdn: mx.contoso.com
    max_recipients_per_message: 2
  - name: Scanner
    bindings: 0.0.0.0:25
    remote_ip_ranges: 10.5.0.0/24
    auth_mechanism: [Tls, ExternalAuthoritative]
    permission_groups: [ExchangeServers]
    max_message_size: 64KB
  - name: Hub
    bindings: 0.0.0.0:25
    remote_ip_ranges: 10.6.0.1
    permission_groups: [AnonymousUsers]
    permissions:
      - user: NT AUTHORITY\\ANONYMOUS LOGON
        extended_rights: [ms-Exch-Accept-Headers-Organization, ms-Exch-Accept-Headers-Forest]
    max_message_size: 64KB
  - name: Client
    bindings: 0.0.0.0:587
    remote_ip_ranges: 0.0.0.0/0
    permission_groups: [ExchangeUsers]
    auth_mechanism: [Tls, BasicAuth]  # accepts the logins below, with or without TLS
  - name: Strict
    bindings: 0.0.0.0:2525
    remote_ip_ranges: 0.0.0.0/0
    permission_groups: [Partners]
    permissions:
      - user: NT AUTHORITY\\ANONYMOUS LOGON
        extended_rights: [ms-Exch-SMTP-Submit]
    bare_linefeed_rejection_enabled: $true
"""

ARRIVAL = datetime(2023, 3, 25, 3, 23, 47, 123456, tzinfo=UTC)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(org_from(CONFIG), clock=FakeClock())


def ids():
    n = iter(range(1, 1000))
    return lambda: f"00000000-0000-0000-0000-{next(n):012d}"


def opened(engine: Engine, client: str = "203.0.113.9", context: str = "*:25", **mail) -> MilterSession:
    m = MilterSession(engine, wall_clock=lambda: ARRIVAL, new_id=ids())
    facts = connect_facts({"{daemon_name}": context, "{client_addr}": client, "{client_port}": "40000"})
    assert m.connect(facts) is CONTINUE
    m.hello("client.example", TlsFacts(mail.pop("tls", "")))
    return m


def transaction(
    engine: Engine,
    *,
    client: str = "203.0.113.9",
    context: str = "*:25",
    sender: str = "<a@fabrikam.example>",
    rcpts: tuple[str, ...] = ("x@contoso.com",),
    headers: tuple[tuple[str, str], ...] = (("From", "a@fabrikam.example"), ("To", "x@contoso.com")),
    body: bytes = b"hello\r\n",
    user: str | None = None,
    tls: str = "",
    params: tuple[str, ...] = (),
) -> tuple[MilterSession, list[object]]:
    m = opened(engine, client, context, tls=tls)
    out: list[object] = [m.mail(sender, params, AuthFacts(user, "LOGIN" if user else ""))]
    out += [m.rcpt(f"<{r}>") for r in rcpts]
    for n, v in headers:
        out.append(m.header(n, v))
    out.append(m.end_of_headers())
    out.append(m.body(body))
    out.append(m.end_of_message())
    return m, out


def final(out: list[object]) -> object:
    """The first refusal, else the end-of-data verdict."""
    return next((v for v in out if isinstance(v, Refuse)), out[-1])


# --- macros ----------------------------------------------------------------------------------


def test_connect_macros_name_the_listener_and_the_client():
    f = connect_facts(
        {"{daemon_name}": "10.1.1.1:25", "{client_addr}": "192.0.2.7", "{client_port}": "4711", "{daemon_port}": "2525"}
    )
    assert (f.listener.address, f.listener.port, f.client_ip, f.client_port, f.daemon_port) == (
        "10.1.1.1",
        25,
        "192.0.2.7",
        4711,
        2525,
    )
    assert f.problem == ""


@pytest.mark.parametrize("name", [None, "", "mail.example.com", "*:0", "*:99999"])
def test_a_daemon_name_that_is_no_context_cannot_be_placed(name):
    f = connect_facts({"{daemon_name}": name, "{client_addr}": "192.0.2.7"})
    assert f.listener is None and "listener context" in f.problem


def test_the_peer_address_stands_in_for_missing_client_macros():
    f = connect_facts({"{daemon_name}": "*:25"}, "192.0.2.8", 1234)
    assert (f.client_ip, f.client_port) == ("192.0.2.8", 1234)


def test_tls_auth_and_queue_id_macros():
    assert tls_facts({"{tls_version}": "TLSv1.3", "{cipher}": "X"}).active
    assert not tls_facts({"{tls_version}": None}).active
    assert auth_facts({"{auth_authen}": "bob", "{auth_type}": "PLAIN"}) == AuthFacts("bob", "PLAIN")
    assert auth_facts({}) == AuthFacts(None, "")
    assert queue_id({"i": "4ABC"}) == "4ABC" and queue_id({"i": None}) == ""


# --- wire form -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (R.UNABLE_TO_RELAY, ("550", "5.7.54", "SMTP; Unable to relay recipient in non-accepted domain")),
        (R.STARTTLS_REQUIRED, ("451", "4.7.3", "STARTTLS is required to send mail")),
        (Reply(451, "5.7.3", "x"), ("451", "4.7.3", "x")),  # Exchange's mixed class, made valid
        (Reply(550, "5.7.1", "100% sure"), ("550", "5.7.1", "100%% sure")),
    ],
)
def test_wire_form_of_a_reply(reply, expected):
    assert wire(reply) == expected


def test_mail_parameters():
    assert mail_parameter(["SIZE=100", "auth=<>"], "AUTH") == "<>"
    assert mail_parameter(["BODY=8BITMIME"], "SIZE") is None


# --- MAIL and RCPT (§3.4, §3.5), verbatim -----------------------------------------------------


@pytest.mark.parametrize(
    ("client", "context", "sender", "rcpts", "user", "expected"),
    [
        ("203.0.113.9", "*:25", "<a@fabrikam.example>", ("x@fabrikam.example",), None, R.UNABLE_TO_RELAY),
        ("203.0.113.9", "*:25", "<a@fabrikam.example>", ("x@partner-hosted.example",), None, None),
        (
            "203.0.113.9",
            "*:25",
            "<a@fabrikam.example>",
            ("a@contoso.com", "b@contoso.com", "c@contoso.com"),
            None,
            R.TOO_MANY_RECIPIENTS,
        ),
        ("203.0.113.9", "*:25", "<not an address>", (), None, R.INVALID_SENDER),
        ("203.0.113.9", "*:587", "<bob@contoso.com>", (), None, R.ANONYMOUS_SUBMIT_DENIED),
        ("203.0.113.9", "*:587", "<bob@contoso.com>", ("x@fabrikam.example",), "bob", None),
        ("10.5.0.9", "*:25", "<scan@contoso.com>", ("x@fabrikam.example",), None, None),
        ("203.0.113.9", "*:25", "<a@fabrikam.example>", ("x@contoso.com",), None, None),
    ],
)
def test_envelope_verdicts(engine, client, context, sender, rcpts, user, expected):
    m = opened(engine, client, context)
    verdicts = [m.mail(sender, (), AuthFacts(user))]
    verdicts += [m.rcpt(f"<{r}>") for r in rcpts]
    refused = [v for v in verdicts if isinstance(v, Refuse)]
    assert refused == ([Refuse(expected)] if expected else [])


def test_oversized_mail_from_size_parameter(engine):
    m = opened(engine)
    assert m.mail("<a@fabrikam.example>", ("SIZE=70000",), AuthFacts()) == Refuse(R.MESSAGE_SIZE_EXCEEDED_MAIL)


def test_a_session_that_cannot_be_placed_is_a_temporary_failure(engine):
    m = MilterSession(engine)
    m.connect(connect_facts({"{daemon_name}": "mx.contoso.com", "{client_addr}": "203.0.113.9"}))
    assert not m.covered
    v = m.mail("<a@fabrikam.example>", (), AuthFacts())
    assert v == Refuse(R.CONFIGURATION_PROBLEM) and v.temporary


def test_a_client_no_connector_holds_is_refused_421_and_not_covered(engine):
    m = opened(engine, "203.0.113.9", "*:2526")
    assert not m.covered
    assert m.mail("<a@fabrikam.example>", (), AuthFacts()) == Refuse(R.NO_CONNECTOR)


def test_the_connector_stays_with_the_engine_of_the_connect(engine):
    m = opened(engine)
    other = Engine(org_from(CONFIG.replace("max_recipients_per_message: 2", "max_recipients_per_message: 9")))
    assert m.engine is engine and m.session.connector.max_recipients_per_message == 2
    assert other is not engine  # a reload builds a new engine; this session keeps its own


# --- end of headers / end of data (§3.6, §3.7) -------------------------------------------------

LONG = "x" * 400
LOCAL = "from a by mx.contoso.com with Microsoft SMTP Server id 15"


@pytest.mark.parametrize(
    ("case", "kw", "expected"),
    [
        ("accepted", {}, None),
        (
            "#1 header size",
            {"headers": (("From", "a@fabrikam.example"), *[("X-Pad", LONG)] * 3)},
            R.HEADER_SIZE_EXCEEDED,
        ),
        (
            "#1 bypassed by the size right (Externally Secured)",
            {"client": "10.5.0.9", "headers": (("From", "s@contoso.com"), *[("X-Pad", LONG)] * 3)},
            None,
        ),
        ("#2 hop count", {"headers": (("Received", "from a by b"),) * 4}, R.HOP_COUNT_EXCEEDED),
        ("#2 at the limit", {"headers": (("Received", "from a by b"),) * 3}, None),
        ("#3 local hops", {"headers": (("Received", LOCAL),) * 2}, R.HOP_COUNT_EXCEEDED),
        ("#4 P1 spoof, anonymous", {"sender": "<ceo@contoso.com>", "headers": ()}, None),
        ("#4 P2 spoof", {"headers": (("From", "ceo@contoso.com"),)}, None),
        ("#5 message/partial", {"headers": (("Content-Type", 'Message/Partial; id="x"'),)}, R.MESSAGE_PARTIAL),
        ("#6 size", {"body": b"x" * (64 << 10)}, R.MESSAGE_SIZE_EXCEEDED),
        ("#6 bypassed (Externally Secured)", {"client": "10.5.0.9", "body": b"x" * (64 << 10)}, None),
        (
            "#6 trusted OriginalSize",
            {
                "client": "10.6.0.1",
                "body": b"x" * (64 << 10),
                "headers": (("X-MS-Exchange-Organization-OriginalSize", "500"),),
            },
            None,
        ),
        (
            "#6 untrusted OriginalSize",
            {"body": b"x" * (64 << 10), "headers": (("X-MS-Exchange-Organization-OriginalSize", "500"),)},
            R.MESSAGE_SIZE_EXCEEDED,
        ),
        (
            "order: header size before size",
            {"headers": (*[("X-Pad", LONG)] * 3,), "body": b"x" * (64 << 10)},
            R.HEADER_SIZE_EXCEEDED,
        ),
    ],
)
def test_end_of_data_checks_in_order(engine, case, kw, expected):
    _, out = transaction(engine, **kw)
    v = final(out)
    if expected is None:
        assert isinstance(v, Accept), case
    else:
        assert v == Refuse(expected), case


def test_the_end_of_headers_checks_answer_before_the_body(engine):
    m = opened(engine)
    m.mail("<a@fabrikam.example>", (), AuthFacts())
    m.rcpt("<x@contoso.com>")
    for _ in range(4):
        m.header("Received", "from a by b")
    assert m.end_of_headers() == Refuse(R.HOP_COUNT_EXCEEDED)


# §3.7: (connector, client, user, P1, From, Sender) -> reply; the Front connector's anonymous
# session holds both sender rights (skipped), so the rows use custom rights.
SENDERS = """
accepted_domains: [contoso.com]
users:
  - {name: bob, addresses: [bob@contoso.com], send_as: [shared@contoso.com]}
receive_connectors:
  - name: Anon
    bindings: 0.0.0.0:25
    remote_ip_ranges: 0.0.0.0/0
    permission_groups: [AnonymousUsers]
    permissions:
      - user: NT AUTHORITY\\ANONYMOUS LOGON
        extended_rights: ms-Exch-SMTP-Accept-Authoritative-Domain-Sender
        deny: $true
  - name: Client
    bindings: 0.0.0.0:587
    remote_ip_ranges: 0.0.0.0/0
    permission_groups: [ExchangeUsers]
    auth_mechanism: [Tls, BasicAuth]  # accepts the logins below, with or without TLS
"""


@pytest.mark.parametrize(
    ("context", "user", "p1", "from_", "sender", "expected"),
    [
        ("*:25", None, "a@fabrikam.example", "a@fabrikam.example", None, None),
        ("*:25", None, "ceo@contoso.com", "ceo@contoso.com", None, R.ANONYMOUS_SEND_AS_DENIED),
        ("*:25", None, "a@fabrikam.example", "ceo@contoso.com", None, R.ANONYMOUS_SEND_AS_DENIED),
        ("*:25", None, "a@fabrikam.example", '"The CEO" <ceo@contoso.com>', None, R.ANONYMOUS_SEND_AS_DENIED),
        ("*:25", None, "", "ceo@contoso.com", None, R.ANONYMOUS_SEND_AS_DENIED),  # null P1: P2 still checked
        ("*:25", None, "a@fabrikam.example", "ceo@contoso.com", "a@fabrikam.example", R.SEND_ON_BEHALF_DENIED),
        ("*:587", "bob", "bob@contoso.com", "bob@contoso.com", None, None),
        ("*:587", "bob", "shared@contoso.com", "shared@contoso.com", None, None),  # Send-As
        ("*:587", "bob", "boss@contoso.com", "bob@contoso.com", None, R.SEND_AS_DENIED),
        ("*:587", "bob", "bob@contoso.com", "boss@contoso.com", None, R.SEND_AS_DENIED),
        ("*:587", "bob", "bob@contoso.com", "boss@contoso.com", "bob@contoso.com", R.SEND_ON_BEHALF_DENIED),
        ("*:587", "bob", "bob@contoso.com", "x@gmail.example", None, R.SEND_AS_DENIED),
    ],
)
def test_sender_authorisation_rows(context, user, p1, from_, sender, expected):
    e = Engine(org_from(SENDERS), clock=FakeClock())
    headers = (("From", from_),) + ((("Sender", sender),) if sender else ())
    _, out = transaction(e, context=context, user=user, sender=f"<{p1}>", headers=headers)
    v = final(out)
    assert v == Refuse(expected) if expected else isinstance(v, Accept)


# --- firewall and stamps through the session (§4) ------------------------------------------------

FORGED = (
    ("From", "a@fabrikam.example"),
    ("To", "x@contoso.com"),
    ("Message-ID", "<m1@fabrikam.example>"),
    ("Date", "Sat, 25 Mar 2023 08:00:00 +0000"),
    ("X-MS-Exchange-Organization-AuthAs", "Internal"),
    ("x-ms-exchange-organization-scl", "-1"),
    ("X-MS-Exchange-Forest-Foo", "1"),
    ("X-MS-Exchange-Organization-AuthAs", "Internal"),
)


def test_anonymous_forgeries_are_stripped_and_anonymous_stamped(engine):
    _, out = transaction(engine, headers=FORGED)
    v = out[-1]
    assert isinstance(v, Accept)
    assert [e for e in v.edits if isinstance(e, Remove)] == [  # per name, highest index first
        Remove("X-MS-Exchange-Forest-Foo", 1),
        Remove("X-MS-Exchange-Organization-AuthAs", 2),
        Remove("X-MS-Exchange-Organization-AuthAs", 1),
        Remove("x-ms-exchange-organization-scl", 1),
    ]
    added = {e.name: e.value for e in v.edits if isinstance(e, Add)}
    assert added == {
        "X-MS-Exchange-Organization-AuthSource": "exch01.labs.local",
        "X-MS-Exchange-Organization-AuthAs": "Anonymous",
        "Return-Path": "<a@fabrikam.example>",
        "X-MS-Exchange-Organization-OriginalArrivalTime": "25 Mar 2023 03:23:47.1234 (UTC)",
        "X-MS-Exchange-Organization-OriginalSize": str(out[-1] and _size(FORGED, b"hello\r\n")),
        "X-MS-Exchange-Organization-Network-Message-Id": "00000000-0000-0000-0000-000000000001",
        "X-MS-Exchange-Organization-MessageDirectionality": "Incoming",
    }


def _size(headers, body):
    return sum(len(n) + len(v) + 4 for n, v in headers) + 2 + len(body)


def test_externally_secured_is_internal_with_mechanism_10(engine):
    _, out = transaction(engine, client="10.5.0.9", sender="<scan@contoso.com>", headers=FORGED)
    added = {e.name: e.value for e in out[-1].edits if isinstance(e, Add)}
    assert added["X-MS-Exchange-Organization-AuthAs"] == "Internal"
    assert added["X-MS-Exchange-Organization-AuthMechanism"] == "10"
    assert added["X-MS-Exchange-Organization-MessageDirectionality"] == "Originating"
    assert "X-Originating-IP" not in added  # holds both sender rights: not an end user


@pytest.mark.parametrize(("tls", "mechanism"), [("", "07"), ("TLSv1.3", "06")])
def test_authenticated_user_is_internal_with_login_mechanism_and_originating_ip(engine, tls, mechanism):
    _, out = transaction(
        engine,
        context="*:587",
        user="bob",
        tls=tls,
        sender="<bob@contoso.com>",
        headers=(("From", "bob@contoso.com"), ("To", "x@contoso.com")),
        client="198.51.100.4",
    )
    added = {e.name: e.value for e in out[-1].edits if isinstance(e, Add)}
    assert added["X-MS-Exchange-Organization-AuthAs"] == "Internal"
    assert added["X-MS-Exchange-Organization-AuthMechanism"] == mechanism
    assert added["X-Originating-IP"] == "[198.51.100.4]"


def test_auth_param_null_forces_anonymous(engine):
    _, out = transaction(engine, client="10.5.0.9", sender="<scan@contoso.com>", params=("AUTH=<>",))
    added = {e.name: e.value for e in out[-1].edits if isinstance(e, Add)}
    assert added["X-MS-Exchange-Organization-AuthAs"] == "Anonymous"
    assert "X-MS-Exchange-Organization-AuthMechanism" not in added


def test_a_trusted_hop_keeps_its_organization_and_forest_headers(engine):
    _, out = transaction(engine, client="10.6.0.1", headers=FORGED)
    removed = [e for e in out[-1].edits if isinstance(e, Remove)]
    # Hub holds Organization and Forest headers but is anonymous: only the Auth* go
    assert removed == [Remove("X-MS-Exchange-Organization-AuthAs", 2), Remove("X-MS-Exchange-Organization-AuthAs", 1)]


def test_callback_order_errors_fail_closed(engine):
    m = opened(engine)
    assert m.rcpt("<x@contoso.com>") == Refuse(R.CONFIGURATION_PROBLEM)
    assert m.header("From", "x") == Refuse(R.CONFIGURATION_PROBLEM)
    assert m.end_of_message() == Refuse(R.CONFIGURATION_PROBLEM)


def test_accepted_message_carries_what_its_tracking_row_says(engine):
    """The RECEIVE row's facts (spec §5.2): sender, every accepted recipient, size, ids, subject."""
    _, out = transaction(
        engine,
        client="10.5.0.9",
        sender="<scan@contoso.com>",
        rcpts=("x@contoso.com", "y@contoso.com"),
        headers=(("From", "scan@contoso.com"), ("Subject", "Scan 42"), ("Message-ID", "<s42@scanner>")),
    )
    verdict = out[-1]
    assert isinstance(verdict, Accept) and verdict.received is not None
    r = verdict.received
    assert (r.sender, r.recipients, r.message_id, r.subject) == (
        "scan@contoso.com",
        ("x@contoso.com", "y@contoso.com"),
        "<s42@scanner>",
        "Scan 42",
    )
    assert r.size > len("hello\r\n") and r.network_message_id
