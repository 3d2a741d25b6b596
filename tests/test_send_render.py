"""render-postfix with send connectors: transports, the two tables, and `postfix check`."""

from __future__ import annotations

from pathlib import Path

import pytest

from exmilter.cli import main
from exmilter.config import load
from exmilter.postfix.render import render
from exmilter.postfix.transport import UNREACHABLE_TRANSPORT, render_outbound
from exmilter.sandbox.instance import check_rendered
from tests.conftest import EXAMPLE, ROOT, org_from

SEND = ROOT / "tests" / "data" / "send-connectors.yaml"


def test_tables_reproduce_exchange_routing() -> None:
    out = render_outbound(load(SEND).organization)
    rows = [line.split("\t") for line in out.files["exmilter_transport"].splitlines() if not line.startswith("#")]
    assert rows == [
        ["contoso.mail.onmicrosoft.com", "exsend-outbound-to-office-365:[contoso-com.mail.protection.outlook.com]:25"],
        [".fabrikam.com", "exsend-partner:[smtp1.fabrikam.com]:587"],
        ["contoso.com", "exsend-outbound-to-office-365:[contoso-com.mail.protection.outlook.com]:25"],
        ["fabrikam.com", "exsend-partner:[smtp1.fabrikam.com]:587"],
        ["partner-relay.example", "exsend-partner:[smtp1.fabrikam.com]:587"],
    ]
    tls = [line.split("\t") for line in out.files["exmilter_tls_policy"].splitlines() if not line.startswith("#")]
    assert tls == [
        ["[contoso-com.mail.protection.outlook.com]:25", "secure match=mail.protection.outlook.com"],
        ["[smtp1.fabrikam.com]:587", "encrypt"],
        ["[smtp2.fabrikam.com]:587", "encrypt"],
    ]
    main_cf = {name: value for name, value, _ in out.main}
    assert main_cf["default_transport"] == "exsend-internet:"  # '*': DNS routing, MX of each domain
    assert main_cf["transport_maps"] == "texthash:${config_directory}/exmilter_transport"


def test_connector_services_carry_helo_tls_fallbacks_and_credentials_by_reference() -> None:
    out = render_outbound(load(SEND).organization)
    partner = next(s for s in out.services if "exsend-partner unix" in s)
    assert partner.splitlines()[3:] == [
        "exsend-partner unix - - n - - smtp",
        "  -o smtp_helo_name=exch01.contoso.com",  # no Fqdn: the server's
        "  -o smtp_tls_security_level=encrypt",
        "  -o smtp_fallback_relay=[smtp2.fabrikam.com]:587",
        "  -o smtp_sasl_auth_enable=yes",
        "  -o smtp_sasl_password_maps=texthash:/etc/exmilter/partner.credentials",
        "  -o { smtp_sasl_security_options = noplaintext, noanonymous }",
        "  -o smtp_sasl_tls_security_options=noanonymous",
    ]
    hybrid = next(s for s in out.services if "exsend-outbound-to-office-365 unix" in s)
    assert "  -o smtp_helo_name=mail.contoso.com" in hybrid.splitlines()
    assert "  -o smtp_tls_secure_cert_match=mail.protection.outlook.com" in hybrid.splitlines()


@pytest.mark.parametrize(
    ("yaml_text", "default", "rows"),
    [
        # no '*': every other domain is held (retry defers), never bounced
        (
            "accepted_domains: [contoso.com]\nmailbox_next_hop: mbx.contoso.com\nsend_connectors:\n"
            "  - {name: P, address_spaces: ['*.partner.example'], smart_hosts: [10.0.0.9], port: 2525}\n",
            UNREACHABLE_TRANSPORT,
            [
                [".partner.example", "exsend-p:[10.0.0.9]:2525"],
                ["contoso.com", "exmailbox:[mbx.contoso.com]:25"],
                ["partner.example", "exsend-p:[10.0.0.9]:2525"],
            ],
        ),
        # an accepted wildcard is more specific than a connector's parent wildcard
        (
            "accepted_domains: ['*.in.example']\nmailbox_next_hop: '[10.0.0.20]:2525'\nsend_connectors:\n"
            "  - {name: All, address_spaces: ['*.example;5'], port: 2526}\n"
            "  - {name: Exact, address_spaces: ['x.in.example'], smart_hosts: [10.0.0.8]}\n",
            UNREACHABLE_TRANSPORT,
            [
                [".in.example", "exmailbox:[10.0.0.20]:2525"],
                ["x.in.example", "exmailbox:[10.0.0.20]:2525"],  # the accepted domain first, as Exchange
                [".example", "exsend-all:"],
                ["in.example", "exmailbox:[10.0.0.20]:2525"],
                ["example", "exsend-all:"],
            ],
        ),
    ],
)
def test_tables_for_other_shapes(yaml_text: str, default: str, rows: list[list[str]]) -> None:
    out = render_outbound(org_from(yaml_text))
    got = [line.split("\t") for line in out.files["exmilter_transport"].splitlines() if not line.startswith("#")]
    assert got == rows
    assert dict((n, v) for n, v, _ in out.main)["default_transport"] == default


def test_without_send_connectors_nothing_changes() -> None:
    org = load(EXAMPLE).organization
    assert render_outbound(org).empty
    rendered = render(org)
    assert rendered.files == {}
    assert "transport_maps" not in rendered.main and "exsend" not in rendered.master


def test_rendered_send_connectors_pass_postfix_check(tmp_path: Path) -> None:
    """The credentials file is the admin's: absent here, and `postfix check` still passes."""
    rendered = render(load(SEND).organization, "unix:/run/exmilter/policy.sock")
    instance, warnings = check_rendered(tmp_path, rendered.main, rendered.master, rendered.files)
    assert warnings == []
    services = instance.postconf("-P")
    assert "exsend-partner/unix/smtp_sasl_password_maps = texthash:/etc/exmilter/partner.credentials" in services
    assert instance.postconf("-h", "default_transport").strip() == "exsend-internet:"
    assert "partner.credentials" not in rendered.main  # never the secret, and not even its path in main.cf


def test_unreachable_default_is_accepted_by_postfix(tmp_path: Path) -> None:
    org = org_from(
        "receive_connectors:\n  - {name: R, usage: Custom, bindings: ['0.0.0.0:25'], remote_ip_ranges: [10.0.0.0/24]}\n"
        "send_connectors:\n  - {name: P, address_spaces: [p.example], smart_hosts: [10.0.0.9]}\n"
    )
    rendered = render(org, "unix:/run/exmilter/policy.sock")
    instance, warnings = check_rendered(tmp_path, rendered.main, rendered.master, rendered.files)
    assert warnings == []
    assert instance.postconf("-h", "default_transport").strip() == UNREACHABLE_TRANSPORT
    # held, not refused: smtpd answers 450 at RCPT for Postfix's own retry: transport, not for this one
    assert instance.postconf("-h", "defer_transports").strip() == "exunreachable"
    assert "exunreachable/unix/" not in instance.postconf("-P")  # a plain pipe(8): argv in its own fields
    assert "pipe flags=q user=nobody argv=/bin/sh -c {exit 75}" in instance.postconf("-M")


def test_cli_writes_the_tables_beside_main_cf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render-postfix", "-c", str(SEND), "-o", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "exmilter_tls_policy",
        "exmilter_transport",
        "main.cf.exmilter",
        "master.cf.exmilter",
    ]
    assert f"{tmp_path}/exmilter_transport" in capsys.readouterr().out


def test_the_documented_setups_load_and_render(tmp_path: Path) -> None:
    """docs/send-connectors.md's copy-paste examples are valid files and pass `postfix check`."""
    import re

    text = (ROOT / "docs" / "send-connectors.md").read_text()
    setups = text.split("## Three typical setups", 1)[1].split("## How a route is chosen", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", setups, re.S)
    assert len(blocks) == 3
    receive = (
        "receive_connectors:\n  - {name: R, usage: Custom, bindings: ['0.0.0.0:25'], remote_ip_ranges: [10.0.0.0/24], "
        "permission_groups: [AnonymousUsers]}\n"
    )
    for i, block in enumerate(blocks):
        accepted = "" if "accepted_domains" in block else "accepted_domains: [contoso.com]\n"
        org = org_from(receive + accepted + block)
        assert org.send_connectors, block
        rendered = render(org, "unix:/run/exmilter/policy.sock")
        _, warnings = check_rendered(tmp_path / str(i), rendered.main, rendered.master, rendered.files)
        assert warnings == []


def test_the_example_files_commented_send_connectors_load_when_uncommented() -> None:
    from exmilter.config import loads

    text = EXAMPLE.read_text()
    block = (
        text.split("# Send connectors: where accepted mail goes next", 1)[1].split("\n", 2)[2].split("\n\n", 1)[0]
    )  # up to the next block
    uncommented = "\n".join(line[2:] if line.startswith("# ") else line for line in block.splitlines())
    org = loads(text + "\n" + uncommented + "\n").organization
    assert [c.name for c in org.send_connectors] == ["To Internet", "Partner"]
    assert str(org.mailbox_next_hop) == "10.0.0.20:25"


def test_offline_rendering_sends_every_route_needing_a_lookup_to_the_given_transport() -> None:
    """The sandbox never resolves names: MX routes and host-name smart hosts go to its agent."""
    org = org_from(
        "accepted_domains: [contoso.com, {domain_name: other.test, domain_type: Authoritative}]\n"
        "mailbox_next_hop: mbx.contoso.com\nsend_connectors:\n"
        "  - {name: Internet, address_spaces: ['*']}\n"
        "  - {name: Named, address_spaces: [named.example], smart_hosts: [smtp.named.example]}\n"
        "  - {name: Literal, address_spaces: [literal.example], smart_hosts: ['[127.0.0.1]'], port: 2525}\n"
    )
    out = render_outbound(org, dns_transport="agent:{}")
    rows = dict(line.split("\t") for line in out.files["exmilter_transport"].splitlines() if not line.startswith("#"))
    assert rows == {
        "contoso.com": "agent:exmailbox",
        "other.test": "agent:exmailbox",
        "named.example": "agent:exsend-named",
        "literal.example": "exsend-literal:[127.0.0.1]:2525",
    }
    assert dict((n, v) for n, v, _ in out.main)["default_transport"] == "agent:exsend-internet"


def test_check_lists_send_connectors_like_get_sendconnector(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(SEND)]) == 0
    out = capsys.readouterr().out.splitlines()
    start = out.index(next(line for line in out if line.startswith("Identity               AddressSpaces")))
    assert [line.split(" {")[0].strip() for line in out[start + 2 : start + 5]] == [
        "Internet",
        "Outbound to Office 365",
        "Partner",
    ]
    assert out[start + 2].split() == ["Internet", "{SMTP:*;1}", "True"]


def test_a_smart_host_shared_by_connectors_with_different_tls_keeps_each_connectors_own() -> None:
    """TLS is the connector's in Exchange: no shared table entry may force one's level on the other."""
    org = org_from(
        "send_connectors:\n"
        "  - {name: Strict, address_spaces: [a.example], smart_hosts: [10.0.0.9], require_tls: true}\n"
        "  - {name: Lax, address_spaces: [b.example], smart_hosts: [10.0.0.9]}\n"
        "  - {name: Same, address_spaces: [c.example], smart_hosts: [10.0.0.7], require_tls: true}\n"
        "  - {name: Also, address_spaces: [d.example], smart_hosts: [10.0.0.7], require_tls: true}\n"
    )
    out = render_outbound(org)
    assert out.files["exmilter_tls_policy"].splitlines()[1:] == [
        "# send connector Same, Also",
        "[10.0.0.7]:25\tencrypt",
        "# [10.0.0.9]:25: connectors differ (Strict: encrypt, Lax: may): each transport's own level applies",
    ]
    levels = {s.split(" unix")[0].split("\n")[-1]: s for s in out.services}
    assert "  -o smtp_tls_security_level=encrypt" in levels["exsend-strict"].splitlines()
    assert "  -o smtp_tls_security_level=may" in levels["exsend-lax"].splitlines()
