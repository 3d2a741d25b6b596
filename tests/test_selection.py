"""Connector selection (spec §2): worked examples, seeds, IPv6, and a brute-force reference."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exmilter.model import AuthMechanism, PermissionGroups, ReceiveConnector, TransportRole, Usage
from exmilter.selection import ConnectorTable
from exmilter.values import IPRange, parse_binding, parse_ip_range
from tests.conftest import org_from


def connector(name: str, bindings: list[str], ranges: list[str], enabled: bool = True) -> ReceiveConnector:
    return ReceiveConnector(
        name=name,
        server="EXCH01",
        transport_role=TransportRole.FrontendTransport,
        usage=Usage.Custom,
        bindings=tuple(parse_binding(b) for b in bindings),
        remote_ip_ranges=tuple(parse_ip_range(r) for r in ranges),
        auth_mechanism=AuthMechanism.Tls,
        permission_groups=PermissionGroups.AnonymousUsers,
        enabled=enabled,
    )


def chosen(table: ConnectorTable, local: str | None, port: int, remote: str) -> str | None:
    m = table.select(local, port, remote)
    return m.connector.name if m else None


MICROSOFT = ConnectorTable(
    [
        connector("A", ["0.0.0.0:25"], ["0.0.0.0-255.255.255.255"]),
        connector("B", ["0.0.0.0:25"], ["192.168.1.0-192.168.1.255"]),
        connector("C", ["0.0.0.0:25"], ["192.168.1.75"]),
    ]
)


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        ("192.168.1.75", "C"),
        ("192.168.1.100", "B"),
        ("10.0.0.1", "A"),
        ("192.168.1.0", "B"),
        ("192.168.1.255", "B"),
        ("192.168.2.0", "A"),
        ("::ffff:192.168.1.75", "C"),
    ],
)
def test_microsoft_example_most_specific_wins(client, expected):
    assert chosen(MICROSOFT, None, 25, client) == expected
    assert chosen(MICROSOFT, "10.1.1.1", 25, client) == expected  # exact local address, no exact binding


@pytest.mark.parametrize(
    ("connectors", "local", "client", "expected"),
    [
        # tie between exact and wildcard binding: the exact binding wins
        (
            [connector("A", ["0.0.0.0:25"], ["10.0.0.0/8"]), connector("D", ["10.1.1.1:25"], ["10.0.0.0/8"])],
            "10.1.1.1",
            "10.2.3.4",
            "D",
        ),
        # range specificity outranks binding specificity
        (
            [connector("A", ["0.0.0.0:25"], ["10.0.0.0/24"]), connector("D", ["10.1.1.1:25"], ["10.0.0.0/8"])],
            "10.1.1.1",
            "10.0.0.9",
            "A",
        ),
        # the exact binding only applies to its own local address
        (
            [connector("A", ["0.0.0.0:25"], ["10.0.0.0/8"]), connector("D", ["10.1.1.1:25"], ["10.0.0.0/16"])],
            "10.1.1.2",
            "10.0.0.9",
            "A",
        ),
        # a connector with only IPv4 ranges is not registered on its IPv6 binding
        ([connector("A", ["0.0.0.0:25", "[::]:25"], ["0.0.0.0-255.255.255.255"])], None, "2001:db8::1", None),
        ([connector("A", ["0.0.0.0:25"], ["0.0.0.0-255.255.255.255"])], None, "::ffff:192.0.2.1", "A"),
        # IPv6 most specific
        (
            [connector("A", ["[::]:25"], ["::/0"]), connector("B", ["[::]:25"], ["2001:db8::/48"])],
            None,
            "2001:db8::7",
            "B",
        ),
        (
            [connector("A", ["[::]:25"], ["::/0"]), connector("B", ["[::]:25"], ["2001:db8::/48"])],
            None,
            "2001:db9::7",
            "A",
        ),
        # IPv4 ranges on an IPv6-only binding never match IPv4 clients
        ([connector("A", ["[::]:25"], ["10.0.0.0/8", "::/0"])], None, "10.0.0.1", None),
        # disabled connectors are ignored
        (
            [
                connector("A", ["0.0.0.0:25"], ["0.0.0.0/0"]),
                connector("C", ["0.0.0.0:25"], ["10.0.0.1"], enabled=False),
            ],
            None,
            "10.0.0.1",
            "A",
        ),
    ],
)
def test_worked_examples(connectors, local, client, expected):
    assert chosen(ConnectorTable(connectors), local, 25, client) == expected


def test_other_port_has_no_connector():
    table = ConnectorTable([connector("A", ["0.0.0.0:25"], ["0.0.0.0/0"])])
    assert chosen(table, None, 2526, "10.0.0.1") is None


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        ("10.83.4.56", "SMTP Relay (EXCH01)"),
        ("10.83.4.57", "Default Frontend EXCH01"),
        ("192.168.0.30", "Default Frontend EXCH01"),
        ("2001:db8::30", "Default Frontend EXCH01"),
    ],
)
def test_seed_relay_connector_and_fallback(client, expected):
    org = org_from("""
        default_connectors: true
        receive_connectors:
          - name: SMTP Relay (EXCH01)
            transport_role: FrontendTransport
            usage: Custom
            bindings: 0.0.0.0:25
            remote_ip_ranges: 10.83.4.56
            permission_groups: AnonymousUsers
    """)
    assert chosen(ConnectorTable(org.receive_connectors), None, 25, client) == expected


# --- property test against a brute-force reference ---------------------------------


def brute_force(connectors, local, port, remote):
    """Spec §2.1 literally: best range per connector per binding, then the binding rule."""
    r_ip = ipaddress.ip_address(remote)

    def best_on(binding_ip):
        best = None
        for c in connectors:
            if not c.enabled:
                continue
            for b in c.bindings:
                if b.port != port or b.version != r_ip.version or b.address != binding_ip:
                    continue
                sizes = [r.size for r in c.remote_ip_ranges if r_ip in r]
                if sizes and (best is None or min(sizes) < best[0]):
                    best = (min(sizes), c.name)
        return best

    wild = best_on(0)
    exact = best_on(int(ipaddress.ip_address(local))) if local else None
    if exact and wild:
        return wild[1] if wild[0] < exact[0] else exact[1]
    return (exact or wild or (None, None))[1]


#: Per family: the base of a small address space, the exact local address and the two bindings.
FAMILIES = {
    4: (int(ipaddress.IPv4Address("10.0.0.0")), "10.1.1.1", "10.1.1.1:25", "0.0.0.0:25"),
    6: (int(ipaddress.IPv6Address("2001:db8::")), "2001:db8::25", "[2001:db8::25]:25", "[::]:25"),
}
#: Blocks containing all of the small space: nested around every generated block, never partial.
WIDE = {4: ["10.0.0.0/8", "0.0.0.0/0"], 6: ["2001:db8::/32", "::/0"]}
small = st.integers(0, 63)  # a small space makes overlaps and ties likely


@st.composite
def laminar_ranges(draw, version: int):
    """Random CIDR blocks over 64 addresses of one family: nested or disjoint, never partial (as validated)."""
    base = FAMILIES[version][0]
    blocks = set()
    for _ in range(draw(st.integers(0, 6))):
        size = 1 << draw(st.integers(0, 6))
        start = draw(small) // size * size
        blocks.add((base + start, base + start + size - 1))
    ranges = [IPRange(version, a, b) for a, b in sorted(blocks)]
    if draw(st.booleans()):
        ranges.append(parse_ip_range(draw(st.sampled_from(WIDE[version]))))
    return ranges


connector_specs = st.tuples(laminar_ranges(4), laminar_ranges(6), st.booleans(), st.booleans(), st.booleans())


@settings(max_examples=400, deadline=None)
@given(
    st.lists(connector_specs, min_size=1, max_size=6),
    st.sampled_from([4, 6]),
    small,
    st.sampled_from([None, 4, 6]),
)
def test_selection_matches_brute_force(specs, family, host, local_family):
    """IPv4 and IPv6 together: each connector's ranges only count on bindings of their family."""
    connectors = []
    used: set[tuple[int, int, int, bool]] = set()
    for i, (v4, v6, exact, enabled, both_families) in enumerate(specs):
        # a valid file never has identical ranges of two connectors on one binding
        ranges = [r for r in v4 + v6 if (r.version, r.first, r.last, exact) not in used]
        used.update((r.version, r.first, r.last, exact) for r in ranges)
        if not ranges:
            continue
        families = {4, 6} if both_families else {r.version for r in ranges[:1]}
        bindings = [FAMILIES[v][2 if exact else 3] for v in sorted(families)]
        c = dataclasses.replace(connector(f"C{i}", bindings, [], enabled), remote_ip_ranges=tuple(ranges))
        connectors.append(c)
    base, local_ip = FAMILIES[family][0], None
    remote = str(ipaddress.ip_address(base + host))
    if local_family is not None:
        local_ip = FAMILIES[local_family][1]
    table = ConnectorTable(connectors)
    got = chosen(table, local_ip, 25, remote)
    assert got == brute_force(connectors, local_ip, 25, remote)
    if family == 4:  # a dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d (spec §2.1 step 5)
        assert chosen(table, local_ip, 25, f"::ffff:{remote}") == got
