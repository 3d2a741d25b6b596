"""exmilter import-exchange: seeds, Microsoft's syntax forms, Format-List dumps, malformed input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from exmilter.commands import import_exchange as cmd
from exmilter.config import loads
from exmilter.explain import explain
from exmilter.importer import Level, Result, import_exchange
from exmilter.importer.apply import RC_KEYS
from exmilter.model import Organization

DATA = Path(__file__).parent / "data" / "import"


def run(files: list[str], server: str | None = None, extra: str | None = None) -> Result:
    sources = [(f, (DATA / f).read_text(encoding="utf-8")) for f in files]
    if extra is not None:
        sources.append(("extra.ps1", extra))
    return import_exchange(sources, server=server)


def org_of(result: Result) -> Organization:
    return loads(result.yaml).organization


def warnings(result: Result) -> list[str]:
    return [f"{n.file}:{n.line}: {n.text}" for n in result.notes if n.level is Level.WARNING]


def answers(org: Organization, **kw: Any) -> tuple[str | None, list[tuple[str, str]]]:
    e = explain(org, **kw)
    return e["connector"], [(r["stage"], r["reply"]) for r in e["replies"]]


RELAYED = [
    ("MAIL", "250 2.1.0 Sender OK"),
    ("RCPT", "250 2.1.5 Recipient OK"),
    ("DATA", "250 2.6.0 Queued mail for delivery"),
]
NOT_RELAYED = [
    ("MAIL", "250 2.1.0 Sender OK"),
    ("RCPT", "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain"),
    ("DATA", "503 5.5.2 Need rcpt command"),
]

# --- every command line of the five seeds, verbatim --------------------------------------

SEED_WARNINGS = {
    "seed_000_anonymous.ps1": [],
    "seed_000_permission_groups.ps1": [],
    "seed_001.ps1": [
        "seed_001.ps1:5: -TlsCertificateName: $tlscertificatename holds $($cert.Issuer), computed by PowerShell at "
        "run time; this parameter is not imported",
        "seed_001.ps1:8: Set-ReceiveConnector: no receive connector 'EXSERVER\\Anon Relay EXSERVER' on EXSERVER: it "
        "is not created in the input (made in the admin center?) or its creation was refused above; not imported",
        "seed_001.ps1:8: no receive connector 'EXSERVER\\Anon Relay EXSERVER' on EXSERVER: it is not created in the "
        "input (made in the admin center?) or its creation was refused above",
        "seed_001.ps1:11: Set-ReceiveConnector: no receive connector 'EXSERVER\\Anon Relay EXSERVER' on EXSERVER: it "
        "is not created in the input (made in the admin center?) or its creation was refused above; not imported",
    ],
    "seed_002.ps1": [
        "seed_002.ps1:1: New-ReceiveConnector: -Bindings <LocalIPAddresses>:25: '<LocalIPAddresses>:25' is not a "
        "binding (forms: 0.0.0.0:25, 10.1.1.1:25, [::]:25); not imported",
    ],
    "seed_003.ps1": [
        "seed_003.ps1:9: Send-As on 'smb1' for svc-mailer: 'smb1' is a directory object whose e-mail address is not "
        "in the input; add it to users[svc-mailer].send_as",
    ],
    "seed_004.ps1": [
        "seed_004.ps1:1: New-ReceiveConnector: -Bindings needs a value; not imported",
        "seed_004.ps1:9: Set-ReceiveConnector: no receive connector 'EXCH01\\SMTP Relay EXCH01' on EXCH01: it is not "
        "created in the input (made in the admin center?) or its creation was refused above; not imported",
    ],
}
SEED_SERVERS = {
    "seed_000_anonymous.ps1": "EXCH01.labs.local",
    "seed_000_permission_groups.ps1": "EXCH01.labs.local",
    "seed_001.ps1": "EXSERVER.exchange2016demo.com",
    "seed_002.ps1": "EXCH01.contoso.com",
    "seed_003.ps1": "CMHYBD01.cloudmonkeys.xyz",
    "seed_004.ps1": "EXCH01.labs.local",
}


@pytest.mark.parametrize("seed", sorted(SEED_WARNINGS))
def test_every_seed_command_imports(seed: str) -> None:
    result = run([seed], SEED_SERVERS[seed])
    assert warnings(result) == SEED_WARNINGS[seed]
    org_of(result)  # what `exmilter check` runs


def test_seed_pasted_output_and_read_only_commands_are_reported_as_info() -> None:
    infos = [f"{n.line}: {n.text}" for n in run(["seed_000_anonymous.ps1"], "EXCH01.labs.local").notes
             if n.level is Level.INFO and "assumed" not in n.text]
    assert infos == [
        "1: pasted output (Identity … table) skipped",
        "2: pasted output (Identity … table) skipped",
        "3: pasted output (Identity … table) skipped",
        "3: Get-ReceiveConnector | Get-ADPermission | where | ft: read-only, nothing to import",
        "5: Telnet is not an Exchange cmdlet: its session transcript is skipped",
        "6: Telnet is not an Exchange cmdlet: its session transcript is skipped",
    ]


SEED_BEHAVIOUR = [
    # seed 000, anonymous relay: the listed host relays with the connector's banner; others get 5.7.54
    (["seed_000_anonymous.ps1", "domains_labs.ps1"], "EXCH01.labs.local",
     {"client_ip": "10.83.4.56", "mail_from": "noreply@exchangelabs.nl", "rcpt_to": ["jaapwess@gmail.com"]},
     "EXCH01\\SMTP Relay (EXCH01)", [("CONNECT", "220 Server EXCH01 SMTP Relay Connector"), *RELAYED]),
    (["seed_000_anonymous.ps1", "domains_labs.ps1"], "EXCH01.labs.local",
     {"client_ip": "10.83.4.254", "mail_from": "noreply@exchangelabs.nl", "rcpt_to": ["jaapwess@gmail.com"]},
     "EXCH01\\Default Frontend EXCH01",
     [("CONNECT", "220 exch01.labs.local Microsoft ESMTP MAIL Service ready"), *NOT_RELAYED]),
    # seed 000, permission groups (ExternalAuthoritative + ExchangeServers)
    (["seed_000_permission_groups.ps1", "domains_labs.ps1"], "EXCH01.labs.local",
     {"client_ip": "10.83.4.56", "mail_from": "noreply@exchangelabs.nl", "rcpt_to": ["jaapwess@gmail.com"]},
     "EXCH01\\SMTP Relay (EXCH01)",
     [("CONNECT", "220 exch01.labs.local Microsoft ESMTP MAIL Service ready"), *RELAYED]),
    # seed 001: the relay connector (made in the EAC) answers with the banner the loop set
    (["eac_001_anon_relay.ps1", "seed_001.ps1"], "EXSERVER.exchange2016demo.com",
     {"client_ip": "192.168.0.30", "mail_from": "test@test.com", "rcpt_to": ["exchangeserverpro@gmail.com"]},
     "EXSERVER\\Anon Relay EXSERVER", [("CONNECT", "220 EXSERVER\\Anon Relay EXSERVER"), *RELAYED]),
    (["eac_001_anon_relay.ps1", "seed_001.ps1"], "EXSERVER.exchange2016demo.com",
     {"client_ip": "192.168.0.31", "mail_from": "adam.wally@exchange2016demo.com",
      "rcpt_to": ["exchangeserverpro@gmail.com"]},
     "EXSERVER\\Default Frontend EXSERVER", [("CONNECT", "220 EXSERVER\\Default Frontend EXSERVER"), *NOT_RELAYED]),
    # seed 002 (Microsoft's article), both methods applied in order: the hosts are externally secured
    (["seed_002.ps1"], "EXCH01.contoso.com",
     {"client_ip": "192.168.5.11", "mail_from": "chris@contoso.com", "rcpt_to": ["kate@fabrikam.com"]},
     "EXCH01\\Anonymous Relay", [("CONNECT", "220 exch01.contoso.com Microsoft ESMTP MAIL Service ready"), *RELAYED]),
    # seed 003: anonymous relay on 2526, only from 192.168.1.13; port 587 requires TLS
    (["seed_003.ps1"], "CMHYBD01.cloudmonkeys.xyz",
     {"client_ip": "192.168.1.13", "port": 2526, "mail_from": "test@cloudmonkeys.xyz",
      "rcpt_to": ["user@cloudmonkeys.xyz"]},
     "CMHYBD01\\SMTP Relay Script",
     [("CONNECT", "220 cmhybd01.cloudmonkeys.xyz Microsoft ESMTP MAIL Service ready"), *RELAYED]),
    (["seed_003.ps1"], "CMHYBD01.cloudmonkeys.xyz",
     {"client_ip": "192.168.1.14", "port": 2526, "mail_from": "test@cloudmonkeys.xyz"},
     None, [("CONNECT", "421 4.3.2 Service not available")]),
    (["seed_003.ps1"], "CMHYBD01.cloudmonkeys.xyz",
     {"client_ip": "192.168.1.13", "port": 587, "mail_from": "smb1@cloudmonkeys.xyz"},
     "CMHYBD01\\SMTP Auth Relay Script",
     [("CONNECT", "220 cmhybd01.cloudmonkeys.xyz Microsoft ESMTP MAIL Service ready"),
      ("MAIL", "451 4.7.3 STARTTLS is required to send mail")]),
    # seed 004: the connector's creation was refused (values missing), so Default Frontend answers
    (["seed_004.ps1"], "EXCH01.labs.local",
     {"client_ip": "10.0.0.9", "mail_from": "a@labs.local", "rcpt_to": ["x@gmail.com"]},
     "EXCH01\\Default Frontend EXCH01",
     [("CONNECT", "220 exch01.labs.local Microsoft ESMTP MAIL Service ready"), *NOT_RELAYED]),
]


@pytest.mark.parametrize(("files", "server", "session", "connector", "replies"), SEED_BEHAVIOUR)
def test_seed_behaviour(files: list[str], server: str, session: dict[str, Any], connector: str | None,
                        replies: list[tuple[str, str]]) -> None:
    assert answers(org_of(run(files, server)), **session) == (connector, replies)


def test_seed_runbook_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.yaml"
    files = [str(DATA / f) for f in ("seed_000_anonymous.ps1", "domains_labs.ps1")]
    assert cmd.run(_args(files, str(out), "EXCH01.labs.local", strict=True)) == 0
    text = out.read_text()
    assert "  # New-ReceiveConnector at " in text and "default_connectors: true" in text
    org = loads(text).organization
    assert [c.identity for c in org.receive_connectors][-1] == "EXCH01\\SMTP Relay (EXCH01)"


def test_strict_turns_warnings_into_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "x.yaml"
    assert cmd.run(_args([str(DATA / "seed_004.ps1")], str(out), "EXCH01.labs.local", strict=True)) == 2
    assert not out.exists()
    assert cmd.run(_args([str(DATA / "seed_004.ps1")], str(out), "EXCH01.labs.local", strict=False)) == 0
    assert out.exists()


def _args(files: list[str], out: str | None, server: str | None, strict: bool) -> Any:
    import argparse

    return argparse.Namespace(files=files, output=out, server=server, strict=strict)


# --- Microsoft's documented syntax forms ------------------------------------------------


def test_microsoft_examples() -> None:
    result = run(["microsoft_examples.ps1"], "EXCH01.labs.local")
    assert warnings(result) == []
    org = org_of(result)
    contoso = org.connector("Contoso.com Receive Connector")
    apps = org.connector("Internal Apps")
    assert contoso is not None and apps is not None
    assert [str(r) for r in contoso.remote_ip_ranges] == ["192.168.0.1-192.168.0.24", "192.168.0.200"]
    assert [str(b) for b in contoso.bindings] == ["10.0.0.1:25"]
    assert org.server.addresses == ("10.0.0.1",)
    assert (contoso.banner, contoso.connection_timeout.total_seconds()) == ("220 SMTP Server Ready", 900)
    assert (contoso.max_message_size, contoso.max_recipients_per_message) == (50 << 20, 500)
    assert [(p.user, p.rights.tokens(), p.deny) for p in contoso.permissions] == [
        ("NT AUTHORITY\\ANONYMOUS LOGON", "SMTPSubmit", True)
    ]
    assert [str(r) for r in apps.remote_ip_ranges] == [
        "192.168.5.0/24", "192.168.6.0(255.255.255.0)", "2001:db8::/32", "fe80::39bd:88f7:6969:d223%11"
    ]
    assert [str(b) for b in apps.bindings] == ["0.0.0.0:2526", "[::]:2526"]
    assert [(p.user, p.rights.tokens()) for p in apps.permissions] == [
        ("NT AUTHORITY\\ANONYMOUS LOGON", "SMTPAcceptAnyRecipient SMTPAcceptAnySender")
    ]
    assert [(d.name, d.domain_name, d.domain_type.value) for d in org.accepted_domains] == [
        ("Contoso", "contoso.com", "Authoritative"),
        ("Fabrikam Relay", "*.fabrikam.com", "ExternalRelay"),
    ]
    # the explicit Deny beats the AnonymousUsers group: anonymous mail is refused at MAIL FROM
    assert answers(org, client_ip="192.168.0.5", server_ip="10.0.0.1", mail_from="a@b.example")[1][1][0] == "MAIL"
    assert answers(org, client_ip="2001:db8::7", port=2526, mail_from="a@b.example", rcpt_to=["x@y.example"]) == (
        "EXCH01\\Internal Apps",
        [("CONNECT", "220 exch01.labs.local Microsoft ESMTP MAIL Service ready"), *RELAYED],
    )


PARSING = [
    # (source, connector, property, expected)
    ('New-ReceiveConnector -Name:"A" -Custom -Bindings:0.0.0.0:2600 -RemoteIPRanges:10.0.0.1', "A", "remote_ip_ranges",
     ["10.0.0.1"]),
    ("New-ReceiveConnector 'It''s' -Custom -Bindings 0.0.0.0:2600 -RemoteIPRanges 10.0.0.1", "It's", "bindings",
     ["0.0.0.0:2600"]),
    ('New-ReceiveConnector "B" -Custom -Bindings 0.0.0.0:2600 -RemoteIPRanges 10.0.0.1 -Banner "220 a`tb"', "B",
     "banner", "220 a\tb"),
    ('$n = "C"\nNew-ReceiveConnector $n -Custom -Bindings 0.0.0.0:2600 -RemoteIPRanges @("10.0.0.1", "10.0.0.2")',
     "C", "remote_ip_ranges", ["10.0.0.1", "10.0.0.2"]),
    ("New-ReceiveConnector D -Custom -Bindings 0.0.0.0:2600 `\n  -RemoteIPRanges 10.0.0.0/8 # comment\n<# block\n#>",
     "D", "remote_ip_ranges", ["10.0.0.0/8"]),
    ("New-ReceiveConnector \u201cE\u201d \u2013Custom -Bindings 0.0.0.0:2600 -RemoteIPRanges 10.0.0.1 -Enabled:$false",
     "E", "enabled", False),
    ("New-ReceiveConnector F -Custom -Bindings 0.0.0.0:2600 -RemoteIPRanges 10.0.0.1 -AuthMech 'Tls, BasicAuth'",
     "F", "auth_mechanism", ["Tls", "BasicAuth"]),
    ("New-ReceiveConnector G -Custom -Bindings 0.0.0.0:2600 -RemoteIPRanges 10.0.0.1 -Server $env:COMPUTERNAME",
     "G", "usage", "Custom"),
]


@pytest.mark.parametrize(("source", "name", "key", "expected"), PARSING)
def test_powershell_forms(source: str, name: str, key: str, expected: Any) -> None:
    result = import_exchange([("t.ps1", source)], server="EXCH01.labs.local")
    assert warnings(result) == []
    c = next(c for c in _state(result) if c["name"] == name)
    assert c[key] == expected


def _state(result: Result) -> list[dict[str, Any]]:
    import yaml

    return yaml.safe_load(result.yaml)["receive_connectors"]


def test_every_exchange_parameter_maps_to_a_config_key() -> None:
    assert len(RC_KEYS) == 49 and all(v for v in RC_KEYS.values())


# --- Format-List dumps ------------------------------------------------------------------

CLIENTS: list[dict[str, Any]] = [
    {"client_ip": "198.51.100.7", "mail_from": "a@fabrikam.example", "rcpt_to": ["b@labs.local", "c@gmail.com"]},
    {"client_ip": "2001:db8::9", "port": 587, "mail_from": "a@labs.local", "rcpt_to": ["c@gmail.com"]},
    {"client_ip": "10.1.2.3", "port": 2525, "auth": "bob", "mail_from": "bob@labs.local", "rcpt_to": ["c@gmail.com"]},
    {"client_ip": "10.1.2.3", "port": 465, "mail_from": "x@labs.local"},
    {"client_ip": "10.1.2.3", "port": 717, "mail_from": "x@labs.local", "rcpt_to": ["c@gmail.com"]},
]


def test_format_list_of_default_connectors_round_trips() -> None:
    result = run(["fl_default_connectors.txt"])
    assert warnings(result) == []
    assert "receive_connectors" not in result.yaml  # nothing differs from setup's connectors
    imported = org_of(result)
    reference = loads(
        "server: {name: EXCH01, fqdn: exch01.labs.local}\ndefault_connectors: true\naccepted_domains: [labs.local]\n"
    ).organization
    assert imported.receive_connectors == reference.receive_connectors
    for client in CLIENTS:
        assert explain(imported, **client) == explain(reference, **client)


def test_format_list_changes_and_new_objects() -> None:
    dump = """\
Name            : Default Frontend EXCH01
Identity        : EXCH01\\Default Frontend EXCH01
MaxMessageSize  : 10 MB (10,485,760 bytes)
RemoteIPRanges  : {::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff, 0.0.0.0-255.25
                  5.255.255}
SomethingNew    : 1

Identity        : EXCH01\\Scanners
TransportRole   : FrontendTransport
Bindings        : {0.0.0.0:25}
RemoteIPRanges  : {10.9.0.0/16}
PermissionGroups: AnonymousUsers, Custom
AuthMechanism   : Tls

DomainName         : shared.example
DomainType         : InternalRelay
Default            : False
Name               : Shared

User            : NT AUTHORITY\\ANONYMOUS LOGON
Identity        : EXCH01\\Scanners
ExtendedRights  : {ms-Exch-SMTP-Accept-Any-Recipient}
IsInherited     : False
Deny            : False
"""
    result = import_exchange([("dump.txt", dump)], server="EXCH01.labs.local")
    assert warnings(result) == ["dump.txt:6: SomethingNew is not a receive connector property exmilter knows: "
                                "not imported"]
    org = org_of(result)
    frontend = org.connector("Default Frontend EXCH01")
    assert frontend is not None and frontend.max_message_size == 10 << 20
    assert answers(org, client_ip="10.9.1.1", mail_from="a@b.example", rcpt_to=["c@shared.example", "d@e.example"]
                   )[1][2:4] == [("RCPT", "250 2.1.5 Recipient OK"), ("RCPT", "250 2.1.5 Recipient OK")]


# --- malformed input and Exchange's refusals ---------------------------------------------

BAD = [
    ('New-ReceiveConnector "A -Custom', "t.ps1:1: unterminated \"-quoted string: the command is not imported"),
    ("New-ReceiveConnector A -Custom -Bindings 0.0.0.0:2600 -RemoteIPRanges 10.0.0.1 -Colour red",
     "t.ps1:1: -Colour is not a parameter exmilter understands here: not imported"),
    ("New-ReceiveConnector A -Custom -Bindings 0.0.0.0:2600 -RemoteIPRanges 10.0.0.9-10.0.0.1",
     "t.ps1:1: New-ReceiveConnector: -RemoteIPRanges 10.0.0.9-10.0.0.1: '10.0.0.9-10.0.0.1': the first address is "
     "greater than the last; not imported"),
    ('Get-ReceiveConnector "Nope" | Add-ADPermission -User "NT AUTHORITY\\ANONYMOUS LOGON" -ExtendedRights '
     "ms-Exch-SMTP-Accept-Any-Recipient",
     "t.ps1:1: no receive connector 'Nope' on EXCH01: it is not created in the input (made in the admin center?) "
     "or its creation was refused above"),
    ('Add-ADPermission -Identity "Nope" -User "NT AUTHORITY\\ANONYMOUS LOGON" -ExtendedRights '
     "ms-Exch-SMTP-Accept-Any-Recipient",
     "t.ps1:1: Add-ADPermission: permission for unknown receive connector 'Nope' on EXCH01; not imported"),
    ('Add-ADPermission "Default Frontend EXCH01" -User x -ExtendedRights ms-Exch-Teleport',
     "t.ps1:1: Add-ADPermission: -ExtendedRights: 'ms-Exch-Teleport' is not a receive-connector extended right; "
     "not imported"),
    ("New-ReceiveConnector A -Custom -Bindings 0.0.0.0:25 -RemoteIPRanges 10.0.0.1",  # spec §6 #8: lands in Hub
     "t.ps1:1: New-ReceiveConnector: Exchange refuses this: Default Frontend EXCH01: TransportRole: binding "
     "0.0.0.0:25 is also used by 'A' in another transport role. Receive connectors assigned to different "
     "Transport roles on a single server must listen on unique local IP address & port bindings; not imported"),
    ("New-ReceiveConnector A -TransportRole FrontendTransport -Custom -Bindings 0.0.0.0:25 -RemoteIPRanges "
     "10.0.0.0-10.0.0.200\nNew-ReceiveConnector B -TransportRole FrontendTransport -Custom -Bindings 0.0.0.0:25 "
     "-RemoteIPRanges 10.0.0.100-10.0.0.255",
     "t.ps1:2: New-ReceiveConnector: Exchange refuses this: B: RemoteIPRanges: partially overlapping range "
     "10.0.0.100-10.0.0.255 conflicts with 10.0.0.0-10.0.0.200 of connector 'A' on binding 0.0.0.0:25; not imported"),
    ('Set-ReceiveConnector "Client Frontend EXCH01" -AuthMechanism BasicAuthRequireTLS',
     "t.ps1:1: Set-ReceiveConnector: Exchange refuses this: Client Frontend EXCH01: AuthMechanism: "
     "BasicAuthRequireTLS needs BasicAuth and Tls; not imported"),
    ('Set-ReceiveConnector "Default Frontend EXCH01" -PermissionGroups Custom',
     "t.ps1:1: Set-ReceiveConnector: -PermissionGroups Custom cannot be set: Exchange shows it once an entry is "
     "added; not imported"),
    ("Set-SendConnector Internet -MaxMessageSize 10MB",
     "t.ps1:1: Set-SendConnector is not imported: exmilter models receive connectors, their permissions and "
     "accepted domains only"),
    ("Get-ReceiveConnector | where {$_.Name -like 'Default*'} | Set-ReceiveConnector -MaxMessageSize 10MB",
     "t.ps1:1: a Where-Object filter cannot be evaluated offline: the rest of this pipeline is not imported; name "
     "the objects instead"),
]


@pytest.mark.parametrize(("source", "message"), BAD)
def test_malformed_input_is_located(source: str, message: str) -> None:
    result = import_exchange([("t.ps1", source)], server="EXCH01.labs.local")
    assert message in warnings(result)
    org_of(result)  # the rest still loads


def test_refused_command_leaves_the_model_unchanged() -> None:
    source = ('Set-ReceiveConnector "Default Frontend EXCH01" -AuthMechanism None -RequireTLS $true\n'
              'Set-ReceiveConnector "Default Frontend EXCH01" -MaxMessageSize 20MB')
    result = import_exchange([("t.ps1", source)], server="EXCH01.labs.local")
    c = org_of(result).connector("Default Frontend EXCH01")
    assert c is not None and (c.require_tls, c.max_message_size) == (False, 20 << 20)
    assert [n.line for n in result.warnings] == [1]


def test_remove_adpermission_takes_a_right_from_a_group() -> None:
    """Spec §6 #10: anti-spoofing by removing Authoritative-Domain-Sender from ANONYMOUS LOGON."""
    source = ('Get-ReceiveConnector "Default Frontend EXCH01" | Remove-ADPermission -User "NT AUTHORITY\\ANONYMOUS '
              'LOGON" -ExtendedRights ms-Exch-SMTP-Accept-Authoritative-Domain-Sender')
    result = import_exchange([("t.ps1", source)], server="EXCH01.labs.local")
    assert warnings(result) == []
    org = org_of(result)
    e = explain(org, client_ip="203.0.113.5", mail_from="ceo@labs.local", rcpt_to=["cfo@labs.local"])
    assert e["permissions"] == "SMTPSubmit SMTPAcceptAnySender AcceptRoutingHeaders"
    assert e["replies"][-1]["reply"] == "550 5.7.1 Anonymous client does not have permissions to send as this sender"


# --- well-known principals: one spelling in the output (permissions.well_known) -----------

ADD_ANY_RECIPIENT = (
    "New-ReceiveConnector Relay -TransportRole FrontendTransport -Custom -Bindings 0.0.0.0:2600 "
    "-RemoteIPRanges 10.0.0.7 -PermissionGroups AnonymousUsers\n"
    'Get-ReceiveConnector Relay | Add-ADPermission -User "{user}" -ExtendedRights ms-Exch-SMTP-Accept-Any-Recipient'
)


@pytest.mark.parametrize(
    ("user", "written", "rcpt_reply"),
    [
        ("NT AUTHORITY\\ANONYMOUS LOGON", "NT AUTHORITY\\ANONYMOUS LOGON", "250 2.1.5 Recipient OK"),
        ("ANONYMOUS LOGON", "NT AUTHORITY\\ANONYMOUS LOGON", "250 2.1.5 Recipient OK"),
        ("anonymous logon", "NT AUTHORITY\\ANONYMOUS LOGON", "250 2.1.5 Recipient OK"),
        ("S-1-5-7", "NT AUTHORITY\\ANONYMOUS LOGON", "250 2.1.5 Recipient OK"),
        ("Authenticated Users", "NT AUTHORITY\\Authenticated Users", NOT_RELAYED[1][1]),
        ("Externally Secured Servers", "MS Exchange\\Externally Secured Servers", NOT_RELAYED[1][1]),
        ("Partner Servers", "MS Exchange\\Partner Servers", NOT_RELAYED[1][1]),
        ("LABS\\svc-relay", "LABS\\svc-relay", NOT_RELAYED[1][1]),
    ],
)
def test_add_adpermission_writes_well_known_principals_in_full(user: str, written: str, rcpt_reply: str) -> None:
    result = import_exchange([("t.ps1", ADD_ANY_RECIPIENT.format(user=user))], server="EXCH01.labs.local")
    assert warnings(result) == []
    relay = next(c for c in _state(result) if c["name"] == "Relay")
    assert [p["user"] for p in relay["permissions"]] == [written]
    org = org_of(result)
    assert answers(org, client_ip="10.0.0.7", port=2600, mail_from="a@b.example", rcpt_to=["x@y.example"])[1][2] == (
        "RCPT",
        rcpt_reply,
    )


@pytest.mark.parametrize("user", ["NT AUTHORITY\\ANONYMOUS LOGON", "ANONYMOUS LOGON", "S-1-5-7"])
def test_remove_adpermission_finds_the_group_principal_in_any_spelling(user: str) -> None:
    source = (f'Remove-ADPermission "Default Frontend EXCH01" -User "{user}" '
              "-ExtendedRights ms-Exch-SMTP-Accept-Authoritative-Domain-Sender")
    result = import_exchange([("t.ps1", source)], server="EXCH01.labs.local")
    assert warnings(result) == []
    e = explain(org_of(result), client_ip="203.0.113.5", mail_from="ceo@labs.local", rcpt_to=["cfo@labs.local"])
    assert e["permissions"] == "SMTPSubmit SMTPAcceptAnySender AcceptRoutingHeaders"
    assert [r["reply"] for r in e["replies"]][-1] == (
        "550 5.7.1 Anonymous client does not have permissions to send as this sender"
    )
