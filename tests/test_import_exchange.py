"""exmilter import-exchange: seeds, Microsoft's syntax forms, Format-List dumps, malformed input."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exmilter import limits
from exmilter.cli import main
from exmilter.commands import import_exchange as cmd
from exmilter.config import ConfigError, Problem, loads
from exmilter.explain import explain
from exmilter.importer import Level, Result, import_exchange
from exmilter.importer.parameters import RC_KEYS
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
    infos = [
        f"{n.line}: {n.text}"
        for n in run(["seed_000_anonymous.ps1"], "EXCH01.labs.local").notes
        if n.level is Level.INFO and "assumed" not in n.text
    ]
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
    (
        ["seed_000_anonymous.ps1", "domains_labs.ps1"],
        "EXCH01.labs.local",
        {"client_ip": "10.83.4.56", "mail_from": "noreply@exchangelabs.nl", "rcpt_to": ["jaapwess@gmail.com"]},
        "EXCH01\\SMTP Relay (EXCH01)",
        [("CONNECT", "220 Server EXCH01 SMTP Relay Connector"), *RELAYED],
    ),
    (
        ["seed_000_anonymous.ps1", "domains_labs.ps1"],
        "EXCH01.labs.local",
        {"client_ip": "10.83.4.254", "mail_from": "noreply@exchangelabs.nl", "rcpt_to": ["jaapwess@gmail.com"]},
        "EXCH01\\Default Frontend EXCH01",
        [("CONNECT", "220 exch01.labs.local Microsoft ESMTP MAIL Service ready"), *NOT_RELAYED],
    ),
    # seed 000, permission groups (ExternalAuthoritative + ExchangeServers)
    (
        ["seed_000_permission_groups.ps1", "domains_labs.ps1"],
        "EXCH01.labs.local",
        {"client_ip": "10.83.4.56", "mail_from": "noreply@exchangelabs.nl", "rcpt_to": ["jaapwess@gmail.com"]},
        "EXCH01\\SMTP Relay (EXCH01)",
        [("CONNECT", "220 exch01.labs.local Microsoft ESMTP MAIL Service ready"), *RELAYED],
    ),
    # seed 001: the relay connector (made in the EAC) answers with the banner the loop set
    (
        ["eac_001_anon_relay.ps1", "seed_001.ps1"],
        "EXSERVER.exchange2016demo.com",
        {"client_ip": "192.168.0.30", "mail_from": "test@test.com", "rcpt_to": ["exchangeserverpro@gmail.com"]},
        "EXSERVER\\Anon Relay EXSERVER",
        [("CONNECT", "220 EXSERVER\\Anon Relay EXSERVER"), *RELAYED],
    ),
    (
        ["eac_001_anon_relay.ps1", "seed_001.ps1"],
        "EXSERVER.exchange2016demo.com",
        {
            "client_ip": "192.168.0.31",
            "mail_from": "adam.wally@exchange2016demo.com",
            "rcpt_to": ["exchangeserverpro@gmail.com"],
        },
        "EXSERVER\\Default Frontend EXSERVER",
        [("CONNECT", "220 EXSERVER\\Default Frontend EXSERVER"), *NOT_RELAYED],
    ),
    # seed 002 (Microsoft's article), both methods applied in order: the hosts are externally secured
    (
        ["seed_002.ps1"],
        "EXCH01.contoso.com",
        {"client_ip": "192.168.5.11", "mail_from": "chris@contoso.com", "rcpt_to": ["kate@fabrikam.com"]},
        "EXCH01\\Anonymous Relay",
        [("CONNECT", "220 exch01.contoso.com Microsoft ESMTP MAIL Service ready"), *RELAYED],
    ),
    # seed 003: anonymous relay on 2526, only from 192.168.1.13; port 587 requires TLS
    (
        ["seed_003.ps1"],
        "CMHYBD01.cloudmonkeys.xyz",
        {
            "client_ip": "192.168.1.13",
            "port": 2526,
            "mail_from": "test@cloudmonkeys.xyz",
            "rcpt_to": ["user@cloudmonkeys.xyz"],
        },
        "CMHYBD01\\SMTP Relay Script",
        [("CONNECT", "220 cmhybd01.cloudmonkeys.xyz Microsoft ESMTP MAIL Service ready"), *RELAYED],
    ),
    (
        ["seed_003.ps1"],
        "CMHYBD01.cloudmonkeys.xyz",
        {"client_ip": "192.168.1.14", "port": 2526, "mail_from": "test@cloudmonkeys.xyz"},
        None,
        [("CONNECT", "421 4.3.2 Service not available")],
    ),
    (
        ["seed_003.ps1"],
        "CMHYBD01.cloudmonkeys.xyz",
        {"client_ip": "192.168.1.13", "port": 587, "mail_from": "smb1@cloudmonkeys.xyz"},
        "CMHYBD01\\SMTP Auth Relay Script",
        [
            ("CONNECT", "220 cmhybd01.cloudmonkeys.xyz Microsoft ESMTP MAIL Service ready"),
            ("MAIL", "451 4.7.3 STARTTLS is required to send mail"),
        ],
    ),
    # seed 004: the connector's creation was refused (values missing), so Default Frontend answers
    (
        ["seed_004.ps1"],
        "EXCH01.labs.local",
        {"client_ip": "10.0.0.9", "mail_from": "a@labs.local", "rcpt_to": ["x@gmail.com"]},
        "EXCH01\\Default Frontend EXCH01",
        [("CONNECT", "220 exch01.labs.local Microsoft ESMTP MAIL Service ready"), *NOT_RELAYED],
    ),
]


@pytest.mark.parametrize(("files", "server", "session", "connector", "replies"), SEED_BEHAVIOUR)
def test_seed_behaviour(
    files: list[str], server: str, session: dict[str, Any], connector: str | None, replies: list[tuple[str, str]]
) -> None:
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
        "192.168.5.0/24",
        "192.168.6.0(255.255.255.0)",
        "2001:db8::/32",
        "fe80::39bd:88f7:6969:d223%11",
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
    (
        'New-ReceiveConnector -Name:"A" -Custom -Bindings:0.0.0.0:2600 -RemoteIPRanges:10.0.0.1',
        "A",
        "remote_ip_ranges",
        ["10.0.0.1"],
    ),
    (
        "New-ReceiveConnector 'It''s' -Custom -Bindings 0.0.0.0:2600 -RemoteIPRanges 10.0.0.1",
        "It's",
        "bindings",
        ["0.0.0.0:2600"],
    ),
    (
        'New-ReceiveConnector "B" -Custom -Bindings 0.0.0.0:2600 -RemoteIPRanges 10.0.0.1 -Banner "220 a`tb"',
        "B",
        "banner",
        "220 a\tb",
    ),
    (
        '$n = "C"\nNew-ReceiveConnector $n -Custom -Bindings 0.0.0.0:2600 -RemoteIPRanges @("10.0.0.1", "10.0.0.2")',
        "C",
        "remote_ip_ranges",
        ["10.0.0.1", "10.0.0.2"],
    ),
    (
        "New-ReceiveConnector D -Custom -Bindings 0.0.0.0:2600 `\n  -RemoteIPRanges 10.0.0.0/8 # comment\n<# block\n#>",
        "D",
        "remote_ip_ranges",
        ["10.0.0.0/8"],
    ),
    (
        "New-ReceiveConnector \u201cE\u201d \u2013Custom -Bindings 0.0.0.0:2600 -RemoteIPRanges 10.0.0.1 "
        "-Enabled:$false",
        "E",
        "enabled",
        False,
    ),
    (
        "New-ReceiveConnector F -Custom -Bindings 0.0.0.0:2600 -RemoteIPRanges 10.0.0.1 -AuthMech 'Tls, BasicAuth'",
        "F",
        "auth_mechanism",
        ["Tls", "BasicAuth"],
    ),
    (
        "New-ReceiveConnector G -Custom -Bindings 0.0.0.0:2600 -RemoteIPRanges 10.0.0.1 -Server $env:COMPUTERNAME",
        "G",
        "usage",
        "Custom",
    ),
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
    assert warnings(result) == [
        "dump.txt:6: SomethingNew is not a receive connector property exmilter knows: not imported"
    ]
    org = org_of(result)
    frontend = org.connector("Default Frontend EXCH01")
    assert frontend is not None and frontend.max_message_size == 10 << 20
    assert answers(org, client_ip="10.9.1.1", mail_from="a@b.example", rcpt_to=["c@shared.example", "d@e.example"])[1][
        2:4
    ] == [("RCPT", "250 2.1.5 Recipient OK"), ("RCPT", "250 2.1.5 Recipient OK")]


# --- malformed input and Exchange's refusals ---------------------------------------------

BAD = [
    ('New-ReceiveConnector "A -Custom', 't.ps1:1: unterminated "-quoted string: the command is not imported'),
    (
        "New-ReceiveConnector A -Custom -Bindings 0.0.0.0:2600 -RemoteIPRanges 10.0.0.1 -Colour red",
        "t.ps1:1: -Colour is not a parameter exmilter understands here: not imported",
    ),
    (
        "New-ReceiveConnector A -Custom -Bindings 0.0.0.0:2600 -RemoteIPRanges 10.0.0.9-10.0.0.1",
        "t.ps1:1: New-ReceiveConnector: -RemoteIPRanges 10.0.0.9-10.0.0.1: '10.0.0.9-10.0.0.1': the first address is "
        "greater than the last; not imported",
    ),
    (
        'Get-ReceiveConnector "Nope" | Add-ADPermission -User "NT AUTHORITY\\ANONYMOUS LOGON" -ExtendedRights '
        "ms-Exch-SMTP-Accept-Any-Recipient",
        "t.ps1:1: no receive connector 'Nope' on EXCH01: it is not created in the input (made in the admin center?) "
        "or its creation was refused above",
    ),
    (
        'Add-ADPermission -Identity "Nope" -User "NT AUTHORITY\\ANONYMOUS LOGON" -ExtendedRights '
        "ms-Exch-SMTP-Accept-Any-Recipient",
        "t.ps1:1: Add-ADPermission: permission for unknown receive connector 'Nope' on EXCH01; not imported",
    ),
    (
        'Add-ADPermission "Default Frontend EXCH01" -User x -ExtendedRights ms-Exch-Teleport',
        "t.ps1:1: Add-ADPermission: -ExtendedRights: 'ms-Exch-Teleport' is not a receive-connector extended right; "
        "not imported",
    ),
    (
        "New-ReceiveConnector A -Custom -Bindings 0.0.0.0:25 -RemoteIPRanges 10.0.0.1",  # spec §6 #8: lands in Hub
        "t.ps1:1: New-ReceiveConnector: Exchange refuses this: Default Frontend EXCH01: TransportRole: binding "
        "0.0.0.0:25 is also used by 'A' in another transport role. Receive connectors assigned to different "
        "Transport roles on a single server must listen on unique local IP address & port bindings; not imported",
    ),
    (
        "New-ReceiveConnector A -TransportRole FrontendTransport -Custom -Bindings 0.0.0.0:25 -RemoteIPRanges "
        "10.0.0.0-10.0.0.200\nNew-ReceiveConnector B -TransportRole FrontendTransport -Custom -Bindings 0.0.0.0:25 "
        "-RemoteIPRanges 10.0.0.100-10.0.0.255",
        "t.ps1:2: New-ReceiveConnector: Exchange refuses this: B: RemoteIPRanges: partially overlapping range "
        "10.0.0.100-10.0.0.255 conflicts with 10.0.0.0-10.0.0.200 of connector 'A' on binding 0.0.0.0:25; not imported",
    ),
    (
        'Set-ReceiveConnector "Client Frontend EXCH01" -AuthMechanism BasicAuthRequireTLS',
        "t.ps1:1: Set-ReceiveConnector: Exchange refuses this: Client Frontend EXCH01: AuthMechanism: "
        "BasicAuthRequireTLS needs BasicAuth and Tls; not imported",
    ),
    (
        'Set-ReceiveConnector "Default Frontend EXCH01" -PermissionGroups Custom',
        "t.ps1:1: Set-ReceiveConnector: -PermissionGroups Custom cannot be set: Exchange shows it once an entry is "
        "added; not imported",
    ),
    (
        "Set-TransportConfig -MaxSendSize 10MB",
        "t.ps1:1: Set-TransportConfig is not imported: exmilter models receive connectors, their permissions, "
        "accepted domains and send connectors only",
    ),
    (
        "Get-ReceiveConnector | where {$_.Name -like 'Default*'} | Set-ReceiveConnector -MaxMessageSize 10MB",
        "t.ps1:1: a Where-Object filter cannot be evaluated offline: the rest of this pipeline is not imported; name "
        "the objects instead",
    ),
    # PowerShell knows no set_receiveconnector: the command fails on Exchange, so it is not imported
    (
        'set_receiveconnector "Default Frontend EXCH01" -MaxMessageSize 1MB',
        "t.ps1:1: set_receiveconnector is not imported: exmilter models receive connectors, their permissions, "
        "accepted domains and send connectors only",
    ),
]


@pytest.mark.parametrize(("source", "message"), BAD)
def test_malformed_input_is_located(source: str, message: str) -> None:
    result = import_exchange([("t.ps1", source)], server="EXCH01.labs.local")
    assert message in warnings(result)
    org_of(result)  # the rest still loads


def test_refused_command_leaves_the_model_unchanged() -> None:
    source = (
        'Set-ReceiveConnector "Default Frontend EXCH01" -AuthMechanism None -RequireTLS $true\n'
        'Set-ReceiveConnector "Default Frontend EXCH01" -MaxMessageSize 20MB'
    )
    result = import_exchange([("t.ps1", source)], server="EXCH01.labs.local")
    c = org_of(result).connector("Default Frontend EXCH01")
    assert c is not None and (c.require_tls, c.max_message_size) == (False, 20 << 20)
    assert [n.line for n in result.warnings] == [1]


def test_remove_adpermission_takes_a_right_from_a_group() -> None:
    """Spec §6 #10: anti-spoofing by removing Authoritative-Domain-Sender from ANONYMOUS LOGON."""
    source = (
        'Get-ReceiveConnector "Default Frontend EXCH01" | Remove-ADPermission -User "NT AUTHORITY\\ANONYMOUS '
        'LOGON" -ExtendedRights ms-Exch-SMTP-Accept-Authoritative-Domain-Sender'
    )
    result = import_exchange([("t.ps1", source)], server="EXCH01.labs.local")
    assert warnings(result) == []
    org = org_of(result)
    e = explain(org, client_ip="203.0.113.5", mail_from="ceo@labs.local", rcpt_to=["cfo@labs.local"])
    assert e["permissions"] == "SMTPSubmit SMTPAcceptAnySender AcceptRoutingHeaders"
    assert e["replies"][-1]["reply"] == "550 5.7.1 Anonymous client does not have permissions to send as this sender"


# --- what a Get- cmdlet selects must be one name known offline ---------------------------

SET_ALL_CONNECTORS = " | Set-ReceiveConnector -MaxMessageSize 1MB"
SET_ALL_DOMAINS = " | Set-AcceptedDomain -DomainType InternalRelay"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        # an extra positional argument: Exchange fails the cmdlet (it was a traceback)
        (
            "Get-ReceiveConnector a b" + SET_ALL_CONNECTORS,
            "Get-ReceiveConnector: unexpected positional argument 'b': nothing selected",
        ),
        ("$c = Get-ReceiveConnector a b", "Get-ReceiveConnector: unexpected positional argument 'b': nothing selected"),
        (
            "Get-ReceiveConnector -Identity" + SET_ALL_CONNECTORS,
            "Get-ReceiveConnector -Identity: no value given: nothing selected",
        ),
        (
            "Get-ReceiveConnector -Server" + SET_ALL_CONNECTORS,
            "Get-ReceiveConnector -Server: no value given: nothing selected",
        ),
        (
            "Get-ReceiveConnector $nope" + SET_ALL_CONNECTORS,
            "Get-ReceiveConnector -Identity: $nope is not set by the input: nothing selected",
        ),
        (
            "Get-ReceiveConnector -Server $nope" + SET_ALL_CONNECTORS,
            "Get-ReceiveConnector -Server: $nope is not set by the input: nothing selected",
        ),
        (
            "Get-ReceiveConnector $null" + SET_ALL_CONNECTORS,
            "Get-ReceiveConnector -Identity: $null is not a name: nothing selected",
        ),
        # these changed every accepted domain
        (
            "Get-AcceptedDomain -Identity" + SET_ALL_DOMAINS,
            "Get-AcceptedDomain -Identity: no value given: nothing selected",
        ),
        (
            "Get-AcceptedDomain $nope" + SET_ALL_DOMAINS,
            "Get-AcceptedDomain -Identity: $nope is not set by the input: nothing selected",
        ),
        (
            "Get-AcceptedDomain $null" + SET_ALL_DOMAINS,
            "Get-AcceptedDomain -Identity: $null is not a name: nothing selected",
        ),
        (
            "Get-AcceptedDomain a b" + SET_ALL_DOMAINS,
            "Get-AcceptedDomain: unexpected positional argument 'b': nothing selected",
        ),
    ],
)
def test_a_selection_not_known_offline_selects_nothing(source: str, message: str) -> None:
    result = import_exchange([("t.ps1", source)], server="EXCH01.labs.local")
    assert warnings(result) == [f"t.ps1:1: {message}"]
    org = org_of(result)
    assert {d.domain_type.value for d in org.accepted_domains} == {"Authoritative"}
    assert {c.max_message_size for c in org.receive_connectors} == {36 << 20}


# --- a switch or a right that is not known offline refuses the command ----------------------

ADD_TO_DF = (
    'Get-ReceiveConnector "Default Frontend EXCH01" | Add-ADPermission -User "NT AUTHORITY\\ANONYMOUS LOGON" '
    "-ExtendedRights"
)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        # was an allow entry: anonymous relay on Default Frontend
        (
            ADD_TO_DF + " ms-Exch-SMTP-Accept-Any-Recipient -Deny:$nope",
            "Add-ADPermission: -Deny: $nope is not set by the input; not imported",
        ),
        (
            ADD_TO_DF + " ms-Exch-SMTP-Accept-Any-Recipient -Deny:maybe",
            "Add-ADPermission: -Deny maybe: not $true or $false; not imported",
        ),
        (ADD_TO_DF, "Add-ADPermission: -ExtendedRights needs a value; not imported"),
        (
            ADD_TO_DF + " ms-Exch-SMTP-Submit -AccessRights",
            "Add-ADPermission: -AccessRights needs a value; not imported",
        ),
        (
            "New-ReceiveConnector R -Internet:$nope -Bindings 0.0.0.0:2525",
            "New-ReceiveConnector: -Internet: $nope is not set by the input; not imported",
        ),
        (
            "New-AcceptedDomain -Name a -DomainName a.example -MatchSubDomains:$nope",
            "New-AcceptedDomain: -MatchSubDomains: $nope is not set by the input; not imported",
        ),
    ],
)
def test_an_argument_not_known_offline_refuses_the_command(source: str, message: str) -> None:
    result = import_exchange([("t.ps1", source)], server="EXCH01.labs.local")
    assert warnings(result) == [f"t.ps1:1: {message}"]
    org = org_of(result)
    df = org.connector("Default Frontend EXCH01")
    assert df is not None and df.permissions == ()
    assert org.connector("R") is None and [d.domain_name for d in org.accepted_domains] == ["labs.local"]


@pytest.mark.parametrize(
    ("switch", "deny"),
    [
        ("-Deny", True),
        ("-Deny:$true", True),
        ("-Deny:True", True),
        ("-Deny:1", True),
        ("-Deny:$false", False),
        ("", False),
    ],
)
def test_deny_in_every_spelling_powershell_takes(switch: str, deny: bool) -> None:
    result = import_exchange([("t.ps1", f"{ADD_TO_DF} ms-Exch-SMTP-Submit {switch}")], server="EXCH01.labs.local")
    assert warnings(result) == []
    df = org_of(result).connector("Default Frontend EXCH01")
    assert df is not None and [e.deny for e in df.permissions] == [deny]


def test_an_access_right_not_known_offline_is_reported_and_the_extended_rights_kept() -> None:
    result = import_exchange(
        [("t.ps1", f"{ADD_TO_DF} ms-Exch-SMTP-Submit -AccessRights $nope")], server="EXCH01.labs.local"
    )
    assert warnings(result) == [
        "t.ps1:1: -AccessRights: $nope is not set by the input; only extended rights matter "
        "to receive connectors; not imported"
    ]
    df = org_of(result).connector("Default Frontend EXCH01")
    assert df is not None and [e.rights.tokens() for e in df.permissions] == ["SMTPSubmit"]


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
    source = (
        f'Remove-ADPermission "Default Frontend EXCH01" -User "{user}" '
        "-ExtendedRights ms-Exch-SMTP-Accept-Authoritative-Domain-Sender"
    )
    result = import_exchange([("t.ps1", source)], server="EXCH01.labs.local")
    assert warnings(result) == []
    e = explain(org_of(result), client_ip="203.0.113.5", mail_from="ceo@labs.local", rcpt_to=["cfo@labs.local"])
    assert e["permissions"] == "SMTPSubmit SMTPAcceptAnySender AcceptRoutingHeaders"
    assert [r["reply"] for r in e["replies"]][-1] == (
        "550 5.7.1 Anonymous client does not have permissions to send as this sender"
    )


# --- issue #10: hangs, crashes, control characters, limits, exit codes ---------------------


@contextlib.contextmanager
def within(seconds: float) -> Iterator[None]:
    """Fail (instead of hanging the suite) when the block runs longer: the parent commit looped forever."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


BOM = "\ufeff"
DUMP_A = (
    "Identity         : EXCH01\\Relay A\nTransportRole    : FrontendTransport\n"
    "Bindings         : {0.0.0.0:2600}\nRemoteIPRanges   : {10.0.0.1}\nPermissionGroups : AnonymousUsers"
)
DUMP_B = DUMP_A.replace("Relay A", "Relay B").replace("10.0.0.1", "10.0.0.2")


def notes_of(result: Result) -> list[str]:
    return [f"{n.line}: {n.level.value}: {n.text}" for n in result.notes if "assumed" not in n.text]


@pytest.mark.parametrize("newline", ["\n", "\r\n", ""])  # "": a.txt without a final newline
def test_two_bom_prefixed_dumps_joined_with_cat_are_two_files(newline: str) -> None:
    """`cat a.txt b.txt`: the second BOM starts a line; the parent commit looped forever (5.4 GB after 120 s)."""
    with within(5):
        result = import_exchange([("ab.txt", BOM + DUMP_A + newline + BOM + DUMP_B + "\n")], "EXCH01.labs.local")
    assert [c.name for c in org_of(result).receive_connectors][-2:] == ["Relay A", "Relay B"]
    at = (
        "6: info: byte order mark (U+FEFF) at column 1" if newline else "5: info: byte order mark (U+FEFF) at column 34"
    )
    assert (
        f"{at}: another file starts here (files joined with cat), so nothing open before it continues into it"
        in notes_of(result)
    )
    assert warnings(result) == []


def test_nothing_open_at_the_end_of_one_file_continues_into_the_next() -> None:
    """An unterminated comment or command of a.ps1 does not swallow b.ps1 (they were two files)."""
    a = BOM + 'Set-ReceiveConnector "Default Frontend EXCH01" -Banner "220 unterminated\n<# a comment never closed\n'
    b = (
        BOM + "New-ReceiveConnector B -TransportRole FrontendTransport -Custom -Bindings 0.0.0.0:2600 "
        "-RemoteIPRanges 10.0.0.9 -PermissionGroups AnonymousUsers\n"
    )
    result = import_exchange([("ab.ps1", a + b)], "EXCH01.labs.local")
    assert org_of(result).connector("B") is not None
    assert warnings(result) == [
        'ab.ps1:1: unterminated "-quoted string: the command is not imported',
        "ab.ps1:2: <# comment not closed by #> before the end of the file: everything after it is a comment, not "
        "imported",
    ]


SET_DF = 'Set-ReceiveConnector "Default Frontend EXCH01" '
#: (line, what the import says, whether the command is imported): docs/import-exchange.md, "Control characters".
CONTROLS = [
    (
        SET_DF + '-Banner "220 a\x7fb"',
        "1: warning: U+007F (DEL) at column 62: a control character in a string, "
        "which is not imported (delete the character)",
        False,
    ),
    (
        SET_DF + '-Banner "220 a`\x00b"',
        "1: warning: U+0000 (NUL) at column 63: a control character in a string, "
        "which is not imported (delete the character)",
        False,
    ),
    (
        SET_DF + "-Banner '220 \u2028x'",
        "1: warning: U+2028 (LINE SEPARATOR) at column 61: a control character in a "
        "string, which is not imported (delete the character)",
        False,
    ),
    (
        SET_DF + '-Banner "220 \x0cx"',
        "1: warning: U+000C (FF) at column 61: a control character in a string, which "
        "is not imported (delete the character)",
        False,
    ),
    (
        SET_DF + "-MaxMessageSize 10MB\x1b[31m",
        "1: warning: U+001B (ESC) at column 68: a control character in a "
        "command, which is not imported (delete the character)",
        False,
    ),
    (
        "[PS] C:\\>" + SET_DF + "-MaxMessageSize\x8510MB",
        "1: warning: U+0085 (NEL) at column 72: a control character "
        "in a command, which is not imported (delete the character)",
        False,
    ),
    (SET_DF.replace(" ", "\x0b", 1) + "-MaxMessageSize\x0c10MB", None, True),  # VT, FF: whitespace, as in PowerShell
    (
        SET_DF + '-MaxMessageSize 10MB -Banner "220 a\u200bb\u202e"',
        "1: info: invisible formatting character removed: "
        "U+200B (ZERO WIDTH SPACE) at column 83, U+202E (RIGHT-TO-LEFT OVERRIDE) at column 85",
        True,
    ),
    (
        SET_DF + "-MaxMessageSize 10MB\ufeff",
        "1: info: byte order mark (U+FEFF) at column 68: another file starts "
        "here (files joined with cat), so nothing open before it continues into it",
        True,
    ),
    (SET_DF + "-MaxMessageSize 10MB # a comment may hold \x07 anything", None, True),
]


@pytest.mark.parametrize(("line", "note", "imported"), CONTROLS)
def test_control_characters_never_reach_the_yaml(line: str, note: str | None, imported: bool) -> None:
    """The parent commit copied them into the YAML, which then did not load."""
    result = import_exchange(
        [("t.ps1", line + "\nSet-ReceiveConnector 'Client Frontend EXCH01' -MaxMessageSize 20MB")], "EXCH01.labs.local"
    )
    assert notes_of(result) == ([note] if note else [])
    org = org_of(result)
    df, cf = org.connector("Default Frontend EXCH01"), org.connector("Client Frontend EXCH01")
    assert df is not None and cf is not None
    assert (df.max_message_size == 10 << 20) == imported
    assert df.banner == ("220 ab" if imported and "Banner" in line else None)
    assert cf.max_message_size == 20 << 20  # the next line is not affected


def test_a_control_character_refuses_the_whole_format_list_object() -> None:
    """Without its RemoteIPRanges line, a dumped connector would take every address: nothing of it is imported."""
    source = DUMP_A.replace("{10.0.0.1}", "{10.0.0.1\x00}") + "\n\n" + DUMP_B
    result = import_exchange([("fl.txt", source)], "EXCH01.labs.local")
    assert warnings(result) == [
        "fl.txt:4: U+0000 (NUL) at column 29: a control character in a Format-List object, which is not imported"
    ]
    assert [c.name for c in org_of(result).receive_connectors][-1] == "Relay B"


def test_line_numbers_count_only_cr_and_lf() -> None:
    """Form feeds, NEL and U+2028 do not end lines for editors: FILE:LINE must not drift after them."""
    source = (
        SET_DF.replace(" ", "\x0c", 1) + "-MaxMessageSize 10MB\r\n# \x85 \u2028 \x1c\rSet-TransportConfig x\nFoo-Bar"
    )
    assert [n.split(" is ")[0] for n in notes_of(import_exchange([("t.ps1", source)], "EXCH01.labs.local"))] == [
        "3: warning: Set-TransportConfig",
        "4: warning: Foo-Bar",
    ]


def test_messages_quoting_the_input_stay_one_line() -> None:
    """A string with a `n escape is quoted in a note and in the header comment: one line, YAML intact."""
    result = import_exchange([("t.ps1", '"abc`ndef`rghi"')], "EXCH01.labs.local")
    assert warnings(result) == ["t.ps1:1: 'abc\\x0adef\\x0dghi' is not a command: not imported"]
    assert "#   t.ps1:1: warning: 'abc\\x0adef\\x0dghi' is not a command: not imported\n" in result.yaml
    org_of(result)


TOO_DEEP = "t.ps1:2: more than 32 brackets open at once: the command is not imported"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # the pasted 387-byte line (with its newline): a RecursionError in the parent commit
        ("{" * 386, [TOO_DEEP + " (never closed: the rest of the file with it)"]),
        ("@(" * 193, [TOO_DEEP + " (never closed: the rest of the file with it)"]),
        ("Set-ReceiveConnector x -Banner " + "(" * 40 + "1" + ")" * 40, [TOO_DEEP]),
        ("Get-ReceiveConnector | % { " * 40 + "Set-ReceiveConnector $_ -MaxMessageSize 1MB" + " }" * 40, [TOO_DEEP]),
        # glued tokens: a recursion per token in the parent commit
        ("$a" * 20000, ["t.ps1:2: " + ("'" + "$a" * 20000)[:1000] + " …"]),  # a note quotes 1,000 characters
    ],
)
def test_deep_or_long_pasted_lines_are_located_not_crashes(line: str, expected: list[str]) -> None:
    """Brackets nest at most 32 deep; a line left open swallows the rest of its file, as in PowerShell."""
    with within(10):
        result = import_exchange([("t.ps1", "Get-Date\n" + line + "\nFoo-Bar")], "EXCH01.labs.local")
    closed = "never closed" not in expected[0]
    foo = [
        "t.ps1:3: Foo-Bar is not imported: exmilter models receive connectors, their permissions, accepted "
        "domains and send connectors only"
    ]
    assert warnings(result) == expected + (foo if closed else [])
    org_of(result)


@pytest.mark.parametrize(
    "line",
    [
        "C:\\" * 20000,
        "-- " * 20000,
        "[PS] C:\\>" * 6000,
        "'$a" * 20000,
        '"$a' * 20000,
        "`;" * 30000,
        "x " + "Ab " * 20000 + "-" * 3 * 20000,
        "Name : " + "x," * 30000,
    ],
)
def test_pathological_long_lines_finish(line: str) -> None:
    """Scans of the rest of a line per token or prompt made these quadratic; each is read in one pass."""
    with within(10):
        result = import_exchange([("t.ps1", line + "\nFoo-Bar")], "EXCH01.labs.local")
    assert warnings(result)[-1].startswith("t.ps1:2: Foo-Bar is not imported")


def test_a_line_over_the_limit_is_not_read() -> None:
    long = SET_DF + "-RemoteIPRanges " + ",".join(["10.0.0.1"] * 8000)
    result = import_exchange([("t.ps1", long + "\nFoo-Bar")], "EXCH01.labs.local")
    assert warnings(result) == [
        f"t.ps1:1: line of {len(long):,} characters, longer than the 65,536 read: its command or Format-List object "
        "is not imported",
        "t.ps1:2: Foo-Bar is not imported: exmilter models receive connectors, their permissions, accepted "
        "domains and send connectors only",
    ]


def test_expansion_bombs_are_bounded_and_refuse_what_uses_them() -> None:
    """`$a = $a,$a` and `"$s$s"` double per line: the parent commit ran out of memory."""
    source = (
        '$a = "10.0.0.1","10.0.0.2"\n'
        + "$a = $a,$a\n" * 64
        + '$s = "x"\n'
        + '$s = "$s$s"\n' * 64
        + SET_DF
        + "-RemoteIPRanges $a\n"
        + SET_DF
        + '-Banner "220 $s"'
    )
    with within(5):
        result = import_exchange([("t.ps1", source)], "EXCH01.labs.local")
    assert warnings(result) == [
        "t.ps1:13: $a: more than 5,000 items once variables are expanded (the importer's limit): it holds no value "
        "from here on",
        "t.ps1:83: $s: text of more than 100,000 characters once variables are expanded (the importer's limit): it "
        "holds no value from here on",
        "t.ps1:131: Set-ReceiveConnector: -RemoteIPRanges: $a holds more than 5,000 items once variables are "
        "expanded (the importer's limit), and without it the connector would keep every address; not imported",
        "t.ps1:132: -Banner: $s holds text of more than 100,000 characters once variables are expanded (the "
        "importer's limit); this parameter is not imported",
    ]


@pytest.mark.parametrize(
    ("parameter", "kept"),
    [
        ("RemoteIPRanges", "every address"),
        ("Bindings", "its default"),
        ("PermissionGroups", "its default"),
        ("AuthMechanism", "its default"),
    ],
)
def test_an_unknown_value_of_a_deciding_property_refuses_the_command(parameter: str, kept: str) -> None:
    """Leaving it out would open the connector (RemoteIPRanges default: every address); the parent imported it."""
    source = (
        "New-ReceiveConnector R -TransportRole FrontendTransport -Custom -Bindings 0.0.0.0:2600 -RemoteIPRanges "
        f"10.0.0.9 -PermissionGroups AnonymousUsers -{parameter} $computed"
    )
    result = import_exchange([("t.ps1", source)], "EXCH01.labs.local")
    assert warnings(result) == [
        f"t.ps1:1: New-ReceiveConnector: -{parameter}: $computed is not set by the input, "
        f"and without it the connector would keep {kept}; not imported"
    ]
    assert org_of(result).connector("R") is None


def test_more_range_entries_than_exchange_takes_are_refused() -> None:
    """Spec §6 #13: Exchange fails at about 1,200; the importer keeps at most 1,300 per property."""
    ranges = [f"10.{i // 250}.{i % 250}.1" for i in range(1301)]
    result = import_exchange([("t.ps1", SET_DF + "-RemoteIPRanges " + ",".join(ranges))], "EXCH01.labs.local")
    assert warnings(result) == [
        "t.ps1:1: Set-ReceiveConnector: -RemoteIPRanges: 1,301 entries; Exchange fails above "
        "about 1,200 (the importer takes at most 1,300): use ranges or CIDR; not imported"
    ]


@pytest.mark.parametrize(("count", "message"), [(1301, "1,301 entries"), (400_000, "more than 5,200 entries")])
def test_a_dump_with_more_range_entries_than_exchange_takes_is_refused(count: int, message: str) -> None:
    """Wrapped over continuation lines a dump's list has no line limit: counted before it is split."""
    ranges = ",".join(["10.0.0.1"] * count)
    wrapped = "\n    ".join(ranges[i : i + 60000] for i in range(0, len(ranges), 60000))
    dump = DUMP_A.replace("{10.0.0.1}", "{" + wrapped + "}")
    with within(10):
        result = import_exchange([("fl.txt", dump)], "EXCH01.labs.local")
    assert warnings(result) == [
        f"fl.txt:1: receive connector EXCH01\\Relay A: line 4: -RemoteIPRanges: {message}; "
        "Exchange fails above about 1,200 (the importer takes at most 1,300): use ranges or "
        "CIDR; not imported"
    ]


def test_commands_past_the_limit_stop_the_import(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Nested ForEach multiplies commands (5 connectors, 3 levels: 155 runs): the import stops, nothing written."""
    monkeypatch.setattr("exmilter.limits.IMPORT_MAX_COMMANDS", 100)
    source = "Get-Date\n" + "Get-ReceiveConnector | % { " * 3 + SET_DF + "-MaxMessageSize 1MB" + " }" * 3 + "\n"
    (tmp_path / "t.ps1").write_text(source)
    out = tmp_path / "out.yaml"
    assert cmd.run(_args([str(tmp_path / "t.ps1")], str(out), "EXCH01.labs.local", strict=False)) == 2
    err = capsys.readouterr().err.splitlines()
    assert (
        f"{tmp_path / 't.ps1'}:2: warning: more than 100 commands run (a script block counts once per object "
        "piped into it): the input is too large to import in one run" in err
    )
    assert err[-1] == f"import-exchange: stopped at {tmp_path / 't.ps1'}:2 by a limit: nothing written"
    assert not out.exists()


@pytest.mark.parametrize(
    ("module", "limit", "value", "message"),
    [
        ("exmilter.limits", "IMPORT_MAX_TOKENS", 12, "t.ps1:3: warning: more than 12 PowerShell tokens in all"),
        (
            "exmilter.limits",
            "IMPORT_MAX_INPUT_CHARS",
            100,
            "t.ps1:2: warning: more than 100 characters of input in all",
        ),
        ("exmilter.limits", "IMPORT_MAX_LINES", 2, "t.ps1:3: warning: more than 2 lines of input in all"),
        (
            "exmilter.limits",
            "IMPORT_MAX_COMMANDS",
            2,
            "t.ps1:3: warning: more than 2 statements and Format-List objects: the input is too large",
        ),
        (
            "exmilter.limits",
            "IMPORT_MAX_CHECKED_CHARS",
            300,
            "t.ps1:2: warning: checking the commands up to here took more than 300 characters of configuration",
        ),
        ("exmilter.limits", "IMPORT_MAX_CHECKS", 2, "t.ps1:3: warning: more than 2 commands that change the model"),
    ],
)
def test_whole_input_limits_stop_at_their_line(
    monkeypatch: pytest.MonkeyPatch, module: str, limit: str, value: int, message: str
) -> None:
    """Each whole-input limit, lowered so it is reached on a small runbook: located, nothing to write."""
    monkeypatch.setattr(f"{module}.{limit}", value)
    source = (SET_DF + "-MaxMessageSize 10MB\n") * 3
    result = import_exchange([("t.ps1", source)], "EXCH01.labs.local")
    assert result.stopped is not None and str(result.stopped).startswith(message)
    assert result.yaml == ""


def test_an_internal_error_is_one_located_warning_and_hides_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The last-resort guard: a bug in one handler refuses that command only, as a warning (so --strict fails).

    The fuzz suite (tests/test_import_fuzz.py) fails on any "internal error" message, so the
    guard cannot hide a bug the mutations reach.
    """
    from exmilter.importer.cmdlets import HANDLERS
    from exmilter.importer.cmdlets.command import Command

    def broken(command: Command, *args: Any) -> None:
        command.state.connectors.clear()  # damage first: the model must be restored
        raise KeyError("boom")

    monkeypatch.setitem(HANDLERS, "remove-receiveconnector", broken)
    source = "Remove-ReceiveConnector 'Client Frontend EXCH01'\n" + SET_DF + "-MaxMessageSize 10MB\n"
    result = import_exchange([("t.ps1", source)], "EXCH01.labs.local")
    assert warnings(result) == [
        "t.ps1:1: Remove-ReceiveConnector: internal error (KeyError: 'boom'); not imported, please report it"
    ]
    org = org_of(result)
    assert org.connector("Client Frontend EXCH01") is not None
    df = org.connector("Default Frontend EXCH01")
    assert df is not None and df.max_message_size == 10 << 20
    (tmp_path / "t.ps1").write_text(source)
    assert cmd.run(_args([str(tmp_path / "t.ps1")], None, "EXCH01.labs.local", strict=True)) == 2


# --- exit statuses (docs/import-exchange.md) ---------------------------------------------


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, list[str]]:
    try:
        rc = main(["import-exchange", *argv])
    except SystemExit as e:  # argparse
        rc = int(e.code or 0)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err.splitlines()


def test_exit_statuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.ps1"
    good.write_text(SET_DF + "-MaxMessageSize 10MB\n")
    warned = tmp_path / "warned.ps1"
    warned.write_text("Set-SendConnector x\n")
    latin1 = tmp_path / "latin1.ps1"
    latin1.write_bytes(b"Get-Date\n" + SET_DF.encode() + b'-Banner "220 caf\xe9"\n')
    utf16 = tmp_path / "utf16.ps1"
    utf16.write_bytes((SET_DF + "-MaxMessageSize 10MB\r\n").encode("utf-16"))  # Windows PowerShell's `>`
    out = tmp_path / "out.yaml"
    server = ["--server", "EXCH01.labs.local"]
    assert _cli([str(good), *server], capsys)[0] == 0
    assert _cli([str(utf16), *server], capsys)[0] == 0
    assert _cli([str(warned), *server, "-o", str(out)], capsys)[0] == 0 and out.exists()
    out.unlink()
    rc, stdout, err = _cli([str(warned), *server, "--strict", "-o", str(out)], capsys)
    assert (rc, stdout, err[-1], out.exists()) == (
        2,
        "",
        "import-exchange: 1 problem(s) and --strict: nothing written",
        False,
    )
    rc, stdout, err = _cli([str(tmp_path / "missing.ps1"), *server], capsys)
    assert (rc, stdout, err) == (
        2,
        "",
        [
            f"{tmp_path / 'missing.ps1'}:1: error: cannot read it: No such file or directory",
            "import-exchange: an input could not be read: nothing written",
        ],
    )
    rc, stdout, err = _cli([str(latin1), *server], capsys)
    assert (rc, err[0]) == (2, f"{latin1}:2: error: not UTF-8 text (bytes E9): save it as UTF-8 or UTF-16")
    rc, stdout, err = _cli([str(good), *server, "-o", str(tmp_path / "no" / "such" / "dir.yaml")], capsys)
    assert (rc, err[-2:]) == (
        2,
        [
            f"{tmp_path / 'no' / 'such' / 'dir.yaml'}: cannot write it: No such file or directory",
            "import-exchange: nothing written",
        ],
    )
    big = tmp_path / "big.ps1"
    with big.open("wb") as f:
        f.truncate(limits.IMPORT_MAX_INPUT_BYTES)  # a sparse file: no memory or disk spent
    rc, stdout, err = _cli([str(big), *server], capsys)
    assert (rc, err[0]) == (2, f"{big}:1: error: more than 16,000,000 characters: too large to import in one run")
    assert _cli(["--no-such-option"], capsys)[0] == 2
    help_text = _cli(["--help"], capsys)[1]
    assert "exit status:\n  0  the configuration was written" in help_text and "\n  2  nothing written" in help_text


def test_a_configuration_that_would_not_load_is_never_written(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug of the importer's (every command was checked): exit 2, the loader's located problems, no file."""
    import exmilter.importer as importer

    real = importer.config.loads

    def failing(text: str, file: str = "<string>") -> Any:
        if file == str(tmp_path / "out.yaml"):
            raise ConfigError([Problem(file, 3, 1, "server", "broken on purpose")])
        return real(text, file)

    monkeypatch.setattr(importer.config, "loads", failing)
    (tmp_path / "t.ps1").write_text(SET_DF + "-MaxMessageSize 10MB\n")
    rc, _, err = _cli(
        [str(tmp_path / "t.ps1"), "--server", "EXCH01.labs.local", "-o", str(tmp_path / "out.yaml")], capsys
    )
    assert (rc, err[-2:]) == (
        2,
        [
            f"{tmp_path / 'out.yaml'}:3:1: server: broken on purpose",
            "import-exchange: internal error, the configuration would not load (please report it): nothing written",
        ],
    )
    assert not (tmp_path / "out.yaml").exists()


# --- what the loader warns about in the result (issue #10, item 11) ----------------------


def test_loader_warnings_are_shown_located_in_the_output_and_traced_to_the_runbook(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = "Get-Date\nNew-ReceiveConnector R -Custom -Bindings 0.0.0.0:2525 -RemoteIPRanges 10.0.0.1\n"
    (tmp_path / "t.ps1").write_text(source)
    out = tmp_path / "out.yaml"
    rc, _, err = _cli([str(tmp_path / "t.ps1"), "--server", "EXCH01.labs.local", "-o", str(out)], capsys)
    assert rc == 0
    text = out.read_text()
    line = text.splitlines().index("  - name: R") + 1
    expected = (
        f"{out}:{line}:5: warning: R: permission_groups: no permission group or entry: this connector accepts "
        f"no mail (from New-ReceiveConnector at {tmp_path / 't.ps1'}:2)"
    )
    assert expected in err
    assert f"#   line {line}: warning: R: permission_groups: no permission group or entry" in text
    assert [str(w) for w in loads(text, str(out)).warnings] == [expected.split(" (from ")[0]]
    rc, _, err = _cli([str(tmp_path / "t.ps1"), "--server", "EXCH01.labs.local", "--strict"], capsys)
    assert (rc, err[-1]) == (2, "import-exchange: 1 problem(s) and --strict: nothing written")


OPEN_RELAYS = {
    # spec §6 #3: Any-Recipient for anonymous on Default Frontend
    "default frontend": 'Get-ReceiveConnector "Default Frontend EXCH01" | Add-ADPermission -User "NT AUTHORITY\\'
    'ANONYMOUS LOGON" -ExtendedRights ms-Exch-SMTP-Accept-Any-Recipient',
    # spec §6 #2: a relay connector whose ranges cover every address
    "every address": "New-ReceiveConnector Relay -TransportRole FrontendTransport -Custom -Bindings 0.0.0.0:2600 "
    "-RemoteIPRanges 0.0.0.0-255.255.255.255 -PermissionGroups AnonymousUsers\n"
    'Add-ADPermission Relay -User "NT AUTHORITY\\ANONYMOUS LOGON" -ExtendedRights '
    "ms-Exch-SMTP-Accept-Any-Recipient",
    "no permission group": "New-ReceiveConnector R -Custom -Bindings 0.0.0.0:2525 -RemoteIPRanges 10.0.0.1",
}
#: What each runbook must be warned about: (kind, the start of the message after the location, its origin).
EXPECTED_FINDINGS = {
    "default frontend": (
        "open relay",
        "warning: open relay: Default Frontend EXCH01: permissions: ANONYMOUS LOGON "
        "holds ms-Exch-SMTP-Accept-Any-Recipient on Default Frontend",
        ("Add-ADPermission at t.ps1:1",),
    ),
    "every address": (
        "open relay",
        "warning: open relay: Relay: permissions: ANONYMOUS LOGON holds "
        "ms-Exch-SMTP-Accept-Any-Recipient and remote_ip_ranges cover every IPv4",
        ("Add-ADPermission at t.ps1:2",),
    ),
    "no permission group": (
        "",
        "warning: R: permission_groups: no permission group or entry",
        ("New-ReceiveConnector at t.ps1:1",),
    ),
}


@pytest.mark.parametrize("runbook", sorted(OPEN_RELAYS))
def test_every_loader_warning_about_the_result_is_reported(runbook: str) -> None:
    """Whatever `exmilter check` warns about in the written file (open relays once the loader reports them),
    import-exchange reports too, at the same place, with the runbook lines behind the entry."""
    result = import_exchange([("t.ps1", OPEN_RELAYS[runbook])], "EXCH01.labs.local", output="out.yaml")
    assert [f.problem for f in result.findings] == loads(result.yaml, "out.yaml").warnings
    lines = result.yaml.splitlines()
    for f in result.findings:
        assert f"#   line {f.problem.line}: " in result.yaml
        if lines[f.problem.line - 1].startswith("  - name: "):  # a connector entry: the commands that made it
            assert f.origins and all(" at t.ps1:" in o for o in f.origins)
    kind, message, origins = EXPECTED_FINDINGS[runbook]
    assert [(f.problem.kind, f.origins) for f in result.findings] == [(kind, origins)]
    assert str(result.findings[0].problem).split(": ", 1)[1].startswith(message)
