"""import-exchange: New-/Set-/Remove-SendConnector and Get-SendConnector | Format-List dumps."""

from __future__ import annotations

from pathlib import Path

from exmilter.config import loads
from exmilter.importer import Level, Result, import_exchange
from exmilter.model import SmartHostAuthMechanism, TlsAuthLevel
from exmilter.routing import Router

DATA = Path(__file__).parent / "data" / "import"


def run(*files: str, extra: str | None = None) -> Result:
    sources = [(f, (DATA / f).read_text(encoding="utf-8")) for f in files]
    if extra is not None:
        sources.append(("extra.ps1", extra))
    return import_exchange(sources, server="EXCH01.contoso.com")


def warnings(result: Result) -> list[str]:
    return [f"{n.file}:{n.line}: {n.text}" for n in result.notes if n.level is Level.WARNING]


def test_microsoft_examples_and_the_typical_setups() -> None:
    result = run("send_connectors.ps1")
    org = loads(result.yaml).organization
    by_name = {c.name: c for c in org.send_connectors}
    assert list(by_name) == [
        "MySendConnector",
        "Secure Email to Contoso.com",
        "To Internet",
        "Smart Host",
        "Outbound to Office 365",
    ]
    example1 = by_name["MySendConnector"]
    assert [s.domain for s in example1.address_spaces] == ["contoso.com", "fabrikam.com"]
    assert example1.dns_routing_enabled and example1.usage.value == "Internet"
    example2 = by_name["Secure Email to Contoso.com"]
    assert example2.smart_host_auth_mechanism is SmartHostAuthMechanism.BasicAuth
    assert (
        example2.authentication_credential_file == "/etc/exmilter/credentials/secure-email-to-contoso-com.credentials"
    )
    assert example2.max_message_size == 10 << 20  # Set-SendConnector's example
    hybrid = by_name["Outbound to Office 365"]
    assert (hybrid.smart_hosts, hybrid.tls_auth_level, hybrid.tls_domain, hybrid.fqdn) == (
        ("contoso-com.mail.protection.outlook.com",),
        TlsAuthLevel.DomainValidation,
        "mail.protection.outlook.com",
        "mail.contoso.com",
    )
    smart = by_name["Smart Host"]
    assert (smart.smart_hosts, smart.port, smart.require_tls) == (("relay.isp.example",), 587, True)
    assert warnings(result) == [
        "send_connectors.ps1:11: -AuthenticationCredential: the secret is never imported; write it to "
        "/etc/exmilter/credentials/secure-email-to-contoso-com.credentials (mode 600) as one line "
        "'[smarthost]:port username:password' per smart host",
        "send_connectors.ps1:14: -ConnectionInactivityTimeOut is not modelled by exmilter's send connectors: "
        "not imported",
        "send_connectors.ps1:18: -AuthenticationCredential: the secret is never imported; write it to "
        "/etc/exmilter/credentials/smart-host.credentials (mode 600) as one line "
        "'[smarthost]:port username:password' per smart host",
    ]
    assert "CREDENTIALS NOT IMPORTED" in result.yaml
    router = Router(org)
    assert router.route("a@contoso.mail.onmicrosoft.com").connector == hybrid
    assert router.route("a@www.example").connector == smart  # *.example is closer than '*', whatever the cost
    assert router.route("a@gmail.com").connector == by_name["To Internet"]


def test_format_list_dump_sets_and_creates_send_connectors() -> None:
    result = run("send_connectors.ps1", "fl_send_connectors.txt")
    org = loads(result.yaml).organization
    by_name = {c.name: c for c in org.send_connectors}
    hybrid = by_name["Outbound to Office 365"]
    assert (hybrid.max_message_size, hybrid.cloud_services_mail_enabled, hybrid.source_transport_servers) == (
        35 << 20,
        True,
        ("EXCH01",),
    )
    partner = by_name["Partner Relay"]
    assert partner.enabled is False and partner.max_message_size is None
    assert partner.smart_hosts == ("10.20.30.40", "smtp2.fabrikam.com")
    assert [str(s) for s in partner.address_spaces] == ["SMTP:fabrikam.com;1", "SMTP:*.fabrikam.com;2"]
    assert partner.authentication_credential_file == "/etc/exmilter/credentials/partner-relay.credentials"
    assert "PSCredential" not in result.yaml
    assert [w for w in warnings(result) if w.startswith("fl_send_connectors.txt")] == [
        "fl_send_connectors.txt:45: -AuthenticationCredential: the secret is never imported; write it to "
        "/etc/exmilter/credentials/partner-relay.credentials (mode 600) as one line "
        "'[smarthost]:port username:password' per smart host",
    ]


def test_what_exchange_refuses_is_refused_and_the_rest_imports() -> None:
    result = run(
        extra=(
            'New-SendConnector -Name Good -AddressSpaces "SMTP:good.example;1" -SmartHosts 10.0.0.1\n'
            'New-SendConnector -Name Both -AddressSpaces "*" -DNSRoutingEnabled $true -SmartHosts 10.0.0.2\n'
            'New-SendConnector -Name Cost -AddressSpaces "SMTP:x.example;0"\n'
            "New-SendConnector -Name Good -AddressSpaces y.example\n"
            "Set-SendConnector Missing -Port 2525\n"
            "Set-SendConnector Good -TlsDomain contoso.com\n"
            "Remove-SendConnector Good\n"
        )
    )
    assert [w for w in warnings(result) if w.startswith("extra.ps1")] == [
        "extra.ps1:2: New-SendConnector: Exchange refuses this: send_connectors.smart_hosts: SmartHosts cannot be "
        "set while DNSRoutingEnabled is $true; not imported",
        "extra.ps1:3: New-SendConnector: -AddressSpaces SMTP:x.example;0: 'SMTP:x.example;0': cost 0 is out of "
        "range 1-100; not imported",
        "extra.ps1:4: New-SendConnector: a send connector named 'Good' already exists; not imported",
        "extra.ps1:5: Set-SendConnector: no send connector 'Missing': it is not created in the input or its "
        "creation was refused; not imported",
        "extra.ps1:6: Set-SendConnector: Exchange refuses this: send_connectors.tls_domain: TlsDomain is only used "
        "with TlsAuthLevel DomainValidation; not imported",
    ]
    assert loads(result.yaml).organization.send_connectors == ()
