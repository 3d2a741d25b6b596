"""Loading the configuration file: values, defaults, usage types, and located errors."""

from __future__ import annotations

import contextlib
import random
import signal
import textwrap
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exmilter.config import ConfigError, load, loads
from exmilter.model import AcceptedDomainType, AuthMechanism, PermissionGroups, Right, TransportRole, Usage
from tests.conftest import EXAMPLE, SERVER, org_from


def problems(text: str, server: str = SERVER) -> list[str]:
    with pytest.raises(ConfigError) as info:
        loads(server + textwrap.dedent(text), "x.yaml")
    return [str(p) for p in info.value.problems if not p.warning]


def test_example_configuration_loads_without_warnings():
    loaded = load(EXAMPLE)
    assert loaded.warnings == []
    names = [c.identity for c in loaded.organization.receive_connectors]
    assert names[:5] == [
        "EXCH01\\Default Frontend EXCH01",
        "EXCH01\\Client Frontend EXCH01",
        "EXCH01\\Outbound Proxy Frontend EXCH01",
        "EXCH01\\Default EXCH01",
        "EXCH01\\Client Proxy EXCH01",
    ]
    assert "EXCH01\\SMTP Relay (EXCH01)" in names


def test_default_connectors_match_spec_table():
    org = org_from("default_connectors: true\n")
    fe = org.connector("Default Frontend EXCH01")
    assert fe.transport_role is TransportRole.FrontendTransport
    assert {str(b) for b in fe.bindings} == {"[::]:25", "0.0.0.0:25"}
    assert fe.permission_groups == (
        PermissionGroups.AnonymousUsers | PermissionGroups.ExchangeServers | PermissionGroups.ExchangeLegacyServers
    )
    assert fe.auth_mechanism == (
        AuthMechanism.Tls
        | AuthMechanism.BasicAuth
        | AuthMechanism.BasicAuthRequireTLS
        | AuthMechanism.ExchangeServer
        | AuthMechanism.Integrated
    )
    assert (fe.max_message_size, fe.max_header_size, fe.max_recipients_per_message) == (36 << 20, 256 << 10, 200)
    assert (fe.max_hop_count, fe.max_local_hop_count) == (60, 5)
    assert fe.protocol_logging_level == "Verbose"
    hub = org.connector("EXCH01\\Default EXCH01")
    assert hub.max_recipients_per_message == 5000
    assert hub.max_inbound_connection_per_source is None
    assert hub.size_enabled == "EnabledWithoutValue"
    client = org.connector("Client Frontend EXCH01")
    assert (client.message_rate_limit, client.message_rate_source) == (5, "User")
    assert {str(b) for b in org.connector("Client Proxy EXCH01").bindings} == {"[::]:465", "0.0.0.0:465"}


def test_an_entry_named_like_a_default_connector_overrides_it():
    org = org_from("""
        default_connectors: true
        receive_connectors:
          - name: Default Frontend EXCH01
            max_message_size: 50MB
            enabled: $false
    """)
    fe = org.connector("Default Frontend EXCH01")
    assert (fe.max_message_size, fe.enabled) == (50 << 20, False)
    assert fe.permission_groups & PermissionGroups.AnonymousUsers  # the rest is kept


@pytest.mark.parametrize(
    ("usage", "extra", "groups", "auth"),
    [
        (
            "Client",
            "remote_ip_ranges: 10.0.0.0/8",
            PermissionGroups.ExchangeUsers,
            AuthMechanism.Tls | AuthMechanism.Integrated | AuthMechanism.BasicAuth | AuthMechanism.BasicAuthRequireTLS,
        ),
        ("Custom", "bindings: 0.0.0.0:2526\n    remote_ip_ranges: 10.0.0.1", PermissionGroups.NONE, AuthMechanism.Tls),
        (
            "Internal",
            "remote_ip_ranges: 10.0.0.0/8",
            PermissionGroups.ExchangeServers | PermissionGroups.ExchangeLegacyServers,
            AuthMechanism.Tls | AuthMechanism.ExchangeServer,
        ),
        ("Internet", "bindings: 0.0.0.0:2526", PermissionGroups.AnonymousUsers, AuthMechanism.Tls),
        (
            "Partner",
            "bindings: 0.0.0.0:2526\n    remote_ip_ranges: 10.0.0.1",
            PermissionGroups.Partners,
            AuthMechanism.Tls,
        ),
    ],
)
def test_usage_defaults(usage, extra, groups, auth):
    org = org_from(f"""
receive_connectors:
  - name: X
    usage: {usage}
    {extra}
""")
    c = org.connector("X")
    assert (c.usage, c.permission_groups, c.auth_mechanism) == (Usage(usage), groups, auth)
    assert c.fqdn == "exch01.labs.local"
    assert c.transport_role is TransportRole.HubTransport  # Exchange's default without -TransportRole
    if usage == "Client":
        assert [str(b) for b in c.bindings] == ["0.0.0.0:587"]
    if usage == "Internal":
        assert c.size_enabled == "EnabledWithoutValue"
        assert c.max_inbound_connection_percentage_per_source == 100
    if usage == "Partner":
        assert c.domain_secure_enabled is True
    if usage == "Internet":
        assert [str(r) for r in c.remote_ip_ranges] == ["0.0.0.0-255.255.255.255"]


def test_exchange_value_syntax_in_the_file():
    org = org_from("""
        receive_connectors:
          - name: X
            bindings: "0.0.0.0:2526, [::]:2526"
            remote_ip_ranges: "10.0.0.1-10.0.0.9, 192.168.1.0/24, 2001:db8::/48, 172.16.0.0(255.240.0.0)"
            permission_groups: AnonymousUsers, ExchangeUsers
            max_message_size: 36 MB (37,748,736 bytes)
            max_header_size: 128KB
            message_rate_limit: Unlimited
            max_inbound_connection_per_source: unlimited
            connection_timeout: 1.00:00:00
            connection_inactivity_timeout: 00:05:00
            require_ehlo_domain: $true
            permissions:
              - user: NT AUTHORITY\\ANONYMOUS LOGON
                extended_rights: Ms-Exch-SMTP-Accept-Any-Recipient, SMTP-Accept-Any-Sender
              - user: LABS\\Blocked
                extended_rights: [ms-Exch-SMTP-Submit]
                deny: $true
    """)
    c = org.connector("X")
    assert len(c.bindings) == 2 and len(c.remote_ip_ranges) == 4
    assert c.max_message_size == 37748736 and c.max_header_size == 131072
    assert c.message_rate_limit is None and c.max_inbound_connection_per_source is None
    assert c.connection_inactivity_timeout.total_seconds() == 300
    assert c.connection_timeout.total_seconds() == 86400
    assert c.require_ehlo_domain is True
    assert c.permissions[0].rights == Right.SMTPAcceptAnyRecipient | Right.SMTPAcceptAnySender
    assert c.permissions[1].deny is True


def test_accepted_domains():
    org = org_from("""
        accepted_domains:
          - contoso.com
          - domain_name: "*.Fabrikam.com"
            domain_type: InternalRelay
          - domain_name: relay.example
            domain_type: externalrelay
    """)
    assert [(d.domain_name, d.domain_type) for d in org.accepted_domains] == [
        ("contoso.com", AcceptedDomainType.Authoritative),
        ("*.fabrikam.com", AcceptedDomainType.InternalRelay),
        ("relay.example", AcceptedDomainType.ExternalRelay),
    ]
    assert org.accepted_domains[0].address_book_enabled is True
    assert org.accepted_domains[1].address_book_enabled is False


# --- located errors ------------------------------------------------------------------


def test_acceptance_three_located_errors_at_once():
    """Identical ranges on one binding, an unknown key and a bad range: all reported."""
    found = problems("""\
receive_connectors:
  - name: Relay A
    bindings: 0.0.0.0:2526
    remote_ip_ranges: 10.0.0.0/24
    permission_groups: AnonymousUsers
  - name: Relay B
    bindings: 0.0.0.0:2526
    remote_ip_ranges: 10.0.0.0/24
    permission_groups: AnonymousUsers
    max_recipents: 5
  - name: Relay C
    bindings: 0.0.0.0:2527
    remote_ip_ranges: 10.0.0.300
    permission_groups: AnonymousUsers
""")
    assert found == [
        "x.yaml:13:23: Relay B: remote_ip_ranges: identical range 10.0.0.0/24 conflicts with 10.0.0.0/24 "
        "of connector 'Relay A' on binding 0.0.0.0:2526",
        "x.yaml:15:5: Relay B: max_recipents: unknown receive connector property",
        "x.yaml:18:23: Relay C: remote_ip_ranges: '10.0.0.300' is not an IP address",
    ]


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        (
            "receive_connectors:\n  - name: X\n    bindings: 0.0.0.0:2526\n    remote_ip_ranges: 10.0.0.1\n"
            "    auth_mechanism: None, Tls\n",
            "x.yaml:10:21: X: auth_mechanism: None cannot be combined with other values",
        ),
        (
            "receive_connectors:\n  - name: X\n    bindings: 0.0.0.0:2526\n    remote_ip_ranges: 10.0.0.1\n"
            "    auth_mechanism: Tls, BasicAuthRequireTLS\n",
            "x.yaml:10:21: X: auth_mechanism: BasicAuthRequireTLS needs BasicAuth and Tls",
        ),
        (
            "receive_connectors:\n  - name: X\n    bindings: 0.0.0.0:2526\n    remote_ip_ranges: 10.0.0.1\n"
            "    auth_mechanism: ExternalAuthoritative\n",
            "x.yaml:10:21: X: permission_groups: ExternalAuthoritative needs the ExchangeServers group",
        ),
        (
            "receive_connectors:\n  - name: X\n    bindings: 0.0.0.0:2526\n    remote_ip_ranges: 10.0.0.1\n"
            "    auth_mechanism: ExternalAuthoritative, BasicAuth\n    permission_groups: ExchangeServers\n",
            "x.yaml:10:21: X: auth_mechanism: ExternalAuthoritative can only be combined with Tls",
        ),
        (
            "receive_connectors:\n  - name: X\n    bindings: 0.0.0.0:2526\n    remote_ip_ranges: 10.0.0.1\n"
            "    auth_mechanism: None\n    require_tls: $true\n",
            "x.yaml:11:18: X: require_tls: RequireTLS needs Tls in auth_mechanism",
        ),
        (
            "receive_connectors:\n  - name: X\n    bindings: 0.0.0.0:2526\n    remote_ip_ranges: 10.0.0.1\n"
            "    permission_groups: Custom\n",
            "x.yaml:10:24: permission_groups: Custom cannot be set; "
            "it is reported once a permission entry is added by hand",
        ),
        (
            "receive_connectors:\n  - name: X\n    bindings: 10.83.4.56:25\n    remote_ip_ranges: 10.0.0.1\n",
            "x.yaml:8:15: X: bindings: 10.83.4.56 is not an address of this server (server.addresses); "
            "a client's address belongs in remote_ip_ranges",
        ),
        (
            "receive_connectors:\n  - name: X\n    bindings: 0.0.0.0:2526\n    remote_ip_ranges: 10.0.0.1\n"
            "    banner: Welcome\n",
            "x.yaml:10:13: X: banner: a banner must be a 220 reply, e.g. '220 Server EXCH01 SMTP Relay Connector'",
        ),
        (
            "receive_connectors:\n  - name: X\n    bindings: 0.0.0.0:2526\n    remote_ip_ranges: 10.0.0.1\n"
            "    connection_timeout: 00:01:00\n",
            "x.yaml:7:5: X: connection_inactivity_timeout: must not exceed connection_timeout",
        ),
        (
            "receive_connectors:\n  - name: X\n    bindings: 0.0.0.0:2526\n    remote_ip_ranges: 10.0.0.1\n"
            "    max_message_size: unlimited\n",
            "x.yaml:10:23: X: max_message_size: connector byte sizes do not accept 'unlimited'",
        ),
        (
            "receive_connectors:\n  - name: X\n    bindings: 0.0.0.0:2526\n    remote_ip_ranges: 10.0.0.1\n"
            "    max_hop_count: 501\n",
            "x.yaml:10:20: X: max_hop_count: 501 is out of range 1-500",
        ),
        ("receive_connectors:\n  - name: X\n    usage: Custom\n", "x.yaml:7:5: X: bindings: required for usage Custom"),
        (
            "accepted_domains:\n  - domain_name: con*toso.com\n",
            "x.yaml:7:18: accepted_domains.domain_name: 'con*toso.com': a wildcard is only valid as the leading '*.'",
        ),
        (
            "bogus: 1\n",
            "x.yaml:6:1: bogus: unknown key; expected one of server, default_connectors, "
            "accepted_domains, receive_connectors, users, policyd, tls, sasl, send_connectors, mailbox_next_hop, "
            "logs, cluster, milter",
        ),
        (
            "receive_connectors:\n  - name: X\n    bindings: 0.0.0.0:2526\n    remote_ip_ranges: 10.0.0.1\n"
            "    permissions:\n      - user: Somebody\n        extended_rights: ms-Exch-Fly\n",
            "x.yaml:12:26: permissions.extended_rights: 'ms-Exch-Fly' is not a receive-connector extended right",
        ),
    ],
)
def test_located_errors(snippet, expected):
    assert expected in problems(snippet)


def test_yaml_syntax_error_is_located():
    (found,) = problems("receive_connectors: [\n")
    # the wording is libyaml's or PyYAML's; the location is ours
    assert found.startswith("x.yaml:7:1: yaml: ") and "node content" in found


def test_missing_server_is_reported():
    assert problems("accepted_domains: [contoso.com]\n", server="") == [
        "x.yaml:1:1: server: required: name and fqdn of the server exmilter replaces"
    ]


def test_time_spans_are_not_yaml_sexagesimal():
    c = org_from(
        "receive_connectors:\n  - {name: X, bindings: 0.0.0.0:2526, remote_ip_ranges: 10.0.0.1,"
        " tarpit_interval: 00:00:05}\n"
    ).connector("X")
    assert c.tarpit_interval.total_seconds() == 5


# --- Exchange's refusal rules for ranges and roles (spec §2.3, §6) ------------------------


def two(b1: str, r1: str, b2: str, r2: str, role2: str = "FrontendTransport") -> str:
    return f"""
receive_connectors:
  - name: A
    transport_role: FrontendTransport
    bindings: "{b1}"
    remote_ip_ranges: "{r1}"
    permission_groups: AnonymousUsers
  - name: B
    transport_role: {role2}
    bindings: "{b2}"
    remote_ip_ranges: "{r2}"
    permission_groups: AnonymousUsers
"""


#: Exchange's refusal of a role conflict (spec §2.3), quoted after the binding and the other connector.
ROLES = (
    "in another transport role. Receive connectors assigned to different Transport roles on a single server must "
    "listen on unique local IP address & port bindings"
)


# With the server block, A's properties are on lines 8-12 and B's on 13-17; a range conflict is
# reported at the later connector's remote_ip_ranges (16:23), a role conflict at its transport_role
# (14:21). A file that is accepted must say nothing about the two connectors but what is listed.
@pytest.mark.parametrize(
    ("snippet", "errors", "warnings"),
    [
        (  # §6 #15
            two("0.0.0.0:25", "10.0.0.0/8", "0.0.0.0:25", "10.0.0.0/8"),
            [
                "x.yaml:16:23: B: remote_ip_ranges: identical range 10.0.0.0/8 conflicts with 10.0.0.0/8 "
                "of connector 'A' on binding 0.0.0.0:25"
            ],
            [],
        ),
        (two("0.0.0.0:25", "10.0.0.0/8", "10.0.0.5:25", "10.0.0.0/8"), [], []),  # §6 #15 second half
        (  # §6 #16
            two("0.0.0.0:25", "10.0.0.0-10.0.0.200", "0.0.0.0:25", "10.0.0.100-10.0.0.255"),
            [
                "x.yaml:16:23: B: remote_ip_ranges: partially overlapping range 10.0.0.100-10.0.0.255 conflicts "
                "with 10.0.0.0-10.0.0.200 of connector 'A' on binding 0.0.0.0:25"
            ],
            [],
        ),
        (  # through the wildcard: a partial overlap is still refused
            two("0.0.0.0:25", "10.0.0.0-10.0.0.200", "10.0.0.5:25", "10.0.0.100-10.0.0.255"),
            [
                "x.yaml:16:23: B: remote_ip_ranges: partially overlapping range 10.0.0.100-10.0.0.255 conflicts "
                "with 10.0.0.0-10.0.0.200 of connector 'A' on binding 10.0.0.5:25"
            ],
            [],
        ),
        (two("0.0.0.0:25", "10.0.0.0/8", "0.0.0.0:25", "10.1.0.0/16"), [], []),  # nesting is fine
        (two("0.0.0.0:25", "10.0.0.0/8", "0.0.0.0:26", "10.0.0.0/8"), [], []),  # other port
        (  # other family: no conflict, but B's IPv4 range on its IPv6 binding never matches
            two("0.0.0.0:25", "10.0.0.0/8", "[::]:25", "10.0.0.0/8"),
            [],
            [
                "x.yaml:16:23: warning: B: remote_ip_ranges: IPv4 range 10.0.0.0/8 but no IPv4 binding: "
                "the connector never matches"
            ],
        ),
        (
            two("[::]:25", "2001:db8::/32", "[::]:25", "2001:db8::/32"),
            [
                "x.yaml:16:23: B: remote_ip_ranges: identical range 2001:db8::/32 conflicts with 2001:db8::/32 "
                "of connector 'A' on binding [::]:25"
            ],
            [],
        ),
        (  # §6 #8
            two("0.0.0.0:25", "10.0.0.1", "0.0.0.0:25", "10.0.0.2", role2="HubTransport"),
            [f"x.yaml:14:21: B: transport_role: binding 0.0.0.0:25 is also used by 'A' {ROLES}"],
            [],
        ),
        (  # an exact binding inside the other role's wildcard
            two("0.0.0.0:25", "10.0.0.1", "10.0.0.5:25", "10.0.0.2", role2="HubTransport"),
            [f"x.yaml:14:21: B: transport_role: binding 10.0.0.5:25 is also used by 'A' {ROLES}"],
            [],
        ),
        (two("0.0.0.0:25", "10.0.0.1", "0.0.0.0:2525", "10.0.0.2", role2="HubTransport"), [], []),
    ],
)
def test_conflict_rules(snippet, errors, warnings):
    if errors:
        assert problems(snippet) == errors
        return
    loaded = loads(SERVER + snippet, "x.yaml")
    assert [c.name for c in loaded.organization.receive_connectors] == ["A", "B"]
    assert [str(w) for w in loaded.warnings] == [
        "x.yaml:1:1: warning: accepted_domains: no accepted domain: every recipient needs relay rights",
        *warnings,
    ]


def test_role_conflict_message_quotes_exchange():
    found = problems(two("0.0.0.0:25", "10.0.0.1", "0.0.0.0:25", "10.0.0.2", role2="HubTransport"))
    assert len(found) == 1 and found[0].endswith(
        "Receive connectors assigned to different Transport roles on a single server must listen on unique "
        "local IP address & port bindings"
    )


@pytest.mark.parametrize("disabled", [("A",), ("B",), ("A", "B")])
def test_disabled_connectors_still_conflict(disabled):
    """Exchange checks every connector, enabled or not (spec §2.3): the same refusals, at the same places."""
    snippet = two("0.0.0.0:25", "10.0.0.0/8", "0.0.0.0:25", "10.0.0.0/8")
    for name in disabled:  # `enabled: $false` as the first property of the connector
        snippet = snippet.replace(f"  - name: {name}\n", f"  - name: {name}\n    enabled: $false\n")
    # each disabled connector written before B moves B's lines down by one
    line = 16 + len(disabled)
    assert problems(snippet) == [
        f"x.yaml:{line}:23: B: remote_ip_ranges: identical range 10.0.0.0/8 conflicts with 10.0.0.0/8 "
        "of connector 'A' on binding 0.0.0.0:25"
    ]
    roles = two("0.0.0.0:25", "10.0.0.1", "0.0.0.0:25", "10.0.0.2", role2="HubTransport")
    for name in disabled:
        roles = roles.replace(f"  - name: {name}\n", f"  - name: {name}\n    enabled: $false\n")
    assert problems(roles) == [
        f"x.yaml:{line - 2}:21: B: transport_role: binding 0.0.0.0:25 is also used by 'A' {ROLES}"
    ]


def test_custom_connector_without_permissions_warns():
    loaded = loads(
        SERVER + "receive_connectors:\n  - {name: X, bindings: 0.0.0.0:2526, remote_ip_ranges: 10.0.0.1}\n", "x.yaml"
    )
    assert [str(w) for w in loaded.warnings] == [
        "x.yaml:1:1: warning: accepted_domains: no accepted domain: every recipient needs relay rights",
        "x.yaml:7:5: warning: X: permission_groups: no permission group or entry: this connector accepts no mail",
    ]


# The sweep that finds conflicts is compared with the literal pairwise rule.
@st.composite
def range_sets(draw):
    out = []
    for _ in range(draw(st.integers(2, 7))):
        a = draw(st.integers(0, 40))
        b = draw(st.integers(a, 40))
        out.append((draw(st.integers(0, 3)), draw(st.booleans()), a, b))
    return out


@settings(max_examples=200, deadline=None)
@given(range_sets())
def test_conflict_sweep_matches_pairwise_rule(items):
    conns = {}
    for owner, exact, a, b in items:
        conns.setdefault((owner, exact), []).append(f"10.0.0.{a}-10.0.0.{b}")
    text = "receive_connectors:\n"
    for (owner, exact), ranges in conns.items():
        binding = "10.0.0.5:25" if exact else "0.0.0.0:25"
        text += (
            f"  - name: C{owner}{'e' if exact else 'w'}\n    transport_role: FrontendTransport\n"
            f"    bindings: {binding}\n    remote_ip_ranges: [{', '.join(ranges)}]\n"
            f"    permission_groups: AnonymousUsers\n"
        )

    def conflict(x, y):
        (o1, e1, a1, b1), (o2, e2, a2, b2) = x, y
        if (o1, e1) == (o2, e2):
            return False
        overlap = a1 <= b2 and a2 <= b1
        nested = (a1 <= a2 and b2 <= b1) or (a2 <= a1 and b1 <= b2)
        identical = (a1, b1) == (a2, b2)
        partial = overlap and not nested
        return partial or (identical and e1 == e2)

    expected = any(conflict(x, y) for i, x in enumerate(items) for y in items[i + 1 :])
    try:
        loads(SERVER + text)
        refused = False
    except ConfigError:
        refused = True
    assert refused == expected


def test_a_connector_on_an_exact_and_its_wildcard_binding_does_not_conflict_with_itself():
    ranges = "[10.0.0.0-10.0.0.200, 10.0.0.100-10.0.0.255]"
    loaded = loads(
        SERVER
        + "accepted_domains: [contoso.com]\nreceive_connectors:\n  - name: A\n"
        + f"    bindings: [0.0.0.0:25, 10.0.0.5:25]\n    remote_ip_ranges: {ranges}\n"
        + "    permission_groups: AnonymousUsers\n",
        "x.yaml",
    )
    assert loaded.warnings == []
    # the same ranges split over two connectors are refused, at the later one's ranges
    assert problems("""\
receive_connectors:
  - name: A
    bindings: 0.0.0.0:25
    remote_ip_ranges: 10.0.0.0-10.0.0.200
    permission_groups: AnonymousUsers
  - name: B
    bindings: 10.0.0.5:25
    remote_ip_ranges: 10.0.0.100-10.0.0.255
    permission_groups: AnonymousUsers
""") == [
        "x.yaml:13:23: B: remote_ip_ranges: partially overlapping range 10.0.0.100-10.0.0.255 conflicts with "
        "10.0.0.0-10.0.0.200 of connector 'A' on binding 10.0.0.5:25"
    ]


# --- every problem in one run --------------------------------------------------------------


def test_a_connector_with_bad_values_still_takes_part_in_the_conflict_checks():
    """Bad values are reported, the items that parsed still conflict, and checks on bad values are skipped."""
    assert problems("""\
receive_connectors:
  - name: Relay A
    bindings: 0.0.0.0:2526
    remote_ip_ranges: 10.0.0.0/24
    permission_groups: AnonymousUsers
  - name: Relay B
    bindings: 0.0.0.0:2526
    remote_ip_ranges: [10.0.0.0/24, 10.0.1.300, banana]
    permission_groups: AnonymousUsers
    max_message_size: 10
    auth_mechanism: Tls, Bogus
    require_tls: $true
    usage: Sideways
""") == [
        "x.yaml:13:23: Relay B: remote_ip_ranges: '10.0.1.300' is not an IP address",
        "x.yaml:13:23: Relay B: remote_ip_ranges: 'banana' is not an IP address",
        "x.yaml:13:23: Relay B: remote_ip_ranges: identical range 10.0.0.0/24 conflicts with 10.0.0.0/24 "
        "of connector 'Relay A' on binding 0.0.0.0:2526",
        "x.yaml:15:23: Relay B: max_message_size: 10 bytes is out of range 65,536-2,147,483,647",
        "x.yaml:16:21: Relay B: auth_mechanism: 'Bogus' is not a AuthMechanism value; valid: None, Tls, BasicAuth, "
        "BasicAuthRequireTLS, Integrated, ExchangeServer, ExternalAuthoritative",
        "x.yaml:18:12: usage: 'Sideways' is not one of Client, Custom, Internal, Internet, Partner",
    ]


def test_a_bad_server_section_does_not_stop_the_other_checks():
    found = problems(
        """\
server:
  name: EXCH01
  fqdn: "not a fqdn!"
  addresses: [10.0.0.300]
receive_connectors:
  - name: A
    transport_role: FrontendTransport
    bindings: [0.0.0.0:25, 10.0.0.5:25]
    remote_ip_ranges: 10.0.0.0/8
    permission_groups: AnonymousUsers
  - name: B
    transport_role: FrontendTransport
    bindings: 0.0.0.0:25
    remote_ip_ranges: 10.0.0.0/8
    permission_groups: AnonymousUsers
    max_hop_count: 0
  - name: a
    bindings: 0.0.0.0:26
""",
        server="",
    )
    assert found == [
        "x.yaml:3:9: server.fqdn: 'not a fqdn!' is not a valid FQDN",
        "x.yaml:4:14: server.addresses: '10.0.0.300' is not an IP address",
        "x.yaml:14:23: B: remote_ip_ranges: identical range 10.0.0.0/8 conflicts with 10.0.0.0/8 "
        "of connector 'A' on binding 0.0.0.0:25",
        "x.yaml:16:20: B: max_hop_count: 0 is out of range 1-500",
        "x.yaml:17:11: name: a connector named 'a' is already defined on EXCH01",
    ]  # 10.0.0.5:25 is not checked against server.addresses, which did not parse


def test_a_missing_server_does_not_stop_the_connector_checks():
    assert problems(
        """\
receive_connectors:
  - {name: A, bindings: 0.0.0.0:25, remote_ip_ranges: 10.0.0.1, permission_groups: AnonymousUsers}
  - {name: A, bindings: 0.0.0.0:25, remote_ip_ranges: 10.0.0.1, permission_groups: AnonymousUsers}
  - {name: B, bindings: 0.0.0.0:25, remote_ip_ranges: 10.0.0.1, max_hop_count: 0}
""",
        server="",
    ) == [
        "x.yaml:1:1: server: required: name and fqdn of the server exmilter replaces",
        "x.yaml:3:12: name: a connector named 'A' is already defined on this server",
        "x.yaml:4:55: B: remote_ip_ranges: identical range 10.0.0.1 conflicts with 10.0.0.1 "
        "of connector 'A' on binding 0.0.0.0:25",
        "x.yaml:4:80: B: max_hop_count: 0 is out of range 1-500",
    ]


def test_ranges_of_a_family_no_binding_has_warn_per_family():
    loaded = loads(
        SERVER
        + textwrap.dedent("""\
            accepted_domains: [contoso.com]
            receive_connectors:
              - name: M
                bindings: 0.0.0.0:2526
                remote_ip_ranges: [192.168.1.13, "2001:db8:1::/48", "2001:db8:2::1"]
                permission_groups: AnonymousUsers
              - name: N
                bindings: 0.0.0.0:2527
                remote_ip_ranges: ["2001:db8:1::/48"]
                permission_groups: AnonymousUsers
              - name: O
                bindings: [0.0.0.0:2528, "[::]:2528"]
                remote_ip_ranges: [192.168.1.13, "2001:db8:1::/48"]
                permission_groups: AnonymousUsers
              - name: P
                bindings: ["[::]:2529"]
                remote_ip_ranges: [10.0.0.1, 10.0.0.2, 10.0.0.3, 10.0.0.4, "::1"]
                permission_groups: AnonymousUsers
        """),
        "x.yaml",
    )
    assert [str(w) for w in loaded.warnings] == [
        "x.yaml:10:23: warning: M: remote_ip_ranges: IPv6 ranges 2001:db8:1::/48, 2001:db8:2::1 but no IPv6 "
        "binding: they never match",
        "x.yaml:14:23: warning: N: remote_ip_ranges: IPv6 range 2001:db8:1::/48 but no IPv6 binding: "
        "the connector never matches",
        "x.yaml:22:23: warning: P: remote_ip_ranges: IPv4 ranges 10.0.0.1, 10.0.0.2, 10.0.0.3 and 1 more but no "
        "IPv4 binding: they never match",
    ]


# --- any input ends as a located ConfigError (issue #10 item 3) ---------------------------------

#: SERVER's line 3 is '  fqdn: exch01.labs.local'; characters go in at column 10 (in the value)
#: or in a comment line of their own (line 6).
UNREADABLE = [
    ("\x00", "control character U+0000 (NUL): not allowed in YAML, not even in a comment; delete it"),
    ("\x01", "control character U+0001: not allowed in YAML, not even in a comment; delete it"),
    ("\x1b", "control character U+001B (ESC): not allowed in YAML, not even in a comment; delete it"),
    ("\x7f", "control character U+007F (DEL): not allowed in YAML, not even in a comment; delete it"),
    ("\x9f", "control character U+009F: not allowed in YAML, not even in a comment; delete it"),
    ("\x85", "control character U+0085 (NEL): YAML reads it as a line break where editors do not; "
             "write a plain newline"),
    ("\u2028", "LINE SEPARATOR U+2028: YAML reads it as a line break where editors do not; write a plain newline"),
    ("\ufeff", "byte order mark U+FEFF after the start of the file (files joined with cat?): delete it"),
    ("\ud800", "lone surrogate U+D800 (text decoded with the wrong codec?): not a character, delete it"),
    ("\ufffe", "noncharacter U+FFFE: not allowed in YAML; delete it"),
]  # fmt: skip


@pytest.mark.parametrize(("char", "message"), UNREADABLE)
def test_an_unreadable_character_in_a_value_is_a_located_error(char, message):
    text = SERVER.replace("fqdn: exch01", f"fqdn: {char}exch01")
    with pytest.raises(ConfigError) as info:
        loads(text, "x.yaml")
    assert [str(p) for p in info.value.problems] == [f"x.yaml:3:9: yaml: {message}"]


@pytest.mark.parametrize(("char", "message"), UNREADABLE)
def test_an_unreadable_character_in_a_comment_is_a_located_error(char, message):
    with pytest.raises(ConfigError) as info:
        loads(SERVER + f"# accepted domains: labs.local {char}and more\naccepted_domains: [labs.local]\n", "x.yaml")
    assert [str(p) for p in info.value.problems] == [f"x.yaml:6:32: yaml: {message}"]


def test_a_byte_order_mark_is_fine_at_the_start_only():
    assert loads("\ufeff" + SERVER + "accepted_domains: [labs.local]\n").warnings == []
    twice = "\ufeff" + SERVER + "accepted_domains: [labs.local]\n"
    with pytest.raises(ConfigError) as info:
        loads(twice + twice, "x.yaml")  # cat a.yaml b.yaml
    assert [str(p) for p in info.value.problems] == [
        "x.yaml:7:1: yaml: byte order mark U+FEFF after the start of the file (files joined with cat?): delete it"
    ]


def test_many_unreadable_characters_are_counted_after_the_first_twenty():
    with pytest.raises(ConfigError) as info:
        loads(SERVER + "# " + "\x00" * 500 + "\n", "x.yaml")
    found = [str(p) for p in info.value.problems]
    assert len(found) == 21
    assert found[0] == (
        "x.yaml:6:3: yaml: control character U+0000 (NUL): not allowed in YAML, not even in a comment; delete it"
    )
    assert found[-1] == "x.yaml:6:23: yaml: 480 more such characters from here on"


def test_invalid_utf8_is_located(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_bytes(SERVER.encode().replace(b"exch01.labs", b"exch\xc3\xa901.l\xffabs"))
    with pytest.raises(ConfigError) as info:
        load(path)
    assert [str(p) for p in info.value.problems] == [
        f"{path}:3:18: file: not UTF-8 text: invalid start byte (bytes FF)"  # characters, not bytes: é is one
    ]


def test_crlf_and_cr_files_are_located_as_editors_count_lines():
    text = (SERVER + "accepted_domains: [labs.local]\nbogus: 1\n").replace("\n", "\r\n")
    assert problems(text.replace("\r\n", "\r"), server="") == [
        "x.yaml:7:1: bogus: unknown key; expected one of "
        "server, default_connectors, accepted_domains, "
        "receive_connectors, users, policyd, tls, sasl, send_connectors, mailbox_next_hop, logs, cluster, milter"
    ]
    assert problems(text, server="") == problems(text.replace("\r\n", "\n"), server="")


@pytest.mark.parametrize(
    "nested",
    [
        "[" * 10_000,
        "[" * 100 + "]" * 100,
        "{a: " * 10_000,
        "\n" + "- " * 10_000,
        "\n" + "".join("  " * i + "k:\n" for i in range(1, 200)),
    ],
)
def test_deep_nesting_is_a_located_error_not_a_recursion_error(nested):
    with pytest.raises(ConfigError) as info:
        loads(SERVER + "accepted_domains: " + nested, "x.yaml")
    (found,) = info.value.problems
    assert (found.file, found.key) == ("x.yaml", "yaml")
    assert found.line >= 6
    assert found.message in ("lists and mappings nested deeper than 64 levels", "exceeded maximum nesting depth")


def test_nesting_up_to_the_limit_loads():
    from exmilter.limits import CONFIG_MAX_DEPTH as MAX_DEPTH

    # the top mapping, `users` and the user take three levels; the rest is lists in lists
    def users(depth: int) -> str:
        return "users:\n  - name: u\n    member_of: " + "[" * depth + "g" + "]" * depth + "\n"

    assert org_from(users(MAX_DEPTH - 3)).users[0].member_of == ("g",)
    # the 62nd [ of line 8 is the 65th level
    assert problems(users(MAX_DEPTH - 2)) == ["x.yaml:8:77: yaml: lists and mappings nested deeper than 64 levels"]


def test_an_alias_bomb_is_refused_where_it_crosses_the_limit():
    lines = ["anchors:", "  l0: &l0 [10.0.0.1, 10.0.0.1, 10.0.0.1, 10.0.0.1, 10.0.0.1, 10.0.0.1, 10.0.0.1, 10.0.0.1]"]
    lines += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 8)}]" for i in range(1, 9)]
    lines += ["receive_connectors:", "  - {name: R, bindings: 0.0.0.0:25, remote_ip_ranges: *l8}"]
    with pytest.raises(ConfigError) as info:
        loads(SERVER + "\n".join(lines) + "\n", "x.yaml")
    # a level-k list is 1 + 8 × (level k-1) nodes: 9, 73, 585, 4,681, 37,449; with the 42,784 nodes
    # aliased by levels 1-4, the 6th alias of level 5 passes 250,000
    assert [str(p) for p in info.value.problems] == [
        "x.yaml:12:37: yaml: aliases expand to more than 250,000 values (an alias bomb?); "
        "write the values out or alias less"
    ]


def test_aliases_of_empty_lists_count_too():
    lines = ["anchors:", "  e0: &e0 [[], [], [], [], [], [], [], [], [], []]"]
    lines += [f"  e{i}: &e{i} [{', '.join([f'*e{i - 1}'] * 10)}]" for i in range(1, 4)]
    lines += ["users:", "  - {name: u, member_of: *e3}"]
    with pytest.raises(ConfigError) as info:
        loads(SERVER + "\n".join(lines) + "\n", "x.yaml")
    assert "x.yaml:12:26: users.member_of: more than 10,000 items (nested lists and aliases counted as spelt out)" in [
        str(p) for p in info.value.problems
    ]


def test_an_error_in_an_aliased_value_is_located_where_the_alias_is_used():
    found = problems("""\
        receive_connectors:
          - {name: A, bindings: &b 0.0.0.0:25, remote_ip_ranges: &r [10.0.0.0/8], permission_groups: AnonymousUsers}
          - {name: B, bindings: *b, remote_ip_ranges: *r, permission_groups: AnonymousUsers}
    """)
    assert found == [
        "x.yaml:8:47: B: remote_ip_ranges: identical range 10.0.0.0/8 conflicts with 10.0.0.0/8 "
        "of connector 'A' on binding 0.0.0.0:25"
    ]


def ranges_text(n: int, start: int = 0) -> str:
    return ", ".join(f"10.{(start + i) // 250}.{(start + i) % 250}.1" for i in range(n))


def test_more_range_entries_than_exchange_takes_are_refused():
    from exmilter.config.validation import MAX_RANGE_ENTRIES
    from exmilter.limits import CONFIG_MAX_RANGE_ENTRIES_REFUSED as MAX_RANGE_ENTRIES_REFUSED

    assert (MAX_RANGE_ENTRIES, MAX_RANGE_ENTRIES_REFUSED) == (1200, 1300)
    base = "accepted_domains: [labs.local]\nreceive_connectors:\n  - name: R\n    bindings: 0.0.0.0:2526\n"
    many = SERVER + base + f"    permission_groups: AnonymousUsers\n    remote_ip_ranges: [{ranges_text(1300)}]\n"
    assert [str(w) for w in loads(many, "x.yaml").warnings] == [
        "x.yaml:11:23: warning: R: remote_ip_ranges: 1,300 entries; Exchange fails above about 1,200: "
        "use ranges or CIDR"
    ]
    assert problems(base + f"    remote_ip_ranges: [{ranges_text(1301)}]\n") == [
        "x.yaml:10:23: R: remote_ip_ranges: 1,301 entries; Exchange fails above about 1,200 and exmilter refuses "
        "more than 1,300: use ranges or CIDR (10.0.0.0/24, 10.0.0.1-10.0.0.99)"
    ]
    assert problems(base + f"    remote_ip_ranges: [{ranges_text(10_001)}]\n") == [
        "x.yaml:10:23: R: remote_ip_ranges: more than 10,000 entries; Exchange fails above about 1,200 and exmilter "
        "refuses more than 1,300: use ranges or CIDR (10.0.0.0/24, 10.0.0.1-10.0.0.99)"
    ]


def test_binding_range_registrations_are_bounded():
    bindings = ", ".join(f"0.0.0.0:{port}" for port in range(2000, 2401))  # 401 × 1,250 > 500,000
    found = problems(f"""\
        receive_connectors:
          - name: R
            bindings: [{bindings}]
            remote_ip_ranges: [{ranges_text(1250)}]
            permission_groups: AnonymousUsers
    """)
    assert found == [
        "x.yaml:8:15: R: bindings: more than 500,000 (binding, range) pairs in all: each range counts once on every "
        "binding of its family; use fewer bindings or wider ranges (range conflicts not checked)"
    ]


def test_conflict_reports_stop_after_the_limit():
    connectors = "".join(
        f"  - {{name: C{i:02d}, bindings: 0.0.0.0:2526, remote_ip_ranges: 10.0.0.0/8, "
        "permission_groups: AnonymousUsers}\n"
        for i in range(50)
    )
    found = problems("receive_connectors:\n" + connectors)
    assert len(found) == 1001  # 1,225 pairs conflict
    assert (
        sum(
            "more than 1,000 pairs of connectors have conflicting ranges; only the first are reported" in f
            for f in found
        )
        == 1
    )


def test_the_loader_raises_only_config_error(monkeypatch):
    """A bug in a check must refuse the file, located, not crash a daemon's reload."""
    import exmilter.config.loader

    def broken(*args, **kwargs):
        raise KeyError("oops")

    monkeypatch.setattr(exmilter.config.loader, "validate", broken)
    with pytest.raises(ConfigError) as info:
        loads(SERVER, "x.yaml")
    assert [str(p) for p in info.value.problems] == [
        "x.yaml:1:1: internal: internal error while reading this file (KeyError: 'oops'); please report it"
    ]


# --- range conflicts in O(n log n) (issue #10 item 5) --------------------------------------------


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Abort the block with TimeoutError after ``seconds``: a quadratic check fails instead of running on."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Out:
    """The loader's collector as validation sees it, keeping ``key: message`` of each error."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def error(self, at, key, message):
        self.found.append(f"{key}: {message}")

    def warn(self, at, key, message, kind=""):
        pass


def test_conflict_checks_do_not_compare_every_pair():
    """20,000 identical and 20,000 nested ranges on two connectors: the old sweep read O(n²) range ends.

    Counting reads of ``IPRange.first``/``last`` instead of timing keeps the test exact.
    """
    import dataclasses

    from exmilter.config.conflicts import check_conflicts
    from exmilter.values import IPRange

    reads = [0]

    class Counted(IPRange):
        __slots__ = ()

        @property  # type: ignore[override]
        def first(self) -> int:
            reads[0] += 1
            return IPRange.first.__get__(self)  # type: ignore[attr-defined]

        @first.setter
        def first(self, value: int) -> None:
            IPRange.first.__set__(self, value)  # type: ignore[attr-defined]

        @property  # type: ignore[override]
        def last(self) -> int:
            reads[0] += 1
            return IPRange.last.__get__(self)  # type: ignore[attr-defined]

        @last.setter
        def last(self, value: int) -> None:
            IPRange.last.__set__(self, value)  # type: ignore[attr-defined]

    org = org_from(two("0.0.0.0:25", "10.0.0.1", "0.0.0.0:25", "10.0.0.2"))
    n = 20_000
    shapes = {
        "identical": ([Counted(4, 10 << 24, (11 << 24) - 1)] * n, [Counted(4, 10 << 24, (11 << 24) - 1)] * n),
        "nested": (
            [Counted(4, i, 10**8 - i) for i in range(0, 2 * n, 2)],
            [Counted(4, i, 10**8 - i) for i in range(1, 2 * n, 2)],
        ),
    }
    for shape, (ra, rb) in shapes.items():
        a, b = (
            dataclasses.replace(c, remote_ip_ranges=tuple(r))
            for c, r in zip(org.receive_connectors, (ra, rb), strict=True)
        )
        out = Out()
        reads[0] = 0
        with deadline(60):  # ~0.2 s; the old sweep would take minutes
            check_conflicts((a, b), {}, out)
        found = out.found
        assert reads[0] < 20 * 2 * n, shape  # each range read a few times; the old sweep: ~n² / 2
        expected = {
            "identical": [
                "B: remote_ip_ranges: identical range 10.0.0.0/8 conflicts with 10.0.0.0/8 "
                "of connector 'A' on binding 0.0.0.0:25"
            ],
            "nested": [],
        }[shape]
        assert found == expected


def test_an_aliased_file_of_many_identical_ranges_validates_quickly():
    """Like the 2.8 KB file that took 71 s to reload: 20 connectors aliasing 1,300 identical ranges."""
    text = "receive_connectors:\n  - {name: C0, bindings: &b [0.0.0.0:25], remote_ip_ranges: &r ["
    text += ", ".join(["10.0.0.0/8"] * 1300) + "], permission_groups: AnonymousUsers}\n"
    text += "".join(
        f"  - {{name: C{i}, bindings: *b, remote_ip_ranges: *r, permission_groups: AnonymousUsers}}\n"
        for i in range(1, 20)
    )

    with deadline(20):  # takes ~0.3 s; the old sweep needs minutes
        found = problems(text)
    assert len([f for f in found if "identical range 10.0.0.0/8 conflicts with" in f]) == 20 * 19 // 2


@st.composite
def owned_ranges(draw):
    """Up to 30 (owner, first, last, on the wildcard side) over 0-20: many identical, nested and crossing."""
    rnd = random.Random(draw(st.integers(0, 2**32)))  # drawing each number through hypothesis costs 20×
    out = []
    for _ in range(rnd.randint(1, 30)):
        a = rnd.randint(0, 20)
        out.append((rnd.randint(0, 4), a, rnd.randint(a, 20), rnd.random() < 0.5))
    return out


@settings(max_examples=400, deadline=None)
@given(owned_ranges())
def test_sweep_finds_every_conflicting_pair_of_owners_once(items):
    """sweep against the literal rule, one binding and exact-vs-wildcard, pair by pair."""
    from exmilter.config.conflicts import sweep
    from exmilter.values import IPRange

    def partial(x, y):
        return (
            x[1] <= y[2]
            and y[1] <= x[2]
            and not (x[1] <= y[1] and y[2] <= x[2])
            and not (y[1] <= x[1] and x[2] <= y[2])
        )

    ranges = [IPRange(4, a, b) for _, a, b, _ in items]
    owners = [o for o, _, _, _ in items]
    met: list[tuple[int, int, bool]] = []

    def conflict(i, j, r1, r2, same):
        assert i != j
        kind = (r1.first, r1.last) == (r2.first, r2.last)
        assert same == kind or not same
        met.append((min(i, j), max(i, j), same))

    sweep(ranges, owners, conflict)
    expected = {
        (min(x[0], y[0]), max(x[0], y[0]))
        for k, x in enumerate(items)
        for y in items[k + 1 :]
        if x[0] != y[0] and (x[1:3] == y[1:3] or partial(x, y))
    }
    assert {(i, j) for i, j, _ in met} == expected
    # each range meets each other owner at most once per kind of conflict
    assert len(met) <= 2 * len(items) * 5

    # exact binding (side False) against its wildcard (side True): partial overlaps across sides only
    exact = [x for x in items if not x[3]]
    wild = [x for x in items if x[3]]
    met.clear()
    sweep(
        [IPRange(4, a, b) for _, a, b, _ in exact + wild],
        [o for o, _, _, _ in exact + wild],
        conflict,
        wild_from=len(exact),
    )
    expected = {(min(x[0], y[0]), max(x[0], y[0])) for x in exact for y in wild if x[0] != y[0] and partial(x, y)}
    assert {(i, j) for i, j, _ in met} == expected
    assert not any(same for _, _, same in met)


# --- open relays: Exchange accepts them, exmilter says so (issue #10 item 11, spec §6 #2, #3) --------

ANON_RELAY = """
    permissions:
      - user: NT AUTHORITY\\ANONYMOUS LOGON
        extended_rights: [ms-Exch-SMTP-Accept-Any-Recipient]"""


def relay(ranges: str, bindings: str = "0.0.0.0:2526", extra: str = ANON_RELAY, name: str = "Relay") -> str:
    return f"""
accepted_domains: [labs.local]
receive_connectors:
  - name: {name}
    transport_role: FrontendTransport
    bindings: [{bindings}]
    remote_ip_ranges: [{ranges}]
    permission_groups: AnonymousUsers{extra}
"""


EXTERNAL_AUTH = "\n    auth_mechanism: Tls, ExternalAuthoritative\n    permission_groups: ExchangeServers"
ANYONE = "anyone can relay mail through this connector to any domain without logging in"
LIMIT = "limit remote_ip_ranges to the hosts that must relay, or remove this entry (Remove-ADPermission)"
EXTERNAL = (
    "ExternalAuthoritative makes every client an Externally Secured Server, which may relay to any domain and skips "
    "size limits and antispam, {where}: anyone can relay mail through this connector; use ExternalAuthoritative only "
    "on a connector whose remote_ip_ranges are limited to hosts you control"
)

# (snippet, a client that gets the connector, local port, the warnings)
OPEN_RELAYS = {
    "Default Frontend (spec §6 #3)": (
        """
accepted_domains: [labs.local]
default_connectors: true
receive_connectors:
  - name: Default Frontend EXCH01
    permissions:
      - {user: ANONYMOUS LOGON, extended_rights: ms-Exch-SMTP-Submit}
      - {user: S-1-5-7, extended_rights: ms-Exch-SMTP-Accept-Any-Recipient}
""",
        "8.8.8.8",
        25,
        [
            "x.yaml:13:9: warning: open relay: Default Frontend EXCH01: permissions: ANONYMOUS LOGON holds "
            "ms-Exch-SMTP-Accept-Any-Recipient on Default Frontend, the connector of every client no other connector "
            "matches: anyone can relay mail through this connector to any domain without logging in; remove this "
            "entry (Remove-ADPermission) and grant the right on a relay connector of its own, limited to the hosts "
            "that must relay"
        ],
    ),
    "every IPv4 address": (
        relay("0.0.0.0-255.255.255.255"),
        "8.8.8.8",
        2526,
        [
            "x.yaml:15:9: warning: open relay: Relay: permissions: ANONYMOUS LOGON holds "
            f"ms-Exch-SMTP-Accept-Any-Recipient and remote_ip_ranges cover every IPv4 address: {ANYONE}; {LIMIT}"
        ],
    ),
    "every IPv4 address in two halves": (
        relay("128.0.0.0/1, 0.0.0.0/1"),
        "1.2.3.4",
        2526,
        [
            "x.yaml:15:9: warning: open relay: Relay: permissions: ANONYMOUS LOGON holds "
            f"ms-Exch-SMTP-Accept-Any-Recipient and remote_ip_ranges cover every IPv4 address: {ANYONE}; {LIMIT}"
        ],
    ),
    "every IPv6 address": (
        relay('"::/0"', '"[::]:2526"'),
        "2001:4860::8888",
        2526,
        [
            "x.yaml:15:9: warning: open relay: Relay: permissions: ANONYMOUS LOGON holds "
            f"ms-Exch-SMTP-Accept-Any-Recipient and remote_ip_ranges cover every IPv6 address: {ANYONE}; {LIMIT}"
        ],
    ),
    "a public range": (
        relay("10.83.4.56, 203.0.114.0/24"),
        "203.0.114.9",
        2526,
        [
            "x.yaml:15:9: warning: open relay: Relay: permissions: ANONYMOUS LOGON holds "
            "ms-Exch-SMTP-Accept-Any-Recipient and remote_ip_ranges include public IPv4 addresses (203.0.114.0/24): "
            f"{ANYONE}; {LIMIT}"
        ],
    ),
    "a wide subnet (spec §6 #2)": (
        relay('10.0.0.0/7, "2001:db8::/31"', '0.0.0.0:2526, "[::]:2526"'),
        "11.1.2.3",
        2526,
        [
            "x.yaml:15:9: warning: open relay: Relay: permissions: ANONYMOUS LOGON holds "
            "ms-Exch-SMTP-Accept-Any-Recipient and remote_ip_ranges include public IPv4 addresses (11.0.0.0/8 of "
            "10.0.0.0/7) and include public IPv6 addresses (2001:db9::/32 of 2001:db8::/31): "
            f"{ANYONE}; {LIMIT}"
        ],
    ),
    "Internet usage: every IPv4 address by default": (
        """
accepted_domains: [labs.local]
receive_connectors:
  - name: Internet
    usage: Internet
    bindings: 0.0.0.0:2526
    permissions: [{user: ANONYMOUS LOGON, extended_rights: ms-Exch-SMTP-Accept-Any-Recipient}]
""",
        "8.8.8.8",
        2526,
        [
            "x.yaml:12:19: warning: open relay: Internet: permissions: ANONYMOUS LOGON holds "
            f"ms-Exch-SMTP-Accept-Any-Recipient and remote_ip_ranges cover every IPv4 address: {ANYONE}; {LIMIT}"
        ],
    ),
    "ExternalAuthoritative on public addresses (spec §6 #5b)": (
        relay("8.8.8.0/24", extra=EXTERNAL_AUTH).replace("    permission_groups: AnonymousUsers\n", ""),
        "8.8.8.8",
        2526,
        [
            "x.yaml:13:21: warning: open relay: Relay: auth_mechanism: "
            + EXTERNAL.format(where="and remote_ip_ranges include public IPv4 addresses (8.8.8.0/24)")
        ],
    ),
    "ExternalAuthoritative on Default Frontend": (
        """
accepted_domains: [labs.local]
default_connectors: true
receive_connectors:
  - name: Default Frontend EXCH01
    auth_mechanism: Tls, ExternalAuthoritative
""",
        "10.9.9.9",
        25,
        [
            "x.yaml:11:21: warning: open relay: Default Frontend EXCH01: auth_mechanism: "
            + EXTERNAL.format(where="on Default Frontend, the connector of every client no other connector matches")
        ],
    ),
}

NOT_OPEN = {
    "private ranges only": relay(
        '10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, 127.0.0.0/8, "fd00::/8", "fe80::/10"',
        '0.0.0.0:2526, "[::]:2526"',
    ),
    "documentation ranges": relay(
        '192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, "2001:db8::/32"', '0.0.0.0:2526, "[::]:2526"'
    ),
    "a Deny entry wins": relay(
        "0.0.0.0/0",
        extra=ANON_RELAY + "\n      - {user: ANONYMOUS LOGON, extended_rights: "
        "ms-Exch-SMTP-Accept-Any-Recipient, deny: $true}",
    ),
    "disabled": relay("0.0.0.0/0", extra=ANON_RELAY + "\n    enabled: $false"),
    "IPv6 ranges without an IPv6 binding never match": relay('10.0.0.1, "::/0"'),
    "Everyone does not include anonymous sessions": relay(
        "0.0.0.0/0", extra="\n    permissions: [{user: Everyone, extended_rights: ms-Exch-SMTP-Accept-Any-Recipient}]"
    ),
    "relay after login": relay("0.0.0.0/0", extra="\n    permission_groups: ExchangeUsers").replace(
        "    permission_groups: AnonymousUsers\n", ""
    ),
    "the stock Default Frontend": "accepted_domains: [labs.local]\ndefault_connectors: true\n",
    "ExternalAuthoritative on private addresses": relay("10.83.5.0/24", extra=EXTERNAL_AUTH).replace(
        "    permission_groups: AnonymousUsers\n", ""
    ),
}


@pytest.mark.parametrize(("snippet", "client", "port", "expected"), OPEN_RELAYS.values(), ids=list(OPEN_RELAYS))
def test_open_relays_load_relay_and_warn_where_granted(snippet, client, port, expected):
    from exmilter.explain import explain

    loaded = loads(SERVER + snippet, "x.yaml")
    assert [str(w) for w in loaded.open_relays] == expected
    assert [str(w) for w in loaded.warnings if w.kind] == expected
    # Exchange's behaviour is kept: the configuration relays as written
    result = explain(
        loaded.organization, client_ip=client, port=port, mail_from="a@labs.local", rcpt_to=["x@gmail.com"]
    )
    assert result["replies"][2] == {
        "stage": "RCPT",
        "reply": "250 2.1.5 Recipient OK",
        "code": 250,
        "recipient": "x@gmail.com",
    }


@pytest.mark.parametrize("snippet", NOT_OPEN.values(), ids=list(NOT_OPEN))
def test_what_is_not_an_open_relay_does_not_warn(snippet):
    assert loads(SERVER + snippet, "x.yaml").open_relays == []


def test_open_relays_as_typed_values():
    from exmilter.config import OpenRelay, open_relays

    org = loads(SERVER + OPEN_RELAYS["a wide subnet (spec §6 #2)"][0]).organization
    assert open_relays(org) == [
        OpenRelay(
            connector="Relay",
            principal="NT AUTHORITY\\ANONYMOUS LOGON",
            granted_by="permissions",
            entry=0,
            default_frontend=False,
            reach=(
                "include public IPv4 addresses (11.0.0.0/8 of 10.0.0.0/7)",
                "include public IPv6 addresses (2001:db9::/32 of 2001:db8::/31)",
            ),
        )
    ]


def test_open_relay_warnings_come_with_the_errors_of_a_refused_file():
    """import-exchange and check both see them, even when something else is wrong."""
    from exmilter.config import OPEN_RELAY

    with pytest.raises(ConfigError) as info:
        loads(SERVER + relay("0.0.0.0/0", extra=ANON_RELAY + "\n    max_hop_count: 0"), "x.yaml")
    assert [(p.warning, p.kind) for p in info.value.problems] == [(True, OPEN_RELAY), (False, "")]
