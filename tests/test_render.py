"""render-postfix: listener planning, fail-closed wiring, limits, and `postfix check`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from exmilter.cli import main
from exmilter.commands.render_postfix import SNIPPET_COMMAND
from exmilter.config import load
from exmilter.deployment import completions, plan_listeners
from exmilter.model import (
    AuthMechanism,
    Organization,
    PermissionGroups,
    ReceiveConnector,
    Server,
    TransportRole,
    Usage,
)
from exmilter.policy.decide import DECIDED_STATES
from exmilter.postfix.listeners import connect_always_passes, connection_limits
from exmilter.postfix.main import POSTFIX_RECIPIENT_LIMIT, main_settings
from exmilter.postfix.master import master_service
from exmilter.postfix.render import render_main, render_master
from exmilter.postfix.restrictions import DEFAULT_ACTION, policy_endpoint, restrictions
from exmilter.sandbox.instance import check_rendered
from exmilter.values import Binding, IPRange
from tests.conftest import EXAMPLE, ROOT, org_from

RELAY = """
receive_connectors:
  - name: Relay
    usage: Custom
    bindings: [0.0.0.0:25]
    remote_ip_ranges: [10.0.0.0/24]
    permission_groups: [AnonymousUsers]
    banner: "220 Relay here"
"""

MIXED = (
    RELAY
    + """
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
)


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
    assert "10.0.0.5:25 inet n - n - 5000 smtpd\n" in master  # Relay's MaxInboundConnection
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
    for stage in ("client", "sender", "end_of_data"):
        assert f"  -o smtpd_{stage}_restrictions=$exmilter_policy\n" in master
    # EHLO/HELO and DATA: not asked (always DUNNO), and emptied so main.cf cannot answer there.
    for stage in ("helo", "data"):
        assert f"  -o smtpd_{stage}_restrictions=\n" in master
    assert "permit_mynetworks" not in master


#: The SMTP state each restriction list runs at under smtpd_delay_reject=no (postfix-notes §1.3).
LIST_STATES = {
    "smtpd_client_restrictions": {"CONNECT"},
    "smtpd_helo_restrictions": {"EHLO", "HELO"},
    "smtpd_sender_restrictions": {"MAIL"},
    "smtpd_relay_restrictions": {"RCPT"},
    "smtpd_recipient_restrictions": {"RCPT"},
    "smtpd_data_restrictions": {"DATA"},
    "smtpd_end_of_data_restrictions": {"END-OF-MESSAGE"},
}


def asked_states(lists: list[tuple[str, str]]) -> set[str]:
    assert {name for name, _ in lists} == set(LIST_STATES)
    return set().union(*(LIST_STATES[name] for name, value in lists if "$exmilter_policy" in value))


def test_policy_is_asked_exactly_at_the_states_exmilter_decides() -> None:
    """No round trip for a state the daemon always answers DUNNO; none missing for one it decides."""
    assert asked_states(restrictions()) == set(DECIDED_STATES)
    assert asked_states(restrictions(ask_at_connect=False)) == set(DECIDED_STATES) - {"CONNECT"}


def one_connector(bindings: str, ranges: str, more: str = "") -> str:
    return f"""
receive_connectors:
  - name: Custom
    usage: Custom
    bindings: {bindings}
    remote_ip_ranges: {ranges}
    permission_groups: [AnonymousUsers]
{more}"""


NARROW = """\
  - name: Narrow
    usage: Custom
    bindings: [0.0.0.0:25]
    remote_ip_ranges: [10.0.0.1]
    permission_groups: [AnonymousUsers]
"""
ALL_V4 = "0.0.0.0-255.255.255.255"
ALL_V6 = "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"


@pytest.mark.parametrize(
    ("config", "context", "passes"),
    [
        # a wildcard listener receives both families: both must be covered
        (one_connector("[0.0.0.0:25, '[::]:25']", f"[{ALL_V4}, '{ALL_V6}']"), "*:25", True),
        (one_connector("[0.0.0.0:25, '[::]:25']", "[0.0.0.0/0, '::/0']"), "*:25", True),
        (one_connector("[0.0.0.0:25]", "[0.0.0.0/0]"), "*:25", False),  # IPv6 clients: 421 4.3.2
        (one_connector("[0.0.0.0:25, '[::]:25']", f"[0.0.0.0/1, 128.0.0.0/1, '{ALL_V6}']"), "*:25", True),
        # one address missing is a client without a connector
        (
            one_connector("[0.0.0.0:25, '[::]:25']", f"[0.0.0.0-10.0.0.4, 10.0.0.6-255.255.255.255, '{ALL_V6}']"),
            "*:25",
            False,
        ),
        (one_connector("[0.0.0.0:25, '[::]:25']", f"[0.0.0.0-255.255.255.254, '{ALL_V6}']"), "*:25", False),
        (one_connector("[0.0.0.0:2526]", "[192.168.1.13]"), "*:2526", False),
        # a disabled connector selects nobody
        (
            one_connector("[0.0.0.0:25, '[::]:25']", "[0.0.0.0/0, '::/0']", "    enabled: false\n") + NARROW,
            "*:25",
            False,
        ),
    ],
)
def test_connect_is_asked_unless_every_client_selects_a_connector(config: str, context: str, passes: bool) -> None:
    org = org_from(config)
    plan = next(p for p in plan_listeners(org) if p.context == context)
    assert connect_always_passes(plan, org) is passes
    service = master_service(plan, org, "inet:127.0.0.1:10040")
    line = "  -o smtpd_client_restrictions=\n" if passes else "  -o smtpd_client_restrictions=$exmilter_policy\n"
    assert line in service


def test_an_exact_listener_counts_its_own_family_and_the_wildcard_connectors() -> None:
    """10.1.1.1:25 sees the exact connector's ranges and the wildcard ones of IPv4, not IPv6."""
    config = (
        MIXED + "  - name: Rest\n    usage: Custom\n    bindings: [0.0.0.0:25]\n"
        "    remote_ip_ranges: [0.0.0.0-9.255.255.255, 10.0.1.0-255.255.255.255]\n"
        "    permission_groups: [AnonymousUsers]\n"
    )
    org = org_from(config)
    plans = {p.context: p for p in plan_listeners(org)}
    assert connect_always_passes(plans["10.1.1.1:25"], org)  # Exact's or Relay's 10.0.0.0/24, then Rest
    org = org_from(config.replace("10.0.1.0-", "10.0.2.0-"))  # 10.0.1.0/24: nobody's
    plans = {p.context: p for p in plan_listeners(org)}
    assert not connect_always_passes(plans["10.1.1.1:25"], org)


def test_default_connectors_cover_every_client_on_port_25() -> None:
    """The shipped example: Default Frontend holds every address, so *:25 is not asked at CONNECT."""
    org = load(EXAMPLE).organization
    plans = {p.context: p for p in plan_listeners(org)}
    assert connect_always_passes(plans["*:25"], org)
    assert not connect_always_passes(plans["*:2526"], org)  # Monitoring: one host


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
    org = org_from(
        RELAY + "    max_message_size: 100MB\n    max_recipients_per_message: 6000\n",
    )
    s = {x.name: x.value for x in main_settings(org)}
    assert int(s["message_size_limit"]) >= 100 << 20
    assert int(s["mailbox_size_limit"]) >= int(s["message_size_limit"])
    assert s["smtpd_recipient_limit"] == "6000"
    assert int(s["hopcount_limit"]) > 60 + 1
    assert int(s["smtpd_hard_error_limit"]) > 5
    assert "smtpd_client_connection_count_limit" not in s  # per listener, in master.cf


def test_relay_domains_cover_accepted_domains() -> None:
    org = org_from(
        RELAY
        + """
accepted_domains:
  - domain_name: labs.local
  - domain_name: "*.branch.example"
    domain_type: InternalRelay
"""
    )
    s = {x.name: x.value for x in main_settings(org)}
    assert s["relay_domains"] == "labs.local, branch.example, .branch.example"


def limited(name: str, binding: str, ranges: str, **limits: object) -> str:
    extra = "".join(f"    {k}: {v}\n" for k, v in limits.items())
    return (
        f"""
  - name: {name}
    usage: Custom
    bindings: [{binding}]
    remote_ip_ranges: [{ranges}]
    permission_groups: [AnonymousUsers]
"""
        + extra
    )


def service(yaml_text: str, context: str) -> str:
    org = org_from("receive_connectors:" + yaml_text)
    plan = next(p for p in plan_listeners(org) if p.context == context)
    return master_service(plan, org, "inet:127.0.0.1:10040") + "\n"


def test_one_connector_per_listener_gets_its_own_connection_limits() -> None:
    text = service(
        limited(
            "Apps",
            "0.0.0.0:2600",
            "10.0.0.0/24",
            max_inbound_connection=7,
            max_inbound_connection_per_source=3,
            max_inbound_connection_percentage_per_source=100,
        )
        + limited("Other", "0.0.0.0:2601", "10.0.0.0/24"),
        "*:2600",
    )
    assert "\n2600 inet n - n - 7 smtpd\n" in text  # maxproc = MaxInboundConnection
    assert "  -o smtpd_client_connection_count_limit=3\n" in text
    assert "  -o smtpd_client_event_limit_exceptions=\n" in text  # Exchange exempts nobody
    assert "#   connections: 3 per client address, 7 in all (maxproc; beyond it clients wait, no 421)\n" in text
    assert "not expressible" not in text


def test_unlimited_connections_render_as_no_postfix_limit() -> None:
    text = service(
        limited(
            "Open",
            "0.0.0.0:2600",
            "10.0.0.0/24",
            max_inbound_connection="unlimited",
            max_inbound_connection_per_source="unlimited",
        ),
        "*:2600",
    )
    assert "\n2600 inet n - n - 0 smtpd\n" in text
    assert "  -o smtpd_client_connection_count_limit=0\n" in text
    assert "#   connections: unlimited per client address, unlimited in all" in text


@pytest.mark.parametrize(
    ("limits", "per_source"),
    [
        # ceil(100 × 5 %) = 5 is below the per-source 20: the percentage rule is the bound.
        ({"max_inbound_connection": 100, "max_inbound_connection_percentage_per_source": 5}, 5),
        ({"max_inbound_connection": 101, "max_inbound_connection_percentage_per_source": 5}, 6),
        # Exchange's defaults: ceil(5000 × 2 %) = 100 is above 20.
        ({}, 20),
        # No percentage rule at 100 % or with MaxInboundConnection unlimited.
        ({"max_inbound_connection_per_source": "unlimited", "max_inbound_connection_percentage_per_source": 100}, 0),
        ({"max_inbound_connection_per_source": "unlimited", "max_inbound_connection": "unlimited"}, 0),
        ({"max_inbound_connection_per_source": "unlimited"}, 100),
    ],
)
def test_per_source_limit_includes_the_static_percentage_bound(limits: dict, per_source: int) -> None:
    org = org_from("receive_connectors:" + limited("Apps", "0.0.0.0:2600", "10.0.0.0/24", **limits))
    [plan] = plan_listeners(org)
    assert connection_limits(plan, org).per_source == per_source


def test_connectors_sharing_a_listener_get_the_most_permissive_limits_and_a_comment() -> None:
    def config(loose_total: object) -> str:
        return limited(
            "Strict",
            "0.0.0.0:25",
            "10.0.0.0/24",
            max_inbound_connection=10,
            max_inbound_connection_per_source=2,
            max_inbound_connection_percentage_per_source=100,
        ) + limited(
            "Loose",
            "0.0.0.0:25",
            "10.0.1.0/24",
            max_inbound_connection=loose_total,
            max_inbound_connection_per_source=5,
            max_inbound_connection_percentage_per_source=100,
        )

    text = service(config(30), "*:25")
    assert "\n25 inet n - n - 40 smtpd\n" in text  # each connector its own 10 and 30: their sum
    assert "  -o smtpd_client_connection_count_limit=5\n" in text  # never stricter than Loose
    assert (
        "#   not expressible: connections per source differ (Strict 2, Loose 5); Postfix counts per "
        "listener before the connector is known, so the most permissive (5) applies to all\n"
    ) in text
    assert "#   not expressible: MaxInboundConnection counts per connector; Postfix caps the listener" in text
    unlimited = service(config("unlimited"), "*:25")
    assert "\n25 inet n - n - 0 smtpd\n" in unlimited


def test_connectors_agreeing_on_a_listener_are_enforced_without_a_per_source_gap() -> None:
    yaml_text = limited(
        "A",
        "0.0.0.0:25",
        "10.0.0.0/24",
        max_inbound_connection_per_source=4,
        max_inbound_connection_percentage_per_source=100,
    ) + limited(
        "B",
        "0.0.0.0:25",
        "10.0.1.0/24",
        max_inbound_connection_per_source=4,
        max_inbound_connection_percentage_per_source=100,
    )
    text = service(yaml_text, "*:25")
    assert "  -o smtpd_client_connection_count_limit=4\n" in text
    assert "connections per source differ" not in text


def test_a_connector_on_several_listeners_is_reported() -> None:
    text = service(limited("Both", "0.0.0.0:2600, 0.0.0.0:2601", "10.0.0.0/24"), "*:2600")
    assert "#   not expressible: Both also listens on *:2601: its limits count per listener here" in text


def test_cli_writes_both_fragments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render-postfix", "-c", str(EXAMPLE), "-o", str(tmp_path)]) == 0
    assert "unix:/run/exmilter/policy.sock" in (tmp_path / "master.cf.exmilter").read_text()
    assert "message_size_limit" in (tmp_path / "main.cf.exmilter").read_text()
    assert main(["render-postfix", "-c", str(EXAMPLE), "--policy-service", "tcp:10040:interface=127.0.0.1"]) == 0
    assert "inet:127.0.0.1:10040" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("yaml_text", "argv", "message"),
    [
        # the file has no policyd.listen and the command line none either
        (
            RELAY + "policyd: {listen: []}\n",
            [],
            "exmilter render-postfix: policy service: the file's policyd.listen is empty; give --policy-service\n",
        ),
        (
            RELAY,
            ["--policy-service", "ssl:10040"],
            "exmilter render-postfix: policy service: 'ssl:10040': Postfix reaches a policy server over unix: or tcp: "
            "only\n",
        ),
        (
            RELAY,
            ["-o", "{out}", "--suffix", "a/b"],
            "exmilter render-postfix: --suffix 'a/b': give a file name suffix\n",
        ),
        # -o names a file, not a directory
        (RELAY, ["-o", "{file}"], "exmilter render-postfix: [Errno 17] File exists: '{file}'\n"),
    ],
)
def test_cli_refuses_what_it_cannot_render_or_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], yaml_text: str, argv: list[str], message: str
) -> None:
    """Exit 2 and one line saying why, never a traceback; nothing is written."""
    config = tmp_path / "exmilter.yaml"
    config.write_text(
        "server: {name: EXCH01, fqdn: exch01.labs.local, domain: LABS}\naccepted_domains: [labs.local]\n" + yaml_text
    )
    (tmp_path / "a-file").write_text("")
    paths = {"out": str(tmp_path / "out"), "file": str(tmp_path / "a-file")}
    assert main(["render-postfix", "-c", str(config), *(a.format(**paths) for a in argv)]) == 2
    assert capsys.readouterr().err == message.format(**paths)
    assert not (tmp_path / "out").exists()


def test_rendered_config_passes_postfix_check(tmp_path: Path) -> None:
    """A private instance with the rendered fragments: `postfix check`, and every -o parses."""
    org = load(EXAMPLE).organization
    endpoint = policy_endpoint(org.policyd.listen[0])
    instance, warnings = check_rendered(tmp_path, render_main(org), render_master(plan_listeners(org), org, endpoint))
    assert warnings == []
    services = instance.postconf("-P")
    assert "25/inet/policy" not in services
    assert "25/inet/exmilter_policy = check_policy_service { unix:/run/exmilter/policy.sock," in services
    assert "25/inet/smtpd_relay_restrictions = $exmilter_policy, defer" in services
    lines = services.splitlines()
    for empty in ("smtpd_helo_restrictions", "smtpd_data_restrictions", "smtpd_client_event_limit_exceptions"):
        assert f"25/inet/{empty} =" in lines
    assert "25/inet/smtpd_client_connection_count_limit = 20" in lines
    assert "2525/inet/smtpd_client_connection_count_limit = 0" in lines  # Default EXCH01: unlimited
    assert "25/inet/process_limit = 15000" in instance.postconf("-F").splitlines()  # three connectors × 5000


SNIPPETS = ROOT / "postfix"


def test_shipped_snippets_are_exactly_the_rendered_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """postfix/*.snippet cannot drift from render-postfix: they are its output for conf/exmilter.yaml."""
    monkeypatch.chdir(ROOT)  # the header names the file as given: conf/exmilter.yaml
    assert main(["render-postfix", "-c", "conf/exmilter.yaml", "-o", str(tmp_path), "--suffix", "snippet"]) == 0
    capsys.readouterr()
    for name in ("main.cf.snippet", "master.cf.snippet"):
        shipped, rendered = (SNIPPETS / name).read_text(), (tmp_path / name).read_text()
        assert shipped == rendered, (
            f"postfix/{name} differs from what render-postfix writes for conf/exmilter.yaml; "
            f"regenerate both snippets from the repository root with: .venv/bin/{SNIPPET_COMMAND}"
        )


def test_hand_paste_snippets_pass_postfix_check(tmp_path: Path) -> None:
    instance, warnings = check_rendered(
        tmp_path, (SNIPPETS / "main.cf.snippet").read_text(), (SNIPPETS / "master.cf.snippet").read_text()
    )
    assert warnings == []
    assert "2526/inet/milter_macro_daemon_name = *:2526" in instance.postconf("-P").splitlines()


# --- addresses and smuggling (issue 10 #1, #2, #8) -----------------------------------------------


def test_postfix_rewrites_the_engine_does_not_model_are_off() -> None:
    """Postfix must route every address to the domain exmilter judged (docs/render-postfix.md
    "Addresses"); the relay harness checks each end to end."""
    s = {x.name: x.value for x in main_settings(org_from(RELAY))}
    assert {
        k: s[k]
        for k in (
            "allow_percent_hack",
            "swap_bangpath",
            "resolve_dequoted_address",
            "allow_untrusted_routing",
            "append_at_myorigin",
            "append_dot_mydomain",
            "enable_idna2003_compatibility",
        )
    } == {
        "allow_percent_hack": "no",
        "swap_bangpath": "no",
        "resolve_dequoted_address": "no",
        "allow_untrusted_routing": "no",
        "append_at_myorigin": "yes",
        "append_dot_mydomain": "no",
        "enable_idna2003_compatibility": "no",
    }


def test_relay_domains_list_internationalised_names_in_both_forms() -> None:
    """Postfix matches relay_domains on the name as written (case-folded), not on its xn-- form."""
    org = org_from(
        RELAY
        + """
accepted_domains:
  - bücher.example
  - strasse.de
  - domain_name: "*.xn--strae-oqa.de"
"""
    )
    s = {x.name: x.value for x in main_settings(org)}
    assert s["relay_domains"] == (
        "xn--bcher-kva.example, bücher.example, strasse.de, xn--strae-oqa.de, .xn--strae-oqa.de, straße.de, .straße.de"
    )


BARE_LF = """
  - name: Strict
    usage: Custom
    bindings: [0.0.0.0:2600]
    remote_ip_ranges: [10.0.0.0/24]
    permission_groups: [AnonymousUsers]
    bare_linefeed_rejection_enabled: $true
  - name: Lax
    usage: Custom
    bindings: [0.0.0.0:2600]
    remote_ip_ranges: [10.0.1.0/24]
    permission_groups: [AnonymousUsers]
    bare_linefeed_rejection_enabled: {lax}
"""


@pytest.mark.parametrize(("lax", "value"), [("$true", "reject"), ("$false", "normalize")])
def test_every_listener_forbids_bare_newline_end_of_data(lax: str, value: str) -> None:
    """CVE-2023-51764: DATA ends only at <CR><LF>.<CR><LF>; reject where every connector of the
    listener has BareLinefeedRejectionEnabled (Exchange's code 554), no exclusions."""
    text = service(BARE_LF.format(lax=lax), "*:2600")
    assert f"  -o smtpd_forbid_bare_newline={value}\n" in text
    assert "  -o smtpd_forbid_bare_newline_exclusions=\n" in text
    assert ("  -o smtpd_forbid_bare_newline_reject_code=554\n" in text) == (value == "reject")


DEFAULT_DOMAINS = """
accepted_domains:
  - labs.local
  - {name: Shared, domain_name: shared.example}
receive_connectors:
  - name: A
    usage: Custom
    bindings: [0.0.0.0:2600]
    remote_ip_ranges: [10.0.0.0/24]
    permission_groups: [AnonymousUsers]
    default_domain: Shared
  - name: B
    usage: Custom
    bindings: [0.0.0.0:2600]
    remote_ip_ranges: [10.0.1.0/24]
    permission_groups: [AnonymousUsers]
    default_domain: {b}
  - name: C
    usage: Custom
    bindings: [0.0.0.0:2601]
    remote_ip_ranges: [10.0.0.0/24]
    permission_groups: [AnonymousUsers]
"""


@pytest.mark.parametrize(
    ("b", "origin_2600", "completions_"),
    [
        # agreeing DefaultDomains: the listener's own trivial-rewrite appends it
        (
            "shared.example",
            "shared.example",
            {
                "A": ("shared.example", "shared.example"),
                "B": ("shared.example", "shared.example"),
                "C": (None, "labs.local"),
            },
        ),
        # disagreeing: Postfix has one myorigin per listener, the organisation's default domain;
        # neither connector's DefaultDomain can be honoured... except where it is that domain
        (
            "labs.local",
            "labs.local",
            {"A": (None, "labs.local"), "B": ("labs.local", "labs.local"), "C": (None, "labs.local")},
        ),
    ],
)
def test_each_listener_completes_addresses_with_the_domain_the_engine_uses(
    b: str, origin_2600: str, completions_: dict
) -> None:
    org = org_from(DEFAULT_DOMAINS.replace("{b}", b))
    assert {n: (c.domain, c.postmaster) for n, c in completions(org).items()} == completions_
    if b == "labs.local":
        assert completions(org)["A"].note == (
            "listener *:2600 is shared with connectors whose DefaultDomain differs; "
            "Postfix completes addresses there with @labs.local"
        )
    text = master_service(next(p for p in plan_listeners(org) if p.context == "*:2600"), org, "inet:x:1")
    assert "  -o cleanup_service_name=exmilter-cleanup-1\n" in text
    assert (
        "\nexmilter-cleanup-1 unix n - n - 0 cleanup\n  -o rewrite_service_name=exmilter-rewrite-1\n"
        f"exmilter-rewrite-1 unix - - n - - trivial-rewrite\n  -o myorigin={origin_2600}"
    ) in text
    if b == "labs.local":
        assert (
            "#   not expressible: DefaultDomain differs (A shared.example, B labs.local); Postfix completes "
            "addresses with one domain per listener (labs.local)"
        ) in text
    other = master_service(next(p for p in plan_listeners(org) if p.context == "*:2601"), org, "inet:x:1")
    assert "  -o cleanup_service_name=exmilter-cleanup-2\n" in other
    assert (
        "#   unqualified addresses: refused by exmilter (no DefaultDomain); RCPT TO:<postmaster> goes to "
        "postmaster@labs.local" in other
    )


def test_internationalised_names_and_listener_services_pass_postfix_check(tmp_path: Path) -> None:
    org = org_from(DEFAULT_DOMAINS.replace("{b}", "Shared").replace("  - labs.local\n", "  - bücher.example\n"))
    instance, warnings = check_rendered(
        tmp_path, render_main(org), render_master(plan_listeners(org), org, "inet:127.0.0.1:10040")
    )
    assert warnings == []
    assert instance.postconf("-h", "relay_domains").strip() == "xn--bcher-kva.example, bücher.example, shared.example"
    lines = instance.postconf("-P").splitlines()
    assert "2600/inet/cleanup_service_name = exmilter-cleanup-1" in lines
    assert "exmilter-cleanup-1/unix/rewrite_service_name = exmilter-rewrite-1" in lines
    assert "exmilter-rewrite-1/unix/myorigin = shared.example" in lines
    assert "2600/inet/smtpd_forbid_bare_newline = normalize" in lines


def test_postfix_check_of_rendered_text_reports_what_postfix_refuses(tmp_path: Path) -> None:
    """The helper the checks above rely on says what is wrong, once per problem (postconf
    repeats a warning for every service)."""
    broken = render_master(plan_listeners(org_from(RELAY)), org_from(RELAY), "inet:127.0.0.1:10040")
    broken = broken.replace("  -o smtpd_delay_reject=no\n", "  -o { smtpd_banner = unclosed\n", 1)
    _, warnings = check_rendered(tmp_path, "exmilter_no_such_parameter = 1\n", broken)
    # The unclosed brace swallows the rest of the service, so its $exmilter_policy is undefined.
    said = [w.split("warning: ", 1)[1].split(": ", 1)[-1] for w in warnings]
    assert len(said) == 3 and said[0].startswith("missing '}' in \"{ smtpd_banner = unclosed  -o "), warnings
    assert said[1:] == ["undefined parameter: exmilter_policy", "unused parameter: exmilter_no_such_parameter=1"]


# --- scale --------------------------------------------------------------------------------------


def python_calls(work: Callable[[], object]) -> int:
    """How many Python function calls ``work`` makes: a measure of work that load on the machine
    cannot skew (docs/performance.md measures time; this only tells linear from quadratic)."""
    calls = 0

    def count(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        calls += event == "call"

    sys.setprofile(count)
    try:
        work()
    finally:
        sys.setprofile(None)
    return calls


def many_connectors(n: int, *, own_port: bool) -> Organization:
    """``n`` connectors of one /30 each, all on 0.0.0.0:25 (one listener) or each on a port of its own."""
    connectors = tuple(
        ReceiveConnector(
            name=f"Relay {i}",
            server="EXCH01",
            transport_role=TransportRole.FrontendTransport,
            usage=Usage.Custom,
            bindings=(Binding(4, 0, 2000 + i if own_port else 25),),
            remote_ip_ranges=(IPRange(4, (10 << 24) + 4 * i, (10 << 24) + 4 * i + 3),),
            auth_mechanism=AuthMechanism.NONE,
            permission_groups=PermissionGroups.AnonymousUsers,
        )
        for i in range(n)
    )
    return Organization(Server("EXCH01", "exch01.labs.local", "LABS", ("10.1.1.1",)), (), connectors)


@pytest.mark.parametrize("own_port", [False, True], ids=["one listener", "a listener each"])
def test_rendering_work_grows_linearly_with_the_connectors(own_port: bool) -> None:
    """10,000 connectors on one binding took 100 s to render (planning compared every connector
    with every other, and each listener planned every listener again): four times the
    connectors must cost about four times the work, in rendering and in the engine's
    completions (which every configuration load computes)."""

    def work(n: int) -> int:
        org = many_connectors(n, own_port=own_port)
        return python_calls(lambda: (render_master(plan_listeners(org), org, "unix:/p"), completions(org)))

    small, large = work(200), work(800)
    assert large < 5 * small, (small, large)


def test_a_file_without_receive_connectors_renders_postfix_defaults(tmp_path: Path) -> None:
    """No connector at all (default_connectors: false, none listed): Postfix's own limits, no traceback."""
    path = tmp_path / "none.yaml"
    path.write_text("server:\n  name: EX1\n  fqdn: ex1.contoso.com\ndefault_connectors: false\n")
    settings = {s.name: s.value for s in main_settings(load(path).organization)}
    assert settings["smtpd_recipient_limit"] == str(POSTFIX_RECIPIENT_LIMIT)
