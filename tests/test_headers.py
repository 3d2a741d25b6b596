"""The header firewall and stamps (spec §4) as pure functions: exact edits per right and principal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from exmilter.headers import (
    Add,
    AuthAs,
    AuthMechanismCode,
    Remove,
    Stamp,
    Who,
    arrival_time,
    auth_as,
    auth_mechanism,
    edits,
    firewalled,
)
from exmilter.message import Message, header_bytes
from exmilter.model import Right
from exmilter.permissions import (
    ANONYMOUS_LOGON,
    ANONYMOUS_RIGHTS,
    EXCHANGE_SERVERS_RIGHTS,
    EXCHANGE_USERS_RIGHTS,
    EXTERNALLY_SECURED_RIGHTS,
    EXTERNALLY_SECURED_SERVERS,
    PARTNER_RIGHTS,
    PARTNER_SERVERS,
)

ORG, FOREST = "X-MS-Exchange-Organization-SCL", "X-MS-Exchange-Forest-RulesExecuted"
LEGACY_RIGHTS = EXTERNALLY_SECURED_RIGHTS  # plus the explicit deny of Forest/Organization: the same set


@pytest.mark.parametrize(
    ("rights", "org", "forest", "routing"),
    [
        # (rights, X-MS-Exchange-Organization-* removed, -Forest-* removed, Received/Resent-* removed)
        (ANONYMOUS_RIGHTS, True, True, False),
        (EXCHANGE_USERS_RIGHTS, True, True, False),
        (PARTNER_RIGHTS, True, True, False),
        (EXTERNALLY_SECURED_RIGHTS, True, True, False),
        (LEGACY_RIGHTS, True, True, False),
        (EXCHANGE_SERVERS_RIGHTS, False, False, False),
        (Right.SMTPSubmit, True, True, True),  # a custom grant without Routing-Hdrs strips Received too
    ],
)
def test_firewall_by_right(rights, org, forest, routing):
    assert firewalled(ORG, rights) is org
    assert firewalled(ORG.lower(), rights) is org  # names are case-insensitive
    assert firewalled(FOREST, rights) is forest
    assert firewalled("Received", rights) is routing
    assert firewalled("RESENT-From", rights) is routing
    assert firewalled("Subject", rights) is False
    assert firewalled("X-MS-Exchange-Other", rights) is False


ANON = Who(ANONYMOUS_RIGHTS, ANONYMOUS_LOGON, False)
USER = Who(EXCHANGE_USERS_RIGHTS, "bob", True, tls=True, client_ip="198.51.100.4")
USER_ANY_SENDER = Who(EXCHANGE_USERS_RIGHTS | Right.SMTPAcceptAnySender, "bob", True)
USER_FLAG = Who(EXCHANGE_USERS_RIGHTS | Right.SMTPAcceptAnySender | Right.SMTPAcceptAuthenticationFlag, "bob", True)
SECURED = Who(EXTERNALLY_SECURED_RIGHTS, EXTERNALLY_SECURED_SERVERS, True)
PARTNER = Who(PARTNER_RIGHTS, PARTNER_SERVERS, False)
ANON_RELAY = Who(ANONYMOUS_RIGHTS | Right.SMTPAcceptAnyRecipient, ANONYMOUS_LOGON, False)


@pytest.mark.parametrize(
    ("who", "param", "expected", "mechanism"),
    [
        (PARTNER, None, AuthAs.Partner, AuthMechanismCode.MutualTLS),
        (USER, None, AuthAs.Internal, AuthMechanismCode.TLSAuthLogin),
        (USER_FLAG, None, AuthAs.Internal, AuthMechanismCode.Login),
        (USER_ANY_SENDER, None, AuthAs.Anonymous, AuthMechanismCode.Login),  # Any-Sender without the flag
        (SECURED, None, AuthAs.Internal, AuthMechanismCode.SecureExternalSubmit),
        (ANON, None, AuthAs.Anonymous, None),
        (ANON_RELAY, None, AuthAs.Anonymous, None),
        (SECURED, "<>", AuthAs.Anonymous, AuthMechanismCode.SecureExternalSubmit),  # AUTH=<> forces it
        (USER, "bob@contoso.com", AuthAs.Internal, AuthMechanismCode.TLSAuthLogin),
    ],
)
def test_auth_as_rows(who, param, expected, mechanism):
    assert auth_as(who, param) is expected
    assert auth_mechanism(who) is mechanism


T = datetime(2023, 3, 25, 8, 23, 47, 123456, tzinfo=timezone(timedelta(hours=5)))
STAMP = Stamp(
    "exch01.labs.local",
    T,
    1234,
    "6a1b2c3d-0000-4000-8000-000000000001",
    "<new@exch01.labs.local>",
    "a@fabrikam.example",
)
COMPLETE = (
    ("From", "a@fabrikam.example"),
    ("To", "b@contoso.com"),
    ("Date", "x"),
    ("Message-ID", "<m@f>"),
    ("Return-Path", "<a@fabrikam.example>"),
)


def added(who: Who, headers=COMPLETE, stamp: Stamp = STAMP) -> dict[str, str]:
    return {e.name: e.value for e in edits(who, headers, stamp) if isinstance(e, Add)}


def test_arrival_time_is_utc_with_four_fraction_digits():
    assert arrival_time(T) == "25 Mar 2023 03:23:47.1234 (UTC)"
    assert arrival_time(datetime(2024, 1, 2, 0, 0, 0, 50, tzinfo=UTC)) == "02 Jan 2024 00:00:00.0000 (UTC)"


def test_anonymous_stamps_exactly():
    assert added(ANON) == {
        "X-MS-Exchange-Organization-AuthSource": "exch01.labs.local",
        "X-MS-Exchange-Organization-AuthAs": "Anonymous",
        "X-MS-Exchange-Organization-OriginalArrivalTime": "25 Mar 2023 03:23:47.1234 (UTC)",
        "X-MS-Exchange-Organization-OriginalSize": "1234",
        "X-MS-Exchange-Organization-Network-Message-Id": "6a1b2c3d-0000-4000-8000-000000000001",
        "X-MS-Exchange-Organization-MessageDirectionality": "Incoming",
    }


def test_partner_gets_classification_and_mechanism_02():
    a = added(PARTNER)
    assert a["X-MS-Exchange-Organization-AuthAs"] == "Partner"
    assert a["X-MS-Exchange-Organization-AuthMechanism"] == "02"
    assert a["X-MS-Exchange-Organization-Classification"] == "030e9e2f-134b-4020-861c-5bfc616f113d"


def test_user_gets_originating_ip_and_directionality_originating():
    a = added(USER)
    assert a["X-Originating-IP"] == "[198.51.100.4]"
    assert a["X-MS-Exchange-Organization-MessageDirectionality"] == "Originating"
    assert "X-Originating-IP" not in added(SECURED)


def test_exchange_server_keeps_an_auth_as_from_a_trusted_hop():
    hop = Who(EXCHANGE_SERVERS_RIGHTS, "LABS\\EXCH02$", True)
    headers = (
        *COMPLETE,
        ("X-MS-Exchange-Organization-AuthAs", "Internal"),
        ("X-MS-Exchange-Organization-AuthSource", "exch02"),
    )
    out = edits(hop, headers, STAMP)
    assert not [e for e in out if isinstance(e, Remove)]
    assert "X-MS-Exchange-Organization-AuthAs" not in added(hop, headers)


def test_anonymous_loses_auth_headers_even_when_organization_headers_pass():
    who = Who(ANONYMOUS_RIGHTS | Right.AcceptOrganizationHeaders, ANONYMOUS_LOGON, False)
    headers = (*COMPLETE, ("X-MS-Exchange-Organization-AuthAs", "Internal"), ("X-MS-Exchange-Organization-SCL", "1"))
    removed = [e for e in edits(who, headers, STAMP) if isinstance(e, Remove)]
    assert removed == [Remove("X-MS-Exchange-Organization-AuthAs", 1)]


def test_missing_headers_are_added():
    a = added(ANON, headers=(("Subject", "hi"), ("Date", "  ")))
    assert a["Message-ID"] == "<new@exch01.labs.local>"
    assert a["From"] == "a@fabrikam.example"
    assert a["Return-Path"] == "<a@fabrikam.example>"
    assert a["Date"] == "Sat, 25 Mar 2023 03:23:47 +0000"
    assert a["To"] == "Undisclosed recipients:;"
    assert Remove("Date", 1) in edits(ANON, (("Subject", "hi"), ("Date", "  ")), STAMP)  # the empty one goes
    assert "To" not in added(ANON, headers=(("Cc", "c@contoso.com"),))


def test_an_invalid_network_message_id_is_replaced():
    who = Who(EXCHANGE_SERVERS_RIGHTS, "LABS\\EXCH02$", True)
    bad = (*COMPLETE, ("X-MS-Exchange-Organization-Network-Message-Id", "not-a-guid"))
    out = edits(who, bad, STAMP)
    assert Remove("X-MS-Exchange-Organization-Network-Message-Id", 1) in out
    good = (*COMPLETE, ("X-MS-Exchange-Organization-Network-Message-Id", "6a1b2c3d-0000-4000-8000-00000000000f"))
    assert "X-MS-Exchange-Organization-Network-Message-Id" not in added(who, good)


def test_removals_of_received_when_the_right_is_missing_run_highest_first():
    who = Who(Right.SMTPSubmit, ANONYMOUS_LOGON, False)
    headers = (("Received", "a"), ("Subject", "s"), ("received", "b"), ("Resent-From", "c"))
    assert [e for e in edits(who, headers, STAMP) if isinstance(e, Remove)] == [
        Remove("received", 2),
        Remove("Received", 1),
        Remove("Resent-From", 1),
    ]


def test_header_bytes_and_partial():
    assert header_bytes("Subject", "hi") == len("Subject: hi\r\n")
    assert header_bytes("Subject", "a\n\tb") == len("Subject: a\r\n\tb\r\n")
    assert Message(content_type=' message/PARTIAL; id="1"').partial
    assert not Message(content_type="multipart/mixed").partial
