"""Send connectors: Exchange's route selection (routing.py) and the section's located refusals."""

from __future__ import annotations

import pytest

from exmilter.config import ConfigError
from exmilter.model import NextHop, SmartHostAuthMechanism, TlsAuthLevel
from exmilter.replies import ROUTE_SIZE_EXCEEDED
from exmilter.routing import CONNECTOR, MAILBOX, UNREACHABLE, Router, size_refusal
from tests.conftest import org_from

ROUTING = """
accepted_domains:
  - contoso.com
  - {domain_name: "*.fabrikam.com", domain_type: InternalRelay}
  - {domain_name: partner-relay.example, domain_type: ExternalRelay}
  - {domain_name: lonely.example, domain_type: ExternalRelay}
mailbox_next_hop: "[10.0.0.20]:2525"
send_connectors:
  - name: Internet
    usage: Internet
    address_spaces: ["SMTP:*;10"]
    dns_routing_enabled: $true
  - name: Cheap Internet
    address_spaces: ["SMTP:*;5"]
    smart_hosts: [relay.isp.example]
  - name: Partner
    address_spaces: ["SMTP:partner.example;1", "SMTP:*.partner.example;1", "partner-relay.example"]
    smart_hosts: [10.9.9.9, 10.9.9.10]
    port: 2525
    require_tls: $true
    tls_auth_level: DomainValidation
    tls_domain: "*.partner.example"
  - name: Partner Subs
    address_spaces: ["SMTP:*.sub.partner.example;50"]
    smart_hosts: [10.9.9.11]
  - name: Off
    address_spaces: ["SMTP:disabled.example;1"]
    smart_hosts: [10.1.1.99]
    enabled: $false
  - name: Lonely Off
    address_spaces: ["lonely.example"]
    smart_hosts: [10.1.1.98]
    enabled: false
  - name: Cost A
    address_spaces: ["SMTP:tie.example;3"]
    smart_hosts: [10.3.3.1]
  - name: Cost B
    address_spaces: ["SMTP:tie.example;2"]
    smart_hosts: [10.3.3.2]
  - name: Name B
    address_spaces: ["SMTP:name.example;2"]
    smart_hosts: [10.4.4.2]
  - name: Name A
    address_spaces: ["SMTP:name.example;2"]
    smart_hosts: [10.4.4.1]
  - name: Elsewhere
    address_spaces: ["SMTP:elsewhere.example;1"]
    smart_hosts: [10.5.5.5]
    source_transport_servers: [EXCH02]
"""


@pytest.fixture(scope="module")
def router() -> Router:
    return Router(org_from(ROUTING))


@pytest.mark.parametrize(
    ("recipient", "kind", "connector", "hop"),
    [
        # accepted domains: Authoritative and InternalRelay (with a mailbox hop) stay with the mailboxes
        ("a@contoso.com", MAILBOX, None, "10.0.0.20:2525"),
        ("a@CONTOSO.com.", MAILBOX, None, "10.0.0.20:2525"),
        ("a@fabrikam.com", MAILBOX, None, "10.0.0.20:2525"),
        ("a@x.fabrikam.com", MAILBOX, None, "10.0.0.20:2525"),
        # ExternalRelay: no recipients here, the send connectors route it
        ("a@partner-relay.example", CONNECTOR, "Partner", "10.9.9.9:2525, 10.9.9.10:2525"),
        # its own connector is disabled: '*' takes it, as '*' takes every domain without a closer match
        ("a@lonely.example", CONNECTOR, "Cheap Internet", "relay.isp.example:25"),
        # most specific address space first, whatever the cost
        ("a@partner.example", CONNECTOR, "Partner", "10.9.9.9:2525, 10.9.9.10:2525"),
        ("a@x.partner.example", CONNECTOR, "Partner", "10.9.9.9:2525, 10.9.9.10:2525"),
        ("a@y.sub.partner.example", CONNECTOR, "Partner Subs", "10.9.9.11:25"),
        ("a@sub.partner.example", CONNECTOR, "Partner Subs", "10.9.9.11:25"),
        ("a@notpartner.example", CONNECTOR, "Cheap Internet", "relay.isp.example:25"),
        # '*' on two connectors: the lower cost wins
        ("a@gmail.com", CONNECTOR, "Cheap Internet", "relay.isp.example:25"),
        # same address space: lowest cost, then the name
        ("a@tie.example", CONNECTOR, "Cost B", "10.3.3.2:25"),
        ("a@name.example", CONNECTOR, "Name A", "10.4.4.1:25"),
        # disabled connectors and other servers' connectors are ignored
        ("a@disabled.example", CONNECTOR, "Cheap Internet", "relay.isp.example:25"),
        ("a@elsewhere.example", CONNECTOR, "Cheap Internet", "relay.isp.example:25"),
    ],
)
def test_route_selection(router: Router, recipient: str, kind: str, connector: str | None, hop: str) -> None:
    route = router.route(recipient)
    assert (route.kind, route.connector.name if route.connector else None, route.next_hop_text()) == (
        kind,
        connector,
        hop,
    )


NO_STAR = """
accepted_domains:
  - contoso.com
  - {domain_name: fabrikam.com, domain_type: InternalRelay}
  - {domain_name: relay.example, domain_type: ExternalRelay}
send_connectors:
  - name: Internet
    address_spaces: ["SMTP:*.com;1"]
  - name: Exact
    address_spaces: ["fabrikam.com"]
    smart_hosts: ["[192.0.2.7]"]
"""


@pytest.mark.parametrize(
    ("recipient", "kind", "connector", "hop"),
    [
        # without a mailbox next hop: Authoritative still goes to the mailboxes (Postfix: by MX) ...
        ("a@contoso.com", MAILBOX, None, "MX of contoso.com"),
        # ... and InternalRelay is routed by the send connectors, the exact name first
        ("a@fabrikam.com", CONNECTOR, "Exact", "192.0.2.7:25"),
        ("a@sub.fabrikam.com", CONNECTOR, "Internet", "MX of sub.fabrikam.com"),
        ("a@example.com", CONNECTOR, "Internet", "MX of example.com"),
        # no address space matches: unreachable, held and retried (never bounced at once)
        ("a@relay.example", UNREACHABLE, None, "none (held in the deferred queue, retried)"),
        ("a@example.org", UNREACHABLE, None, "none (held in the deferred queue, retried)"),
    ],
)
def test_routes_without_a_mailbox_hop_or_a_star(recipient: str, kind: str, connector: str | None, hop: str) -> None:
    route = Router(org_from(NO_STAR)).route(recipient)
    assert (route.kind, route.connector.name if route.connector else None, route.next_hop_text()) == (
        kind,
        connector,
        hop,
    )


def test_no_send_connectors_routes_nothing_but_the_mailboxes() -> None:
    router = Router(org_from("accepted_domains: [contoso.com]\n"))
    assert router.route("a@contoso.com").kind == MAILBOX
    assert router.route("a@example.com").kind == UNREACHABLE


@pytest.mark.parametrize(
    ("settings", "policy", "required"),
    [
        ("", "may", False),
        ("require_tls: true", "encrypt", True),
        ("require_tls: true\n    tls_auth_level: EncryptionOnly", "encrypt", True),
        ("require_tls: true\n    tls_auth_level: CertificateValidation", "verify", True),
        (
            "require_tls: true\n    tls_auth_level: DomainValidation\n    tls_domain: mail.protection.outlook.com",
            "secure match=mail.protection.outlook.com",
            True,
        ),
        (
            "require_tls: true\n    tls_auth_level: DomainValidation\n    tls_domain: '*.x.example'",
            "secure match=.x.example",
            True,
        ),
        ("ignore_starttls: true", "none", False),
        (
            "smart_host_auth_mechanism: BasicAuthRequireTLS\n    authentication_credential_file: /etc/exmilter/c",
            "encrypt",
            True,
        ),
    ],
)
def test_tls_requirement(settings: str, policy: str, required: bool) -> None:
    org = org_from(
        f"""
send_connectors:
  - name: Hop
    address_spaces: ["*"]
    smart_hosts: [hop.example]
    {settings}
"""
    )
    route = Router(org).route("a@example.net")
    assert (route.tls.policy, route.tls.required) == (policy, required)


def test_max_message_size_is_the_routes() -> None:
    org = org_from(
        """
send_connectors:
  - {name: Small, address_spaces: [small.example], smart_hosts: [10.0.0.1], max_message_size: 1MB}
  - {name: Big, address_spaces: ["*"], max_message_size: unlimited}
  - {name: Default, address_spaces: [default.example]}
"""
    )
    router = Router(org)
    assert router.route("a@small.example").max_message_size == 1 << 20
    assert router.route("a@default.example").max_message_size == 35 << 20
    assert router.route("a@x.example").max_message_size is None
    assert size_refusal(router, ["a@x.example", "b@small.example"], (1 << 20) + 1) == ROUTE_SIZE_EXCEEDED
    assert size_refusal(router, ["a@x.example", "b@small.example"], 1 << 20) is None
    assert size_refusal(router, ["a@x.example"], 10**9) is None


def test_parsed_values() -> None:
    org = org_from(
        """
mailbox_next_hop: mbx.labs.local
send_connectors:
  - name: Hybrid
    address_spaces: ["[SMTP:Contoso.COM;1]", "SMTP:*.BÜCHER.example;7"]
    smart_hosts: "contoso-com.mail.protection.outlook.com, [10.0.0.1]"
    require_tls: $true
    tls_auth_level: domainvalidation
    tls_domain: mail.protection.outlook.com
    smart_host_auth_mechanism: BasicAuth
    authentication_credential_file: /etc/exmilter/hybrid.cred
    fqdn: mail.contoso.com
    cloud_services_mail_enabled: $true
    max_message_size: 25 MB (26,214,400 bytes)
"""
    )
    c = org.send_connectors[0]
    assert [str(s) for s in c.address_spaces] == ["SMTP:contoso.com;1", "SMTP:*.xn--bcher-kva.example;7"]
    assert c.smart_hosts == ("contoso-com.mail.protection.outlook.com", "10.0.0.1")
    assert c.dns_routing_enabled is False  # smart hosts without the flag: smart-host routing
    assert c.tls_auth_level is TlsAuthLevel.DomainValidation
    assert c.smart_host_auth_mechanism is SmartHostAuthMechanism.BasicAuth
    assert c.max_message_size == 26214400
    assert org.mailbox_next_hop == NextHop("mbx.labs.local", 25)


def problems(yaml_text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        org_from(yaml_text)
    return [f"{p.line}:{p.col}: {p.key}: {p.message}" for p in e.value.problems if not p.warning]


@pytest.mark.parametrize(
    ("connector", "expected"),
    [
        (
            "address_spaces: ['*']\n    dns_routing_enabled: true\n    smart_hosts: [a.example]",
            "10:18: send_connectors.smart_hosts: SmartHosts cannot be set while DNSRoutingEnabled is $true",
        ),
        (
            "address_spaces: ['*']\n    dns_routing_enabled: false",
            "9:26: send_connectors.dns_routing_enabled: SmartHosts is required when DNSRoutingEnabled is $false",
        ),
        (
            "address_spaces: ['SMTP:contoso.com;0']",
            "8:21: send_connectors.address_spaces: 'SMTP:contoso.com;0': cost 0 is out of range 1-100",
        ),
        (
            "address_spaces: ['SMTP:contoso.com;101']",
            "8:21: send_connectors.address_spaces: 'SMTP:contoso.com;101': cost 101 is out of range 1-100",
        ),
        (
            "address_spaces: ['X400:c=US;a=;p=Contoso;1']",
            "8:21: send_connectors.address_spaces: 'X400:c=US;a=;p=Contoso;1': only SMTP address spaces can be "
            "routed by Postfix (not 'X400')",
        ),
        (
            "address_spaces: ['*contoso.com']",
            "8:21: send_connectors.address_spaces: '*contoso.com': a wildcard is only valid as '*' or a leading '*.'",
        ),
        (
            "address_spaces: ['a.*.contoso.com']",
            "8:21: send_connectors.address_spaces: 'a.*.contoso.com': a wildcard is only valid as '*' or a leading "
            "'*.'",
        ),
        (
            "address_spaces: ['--']",
            "8:21: send_connectors.address_spaces: '--': '--' (the organisation's own "
            "domains) is for Edge Transport servers only",
        ),
        (
            "address_spaces: []",
            "8:21: send_connectors.address_spaces: at least one address space is required, "
            "e.g. '*' or 'SMTP:contoso.com;1'",
        ),
        (
            "address_spaces: ['*']\n    tls_auth_level: CertificateValidation",
            "9:21: send_connectors.tls_auth_level: TlsAuthLevel needs RequireTLS $true",
        ),
        (
            "address_spaces: ['*']\n    require_tls: true\n    tls_auth_level: DomainValidation",
            "10:21: send_connectors.tls_auth_level: TlsAuthLevel DomainValidation needs TlsDomain",
        ),
        (
            "address_spaces: ['*']\n    require_tls: true\n    tls_domain: contoso.com",
            "10:17: send_connectors.tls_domain: TlsDomain is only used with TlsAuthLevel DomainValidation",
        ),
        (
            "address_spaces: ['*']\n    require_tls: true\n    ignore_starttls: true",
            "10:22: send_connectors.ignore_starttls: IgnoreSTARTTLS cannot be $true while RequireTLS is $true",
        ),
        (
            "address_spaces: ['*']\n    smart_hosts: [a.example]\n    smart_host_auth_mechanism: BasicAuth",
            "10:32: send_connectors.smart_host_auth_mechanism: BasicAuth needs authentication_credential_file: a "
            "Postfix table the admin writes, one line '[smarthost]:port username:password' (secrets never go in "
            "this file)",
        ),
        (
            "address_spaces: ['*']\n    smart_hosts: [a.example]\n    smart_host_auth_mechanism: ExchangeServer",
            "10:32: send_connectors.smart_host_auth_mechanism: ExchangeServer: Postfix's smtp client has no Exchange "
            "authentication; use BasicAuth or BasicAuthRequireTLS with a credentials file, or None",
        ),
        (
            "address_spaces: ['*']\n    smart_hosts: ['a.example:587']",
            "9:18: send_connectors.smart_hosts: 'a.example:587': a smart host has no port; set the connector's port",
        ),
        (
            "address_spaces: ['*']\n    smart_hosts: [a.example]\n    authentication_credential_file: etc/x",
            "10:37: send_connectors.authentication_credential_file: 'etc/x': give an absolute path (Postfix reads "
            "it as root when smtp starts)",
        ),
        ("address_spaces: ['*']\n    port: 0", "9:11: send_connectors.port: 0 is out of range 1-65535"),
        (
            "address_spaces: ['*']\n    max_message_size: 0",
            "9:23: send_connectors.max_message_size: 0 bytes is out of range 1-2,147,483,647 (or unlimited)",
        ),
        (
            "address_spaces: ['*']\n    colour: blue",
            "9:5: send_connectors.colour: unknown key; expected name, "
            "address_spaces, usage, dns_routing_enabled, smart_hosts, port, require_tls, tls_auth_level, tls_domain, "
            "ignore_starttls, smart_host_auth_mechanism, authentication_credential_file, max_message_size, fqdn, "
            "enabled, source_transport_servers, cloud_services_mail_enabled, comment",
        ),
    ],
)
def test_exchange_refusals_are_located(connector: str, expected: str) -> None:
    assert problems(f"send_connectors:\n  - name: C\n    {connector}\n") == [expected]


def test_duplicate_names_and_missing_keys() -> None:
    got = problems(
        "send_connectors:\n  - {name: A, address_spaces: ['*']}\n  - {name: a, address_spaces: ['*']}\n"
        "  - {address_spaces: ['*']}\nmailbox_next_hop: '[10.0.0.1]:99999'\n"
    )
    assert got == [
        "8:12: send_connectors.name: 'a' is already a send connector (line 7)",
        "9:5: send_connectors.name: required",
        "10:19: mailbox_next_hop: '[10.0.0.1]:99999': port 99999 is out of range 1-65535",
    ]


def test_warnings_for_mail_that_would_be_held_or_routed_by_mx() -> None:
    from exmilter.config import loads
    from tests.conftest import SERVER

    loaded = loads(
        SERVER + "accepted_domains:\n  - contoso.com\n  - {domain_name: ext.example, domain_type: ExternalRelay}\n"
        "send_connectors:\n  - {name: P, address_spaces: [p.example], smart_hosts: [10.0.0.1], "
        "source_transport_servers: [EXCH02]}\n"
    )
    assert [f"{w.key}: {w.message}" for w in loaded.warnings] == [
        "mailbox_next_hop: contoso.com is Authoritative and no mailbox_next_hop is set: Postfix routes it by MX",
        "send_connectors: ext.example (ExternalRelay) matches no send connector: its mail is held",
        "send_connectors.source_transport_servers: EXCH01 is not a source transport server: this server does not "
        "route over the connector",
    ]


def test_explain_names_connector_next_hop_and_tls_per_recipient(capsys: pytest.CaptureFixture[str]) -> None:
    """Acceptance: an Internet and a hybrid connector; an external and an organisation recipient."""
    from exmilter.cli import main
    from tests.conftest import ROOT

    config = str(ROOT / "tests" / "data" / "send-connectors.yaml")
    args = ["explain", "-c", config, "--client-ip", "10.0.0.9", "--from", "app@contoso.com"]
    assert main([*args, "--to", "someone@gmail.com", "user@contoso.com", "--size", "20000000"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-5:] == [
        "RCPT     [someone@gmail.com] 250 2.1.5 Recipient OK",
        "         route: send connector Internet (SMTP:*;1); next hop MX of gmail.com; TLS may",
        "RCPT     [user@contoso.com] 250 2.1.5 Recipient OK",
        "         route: send connector Outbound to Office 365 (SMTP:contoso.com;1); next hop "
        "contoso-com.mail.protection.outlook.com:25; TLS secure match=mail.protection.outlook.com",
        "DATA     250 2.6.0 Queued mail for delivery",
    ]
    assert main([*args, "--to", "x@sub.fabrikam.com", "--size", "20000000", "--json"]) == 0
    import json

    route = json.loads(capsys.readouterr().out)["replies"][2]["route"]
    assert route == {
        "kind": "connector",
        "domain": "sub.fabrikam.com",
        "accepted_domain": None,
        "accepted_domain_type": None,
        "connector": "Partner",
        "address_space": "SMTP:*.fabrikam.com;1",
        "next_hop": "smtp1.fabrikam.com:587, smtp2.fabrikam.com:587",
        "tls": "encrypt",
        "tls_required": True,
        "max_message_size": 10485760,
        "size_refusal": "550 5.3.4 ROUTING.SizeLimit; message size exceeds fixed maximum size for route",
    }


def test_explain_shows_routes_only_where_exmilter_routes() -> None:
    """Without send connectors or a mailbox next hop, Postfix's own routing applies: no route shown."""
    from exmilter.explain import explain

    receive = (
        "receive_connectors:\n  - {name: R, usage: Custom, bindings: ['0.0.0.0:25'], remote_ip_ranges: [10.0.0.0/24], "
        "permission_groups: [AnonymousUsers]}\n"
    )
    plain = org_from("accepted_domains: [contoso.com]\n" + receive)
    result = explain(plain, client_ip="10.0.0.9", mail_from="a@example.com", rcpt_to=["b@contoso.com"])
    assert "route" not in result["replies"][2]
    hop = org_from("accepted_domains: [contoso.com]\nmailbox_next_hop: 10.0.0.20\n" + receive)
    result = explain(hop, client_ip="10.0.0.9", mail_from="a@example.com", rcpt_to=["b@contoso.com", "c@x.example"])
    rcpts = [r for r in result["replies"] if r["stage"] == "RCPT"]
    assert (rcpts[0]["route"]["kind"], rcpts[0]["route"]["next_hop"]) == ("mailbox", "10.0.0.20:25")
    assert "route" not in rcpts[1]  # refused (relay denied): no route


def test_warnings_for_shadowed_address_spaces_and_name_ties() -> None:
    from exmilter.config import loads
    from tests.conftest import SERVER

    loaded = loads(
        SERVER + "accepted_domains: [contoso.com]\nmailbox_next_hop: 10.0.0.20\nsend_connectors:\n"
        "  - name: Hybrid\n    address_spaces: [contoso.com, x.example]\n    smart_hosts: [10.0.0.1]\n"
        "  - name: Other\n    address_spaces: ['SMTP:x.example;1']\n    smart_hosts: [10.0.0.2]\n"
    )
    assert [f"{w.line}:{w.col}: {w.key}: {w.message}" for w in loaded.warnings] == [
        "10:21: send_connectors.address_spaces: SMTP:contoso.com;1 on 'Hybrid': contoso.com is an accepted domain "
        "(Authoritative): its mail goes to the mailboxes, never over this connector (InternalRelay without "
        "mailbox_next_hop routes it here)",
        "13:21: send_connectors.address_spaces: SMTP:x.example;1 is also on 'Hybrid' at the same cost: the "
        "connector name breaks the tie",
    ]
