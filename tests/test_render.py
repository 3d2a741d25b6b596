"""render-postfix: listener planning, fail-closed wiring, limits, and `postfix check`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from exmilter.cli import main
from exmilter.postfix.instance import BASE_SERVICES
from exmilter.postfix.render import (
    DEFAULT_ACTION,
    main_settings,
    plan_listeners,
    policy_endpoint,
    render_main,
    render_master,
)
from tests.conftest import EXAMPLE, org_from

RELAY = """
receive_connectors:
  - name: Relay
    usage: Custom
    bindings: [0.0.0.0:25]
    remote_ip_ranges: [10.0.0.0/24]
    permission_groups: [AnonymousUsers]
    banner: "220 Relay here"
"""

MIXED = RELAY + """
  - name: Exact
    usage: Custom
    bindings: [10.1.1.1:25]
    remote_ip_ranges: [10.0.0.0/24]
    permission_groups: [AnonymousUsers]
  - name: Off
    usage: Custom
    bindings: [0.0.0.0:2600]
    remote_ip_ranges: [10.0.0.0/24]
    permission_groups: [AnonymousUsers]
    enabled: false
"""


def contexts(yaml_text: str, *, defaults: bool = False) -> dict[str, list[str]]:
    org = org_from(("default_connectors: true\n" if defaults else "") + yaml_text)
    return {p.context: [c.name for c in p.connectors] for p in plan_listeners(org)}


def test_wildcards_of_both_families_share_one_listener() -> None:
    frontend = RELAY.replace("usage: Custom", "usage: Custom\n    transport_role: FrontendTransport")
    got = contexts(frontend, defaults=True)
    assert got["*:25"] == ["Default Frontend EXCH01", "Relay"]
    assert set(got) == {"*:25", "*:465", "*:587", "*:717", "*:2525"}


def test_port_with_wildcard_and_exact_gets_one_listener_per_server_address() -> None:
    got = contexts(MIXED)
    # server addresses 10.1.1.1, 10.0.0.5 (IPv4) and 2001:db8::25 (no IPv4-only connector there)
    assert got == {"10.0.0.5:25": ["Relay"], "10.1.1.1:25": ["Exact", "Relay"]}


def test_banner_and_context_per_service() -> None:
    org = org_from(MIXED)
    master = render_master(plan_listeners(org), org, "inet:127.0.0.1:10040")
    assert "10.0.0.5:25 inet n - n - - smtpd\n" in master
    assert "  -o { smtpd_banner = Relay here }\n" in master  # one connector: its own banner
    assert "  -o { smtpd_banner = exch01.labs.local Microsoft ESMTP MAIL Service ready }\n" in master
    assert "  -o milter_macro_daemon_name=10.1.1.1:25\n" in master
    assert "policy_context=10.1.1.1:25 }" in master
    assert "2600" not in master  # disabled connectors do not listen


def test_policy_is_wired_fail_closed() -> None:
    org = org_from(RELAY)
    master = render_master(plan_listeners(org), org, "inet:127.0.0.1:10040")
    assert (
        "  -o { exmilter_policy = check_policy_service { inet:127.0.0.1:10040, timeout=5s, try_limit=2, "
        f"retry_delay=1s, {{ default_action = {DEFAULT_ACTION} }}, policy_context=*:25 }} }}\n"
    ) in master
    assert "  -o smtpd_delay_reject=no\n" in master
    assert "  -o { smtpd_relay_restrictions = $exmilter_policy, defer }\n" in master
    assert "  -o smtpd_recipient_restrictions=permit\n" in master
    for stage in ("client", "helo", "sender", "data", "end_of_data"):
        assert f"  -o smtpd_{stage}_restrictions=$exmilter_policy\n" in master
    assert "permit_mynetworks" not in master


@pytest.mark.parametrize(
    ("twisted", "postfix"),
    [
        ("unix:/run/exmilter/policy.sock:mode=660", "unix:/run/exmilter/policy.sock"),
        ("unix:address=/run/p.sock", "unix:/run/p.sock"),
        ("tcp:10040:interface=127.0.0.1", "inet:127.0.0.1:10040"),
        ("tcp:port=10040", "inet:127.0.0.1:10040"),
        ("tcp6:10040:interface=\\:\\:1", "inet:[::1]:10040"),
    ],
)
def test_policy_endpoint(twisted: str, postfix: str) -> None:
    assert policy_endpoint(twisted) == postfix


def test_policy_endpoint_refuses_what_postfix_cannot_reach() -> None:
    with pytest.raises(ValueError):
        policy_endpoint("ssl:10040")


def test_limits_never_stricter_than_any_connector() -> None:
    org = org_from(RELAY + "    max_message_size: 100MB\n    max_recipients_per_message: 6000\n", )
    s = {x.name: x.value for x in main_settings(org)}
    assert int(s["message_size_limit"]) >= 100 << 20
    assert int(s["mailbox_size_limit"]) >= int(s["message_size_limit"])
    assert s["smtpd_recipient_limit"] == "6000"
    assert int(s["hopcount_limit"]) > 60 + 1
    assert s["smtpd_client_connection_count_limit"] == "20"
    assert int(s["smtpd_hard_error_limit"]) > 5


def test_relay_domains_cover_accepted_domains() -> None:
    org = org_from(RELAY + """
accepted_domains:
  - domain_name: labs.local
  - domain_name: "*.branch.example"
    domain_type: InternalRelay
""")
    s = {x.name: x.value for x in main_settings(org)}
    assert s["relay_domains"] == "labs.local, branch.example, .branch.example"


def test_cli_writes_both_fragments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render-postfix", "-c", str(EXAMPLE), "-o", str(tmp_path)]) == 0
    assert "unix:/run/exmilter/policy.sock" in (tmp_path / "master.cf.exmilter").read_text()
    assert "message_size_limit" in (tmp_path / "main.cf.exmilter").read_text()
    assert main(["render-postfix", "-c", str(EXAMPLE), "--policy-service", "tcp:10040:interface=127.0.0.1"]) == 0
    assert "inet:127.0.0.1:10040" in capsys.readouterr().out


def test_rendered_config_passes_postfix_check(tmp_path: Path) -> None:
    """A minimal full instance plus the rendered fragments: `postfix check`, and every -o parses."""
    from exmilter.config import load

    org = load(EXAMPLE).organization
    endpoint = policy_endpoint(org.policyd.listen[0])
    etc, spool, data = tmp_path / "etc", tmp_path / "spool", tmp_path / "data"
    for d in (etc, spool, data):
        d.mkdir()
    shutil.chown(data, "postfix", "postfix")
    (etc / "main.cf").write_text(
        f"compatibility_level = 3.6\nqueue_directory = {spool}\ndata_directory = {data}\n"
        "inet_interfaces = 127.0.0.1\nmyhostname = mx.test\nalias_maps =\nalias_database =\n"
        + render_main(org, endpoint)
    )
    (etc / "master.cf").write_text(BASE_SERVICES + render_master(plan_listeners(org), org, endpoint))
    check = subprocess.run(["postfix", "-c", str(etc), "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "warning" not in check.stderr
    services = subprocess.run(["postconf", "-c", str(etc), "-P"], capture_output=True, text=True, check=True)
    assert "25/inet/policy" not in services.stdout
    assert "25/inet/exmilter_policy = check_policy_service { unix:/run/exmilter/policy.sock," in services.stdout
    assert "25/inet/smtpd_relay_restrictions = $exmilter_policy, defer" in services.stdout


def test_hand_paste_snippets_pass_postfix_check(tmp_path: Path) -> None:
    snippets = Path(__file__).resolve().parent.parent / "postfix"
    etc, spool, data = tmp_path / "etc", tmp_path / "spool", tmp_path / "data"
    for d in (etc, spool, data):
        d.mkdir()
    shutil.chown(data, "postfix", "postfix")
    (etc / "main.cf").write_text(
        f"compatibility_level = 3.6\nqueue_directory = {spool}\ndata_directory = {data}\nmyhostname = mx.test\n"
        "alias_maps =\nalias_database =\n" + (snippets / "main.cf.snippet").read_text()
    )
    (etc / "master.cf").write_text(BASE_SERVICES + (snippets / "master.cf.snippet").read_text())
    check = subprocess.run(["postfix", "-c", str(etc), "check"], capture_output=True, text=True)
    assert check.returncode == 0 and "warning" not in check.stderr, check.stderr
    services = subprocess.run(["postconf", "-c", str(etc), "-P"], capture_output=True, text=True, check=True)
    assert "10.83.4.10:2526/inet/milter_macro_daemon_name = 10.83.4.10:2526" in services.stdout
