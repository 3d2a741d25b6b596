"""STARTTLS and AUTH per listener and per client in the rendered Postfix (issue #13), judged
by ``postfix check`` and by the per-client map Postfix itself evaluates (``postmap -q``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from exmilter.deployment import plan_listeners
from exmilter.postfix.auth import auth_options, listener_offer
from exmilter.postfix.main import main_settings
from exmilter.postfix.render import render
from exmilter.sandbox.certificates import CertificateAuthority
from exmilter.sandbox.instance import check_rendered
from tests.conftest import org_from

#: Seed 003 on 587 and 2526, plus a connector for the rest of the /24 on 587 (anonymous,
#: Tls only), plus a plain connector on 2527 (no Tls, no AUTH).
SHARED = """
tls: {{certificate_file: {cert}, key_file: {key}}}
accepted_domains: [cloudmonkeys.xyz]
users:
  - {{name: svc-mailer, addresses: [svc-mailer@cloudmonkeys.xyz], send_as: [smb1@cloudmonkeys.xyz]}}
receive_connectors:
  - name: SMTP Relay Script
    bindings: 0.0.0.0:2526
    remote_ip_ranges: 192.168.1.13
    permission_groups: AnonymousUsers
  - name: SMTP Auth Relay Script
    bindings: 0.0.0.0:587
    remote_ip_ranges: 192.168.1.13
    auth_mechanism: Tls, BasicAuth, BasicAuthRequireTLS
    permission_groups: ExchangeUsers
    require_tls: true
  - name: Other 587
    bindings: 0.0.0.0:587
    remote_ip_ranges: 192.168.1.0/24
    permission_groups: AnonymousUsers
  - name: Plain
    bindings: 0.0.0.0:2527
    remote_ip_ranges: 0.0.0.0/0
    auth_mechanism: None
    permission_groups: AnonymousUsers
policyd: {{listen: ["tcp:10040:interface=127.0.0.1"]}}
"""


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    ca = CertificateAuthority.create(tmp_path_factory.mktemp("ca"))
    c = ca.issue("mail", ["mail.cloudmonkeys.xyz", "127.0.0.1"])
    return str(c.cert), str(c.key)


def org(pem: tuple[str, str], text: str = SHARED):
    return org_from(text.format(cert=pem[0], key=pem[1]))


def options(o, port: int) -> dict[str, str]:
    plan = next(p for p in plan_listeners(o) if p.listener.port == port)
    return dict(auth_options(plan, o).options)


def test_each_listener_offers_what_its_connectors_have(pem):
    o = org(pem)
    assert options(o, 2527) == {
        "smtpd_tls_security_level": "none",
        "smtpd_sasl_auth_enable": "no",
        "smtpd_discard_ehlo_keyword_address_maps": "",
    }
    tls_only = options(o, 2526)
    assert (tls_only["smtpd_tls_security_level"], tls_only["smtpd_tls_cert_file"]) == ("may", pem[0])
    assert tls_only["smtpd_sasl_auth_enable"] == "no"
    auth = options(o, 587)
    assert auth["smtpd_sasl_auth_enable"] == "yes"
    assert auth["smtpd_tls_auth_only"] == "yes"  # BasicAuthRequireTLS on every AUTH connector
    assert auth["smtpd_sasl_security_options"] == "noanonymous"
    assert auth["smtpd_discard_ehlo_keyword_address_maps"].startswith("cidr:{")
    s = {x.name: x.value for x in main_settings(o)}
    assert (s["smtpd_sasl_type"], s["smtpd_sasl_path"]) == ("dovecot", "private/auth")


def test_without_a_certificate_nothing_is_offered_under_tls(pem):
    o = org(pem, SHARED.replace("tls: {{certificate_file: {cert}, key_file: {key}}}\n", ""))
    plan = next(p for p in plan_listeners(o) if p.listener.port == 587)
    offer = listener_offer(plan, o)
    assert offer.certificate is None and not offer.auth  # AUTH only after STARTTLS, which is not offered
    assert any("there is no STARTTLS" in n for n in offer.notes) and not offer.gaps
    assert options(o, 587) == {
        "smtpd_tls_security_level": "none",
        "smtpd_sasl_auth_enable": "no",
        "smtpd_discard_ehlo_keyword_address_maps": "",
    }


def postmap(table: str, addresses: list[str], tmp_path: Path) -> dict[str, str]:
    """What Postfix's own cidr: lookup answers for each address (one postmap run: each costs ~2 s)."""
    (tmp_path / "main.cf").write_text("myhostname = mx.test\nmydomain = test\ninet_protocols = ipv4\n")
    proc = subprocess.run(
        ["postmap", "-c", str(tmp_path), "-q", "-", table],
        input="\n".join(addresses) + "\n",
        capture_output=True,
        text=True,
    )
    found = dict(line.split("\t", 1) for line in proc.stdout.splitlines())
    return {a: found.get(a, "<none>") for a in addresses}


def test_per_client_map_as_postfix_reads_it(pem, tmp_path):
    expected = {
        "192.168.1.13": "silent-discard",  # the auth relay connector: STARTTLS and AUTH shown
        "192.168.1.12": "auth",  # Other 587: STARTTLS only
        "192.168.1.14": "auth",
        "192.168.1.255": "auth",
        "192.168.2.1": "auth, starttls",  # no connector: refused at CONNECT anyway
        "10.0.0.1": "auth, starttls",
    }
    table = options(org(pem), 587)["smtpd_discard_ehlo_keyword_address_maps"]
    assert postmap(table, list(expected), tmp_path) == expected


def test_exact_binding_and_wildcard_in_the_map(pem, tmp_path):
    """The map follows the engine's selection across an exact and a wildcard binding."""
    text = SHARED.replace(
        "  - name: Plain\n",
        "  - name: Exact\n    bindings: 127.0.0.1:587\n    remote_ip_ranges: 192.168.1.0/24\n"
        "    auth_mechanism: Tls, BasicAuth\n    permission_groups: ExchangeUsers\n  - name: Plain\n",
    )
    o = org_from(text.format(cert=pem[0], key=pem[1]))
    plans = [p for p in plan_listeners(o) if p.context == "127.0.0.1:587"]
    table = dict(auth_options(plans[0], o).options)["smtpd_discard_ehlo_keyword_address_maps"]
    # .13: the wildcard's /32 is strictly smaller than the exact /24: the auth relay connector;
    # .20: a tie of /24s, the exact binding wins: Exact offers AUTH too
    assert postmap(table, ["192.168.1.13", "192.168.1.20"], tmp_path) == {
        "192.168.1.13": "silent-discard",
        "192.168.1.20": "silent-discard",
    }
    assert dict(auth_options(plans[0], o).options)["smtpd_tls_auth_only"] == "no"


def test_rendered_tls_and_sasl_pass_postfix_check(pem, tmp_path):
    rendered = render(org(pem))
    instance, warnings = check_rendered(tmp_path, rendered.main, rendered.master)
    assert warnings == []
    services = instance.postconf("-P").splitlines()
    assert "587/inet/smtpd_tls_auth_only = yes" in services
    assert "587/inet/smtpd_sasl_mechanism_filter = login, plain" in services
    assert "2527/inet/smtpd_tls_security_level = none" in services
    assert instance.postconf("-h", "smtpd_sasl_type").strip() == "dovecot"
