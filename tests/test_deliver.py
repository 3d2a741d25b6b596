"""The sandbox's pipe(8) delivery agent: atomic files, connector lookup, never a lost message."""

from __future__ import annotations

import io
import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exmilter import deliver
from exmilter.deliver import EX_TEMPFAIL, connector_for, read_deliveries
from exmilter.model import (
    AuthMechanism,
    Organization,
    PermissionGroups,
    ReceiveConnector,
    Server,
    TransportRole,
    Usage,
)
from exmilter.postfix.render import plan_listeners
from exmilter.sandbox import selection_table
from exmilter.selection import ConnectorTable
from exmilter.values import parse_binding, parse_ip_range

SELECTION = {"contexts": {"*:25": [[4, 0x7F000038, 0x7F000038, "S\\Relay"], [4, 0, 2**32 - 1, "S\\Default"]]}}


def test_connector_for_picks_the_first_range_holding_the_client() -> None:
    assert connector_for(SELECTION, "*:25", "127.0.0.56") == "S\\Relay"
    assert connector_for(SELECTION, "*:25", "::ffff:127.0.0.57") == "S\\Default"
    assert connector_for(SELECTION, "*:2526", "127.0.0.56") == ""
    assert connector_for(SELECTION, "*:25", "not-an-ip") == ""


def test_one_file_per_message_with_envelope_and_content(tmp_path: Path, monkeypatch) -> None:
    content = b"Subject: hi\n\nbody \xff\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(content)))
    rc = deliver.main(["--dir", str(tmp_path), "--sender=", "--client=127.0.0.9", "--nexthop=*:25",
                       "--queue-id=ABC", "--", "a@x.test", "-b@x.test"])
    assert rc == 0
    [d] = read_deliveries(tmp_path)
    assert (d.sender, d.recipients, d.client, d.content) == ("", ["a@x.test", "-b@x.test"], "127.0.0.9", content)
    assert d.envelope["listener"] == "*:25" and d.envelope["queue_id"] == "ABC"
    assert list((tmp_path / ".tmp").iterdir()) == []


def test_failure_is_a_temporary_error(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-I", deliver.__file__, "--dir", str(tmp_path / "missing"), "--", "a@x"],
                          input=b"x", capture_output=True)
    assert proc.returncode == EX_TEMPFAIL
    assert b"exmilter-deliver:" in proc.stderr
    usage = subprocess.run([sys.executable, "-I", deliver.__file__], input=b"x", capture_output=True)
    assert usage.returncode == EX_TEMPFAIL


# -- deliver.py's selection against exmilter.selection.ConnectorTable ---------------------------
#
# deliver.py runs under the system python3 as the delivery user and cannot import exmilter,
# so it has its own lookup over the table the sandbox writes (exmilter.sandbox.selection_table).
# These tests hold it to the engine's ConnectorTable on the same configuration.

SERVER = Server("EXCH01", "exch01.labs.local", "LABS", ("10.1.1.1", "10.0.0.5", "2001:db8::25"))
BINDINGS = ["0.0.0.0:25", "10.1.1.1:25", "10.0.0.5:25", "[::]:25", "[2001:db8::25]:25", "0.0.0.0:2525", "[::]:2525"]
V4_RANGES = [
    "0.0.0.0-255.255.255.255", "10.0.0.0/8", "10.1.0.0/16", "10.1.1.0/24", "10.1.1.0/25", "10.1.1.128/25",
    "10.1.1.0-10.1.1.9", "10.1.1.5-10.1.1.14", "10.1.1.7", "10.1.1.1", "192.168.1.0/24", "192.168.1.75",
]
V6_RANGES = [
    "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db8::/32", "2001:db8:1::/48", "2001:db8:1::/64",
    "2001:db8:1::-2001:db8:1::ff", "2001:db8:1::80-2001:db8:1::17f", "2001:db8:1::7", "2001:db8::25",
]
#: Range ends, neighbours of ends, and IPv4-mapped forms: where selection changes its mind.
CLIENTS = sorted({
    str(ipaddress.ip_address(n)) if r.version == 4 else str(ipaddress.IPv6Address(n))
    for r in map(parse_ip_range, V4_RANGES + V6_RANGES)
    for n in (r.first - 1, r.first, r.last, r.last + 1)
    if 0 <= n < (1 << (32 if r.version == 4 else 128))
} | {"::ffff:10.1.1.7", "::ffff:192.168.1.75", "::ffff:10.2.3.4", "[10.1.1.1]", "[2001:db8:1::7]"})


def make(name: str, bindings: list[str], ranges: list[str], enabled: bool = True) -> ReceiveConnector:
    return ReceiveConnector(
        name=name, server="EXCH01", transport_role=TransportRole.FrontendTransport, usage=Usage.Custom,
        bindings=tuple(parse_binding(b) for b in bindings), remote_ip_ranges=tuple(parse_ip_range(r) for r in ranges),
        auth_mechanism=AuthMechanism.Tls, permission_groups=PermissionGroups.AnonymousUsers, enabled=enabled,
    )


def both_selections(connectors: list[ReceiveConnector], clients: list[str]) -> list[tuple[str, str, str, str]]:
    """(listener context, client, ConnectorTable's identity, deliver.py's identity) for every pair."""
    org = Organization(SERVER, (), tuple(connectors))
    plans = plan_listeners(org)
    written = json.loads(json.dumps(selection_table(org, plans)))  # as deliver.py reads it back
    table = ConnectorTable(org.receive_connectors)
    out = []
    for plan in plans:
        for client in clients:
            m = table.select(plan.listener.address, plan.listener.port, client.strip("[]"))
            out.append((plan.context, client, m.connector.identity if m else "",
                        connector_for(written, plan.context, client)))
    return out


def assert_same(connectors: list[ReceiveConnector], clients: list[str]) -> None:
    diverged = [row for row in both_selections(connectors, clients) if row[2] != row[3]]
    assert diverged == [], "(listener, client, ConnectorTable, deliver.py):\n" + "\n".join(map(str, diverged))


@pytest.mark.parametrize(
    ("connectors", "context", "client", "expected"),
    [
        # spec §2.2: most specific wins on one binding
        ([make("A", ["0.0.0.0:25"], ["0.0.0.0-255.255.255.255"]), make("B", ["0.0.0.0:25"], ["192.168.1.0/24"]),
          make("C", ["0.0.0.0:25"], ["192.168.1.75"])], "*:25", "192.168.1.75", "C"),
        ([make("A", ["0.0.0.0:25"], ["0.0.0.0-255.255.255.255"]), make("B", ["0.0.0.0:25"], ["192.168.1.0/24"]),
          make("C", ["0.0.0.0:25"], ["192.168.1.75"])], "*:25", "192.168.1.100", "B"),
        ([make("A", ["0.0.0.0:25"], ["0.0.0.0-255.255.255.255"]), make("B", ["0.0.0.0:25"], ["192.168.1.0/24"])],
         "*:25", "::ffff:10.0.0.1", "A"),
        # tie between the exact binding and the wildcard: the exact binding wins
        ([make("A", ["0.0.0.0:25"], ["10.0.0.0/8"]), make("D", ["10.1.1.1:25"], ["10.0.0.0/8"])],
         "10.1.1.1:25", "10.2.3.4", "D"),
        ([make("D", ["10.1.1.1:25"], ["10.0.0.0/8"]), make("A", ["0.0.0.0:25"], ["10.0.0.0/8"])],
         "10.1.1.1:25", "10.2.3.4", "D"),
        # the wildcard only when strictly smaller
        ([make("A", ["0.0.0.0:25"], ["10.0.0.0/24"]), make("D", ["10.1.1.1:25"], ["10.0.0.0/8"])],
         "10.1.1.1:25", "10.0.0.9", "A"),
        # another server address of the port: only the wildcard connectors are behind it
        ([make("A", ["0.0.0.0:25"], ["10.0.0.0/24"]), make("D", ["10.1.1.1:25"], ["10.0.0.0/8"])],
         "10.0.0.5:25", "10.0.0.9", "A"),
        # families never mix; IPv6 most specific wins
        ([make("A", ["0.0.0.0:25", "[::]:25"], ["0.0.0.0-255.255.255.255"])], "*:25", "2001:db8::1", ""),
        ([make("A", ["[::]:25"], ["2001:db8::/32"]), make("B", ["[::]:25"], ["2001:db8:1::/48"])],
         "*:25", "2001:db8:1::9", "B"),
        ([make("A", ["[::]:25"], ["2001:db8::/32"]), make("E", ["[2001:db8::25]:25"], ["2001:db8::/32"])],
         "[2001:db8::25]:25", "2001:db8:ffff::1", "E"),
        # disabled connectors are not there
        ([make("A", ["0.0.0.0:25"], ["10.0.0.0/8"]), make("B", ["0.0.0.0:25"], ["10.1.0.0/16"], enabled=False)],
         "*:25", "10.1.1.1", "A"),
    ],
)
def test_worked_examples_agree(connectors: list[ReceiveConnector], context: str, client: str, expected: str) -> None:
    rows = {(ctx, c): (table, mine) for ctx, c, table, mine in both_selections(connectors, [client])}
    identity = f"EXCH01\\{expected}" if expected else ""
    assert rows[(context, client)] == (identity, identity)


connector_specs = st.lists(
    st.tuples(
        st.lists(st.sampled_from(BINDINGS), min_size=1, max_size=3, unique=True),
        st.lists(st.sampled_from(V4_RANGES + V6_RANGES), min_size=1, max_size=4, unique=True),
        st.sampled_from([True, True, True, False]),  # enabled, mostly
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(specs=connector_specs, extra=st.lists(st.ip_addresses().map(str), max_size=5))
def test_deliver_selection_matches_connector_table(specs: list, extra: list[str]) -> None:
    """Any configuration (ties within a binding included), IPv4 and IPv6, every listener."""
    connectors = [make(f"C{i}", b, r, enabled=e) for i, (b, r, e) in enumerate(specs)]
    assert_same(connectors, CLIENTS + extra)
