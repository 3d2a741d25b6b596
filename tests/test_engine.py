"""The engine against the seeds' transcripts and the spec's tables (§1.5–§3.10)."""

from __future__ import annotations

import pytest

from exmilter import replies as R
from exmilter.domains import AcceptedDomains
from exmilter.engine import Engine, MessageRateLimiter
from exmilter.explain import explain
from exmilter.model import AcceptedDomain, AcceptedDomainType, Right
from exmilter.permissions import (
    ANONYMOUS_RIGHTS,
    EXTERNALLY_SECURED_RIGHTS,
    Principal,
    canonical,
    effective_rights,
    group_entries,
)
from tests.conftest import FakeClock, engine_from, org_from

# The seeds' organisations: a fresh Exchange 2019 server plus what each article adds.
SEED_DOMAINS = """
default_connectors: true
accepted_domains:
  - exchange2016demo.com
  - exchangelabs.nl
  - labs.local
"""
ANONYMOUS_RELAY = (
    SEED_DOMAINS
    + """
receive_connectors:
  - name: SMTP Relay (EXCH01)
    transport_role: FrontendTransport
    usage: Custom
    bindings: 0.0.0.0:25
    remote_ip_ranges: [10.83.4.56, 192.168.0.30]
    permission_groups: AnonymousUsers
    permissions:
      - user: NT AUTHORITY\\ANONYMOUS LOGON
        extended_rights: ms-Exch-SMTP-Accept-Any-Recipient
"""
)
EXTERNALLY_SECURED = (
    SEED_DOMAINS
    + """
receive_connectors:
  - name: SMTP Relay (EXCH01)
    transport_role: FrontendTransport
    usage: Custom
    bindings: 0.0.0.0:25
    remote_ip_ranges: 10.83.4.56
    auth_mechanism: ExternalAuthoritative
    permission_groups: ExchangeServers
"""
)


def transcript(config: str, client: str, sender: str, recipient: str) -> tuple[str | None, list[str]]:
    result = explain(org_from(config), client_ip=client, mail_from=sender, rcpt_to=[recipient])
    return result["connector"], [r["reply"] for r in result["replies"][1:]]


RELAYED = ["250 2.1.0 Sender OK", "250 2.1.5 Recipient OK", "250 2.6.0 Queued mail for delivery"]
REFUSED = [
    "250 2.1.0 Sender OK",
    "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain",
    "503 5.5.2 Need rcpt command",
]


@pytest.mark.parametrize(
    ("config", "client", "sender", "recipient", "connector", "replies"),
    [
        # seed 001: default frontend takes internal mail from anyone...
        (
            SEED_DOMAINS,
            "192.168.0.30",
            "test@test.com",
            "adam.wally@exchange2016demo.com",
            "EXCH01\\Default Frontend EXCH01",
            RELAYED,
        ),
        # ...and refuses external recipients, even from an internal sender
        (
            SEED_DOMAINS,
            "192.168.0.30",
            "adam.wally@exchange2016demo.com",
            "exchangeserverpro@gmail.com",
            "EXCH01\\Default Frontend EXCH01",
            REFUSED,
        ),
        # seed 001/000: the anonymous relay connector relays for its hosts
        (
            ANONYMOUS_RELAY,
            "192.168.0.30",
            "test@test.com",
            "exchangeserverpro@gmail.com",
            "EXCH01\\SMTP Relay (EXCH01)",
            RELAYED,
        ),
        (
            ANONYMOUS_RELAY,
            "10.83.4.56",
            "noreply@exchangelabs.nl",
            "jaapwess@gmail.com",
            "EXCH01\\SMTP Relay (EXCH01)",
            RELAYED,
        ),
        # seed 000: a host outside the relay connector's ranges lands on Default Frontend
        (
            ANONYMOUS_RELAY,
            "10.83.4.254",
            "noreply@exchangelabs.nl",
            "jaapwess@gmail.com",
            "EXCH01\\Default Frontend EXCH01",
            REFUSED,
        ),
        # seed 000/004: the ExternalAuthoritative + ExchangeServers variant relays
        (
            EXTERNALLY_SECURED,
            "10.83.4.56",
            "noreply@exchangelabs.nl",
            "jaapwess@gmail.com",
            "EXCH01\\SMTP Relay (EXCH01)",
            RELAYED,
        ),
        (
            EXTERNALLY_SECURED,
            "10.83.4.11",
            "noreply@exchangelabs.nl",
            "jaapwess@gmail.com",
            "EXCH01\\Default Frontend EXCH01",
            REFUSED,
        ),
    ],
)
def test_seed_transcripts(config, client, sender, recipient, connector, replies):
    assert transcript(config, client, sender, recipient) == (connector, replies)


def test_externally_secured_counts_as_authenticated():
    e = Engine(org_from(EXTERNALLY_SECURED))
    s = e.open_session(None, 25, "10.83.4.56", helo="h")
    assert s.principal.name == "MS Exchange\\Externally Secured Servers"
    assert s.authenticated
    assert s.rights == EXTERNALLY_SECURED_RIGHTS
    assert s.rights.tokens() == (
        "SMTPSubmit SMTPAcceptAnyRecipient SMTPAcceptAuthenticationFlag SMTPAcceptAnySender "
        "SMTPAcceptAuthoritativeDomainSender BypassAntiSpam BypassMessageSizeLimit SMTPAcceptEXCH50 "
        "AcceptRoutingHeaders"
    )
    # size limits are bypassed
    assert e.mail(s, "a@b.example", size=100 << 20) == R.SENDER_OK
    assert e.end_of_data(s, size=100 << 20) == R.QUEUED


def test_anonymous_relay_stays_anonymous_and_limited():
    e = Engine(org_from(ANONYMOUS_RELAY))
    s = e.open_session(None, 25, "10.83.4.56", helo="h")
    assert not s.authenticated
    assert s.rights == ANONYMOUS_RIGHTS | Right.SMTPAcceptAnyRecipient
    assert e.mail(s, "a@b.example", size=37748737) == R.MESSAGE_SIZE_EXCEEDED_MAIL
    assert e.end_of_data(s, size=37748737) == R.MESSAGE_SIZE_EXCEEDED


def test_no_connector_gives_421():
    org = org_from("""
        receive_connectors:
          - name: Dedicated
            bindings: 0.0.0.0:2526
            remote_ip_ranges: 192.168.1.13
            permission_groups: AnonymousUsers
    """)
    result = explain(org, client_ip="10.0.0.1", port=2526, mail_from="a@b.example", rcpt_to=["x@y.example"])
    assert result["connector"] is None
    assert result["replies"] == [{"stage": "CONNECT", "reply": "421 4.3.2 Service not available", "code": 421}]


# --- MAIL FROM order (§3.4) -------------------------------------------------------------

CUSTOM = """
accepted_domains: [contoso.com]
users:
  - {{name: bob, addresses: [a@contoso.com]}}
receive_connectors:
  - name: X
    bindings: 0.0.0.0:2526
    remote_ip_ranges: 0.0.0.0/0
    permission_groups: {groups}
    auth_mechanism: {auth}
    require_tls: {tls}
    max_message_size: 1MB
    max_recipients_per_message: 2
"""


def custom(groups="AnonymousUsers", auth="Tls, BasicAuth", tls="$false", clock=None) -> Engine:
    return engine_from(CUSTOM.format(groups=groups, auth=auth, tls=tls), clock)


@pytest.mark.parametrize(
    ("engine_args", "session_args", "sender", "size", "expected"),
    [
        ({}, {}, "a@contoso.com", 0, R.SENDER_OK),
        ({}, {}, "<>", 0, R.SENDER_OK),
        ({}, {}, "not an address", 0, R.INVALID_SENDER),
        ({}, {"helo": ""}, "a@contoso.com", 0, R.SEND_HELLO_FIRST),
        ({"tls": "$true"}, {}, "a@contoso.com", 0, R.STARTTLS_REQUIRED),
        ({"tls": "$true"}, {"tls": True}, "a@contoso.com", 0, R.SENDER_OK),
        ({"groups": "ExchangeUsers"}, {}, "a@contoso.com", 0, R.ANONYMOUS_SUBMIT_DENIED),
        ({"groups": "AnonymousUsers"}, {"auth_user": "bob"}, "a@contoso.com", 0, R.SUBMIT_DENIED),
        ({"groups": "ExchangeUsers"}, {"auth_user": "bob"}, "a@contoso.com", 0, R.SENDER_OK),
        ({}, {}, "a@contoso.com", (1 << 20) + 1, R.MESSAGE_SIZE_EXCEEDED_MAIL),
        ({}, {}, "a@contoso.com", 1 << 20, R.SENDER_OK),
    ],
)
def test_mail_from_checks(engine_args, session_args, sender, size, expected):
    e = custom(**engine_args)
    s = e.open_session(None, 2526, "10.0.0.1", **({"helo": "h"} | session_args))
    assert e.mail(s, sender, size=size) == expected


def test_exact_reply_texts():
    assert R.ANONYMOUS_SUBMIT_DENIED.line == (
        "530 5.7.57 SMTP; Client was not authenticated to send anonymous mail during MAIL FROM"
    )
    assert R.UNABLE_TO_RELAY.line == "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain"
    assert R.TOO_MANY_RECIPIENTS.line == "452 4.5.3 Too many recipients"
    assert R.NO_CONNECTOR.line == "421 4.3.2 Service not available" and R.NO_CONNECTOR.close
    assert R.STARTTLS_REQUIRED.line == "451 4.7.3 STARTTLS is required to send mail"


# --- RCPT TO order (§3.5) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("groups", "recipient", "accepted", "expected"),
    [
        ("AnonymousUsers", "x@contoso.com", 0, R.RECIPIENT_OK),
        ("AnonymousUsers", "x@CONTOSO.COM", 0, R.RECIPIENT_OK),
        ("AnonymousUsers", "x@fabrikam.com", 0, R.UNABLE_TO_RELAY),
        ("AnonymousUsers", "x@contoso.com", 2, R.TOO_MANY_RECIPIENTS),
        ("AnonymousUsers", "x@fabrikam.com", 2, R.TOO_MANY_RECIPIENTS),  # limit checked before relay
        ("AnonymousUsers", "bad address", 0, R.INVALID_RECIPIENT),
        ("ExchangeUsers", "x@fabrikam.com", 0, R.RECIPIENT_OK),  # authenticated users may relay
    ],
)
def test_rcpt_checks(groups, recipient, accepted, expected):
    e = custom(groups=groups)
    s = e.open_session(None, 2526, "10.0.0.1", helo="h", auth_user="bob" if groups == "ExchangeUsers" else None)
    assert e.rcpt(s, recipient, accepted=accepted) == expected


def test_recipient_limit_bypassed_by_size_right():
    e = custom(groups="ExchangeServers", auth="Tls, ExternalAuthoritative")
    s = e.open_session(None, 2526, "10.0.0.1", helo="h")
    assert e.rcpt(s, "x@contoso.com", accepted=500) == R.RECIPIENT_OK


@pytest.mark.parametrize(
    ("switch", "recipient", "expected"),
    [
        ("reject_reserved_top_level_recipient_domains", "x@host.test", R.RESERVED_TLD),
        ("reject_reserved_second_level_recipient_domains", "x@example.com", R.RESERVED_SLD),
        ("reject_single_label_recipient_domains", "x@intranet", R.SINGLE_LABEL_DOMAIN),
        (None, "x@example.com", R.RECIPIENT_OK),
    ],
)
def test_reserved_domain_switches(switch, recipient, expected):
    extra = f"    {switch}: $true\n" if switch else ""
    e = engine_from(CUSTOM.format(groups="ExchangeServers", auth="Tls, ExternalAuthoritative", tls="$false") + extra)
    s = e.open_session(None, 2526, "10.0.0.1", helo="h")
    assert e.rcpt(s, recipient) == expected


# --- accepted domains (§1.5) ---------------------------------------------------------------

DOMAINS = AcceptedDomains(
    [
        AcceptedDomain("c", "contoso.com"),
        AcceptedDomain("w", "*.contoso.com", AcceptedDomainType.ExternalRelay),
        AcceptedDomain("w2", "*.sales.contoso.com", AcceptedDomainType.InternalRelay),
        AcceptedDomain("f", "fabrikam.com", match_sub_domains=True),
        AcceptedDomain("e", "ext.example", AcceptedDomainType.ExternalRelay),
    ]
)


@pytest.mark.parametrize(
    ("domain", "expected", "internal"),
    [
        ("contoso.com", "c", True),  # exact beats wildcard
        ("a.contoso.com", "w", False),
        ("a.sales.contoso.com", "w2", True),  # longest suffix wins
        ("sales.contoso.com", "w2", True),  # a wildcard matches its parent
        ("fabrikam.com", "f", True),
        ("deep.sub.fabrikam.com", "f", True),  # MatchSubDomains
        ("ext.example", "e", False),
        ("notcontoso.com", None, False),
        ("com", None, False),
    ],
)
def test_accepted_domain_matching(domain, expected, internal):
    hit = DOMAINS.match(domain)
    assert (hit.name if hit else None) == expected
    assert DOMAINS.is_internal(f"x@{domain}") is internal


def test_relay_check_accepts_all_three_domain_types():
    e = engine_from("""
        accepted_domains:
          - {domain_name: a.example, domain_type: Authoritative}
          - {domain_name: b.example, domain_type: InternalRelay}
          - {domain_name: c.example, domain_type: ExternalRelay}
        receive_connectors:
          - {name: X, bindings: 0.0.0.0:2526, remote_ip_ranges: 0.0.0.0/0, permission_groups: AnonymousUsers}
    """)
    s = e.open_session(None, 2526, "10.0.0.1", helo="h")
    assert [e.rcpt(s, f"x@{d}.example") for d in "abcd"] == [R.RECIPIENT_OK] * 3 + [R.UNABLE_TO_RELAY]


# --- permissions (§1.6, §1.8) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("permissions", "principal", "expected"),
    [
        # explicit deny beats the group's allow
        (
            "- {user: NT AUTHORITY\\ANONYMOUS LOGON, extended_rights: ms-Exch-SMTP-Submit, deny: $true}",
            "anonymous",
            ANONYMOUS_RIGHTS & ~Right.SMTPSubmit,
        ),
        # Everyone does not apply to anonymous sessions
        ("- {user: Everyone, extended_rights: ms-Exch-SMTP-Accept-Any-Recipient}", "anonymous", ANONYMOUS_RIGHTS),
        # a deny on a group the user belongs to applies to the user
        (
            "- {user: LABS\\Printers, extended_rights: ms-Exch-SMTP-Submit, deny: $true}",
            "printer",
            Right.SMTPAcceptAnyRecipient | Right.BypassAntiSpam | Right.AcceptRoutingHeaders,
        ),
        (
            "- {user: printer, extended_rights: Send-As}",
            "printer",
            Right.SMTPSubmit
            | Right.SMTPAcceptAnyRecipient
            | Right.BypassAntiSpam
            | Right.AcceptRoutingHeaders
            | Right.SendAs,
        ),
    ],
)
def test_acl_evaluation(permissions, principal, expected):
    e = engine_from(f"""
        users:
          - {{name: printer, member_of: [Printers]}}
        receive_connectors:
          - name: X
            bindings: 0.0.0.0:2526
            remote_ip_ranges: 0.0.0.0/0
            permission_groups: AnonymousUsers, ExchangeUsers
            auth_mechanism: Tls, BasicAuth
            permissions:
              {permissions}
    """)
    s = e.open_session(None, 2526, "10.0.0.1", auth_user=None if principal == "anonymous" else principal)
    assert s.rights == expected


def test_legacy_servers_explicit_deny_of_forest_and_org_headers():
    entries = group_entries(
        __import__("exmilter.model", fromlist=["PermissionGroups"]).PermissionGroups.ExchangeLegacyServers, "LABS"
    )
    p = Principal("LABS\\ExchangeLegacyInterop", frozenset({"labs\\exchangelegacyinterop"}), True)
    rights = effective_rights(entries, p, "LABS")
    assert Right.AcceptForestHeaders not in rights and Right.AcceptOrganizationHeaders not in rights
    assert rights == EXTERNALLY_SECURED_RIGHTS


# --- end of data (§3.6, §3.7) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"size": 100}, R.QUEUED),
        ({"size": 100, "header_size": (256 << 10) + 1}, R.HEADER_SIZE_EXCEEDED),
        ({"size": 100, "received": ["from a by b"] * 61}, R.HOP_COUNT_EXCEEDED),
        ({"size": 100, "received": ["from a by b"] * 60}, R.QUEUED),
        (
            {"size": 100, "received": ["from x by exch01.labs.local with Microsoft SMTP Server id 15"] * 6},
            R.HOP_COUNT_EXCEEDED,
        ),
        ({"size": 100, "received": ["from x by exch01.labs.local with Microsoft SMTP Server id 15"] * 5}, R.QUEUED),
        ({"size": 100, "message_partial": True}, R.MESSAGE_PARTIAL),
        ({"size": (36 << 20) + 1}, R.MESSAGE_SIZE_EXCEEDED),
        # the header-size failure comes before the message-size failure (project order)
        ({"size": (36 << 20) + 1, "header_size": (256 << 10) + 1}, R.HEADER_SIZE_EXCEEDED),
    ],
)
def test_end_of_data_checks(kwargs, expected):
    e = Engine(org_from(SEED_DOMAINS))
    s = e.open_session(None, 25, "192.168.0.30", helo="h")
    assert e.end_of_data(s, **kwargs) == expected


def test_anti_spoofing_mistake_10():
    """Authoritative-Domain-Sender removed from ANONYMOUS LOGON: internal senders refused at end of data."""
    e = engine_from("""
        accepted_domains: [contoso.com]
        receive_connectors:
          - name: X
            bindings: 0.0.0.0:2526
            remote_ip_ranges: 0.0.0.0/0
            permission_groups: AnonymousUsers
            permissions:
              - user: NT AUTHORITY\\ANONYMOUS LOGON
                extended_rights: ms-Exch-SMTP-Accept-Authoritative-Domain-Sender
                deny: $true
    """)
    s = e.open_session(None, 2526, "203.0.113.9", helo="h")
    assert e.mail(s, "ceo@contoso.com") == R.SENDER_OK  # never at MAIL FROM
    assert e.end_of_data(s, size=10, mail_from="ceo@contoso.com") == R.ANONYMOUS_SEND_AS_DENIED
    assert e.end_of_data(s, size=10, mail_from="a@saas.example") == R.QUEUED
    assert e.end_of_data(s, size=10, mail_from="a@saas.example", header_from="ceo@contoso.com") == (
        R.ANONYMOUS_SEND_AS_DENIED
    )


def test_authenticated_send_as():
    e = engine_from("""
        accepted_domains: [contoso.com]
        users:
          - {name: svc-mailer, addresses: [svc-mailer@contoso.com], send_as: [smb1@contoso.com]}
        receive_connectors:
          - {name: X, bindings: 0.0.0.0:587, remote_ip_ranges: 0.0.0.0/0, permission_groups: ExchangeUsers,
             auth_mechanism: [Tls, BasicAuth]}
    """)
    s = e.open_session(None, 587, "10.0.0.1", helo="h", auth_user="svc-mailer")
    assert e.end_of_data(s, size=1, mail_from="svc-mailer@contoso.com") == R.QUEUED
    assert e.end_of_data(s, size=1, mail_from="smb1@contoso.com") == R.QUEUED
    assert e.end_of_data(s, size=1, mail_from="boss@contoso.com") == R.SEND_AS_DENIED
    assert e.end_of_data(s, size=1, mail_from="someone@gmail.com") == R.SEND_AS_DENIED


# --- message rate (§3.10) --------------------------------------------------------------------


def rate_engine(clock: FakeClock, source: str = "IPAddress", limit: int = 3) -> Engine:
    return engine_from(
        f"""
        accepted_domains: [contoso.com]
        users:
          - {{name: bob, addresses: [a@contoso.com]}}
        receive_connectors:
          - name: X
            bindings: 0.0.0.0:2526
            remote_ip_ranges: 0.0.0.0/0
            permission_groups: AnonymousUsers, ExchangeUsers
            auth_mechanism: Tls, BasicAuth
            message_rate_limit: {limit}
            message_rate_source: {source}
          - name: Y
            bindings: 0.0.0.0:2527
            remote_ip_ranges: 0.0.0.0/0
            permission_groups: AnonymousUsers
            message_rate_limit: 5
    """,
        clock,
    )


def test_rate_window_is_fixed_60_seconds(clock):
    e = rate_engine(clock)
    s = e.open_session(None, 2526, "10.0.0.1", helo="h")
    assert [e.mail(s, "a@contoso.com") for _ in range(4)] == [R.SENDER_OK] * 3 + [R.MESSAGE_RATE_EXCEEDED]
    clock.now += 59.9
    assert e.mail(s, "a@contoso.com") == R.MESSAGE_RATE_EXCEEDED
    clock.now += 0.1  # 60 s after the window opened: a new window
    assert e.mail(s, "a@contoso.com") == R.SENDER_OK
    other = e.open_session(None, 2526, "10.0.0.2", helo="h")
    assert e.mail(other, "a@contoso.com") == R.SENDER_OK


def test_rate_counter_shared_across_connectors_with_own_limits(clock):
    e = rate_engine(clock)
    x = e.open_session(None, 2526, "10.0.0.1", helo="h")
    y = e.open_session(None, 2527, "10.0.0.1", helo="h")
    assert [e.mail(x, "a@contoso.com") for _ in range(3)] == [R.SENDER_OK] * 3
    assert [e.mail(y, "a@contoso.com") for _ in range(3)] == [R.SENDER_OK, R.SENDER_OK, R.MESSAGE_RATE_EXCEEDED]


def test_rate_by_user_falls_back_to_ip_for_anonymous(clock):
    e = rate_engine(clock, source="User", limit=1)
    bob1 = e.open_session(None, 2526, "10.0.0.1", helo="h", auth_user="bob")
    bob2 = e.open_session(None, 2526, "10.0.0.2", helo="h", auth_user="bob")
    assert e.mail(bob1, "a@contoso.com") == R.SENDER_OK
    assert e.mail(bob2, "a@contoso.com") == R.MESSAGE_RATE_EXCEEDED  # same user, other IP
    anon = e.open_session(None, 2526, "10.0.0.1", helo="h")
    assert e.mail(anon, "a@contoso.com") == R.SENDER_OK


def test_rate_all_returns_user_slot_when_ip_fails(clock):
    limiter = MessageRateLimiter()
    limiter.take("ip:10.0.0.1", 1, clock.now)  # the IP already used its only slot
    e = Engine(rate_engine(clock, source="All", limit=1).org, clock=clock, rate_limiter=limiter)
    s = e.open_session(None, 2526, "10.0.0.1", helo="h", auth_user="bob")
    assert e.mail(s, "a@contoso.com") == R.MESSAGE_RATE_EXCEEDED
    t = e.open_session(None, 2526, "10.0.0.9", helo="h", auth_user="bob")
    assert e.mail(t, "a@contoso.com") == R.SENDER_OK  # bob's slot was given back


def test_rate_limiter_purges_idle_keys():
    limiter = MessageRateLimiter()
    for i in range(100):
        limiter.take(f"ip:{i}", 5, 0.0)
    limiter.take("ip:new", 5, 61.0)
    assert len(limiter) == 1


ANON_SEND_AS = "550 5.7.1 Anonymous client does not have permissions to send as this sender"
AUTH_SEND_AS = "550 5.7.60 SMTP; Client does not have permissions to send as this sender"
ON_BEHALF = "550 5.7.1 Client does not have permissions to send on behalf of the from address"
QUEUED = "250 2.6.0 Queued mail for delivery"
RELAY_DENIED = "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain"


# --- well-known principals (§1.6, §1.8) ---------------------------------------------------------

WELL_KNOWN = """
accepted_domains: [contoso.com]
users:
  - {{name: bob, addresses: [bob@contoso.com]}}
receive_connectors:
  - name: X
    bindings: 0.0.0.0:2526
    remote_ip_ranges: 0.0.0.0/0
    permission_groups: {groups}
    auth_mechanism: {auth}
    permissions:
      - {{user: '{user}', extended_rights: {right}, deny: {deny}}}
"""


@pytest.mark.parametrize(
    ("groups", "auth", "user", "right", "deny", "auth_user", "stage", "reply"),
    [
        # every spelling of ANONYMOUS LOGON is the anonymous session's principal: relay granted
        (
            "AnonymousUsers",
            "Tls",
            spelling,
            "ms-Exch-SMTP-Accept-Any-Recipient",
            "$false",
            None,
            "rcpt",
            "250 2.1.5 Recipient OK",
        )
        for spelling in ("NT AUTHORITY\\ANONYMOUS LOGON", "ANONYMOUS LOGON", "anonymous logon", "S-1-5-7")
    ]
    + [
        # a domain user of the same name is someone else: no relay
        (
            "AnonymousUsers",
            "Tls",
            "LABS\\ANONYMOUS LOGON",
            "ms-Exch-SMTP-Accept-Any-Recipient",
            "$false",
            None,
            "rcpt",
            "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain",
        ),
        # Everyone is not expanded for anonymous sessions
        (
            "AnonymousUsers",
            "Tls",
            "Everyone",
            "ms-Exch-SMTP-Accept-Any-Recipient",
            "$false",
            None,
            "rcpt",
            "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain",
        ),
    ]
    + [
        # a Deny on Authenticated Users, however spelled, binds every authenticated user
        (
            "ExchangeUsers",
            "Tls, BasicAuth",
            spelling,
            "ms-Exch-SMTP-Submit",
            "$true",
            "bob",
            "mail",
            "550 5.7.1 Client does not have permissions to submit to this server",
        )
        for spelling in ("NT AUTHORITY\\Authenticated Users", "Authenticated Users", "AUTHENTICATED USERS", "S-1-5-11")
    ]
    + [
        # the ExternalAuthoritative principal, bare name
        (
            "ExchangeServers",
            "Tls, ExternalAuthoritative",
            spelling,
            "ms-Exch-SMTP-Accept-Any-Recipient",
            "$true",
            None,
            "rcpt",
            "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain",
        )
        for spelling in ("MS Exchange\\Externally Secured Servers", "Externally Secured Servers")
    ],
)
def test_well_known_principals_in_any_spelling(groups, auth, user, right, deny, auth_user, stage, reply):
    e = engine_from(WELL_KNOWN.format(groups=groups, auth=auth, user=user, right=right, deny=deny))
    s = e.open_session(None, 2526, "10.0.0.1", helo="h", auth_user=auth_user)
    result = e.mail(s, "bob@contoso.com") if stage == "mail" else e.rcpt(s, "x@fabrikam.example")
    assert result.line == reply


@pytest.mark.parametrize(
    ("principal", "key"),
    [
        ("ANONYMOUS LOGON", "nt authority\\anonymous logon"),
        ("  NT AUTHORITY\\ANONYMOUS   LOGON ", "nt authority\\anonymous logon"),
        ("Authenticated Users", "nt authority\\authenticated users"),
        ("Everyone", "everyone"),
        ("S-1-1-0", "everyone"),
        ("Partner Servers", "ms exchange\\partner servers"),
        ("Edge Transport Servers", "ms exchange\\edge transport servers"),
        ("Hub Transport Servers", "ms exchange\\hub transport servers"),
        ("Externally Secured Servers", "ms exchange\\externally secured servers"),
        # domain-relative principals take the server's domain
        ("Exchange Servers", "labs\\exchange servers"),
        ("ExchangeLegacyInterop", "labs\\exchangelegacyinterop"),
        ("svc-relay", "labs\\svc-relay"),
        ("CONTOSO\\svc-relay", "contoso\\svc-relay"),
    ],
)
def test_canonical_principal_names(principal, key):
    assert canonical(principal, "LABS") == key


# --- DefaultDomain (§1.2): completes unqualified MAIL/RCPT addresses ------------------------------

DEFAULT_DOMAIN = """
accepted_domains:
  - {{name: Contoso, domain_name: contoso.com}}
  - {{name: Shared, domain_name: shared.example, domain_type: InternalRelay}}
receive_connectors:
  - name: X
    bindings: 0.0.0.0:2526
    remote_ip_ranges: 0.0.0.0/0
    permission_groups: AnonymousUsers
    {default}
    permissions:
      - user: ANONYMOUS LOGON
        extended_rights: ms-Exch-SMTP-Accept-Authoritative-Domain-Sender
        deny: $true
"""


@pytest.mark.parametrize(
    ("default", "stage", "address", "reply"),
    [
        # without DefaultDomain an address without a domain is a syntax error
        ("", "mail", "alice", "501 5.1.7 Invalid address"),
        ("", "rcpt", "<bob>", "501 5.1.3 Invalid address"),
        # DefaultDomain names the accepted domain by its Name or its DomainName
        ("default_domain: Contoso", "mail", "alice", "250 2.1.0 Sender OK"),
        ("default_domain: contoso.com", "mail", "<alice>", "250 2.1.0 Sender OK"),
        ("default_domain: Contoso", "rcpt", "<bob>", "250 2.1.5 Recipient OK"),
        ("default_domain: Shared", "rcpt", "bob", "250 2.1.5 Recipient OK"),
        # a qualified address is left alone: relay is still judged on its own domain
        ("default_domain: Contoso", "rcpt", "bob@fabrikam.example", RELAY_DENIED),
        # the null sender stays null
        ("default_domain: Contoso", "mail", "<>", "250 2.1.0 Sender OK"),
        # P1 is completed before sender authorisation: alice@contoso.com is internal here
        ("default_domain: Contoso", "eod", "alice", ANON_SEND_AS),
        ("", "eod", "alice", QUEUED),
    ],
)
def test_default_domain_completes_unqualified_addresses(default, stage, address, reply):
    e = engine_from(DEFAULT_DOMAIN.format(default=default))
    s = e.open_session(None, 2526, "203.0.113.9", helo="h")
    if stage == "mail":
        result = e.mail(s, address)
    elif stage == "rcpt":
        result = e.rcpt(s, address)
    else:
        result = e.end_of_data(s, size=10, mail_from=address)
    assert result.line == reply


# --- sender authorisation, P2 header parsing and send-on-behalf (§3.7) ------------------------


SENDER_AUTH = """
accepted_domains: [contoso.com]
users:
  - {name: svc, addresses: [svc@contoso.com], send_as: [smb1@contoso.com]}
receive_connectors:
  - name: Anti-spoofing
    bindings: 0.0.0.0:2526
    remote_ip_ranges: 0.0.0.0/0
    permission_groups: AnonymousUsers
    permissions:
      - user: NT AUTHORITY\\ANONYMOUS LOGON
        extended_rights: ms-Exch-SMTP-Accept-Authoritative-Domain-Sender
        deny: $true
  - {name: Client, bindings: 0.0.0.0:587, remote_ip_ranges: 0.0.0.0/0, permission_groups: ExchangeUsers,
     auth_mechanism: [Tls, BasicAuth]}
"""


@pytest.mark.parametrize(
    ("port", "auth_user", "mail_from", "header_sender", "header_from", "reply"),
    [
        # anonymous with Any-Sender only (§6 #10): P2 parsed out of display names, comments, brackets
        (2526, None, "a@saas.example", None, '"The CEO" <ceo@contoso.com>', ANON_SEND_AS),
        (2526, None, "a@saas.example", None, "ceo@contoso.com (The CEO)", ANON_SEND_AS),
        (2526, None, "a@saas.example", None, "<CEO@Contoso.com>", ANON_SEND_AS),
        (2526, None, "a@saas.example", None, '"ceo@contoso.com" <a@saas.example>', QUEUED),
        (2526, None, "a@saas.example", None, "SaaS Mailer <a@saas.example>", QUEUED),
        (2526, None, "a@saas.example", None, "news@other.example", QUEUED),
        # every mailbox of a multi-mailbox header is judged
        (2526, None, "a@saas.example", None, "a@saas.example, ceo@contoso.com", ANON_SEND_AS),
        # P2 is Sender: when present; a From: that differs is sent on behalf of
        (2526, None, "a@saas.example", "Mailer <a@saas.example>", "CEO <ceo@contoso.com>", ON_BEHALF),
        (2526, None, "a@saas.example", "CEO <ceo@contoso.com>", "a@saas.example", ANON_SEND_AS),
        (2526, None, "a@saas.example", "a@saas.example", "Other <b@saas.example>", QUEUED),
        (2526, None, "a@saas.example", "a@saas.example", "A <A@SAAS.EXAMPLE>", QUEUED),
        # P1 fails before the headers are looked at
        (2526, None, "ceo@contoso.com", None, "a@saas.example", ANON_SEND_AS),
        # authenticated user without sender rights: Send-As on itself and on what it was granted
        (587, "svc", "svc@contoso.com", None, "Service <svc@contoso.com>", QUEUED),
        (587, "svc", "svc@contoso.com", None, "Shared Mailbox <smb1@contoso.com>", QUEUED),
        (587, "svc", "svc@contoso.com", None, "Boss <boss@contoso.com>", AUTH_SEND_AS),
        (587, "svc", "svc@contoso.com", "<boss@contoso.com>", "svc@contoso.com", AUTH_SEND_AS),
        (587, "svc", "svc@contoso.com", "svc@contoso.com", "Boss <boss@contoso.com>", ON_BEHALF),
        (587, "svc", "svc@contoso.com", "svc@contoso.com", "Shared <smb1@contoso.com>", QUEUED),
        (587, "svc", "svc@contoso.com", "Service <svc@contoso.com>", "someone@gmail.com", ON_BEHALF),
    ],
)
def test_sender_authorisation(port, auth_user, mail_from, header_sender, header_from, reply):
    e = engine_from(SENDER_AUTH)
    s = e.open_session(None, port, "10.0.0.1", helo="h", auth_user=auth_user)
    result = e.end_of_data(s, size=10, mail_from=mail_from, header_sender=header_sender, header_from=header_from)
    assert result.line == reply


def test_sender_authorisation_skipped_with_both_sender_rights():
    e = engine_from(SENDER_AUTH.replace("        deny: $true\n", "        deny: $false\n"))
    s = e.open_session(None, 2526, "10.0.0.1", helo="h")
    reply = e.end_of_data(s, size=10, mail_from="a@x.example", header_sender="b@y.example", header_from="c@contoso.com")
    assert reply.line == QUEUED


# --- message-rate key: one counter per client, however its address is spelled (§3.10) ---------

RATE_DUAL_STACK = """
accepted_domains: [contoso.com]
receive_connectors:
  - name: X
    bindings: [0.0.0.0:2526, "[::]:2526"]
    remote_ip_ranges: [0.0.0.0/0, "::/0"]
    permission_groups: AnonymousUsers
    message_rate_limit: 1
"""
RATE_EXCEEDED = "421 4.4.2 Message submission rate for this client has exceeded the configured limit"


@pytest.mark.parametrize(
    ("first", "second", "reply"),
    [
        ("10.1.1.1", "::ffff:10.1.1.1", RATE_EXCEEDED),
        ("::ffff:10.1.1.1", "10.1.1.1", RATE_EXCEEDED),
        ("2001:db8::1", "2001:0db8:0000:0000:0000:0000:0000:0001", RATE_EXCEEDED),
        ("2001:db8::1", "2001:DB8::1", RATE_EXCEEDED),
        ("fe80::1%eth0", "fe80::1", RATE_EXCEEDED),
        ("[2001:db8::1]", "2001:db8::1", RATE_EXCEEDED),
        ("10.1.1.1", "10.1.1.2", "250 2.1.0 Sender OK"),
        ("2001:db8::1", "2001:db8::2", "250 2.1.0 Sender OK"),
    ],
)
def test_rate_key_is_the_normalised_client_ip(clock, first, second, reply):
    e = engine_from(RATE_DUAL_STACK, clock)
    assert e.mail(e.open_session(None, 2526, first, helo="h"), "a@contoso.com").line == "250 2.1.0 Sender OK"
    assert e.mail(e.open_session(None, 2526, second, helo="h"), "a@contoso.com").line == reply


# --- local hops (§3.6 #3, §7 #19) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("received", "local"),
    [
        ("from x by exch01.labs.local with Microsoft SMTP Server id 15.2.1118.7", True),
        ("from x (10.0.0.9) by EXCH01.LABS.LOCAL (10.0.0.5) with Microsoft SMTP Server", True),
        ("from x by exch01.labs.local\r\n\twith Microsoft SMTP Server (version=TLS1_2)", True),
        ("from x by exch01.labs.local. with Microsoft SMTP Server", True),
        ("from x by exch01.labs.local (Postfix) with ESMTPS id 4Q1; Sat, 25 Mar 2023 08:23:47 +0500", True),
        ("from x by exch01.labs.local;\r\n\tSat, 25 Mar 2023 08:23:47 +0500 (Postfix)", True),
        # another host whose name merely starts or ends like ours
        ("from x by exch01.labs.local.evil with Microsoft SMTP Server", False),
        ("from x by exch01.labs.localhost with Microsoft SMTP Server", False),
        ("from x by exch01.labs.local-relay.example with Microsoft SMTP Server", False),
        ("from x by mail.exch01.labs.local with Microsoft SMTP Server", False),
        ("from exch01.labs.local by mx.example with Microsoft SMTP Server", False),
        # our name but neither Exchange nor Postfix wrote it
        ("from x by exch01.labs.local with ESMTP id 1", False),
    ],
)
def test_local_hop_detection(received, local):
    e = Engine(org_from(SEED_DOMAINS))
    s = e.open_session(None, 25, "192.168.0.30", helo="h")
    assert s.connector is not None
    assert e.local_hops(s.connector, [received]) == int(local)
    assert e.end_of_data(s, size=100, received=[received] * 6).line == (
        "554 5.4.6 Hop count exceeded - possible mail loop" if local else "250 2.6.0 Queued mail for delivery"
    )


def test_local_hop_pattern_is_compiled_once_per_connector(monkeypatch):
    e = Engine(org_from(SEED_DOMAINS))
    s = e.open_session(None, 25, "192.168.0.30", helo="h")
    monkeypatch.setattr("exmilter.engine.re.compile", lambda *a, **k: pytest.fail("compiled per message"))
    received = ["from x by exch01.labs.local with Microsoft SMTP Server"] * 6
    assert e.end_of_data(s, size=100, received=received).line == "554 5.4.6 Hop count exceeded - possible mail loop"


# --- address length and UTF-8 (§1.2, §3.4 #1, §3.5 #1) ---------------------------------------

ADDRESSES = """
accepted_domains: [contoso.com, xn--bcher-kva.example]
receive_connectors:
  - name: X
    bindings: 0.0.0.0:2526
    remote_ip_ranges: 0.0.0.0/0
    permission_groups: AnonymousUsers
    smtp_utf8_enabled: {utf8}
    long_addresses_enabled: {long}
"""
AT = "@contoso.com"


@pytest.mark.parametrize(
    ("utf8", "long", "stage", "address", "reply"),
    [
        ("$true", "$false", "rcpt", "x@contoso.com", "250 2.1.5 Recipient OK"),
        ("$true", "$false", "rcpt", "bad address", "501 5.1.3 Invalid address"),
        # 571 characters is the limit without LongAddressesEnabled, 1,860 with it
        ("$true", "$false", "rcpt", "a" * (571 - len(AT)) + AT, "250 2.1.5 Recipient OK"),
        ("$true", "$false", "rcpt", "<" + "a" * (572 - len(AT)) + AT + ">", "501 5.1.3 Long addresses not supported"),
        ("$true", "$true", "rcpt", "a" * (1860 - len(AT)) + AT, "250 2.1.5 Recipient OK"),
        ("$true", "$true", "rcpt", "a" * (1861 - len(AT)) + AT, "501 5.1.3 Long addresses not supported"),
        # a long address is refused for its length even when it is also malformed
        ("$true", "$false", "rcpt", "a b" * 300, "501 5.1.3 Long addresses not supported"),
        # UTF-8 local parts and domains with SmtpUtf8Enabled; the domain matches its xn-- form
        ("$true", "$false", "rcpt", "jörg@contoso.com", "250 2.1.5 Recipient OK"),
        ("$true", "$false", "rcpt", "info@bücher.example", "250 2.1.5 Recipient OK"),
        ("$true", "$false", "rcpt", "info@BÜCHER.example", "250 2.1.5 Recipient OK"),
        ("$true", "$false", "rcpt", "info@bücher.other", RELAY_DENIED),
        ("$false", "$false", "rcpt", "jörg@contoso.com", "501 5.1.8 UTF-8 addresses not supported"),
        ("$false", "$false", "rcpt", "info@bücher.example", "501 5.1.8 UTF-8 addresses not supported"),
        ("$false", "$false", "rcpt", "info@xn--bcher-kva.example", "250 2.1.5 Recipient OK"),
        # MAIL FROM has one syntax reply for all three faults (§3.4 #1)
        ("$true", "$false", "mail", "jörg@contoso.com", "250 2.1.0 Sender OK"),
        ("$false", "$false", "mail", "jörg@contoso.com", "501 5.1.7 Invalid address"),
        ("$true", "$false", "mail", "a" * (572 - len(AT)) + AT, "501 5.1.7 Invalid address"),
        ("$true", "$true", "mail", "a" * (572 - len(AT)) + AT, "250 2.1.0 Sender OK"),
    ],
)
def test_address_length_and_utf8(utf8, long, stage, address, reply):
    e = engine_from(ADDRESSES.format(utf8=utf8, long=long))
    s = e.open_session(None, 2526, "10.0.0.1", helo="h")
    result = e.mail(s, address) if stage == "mail" else e.rcpt(s, address)
    assert result.line == reply


@pytest.mark.parametrize(
    ("reply", "line", "protocol_error"),
    [
        (R.INVALID_SENDER, "501 5.1.7 Invalid address", True),
        (R.INVALID_RECIPIENT, "501 5.1.3 Invalid address", True),
        (R.LONG_ADDRESS, "501 5.1.3 Long addresses not supported", True),
        (R.UTF8_ADDRESS, "501 5.1.8 UTF-8 addresses not supported", True),
        (R.SEND_AS_DENIED, AUTH_SEND_AS, False),
        (R.ANONYMOUS_SEND_AS_DENIED, ANON_SEND_AS, False),
        (R.SEND_ON_BEHALF_DENIED, ON_BEHALF, False),
    ],
)
def test_new_reply_texts(reply, line, protocol_error):
    assert (reply.line, reply.protocol_error) == (line, protocol_error)


# --- addresses as Postfix routes them (issue 10 #1, #2) ----------------------------------------
# Each row was checked end to end through the sandbox's Postfix 3.7.11 (relay harness,
# tests/integration/test_relay_harness.py); here the engine alone, as the policy daemon and
# explain use it.

ROUTED = """
accepted_domains:
  - {{name: Contoso, domain_name: contoso.com}}
  - strasse.de
  - xn--bcher-kva.example
  - shared.example
receive_connectors:
  - name: Anonymous
    bindings: 0.0.0.0:2526
    remote_ip_ranges: 0.0.0.0/0
    permission_groups: AnonymousUsers
    {default}
  - name: Relay
    bindings: 0.0.0.0:2526
    remote_ip_ranges: 10.9.9.9
    permission_groups: AnonymousUsers
    permissions:
      - user: NT AUTHORITY\\ANONYMOUS LOGON
        extended_rights: ms-Exch-SMTP-Accept-Any-Recipient
    {default}
"""


def routed_rcpt(default: str, client: str, recipient: str) -> str:
    e = engine_from(ROUTED.format(default=default))
    return e.rcpt(e.open_session(None, 2526, client, helo="h"), recipient).line


@pytest.mark.parametrize(
    ("default", "recipient", "reply"),
    [
        # Postfix's percent hack and bang path would make these relaytest@example.org: the
        # renderer switches both off, and the engine refuses routing operators from a client
        # without relay rights (what allow_untrusted_routing=no does in Postfix's own relay check)
        ("default_domain: Contoso", "relaytest%example.org", RELAY_DENIED),
        ("default_domain: Contoso", "example.org!relaytest", RELAY_DENIED),
        ("default_domain: Contoso", "<relaytest%example.org>", RELAY_DENIED),
        ("", "relaytest%example.org", "501 5.1.3 Invalid address"),
        ("", "example.org!relaytest", "501 5.1.3 Invalid address"),
        ("", "relaytest%example.org@contoso.com", RELAY_DENIED),
        ("", "example.org!relaytest@contoso.com", RELAY_DENIED),
        ("default_domain: Contoso", "relaytest", "250 2.1.5 Recipient OK"),
        # IDNA 2008 / UTS #46 non-transitional, as Postfix 3.7 routes: straße.de is xn--strae-oqa.de
        ("", "relaytest@straße.de", RELAY_DENIED),
        ("", "relaytest@STRASSE.DE", "250 2.1.5 Recipient OK"),
        ("", "relaytest@xn--strae-oqa.de", RELAY_DENIED),
        ("", "relaytest@STRAẞE.de", RELAY_DENIED),  # ICU 72 says strasse.de, UTS #46 15.1 straße.de
        ("", "relaytest@bücher.example", "250 2.1.5 Recipient OK"),
        ("", "relaytest@BÜCHER.example", "250 2.1.5 Recipient OK"),
        ("", "relaytest@xn--bcher-kva.example", "250 2.1.5 Recipient OK"),
        ("", "relaytest@ｃｏｎｔｏｓｏ.com", "250 2.1.5 Recipient OK"),  # UTS #46 maps fullwidth
        ("", "relaytest@☃.contoso.com", RELAY_DENIED),  # no IDNA 2008 form: matches nothing
        # smtpd drops a source route and hands on a quoted local part unquoted
        ("", "@contoso.com:relaytest@example.org", RELAY_DENIED),
        ("", "<@a.test,@b.test:relaytest@example.org>", RELAY_DENIED),
        ("", "@example.org:relaytest@contoso.com", "250 2.1.5 Recipient OK"),
        ("", '"relaytest@example.org"', RELAY_DENIED),
        ("", '"relaytest@example.org"@contoso.com', "501 5.1.3 Invalid address"),
        ("", '"relay test"@contoso.com', "501 5.1.3 Invalid address"),  # as the policy sees it
        # one trailing dot is dropped, as Postfix does; two are not a domain
        ("", "relaytest@contoso.com.", "250 2.1.5 Recipient OK"),
        ("", "relaytest@contoso.com..", "501 5.1.3 Invalid address"),
        ("", "relaytest@example.org.", RELAY_DENIED),
        ("", "relaytest@[192.0.2.1]", RELAY_DENIED),
        # RFC 5321 §4.5.1: Postfix takes RCPT TO:<postmaster> without asking and routes it to
        # postmaster@<the listener's domain>, here the organisation's default accepted domain
        ("", "postmaster", "250 2.1.5 Recipient OK"),
        ("", "<PostMaster>", "250 2.1.5 Recipient OK"),
    ],
)
def test_addresses_are_judged_as_postfix_routes_them(default: str, recipient: str, reply: str) -> None:
    assert routed_rcpt(default, "203.0.113.9", recipient) == reply


@pytest.mark.parametrize(
    ("recipient", "reply"),
    [
        # with relay rights the routing operators are just characters: delivered to the domain
        # after the last @ (Postfix no longer rewrites them)
        ("relaytest%example.org", "250 2.1.5 Recipient OK"),
        ("relaytest%example.org@contoso.com", "250 2.1.5 Recipient OK"),
        ("relaytest@straße.de", "250 2.1.5 Recipient OK"),
        ('"relaytest@example.org"@contoso.com', "501 5.1.3 Invalid address"),
    ],
)
def test_relay_rights_relay_every_routable_form(recipient: str, reply: str) -> None:
    assert routed_rcpt("default_domain: Contoso", "10.9.9.9", recipient) == reply


def test_default_domain_postfix_cannot_express_completes_nothing() -> None:
    """Two connectors on one listener with different DefaultDomains: Postfix completes with one
    domain per listener (the organisation's default here, Contoso), so the other connector's
    unqualified addresses are refused rather than judged as @shared.example."""
    yaml_text = (
        ROUTED.format(default="{default}")
        .replace("    {default}\n  - name: Relay", "    default_domain: contoso.com\n  - name: Relay")
        .replace("    {default}\n", "    default_domain: shared.example\n")
    )
    e = engine_from(yaml_text)
    anonymous = e.open_session(None, 2526, "203.0.113.9", helo="h")
    relay = e.open_session(None, 2526, "10.9.9.9", helo="h")
    assert e.rcpt(anonymous, "bob").line == "250 2.1.5 Recipient OK"
    assert e.rcpt(relay, "bob").line == "501 5.1.3 Invalid address"
    assert e.mail(relay, "alice").line == "501 5.1.7 Invalid address"
    assert e.rcpt(relay, "bob@example.org").line == "250 2.1.5 Recipient OK"


@pytest.mark.parametrize("written", ["bücher.example", "BÜCHER.example", "xn--bcher-kva.example"])
def test_an_internationalised_accepted_domain_is_written_either_way(written: str) -> None:
    e = engine_from(
        f"accepted_domains: [{written}]\n"
        + CUSTOM.split("\n", 2)[2].format(groups="AnonymousUsers", auth="Tls", tls="$false")
    )
    s = e.open_session(None, 2526, "10.0.0.1", helo="h")
    assert [d.domain_name for d in e.org.accepted_domains] == ["xn--bcher-kva.example"]
    assert e.rcpt(s, "info@bücher.example").line == "250 2.1.5 Recipient OK"
    assert e.rcpt(s, "info@xn--bcher-kva.example").line == "250 2.1.5 Recipient OK"
    assert e.rcpt(s, "info@bucher.example").line == RELAY_DENIED


def test_default_domain_that_is_no_accepted_domain_completes_nothing() -> None:
    e = engine_from(ROUTED.format(default="default_domain: elsewhere.example"))
    s = e.open_session(None, 2526, "10.9.9.9", helo="h")
    assert e.rcpt(s, "bob").line == "501 5.1.3 Invalid address"


@pytest.mark.parametrize(
    ("written", "ascii_form"),
    [
        # ICU 72 (Postfix 3.7.11 on Debian 12, UIDNA_NONTRANSITIONAL_TO_ASCII) gives these
        ("straße.de", "xn--strae-oqa.de"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.Example", "xn--bcher-kva.example"),
        ("labs。local", "labs.local"),
        ("ｌａｂｓ.local", "labs.local"),
        ("Labs.Local", "labs.local"),  # ASCII: only lower-cased, never converted
        ("xn--strae-oqa.de", "xn--strae-oqa.de"),
        # no agreed ASCII form: match nothing
        ("STRAẞE.de", None),
        ("☃.example", None),
        ("a..bücher.de", None),
        ("-x.bücher.de", None),
    ],
)
def test_domains_convert_like_postfix(written: str, ascii_form: str | None) -> None:
    from exmilter.domains import ascii_domain

    assert ascii_domain(written) == ascii_form


def test_explain_shows_the_routed_address_and_a_default_domain_it_cannot_apply() -> None:
    from exmilter.explain import format_text

    yaml_text = (
        ROUTED.format(default="{default}")
        .replace("    {default}\n  - name: Relay", "    default_domain: contoso.com\n  - name: Relay")
        .replace("    {default}\n", "    default_domain: shared.example\n")
    )
    org = org_from(yaml_text)
    result = explain(
        org,
        client_ip="10.9.9.9",
        port=2526,
        mail_from="a@b.example",
        rcpt_to=["bob", "postmaster", "@x.test:y@contoso.com", "z@contoso.com"],
    )
    assert result["notes"] == [
        "DefaultDomain not applied, unqualified addresses are refused: listener *:2526 is shared with connectors "
        "whose DefaultDomain differs; Postfix completes addresses there with @contoso.com"
    ]
    text = format_text(result).splitlines()
    assert "RCPT     [bob] 501 5.1.3 Invalid address" in text
    assert "RCPT     [postmaster -> postmaster@contoso.com] 250 2.1.5 Recipient OK" in text
    assert "RCPT     [@x.test:y@contoso.com -> y@contoso.com] 250 2.1.5 Recipient OK" in text
    assert "RCPT     [z@contoso.com] 250 2.1.5 Recipient OK" in text
