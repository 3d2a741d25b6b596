"""Authenticated submission in the engine and the policy decider (issue #13).

The five fail-opens the issue lists, each refused here (each test fails on the engine
before the fix), the rule they rest on (exmilter.auth), P1 Send-As at MAIL, and the
located warning for a principal nothing in the file is.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from exmilter import replies as R
from exmilter.auth import accepts_login, untrusted_login
from exmilter.config import loads
from exmilter.config.principals import UNKNOWN_PRINCIPAL
from exmilter.model import AuthMechanism
from exmilter.policy.decide import Decider
from tests.conftest import SERVER, FakeClock, engine_from

SEED_003 = """
accepted_domains: [cloudmonkeys.xyz]
users:
  - {{name: svc-mailer, addresses: [svc-mailer@cloudmonkeys.xyz], send_as: [smb1@cloudmonkeys.xyz]}}
  - {{name: raghu, addresses: [raghu@cloudmonkeys.xyz]}}
receive_connectors:
  - name: SMTP Auth Relay Script
    bindings: 0.0.0.0:587
    remote_ip_ranges: 192.168.1.13
    auth_mechanism: {auth}
    permission_groups: {groups}
    require_tls: {require_tls}
"""


def seed_003(auth: str = "Tls, BasicAuth, BasicAuthRequireTLS", groups: str = "ExchangeUsers", require_tls="$true"):
    return engine_from(SEED_003.format(auth=auth, groups=groups, require_tls=require_tls))


def transcript(e, *, login, tls, sender="svc-mailer@cloudmonkeys.xyz", rcpt="someone@gmail.com") -> list[str]:
    s = e.open_session(None, 587, "192.168.1.13", auth_user=login, tls=tls, helo="app")
    mail = e.mail(s, sender)
    return [mail.line] if not mail.accepted else [mail.line, e.rcpt(s, rcpt).line]


# --- the five fail-opens -------------------------------------------------------------------------


def test_login_on_a_tls_only_connector_stays_anonymous():
    """AuthMechanism Tls alone: Exchange never offers AUTH, so a login Postfix reports is
    not an identity; with anonymous relay rights absent the session cannot relay."""
    e = seed_003(auth="Tls", groups="AnonymousUsers, ExchangeUsers", require_tls="$false")
    s = e.open_session(None, 587, "192.168.1.13", auth_user="svc-mailer", tls=True, helo="app")
    assert not s.authenticated and s.auth_user is None
    assert "offers no AUTH" in s.ignored_login
    assert e.rcpt(s, "someone@gmail.com") == R.UNABLE_TO_RELAY


def test_login_without_tls_on_basic_auth_require_tls_is_anonymous():
    """BasicAuthRequireTLS: no AUTH before STARTTLS, so a plaintext login is anonymous: 530 5.7.57."""
    e = seed_003(require_tls="$false")
    assert transcript(e, login="svc-mailer", tls=False) == [R.ANONYMOUS_SUBMIT_DENIED.line]
    assert transcript(e, login="svc-mailer", tls=True) == [R.SENDER_OK.line, R.RECIPIENT_OK.line]


@pytest.mark.parametrize("login", ["Exchange Servers", "LABS\\Exchange Servers", "exchange servers", "ANONYMOUS LOGON"])
def test_login_spelled_like_a_group_gets_none_of_its_rights(login):
    """Only users: entries are logins: the Exchange Servers group's relay and size bypass stay with it."""
    e = engine_from("""
        accepted_domains: [contoso.com]
        receive_connectors:
          - name: X
            bindings: 0.0.0.0:587
            remote_ip_ranges: 0.0.0.0/0
            auth_mechanism: Tls, BasicAuth
            permission_groups: ExchangeServers
            max_message_size: 1MB
    """)
    s = e.open_session(None, 587, "10.0.0.1", auth_user=login, tls=True, helo="h")
    assert s.authenticated and not s.rights
    assert e.mail(s, "x@contoso.com") == R.SUBMIT_DENIED


def test_deny_on_everyone_binds_authenticated_users():
    e = engine_from("""
        accepted_domains: [contoso.com]
        users: [{name: bob, addresses: [bob@contoso.com]}]
        receive_connectors:
          - name: X
            bindings: 0.0.0.0:587
            remote_ip_ranges: 0.0.0.0/0
            auth_mechanism: Tls, BasicAuth
            permission_groups: ExchangeUsers
            permissions:
              - {user: Everyone, extended_rights: ms-Exch-SMTP-Accept-Any-Recipient, deny: $true}
    """)
    s = e.open_session(None, 587, "10.0.0.1", auth_user="bob", tls=True, helo="h")
    assert e.mail(s, "bob@contoso.com") == R.SENDER_OK
    assert e.rcpt(s, "x@fabrikam.example") == R.UNABLE_TO_RELAY


def test_unknown_principal_in_a_grant_is_a_located_warning():
    text = SERVER + (
        "accepted_domains: [contoso.com]\n"
        "users: [{name: bob, member_of: [Printers]}]\n"
        "receive_connectors:\n"
        "  - name: X\n"
        "    bindings: 0.0.0.0:587\n"
        "    remote_ip_ranges: 0.0.0.0/0\n"
        "    permission_groups: ExchangeUsers\n"
        "    permissions:\n"
        "      - {user: bobb, extended_rights: ms-Exch-SMTP-Submit, deny: $true}\n"
        "      - {user: Printers, extended_rights: ms-Exch-SMTP-Submit, deny: $true}\n"
        "      - {user: Everyone, extended_rights: ms-Exch-SMTP-Submit, deny: $true}\n"
        "      - {user: LABS\\Exchange Servers, extended_rights: ms-Exch-SMTP-Submit}\n"
    )
    warnings = [p for p in loads(text, "f.yaml").warnings if p.kind == UNKNOWN_PRINCIPAL]
    assert len(warnings) == 1
    w = warnings[0]
    line = text.splitlines().index("    permissions:") + 2  # 1-based: the list under the key
    assert (w.file, w.line, w.key) == ("f.yaml", line, "X: permissions")
    assert "'bobb' is not a known principal" in w.message and "Deny removes nothing" in w.message


@pytest.mark.parametrize(
    "name", ["Exchange Servers", "CONTOSO\\ExchangeLegacyInterop", "Authenticated Users", "S-1-1-0"]
)
def test_a_user_named_like_a_group_is_refused(name):
    from exmilter.config import ConfigError

    with pytest.raises(ConfigError, match="is a group or well-known principal, not a login"):
        loads(SERVER + f"users: [{{name: '{name}'}}]\n", "f.yaml")


# --- the rule, and the decider's note ------------------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "tls", "accepted"),
    [
        ("Tls", True, False),
        ("Tls, BasicAuth", False, True),
        ("Tls, BasicAuth, BasicAuthRequireTLS", False, False),
        ("Tls, BasicAuth, BasicAuthRequireTLS", True, True),
        ("Tls, Integrated", True, False),
        ("Tls, ExternalAuthoritative", True, False),
        ("None", False, False),
    ],
)
def test_which_connectors_accept_a_login(auth, tls, accepted):
    flags = AuthMechanism.NONE
    for name in auth.split(", "):
        flags |= AuthMechanism.NONE if name == "None" else AuthMechanism[name]
    c = replace(seed_003().org.receive_connectors[0], auth_mechanism=flags)
    assert accepts_login(c, tls) is accepted
    assert (untrusted_login(c, "svc-mailer", tls) == "") is accepted


def test_integrated_alone_is_refused_with_why():
    from exmilter.config import ConfigError

    with pytest.raises(ConfigError, match=r"Integrated \(NTLM/Kerberos\) is Windows authentication"):
        loads(SERVER + SEED_003.format(auth="Tls, Integrated", groups="ExchangeUsers", require_tls="$false"))


def test_decider_notes_an_untrusted_login():
    e = seed_003(auth="Tls", groups="AnonymousUsers, ExchangeUsers", require_tls="$false")
    req = {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "client_address": "192.168.1.13",
        "client_port": "40000",
        "policy_context": "*:587",
        "sasl_username": "svc-mailer",
        "sender": "svc-mailer@cloudmonkeys.xyz",
        "recipient": "someone@gmail.com",
        "instance": "1.2",
    }
    d = Decider(FakeClock()).decide(e, req)
    assert d.reply == R.UNABLE_TO_RELAY
    assert "'svc-mailer' not trusted" in d.note and "offers no AUTH" in d.note


# --- seed 003 in the engine, and P1 Send-As at MAIL -------------------------------------------------


@pytest.mark.parametrize(
    ("login", "tls", "sender", "replies"),
    [
        (None, False, "svc-mailer@cloudmonkeys.xyz", [R.STARTTLS_REQUIRED.line]),
        (None, True, "svc-mailer@cloudmonkeys.xyz", [R.ANONYMOUS_SUBMIT_DENIED.line]),
        ("svc-mailer", True, "svc-mailer@cloudmonkeys.xyz", [R.SENDER_OK.line, R.RECIPIENT_OK.line]),
        ("svc-mailer", True, "smb1@cloudmonkeys.xyz", [R.SENDER_OK.line, R.RECIPIENT_OK.line]),  # Send As granted
        ("svc-mailer", True, "raghu@cloudmonkeys.xyz", [R.SEND_AS_DENIED.line]),  # another user's address
        ("svc-mailer", True, "nobody@cloudmonkeys.xyz", [R.SEND_AS_DENIED.line]),  # unknown internal sender
        ("svc-mailer", True, "svc@gmail.com", [R.SEND_AS_DENIED.line]),  # no Any-Sender
        ("svc-mailer", True, "<>", [R.SENDER_OK.line, R.RECIPIENT_OK.line]),  # null sender: no P1
    ],
)
def test_seed_003_in_the_engine(login, tls, sender, replies):
    assert transcript(seed_003(), login=login, tls=tls, sender=sender) == replies


# --- the session's connector across a reload (spec §2.1 step 6, issue #13 #6) ---------------------

RELOAD_BEFORE = """
accepted_domains: [contoso.com]
receive_connectors:
  - name: Relay
    bindings: 0.0.0.0:2526
    remote_ip_ranges: 10.0.0.0/8
    permission_groups: AnonymousUsers
    permissions: [{user: ANONYMOUS LOGON, extended_rights: ms-Exch-SMTP-Accept-Any-Recipient}]
"""
RELOAD_AFTER = (
    RELOAD_BEFORE
    + """
  - name: Narrow
    bindings: 0.0.0.0:2526
    remote_ip_ranges: 10.0.0.5
    permission_groups: AnonymousUsers
"""
)


def rcpt_request(port: str, state: str = "RCPT") -> dict[str, str]:
    return {
        "request": "smtpd_access_policy",
        "protocol_state": state,
        "client_address": "10.0.0.5",
        "client_port": port,
        "policy_context": "*:2526",
        "sender": "a@contoso.com",
        "recipient": "x@fabrikam.example",
    }


def test_a_reload_never_moves_a_session_to_another_connector():
    before, after = engine_from(RELOAD_BEFORE), engine_from(RELOAD_AFTER)
    d = Decider(FakeClock())
    assert d.decide(before, rcpt_request("40000", "MAIL")).connector == "EXCH01\\Relay"  # a transaction begins
    assert d.decide(before, rcpt_request("40000")).connector == "EXCH01\\Relay"
    # the same SMTP session (listener, client address and port) after the reload: still Relay
    kept = d.decide(after, rcpt_request("40000"))
    assert (kept.connector, kept.reply) == ("EXCH01\\Relay", R.RECIPIENT_OK)
    # a new session of the same client is selected under the new file
    new = d.decide(after, rcpt_request("40001"))
    assert (new.connector, new.reply) == ("EXCH01\\Narrow", R.UNABLE_TO_RELAY)
    # a CONNECT always begins a new session, whatever its port
    assert d.decide(after, rcpt_request("40000", "CONNECT")).connector == "EXCH01\\Narrow"
    assert d.decide(after, rcpt_request("40000")).connector == "EXCH01\\Narrow"


def test_a_session_whose_connector_is_gone_gets_no_connector():
    before, after = engine_from(RELOAD_AFTER), engine_from(RELOAD_BEFORE)
    d = Decider(FakeClock())
    assert d.decide(before, rcpt_request("40000", "CONNECT")).connector == "EXCH01\\Narrow"
    assert d.decide(after, rcpt_request("40000")).reply == R.NO_CONNECTOR


def test_explain_says_why_a_login_is_not_trusted():
    from exmilter.explain import explain

    e = seed_003()
    result = explain(e.org, client_ip="192.168.1.13", port=587, auth="svc-mailer", mail_from="a@b.example")
    assert not result["authenticated"]
    assert any("login 'svc-mailer' not trusted" in n and "BasicAuthRequireTLS" in n for n in result["notes"])
