"""import-exchange for the authentication commands of the seeds (issue #13): AuthMechanism,
RequireTLS, TlsCertificateName, Fqdn and Send-As grants, imported into what the engine and
the Postfix rendering read."""

from __future__ import annotations

from pathlib import Path

from exmilter.config import loads
from exmilter.engine import Engine
from exmilter.importer import Level, import_exchange
from exmilter.model import AuthMechanism

DATA = Path(__file__).parent / "data" / "import"


def imported(text: str, *, seed_003: bool = True):
    sources = ([("seed_003.ps1", (DATA / "seed_003.ps1").read_text())] if seed_003 else []) + [("extra.ps1", text)]
    return import_exchange(sources, server="CMHYBD01.cloudmonkeys.xyz")


def test_seed_003_imports_the_auth_relay_connector_and_the_send_as_grant():
    result = imported(
        "New-AcceptedDomain -Name cm -DomainName cloudmonkeys.xyz\n"
        'Add-ADPermission -Identity smb1@cloudmonkeys.xyz -User svc-mailer -ExtendedRights "Send As"\n'
    )
    org = loads(result.yaml).organization
    c = org.connector("SMTP Auth Relay Script")
    assert c is not None and c.require_tls
    assert c.auth_mechanism == AuthMechanism.Tls | AuthMechanism.BasicAuth | AuthMechanism.BasicAuthRequireTLS
    assert [(u.name, u.send_as) for u in org.users] == [("svc-mailer", ("smb1@cloudmonkeys.xyz",))]
    e = Engine(org)
    s = e.open_session(None, 587, "192.168.1.13", auth_user="svc-mailer", tls=True, helo="app")
    assert e.mail(s, "smb1@cloudmonkeys.xyz").line == "250 2.1.0 Sender OK"
    assert e.mail(s, "raghu@cloudmonkeys.xyz").line == (
        "550 5.7.60 SMTP; Client does not have permissions to send as this sender"
    )


def test_a_domain_qualified_account_is_the_same_login_and_deny_takes_send_as_away():
    result = imported(
        'Add-ADPermission -Identity smb1@cloudmonkeys.xyz -User svc-mailer -ExtendedRights "Send As"\n'
        'Add-ADPermission -Identity boss@cloudmonkeys.xyz -User "CLOUDMONKEYS\\svc-mailer" -ExtendedRights Send-As\n'
        'Add-ADPermission -Identity smb1@cloudmonkeys.xyz -User svc-mailer -ExtendedRights "Send As" -Deny\n',
        seed_003=False,
    )
    assert [(u.name, u.send_as) for u in loads(result.yaml).organization.users] == [
        ("svc-mailer", ("boss@cloudmonkeys.xyz",))
    ]
    removed = imported(
        'Add-ADPermission -Identity boss@cloudmonkeys.xyz -User svc-mailer -ExtendedRights "Send As"\n'
        'Remove-ADPermission -Identity boss@cloudmonkeys.xyz -User svc-mailer -ExtendedRights "Send As"\n',
        seed_003=False,
    )
    assert [u.send_as for u in loads(removed.yaml).organization.users] == [()]


def test_seed_001_fqdn_and_tls_certificate_name():
    result = imported(
        'Set-ReceiveConnector "CMHYBD01\\Client Frontend CMHYBD01" -Fqdn mail.exchange2016demo.com '
        '-TlsCertificateName "<I>CN=LockLAN CA<S>CN=mail.exchange2016demo.com"\n',
        seed_003=False,
    )
    c = loads(result.yaml).organization.connector("Client Frontend CMHYBD01")
    assert c is not None and c.fqdn == "mail.exchange2016demo.com"
    assert c.tls_certificate_name == "<I>CN=LockLAN CA<S>CN=mail.exchange2016demo.com"
    infos = [n.text for n in result.notes if n.level is Level.INFO and n.line == 1]
    assert any("Postfix reads PEM files" in t and "tls_certificate_file" in t for t in infos)


def test_integrated_alone_is_exmilters_refusal_not_exchanges():
    result = imported(
        'Set-ReceiveConnector "CMHYBD01\\Client Frontend CMHYBD01" -AuthMechanism Tls,Integrated\n', seed_003=False
    )
    (w,) = [n.text for n in result.notes if n.level is Level.WARNING]
    assert w.startswith("Set-ReceiveConnector: exmilter cannot take this: ") and "not imported" in w
