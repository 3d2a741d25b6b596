"""The sandbox's pipe(8) delivery agent: atomic files, connector lookup, never a lost message."""

from __future__ import annotations

import ast
import io
import ipaddress
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exmilter.deployment import plan_listeners
from exmilter.engine import Engine
from exmilter.listener import Listener
from exmilter.model import (
    AuthMechanism,
    Organization,
    PermissionGroups,
    ReceiveConnector,
    Server,
    TransportRole,
    Usage,
)
from exmilter.sandbox import deliver, delivery
from exmilter.sandbox.deliver import EX_TEMPFAIL, connector_for, connector_table, read_deliveries
from exmilter.values import parse_binding, parse_ip_range

#: What the sandbox writes for Relay (one host) and Default (everyone) on 0.0.0.0:25.
RECORDS: list[dict[str, Any]] = [
    {"name": "Relay", "server": "S", "bindings": ["0.0.0.0:25"], "ranges": ["127.0.0.56"], "enabled": True},
    {
        "name": "Default",
        "server": "S",
        "bindings": ["0.0.0.0:25"],
        "ranges": ["0.0.0.0-255.255.255.255"],
        "enabled": True,
    },
]


def test_connector_for_picks_the_most_specific_range_holding_the_client() -> None:
    table = connector_table(RECORDS)
    assert connector_for(table, "*:25", "127.0.0.56") == "S\\Relay"
    assert connector_for(table, "*:25", "::ffff:127.0.0.57") == "S\\Default"
    assert connector_for(table, "*:2526", "127.0.0.56") == ""
    assert connector_for(table, "*:25", "not-an-ip") == ""
    assert connector_for(table, "", "127.0.0.56") == ""  # no listener context: no connector, still delivered


def test_one_file_per_message_with_envelope_and_content(tmp_path: Path, monkeypatch) -> None:
    content = b"Subject: hi\n\nbody \xff\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(content)))
    rc = deliver.main(
        [
            "--dir",
            str(tmp_path),
            "--sender=",
            "--client=127.0.0.9",
            "--nexthop=*:25",
            "--queue-id=ABC",
            "--",
            "a@x.test",
            "-b@x.test",
        ]
    )
    assert rc == 0
    [d] = read_deliveries(tmp_path)
    assert (d.sender, d.recipients, d.client, d.content) == ("", ["a@x.test", "-b@x.test"], "127.0.0.9", content)
    assert d.envelope["listener"] == "*:25" and d.envelope["queue_id"] == "ABC"
    assert list((tmp_path / ".tmp").iterdir()) == []


def test_failure_is_a_temporary_error(tmp_path: Path) -> None:
    agent = str(deliver.__file__)
    proc = subprocess.run(
        [sys.executable, "-I", agent, "--dir", str(tmp_path / "missing"), "--", "a@x"], input=b"x", capture_output=True
    )
    assert proc.returncode == EX_TEMPFAIL
    assert b"exmilter-deliver:" in proc.stderr
    usage = subprocess.run([sys.executable, "-I", agent], input=b"x", capture_output=True)
    assert usage.returncode == EX_TEMPFAIL


# -- the agent's connector against the policy daemon's -------------------------------------------
#
# The agent selects with exmilter.selection.ConnectorTable over the connector list the sandbox
# writes (exmilter.sandbox.delivery.connector_records, read back from JSON). These tests hold
# the connector it names to the one the policy daemon's Engine decides on the same
# configuration: the list must keep what selection reads, and its order (ties).

SERVER = Server("EXCH01", "exch01.labs.local", "LABS", ("10.1.1.1", "10.0.0.5", "2001:db8::25"))
BINDINGS = ["0.0.0.0:25", "10.1.1.1:25", "10.0.0.5:25", "[::]:25", "[2001:db8::25]:25", "0.0.0.0:2525", "[::]:2525"]
V4_RANGES = [
    "0.0.0.0-255.255.255.255",
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.1.0/24",
    "10.1.1.0/25",
    "10.1.1.128/25",
    "10.1.1.0-10.1.1.9",
    "10.1.1.5-10.1.1.14",
    "10.1.1.7",
    "10.1.1.1",
    "192.168.1.0/24",
    "192.168.1.75",
    "10.1.1.3/24",
    "10.1.1.0(255.255.255.0)",
]
V6_RANGES = [
    "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "2001:db8::/32",
    "2001:db8:1::/48",
    "2001:db8:1::/64",
    "2001:db8:1::-2001:db8:1::ff",
    "2001:db8:1::80-2001:db8:1::17f",
    "2001:db8:1::7",
    "2001:db8::25",
    "2001:DB8:1::%11",
]
#: Range ends, neighbours of ends, and IPv4-mapped forms: where selection changes its mind.
CLIENTS = sorted(
    {
        str(ipaddress.ip_address(n)) if r.version == 4 else str(ipaddress.IPv6Address(n))
        for r in map(parse_ip_range, V4_RANGES + V6_RANGES)
        for n in (r.first - 1, r.first, r.last, r.last + 1)
        if 0 <= n < (1 << (32 if r.version == 4 else 128))
    }
    | {"::ffff:10.1.1.7", "::ffff:192.168.1.75", "::ffff:10.2.3.4", "[10.1.1.1]", "[2001:db8:1::7]"}
)


def make(name: str, bindings: list[str], ranges: list[str], enabled: bool = True) -> ReceiveConnector:
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


def both_selections(connectors: list[ReceiveConnector], clients: list[str]) -> list[tuple[str, str, str, str]]:
    """(listener context, client, the policy daemon's identity, the agent's identity) for every pair."""
    org = Organization(SERVER, (), tuple(connectors))
    written = json.loads(json.dumps({"connectors": delivery.connector_records(org)}))  # as the agent reads it
    table = connector_table(written["connectors"])
    engine = Engine(org)
    out = []
    for plan in plan_listeners(org):
        lst = Listener.parse(plan.context)  # what the daemon reads from policy_context
        for client in clients:
            decided = engine.select(lst.address, lst.port, client.strip("[]"))  # as open_session does
            out.append(
                (
                    plan.context,
                    client,
                    decided.connector.identity if decided else "",
                    connector_for(table, plan.context, client),
                )
            )
    return out


def assert_same(connectors: list[ReceiveConnector], clients: list[str]) -> None:
    diverged = [row for row in both_selections(connectors, clients) if row[2] != row[3]]
    assert diverged == [], "(listener, client, policy daemon, delivery agent):\n" + "\n".join(map(str, diverged))


@pytest.mark.parametrize(
    ("connectors", "context", "client", "expected"),
    [
        # spec §2.2: most specific wins on one binding
        (
            [
                make("A", ["0.0.0.0:25"], ["0.0.0.0-255.255.255.255"]),
                make("B", ["0.0.0.0:25"], ["192.168.1.0/24"]),
                make("C", ["0.0.0.0:25"], ["192.168.1.75"]),
            ],
            "*:25",
            "192.168.1.75",
            "C",
        ),
        (
            [
                make("A", ["0.0.0.0:25"], ["0.0.0.0-255.255.255.255"]),
                make("B", ["0.0.0.0:25"], ["192.168.1.0/24"]),
                make("C", ["0.0.0.0:25"], ["192.168.1.75"]),
            ],
            "*:25",
            "192.168.1.100",
            "B",
        ),
        (
            [make("A", ["0.0.0.0:25"], ["0.0.0.0-255.255.255.255"]), make("B", ["0.0.0.0:25"], ["192.168.1.0/24"])],
            "*:25",
            "::ffff:10.0.0.1",
            "A",
        ),
        # tie between the exact binding and the wildcard: the exact binding wins
        (
            [make("A", ["0.0.0.0:25"], ["10.0.0.0/8"]), make("D", ["10.1.1.1:25"], ["10.0.0.0/8"])],
            "10.1.1.1:25",
            "10.2.3.4",
            "D",
        ),
        (
            [make("D", ["10.1.1.1:25"], ["10.0.0.0/8"]), make("A", ["0.0.0.0:25"], ["10.0.0.0/8"])],
            "10.1.1.1:25",
            "10.2.3.4",
            "D",
        ),
        # the wildcard only when strictly smaller
        (
            [make("A", ["0.0.0.0:25"], ["10.0.0.0/24"]), make("D", ["10.1.1.1:25"], ["10.0.0.0/8"])],
            "10.1.1.1:25",
            "10.0.0.9",
            "A",
        ),
        # another server address of the port: only the wildcard connectors are behind it
        (
            [make("A", ["0.0.0.0:25"], ["10.0.0.0/24"]), make("D", ["10.1.1.1:25"], ["10.0.0.0/8"])],
            "10.0.0.5:25",
            "10.0.0.9",
            "A",
        ),
        # families never mix; IPv6 most specific wins
        ([make("A", ["0.0.0.0:25", "[::]:25"], ["0.0.0.0-255.255.255.255"])], "*:25", "2001:db8::1", ""),
        (
            [make("A", ["[::]:25"], ["2001:db8::/32"]), make("B", ["[::]:25"], ["2001:db8:1::/48"])],
            "*:25",
            "2001:db8:1::9",
            "B",
        ),
        (
            [make("A", ["[::]:25"], ["2001:db8::/32"]), make("E", ["[2001:db8::25]:25"], ["2001:db8::/32"])],
            "[2001:db8::25]:25",
            "2001:db8:ffff::1",
            "E",
        ),
        # equal ranges on one binding (refused by the loader, possible by hand): the first listed wins
        (
            [make("A", ["0.0.0.0:25"], ["10.0.0.0/8"]), make("B", ["0.0.0.0:25"], ["10.0.0.0/8"])],
            "*:25",
            "10.2.3.4",
            "A",
        ),
        (
            [make("B", ["0.0.0.0:25"], ["10.0.0.0/8"]), make("A", ["0.0.0.0:25"], ["10.0.0.0/8"])],
            "*:25",
            "10.2.3.4",
            "B",
        ),
        (
            [make("A", ["0.0.0.0:25"], ["10.1.1.0/24"]), make("B", ["0.0.0.0:25"], ["10.1.1.0-10.1.1.255"])],
            "*:25",
            "10.1.1.200",
            "A",
        ),
        # disabled connectors are not there
        (
            [make("A", ["0.0.0.0:25"], ["10.0.0.0/8"]), make("B", ["0.0.0.0:25"], ["10.1.0.0/16"], enabled=False)],
            "*:25",
            "10.1.1.1",
            "A",
        ),
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
    """Any configuration (ties within a binding and across bindings included), IPv4 and IPv6,
    every listener."""
    connectors = [make(f"C{i}", b, r, enabled=e) for i, (b, r, e) in enumerate(specs)]
    assert_same(connectors, CLIENTS + extra)


# -- the copy the sandbox installs ----------------------------------------------------------------

SYSTEM_PYTHON = Path("/usr/bin/python3")


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, wherever the import statement is."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module == "exmilter":  # from exmilter import limits
            names.update(f"exmilter.{a.name}" for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_agent_and_its_modules_need_nothing_beyond_the_standard_library(tmp_path: Path) -> None:
    """What the agent imports from exmilter is copied beside it, and those copies import only the
    standard library and each other (typing-only imports aside)."""
    agent = delivery.install_agent(tmp_path / "bin")
    copied = {f"exmilter.{m}" for m in delivery.AGENT_MODULES}
    assert {p.name for p in (tmp_path / "bin" / "exmilter").iterdir()} == {
        "__init__.py",
        *(f"{m}.py" for m in delivery.AGENT_MODULES),
    }
    for path in [agent, *(tmp_path / "bin" / "exmilter").glob("*.py")]:
        outside = {
            m
            for m in imported_modules(path) - copied
            if m.split(".")[0] not in sys.stdlib_module_names and m != "__future__"
        }
        assert outside == set(), f"{path.name} imports {sorted(outside)}, which the delivery user cannot"


@pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="the sandbox runs the agent under /usr/bin/python3")
def test_the_installed_copy_runs_under_the_system_python(tmp_path: Path) -> None:
    """As Postfix's pipe(8) runs it: the system python3, isolated, where exmilter is not installed;
    the connector named is the policy daemon's, a tie broken by the configuration's order."""
    assert subprocess.run([SYSTEM_PYTHON, "-I", "-c", "import exmilter"], capture_output=True).returncode != 0
    org = Organization(
        SERVER,
        (),
        (
            make("First", ["0.0.0.0:25"], ["10.0.0.0/8"]),
            make("Second", ["0.0.0.0:25"], ["10.0.0.0/8"]),
            make("Exact", ["10.1.1.1:25"], ["10.0.0.0/8"]),
            make("Off", ["0.0.0.0:25"], ["10.9.9.9"], enabled=False),
        ),
    )
    agent = delivery.install_agent(tmp_path / "bin")
    delivery.write_connectors(org, tmp_path / "selection.json")
    (tmp_path / "delivered").mkdir()
    engine = Engine(org)
    for context, client in [("*:25", "10.9.9.9"), ("10.1.1.1:25", "::ffff:10.2.3.4"), ("*:25", "192.0.2.1")]:
        proc = subprocess.run(
            [
                SYSTEM_PYTHON,
                "-I",
                agent,
                f"--dir={tmp_path / 'delivered'}",
                f"--selection={tmp_path / 'selection.json'}",
                f"--client={client}",
                f"--nexthop={context}",
                "--queue-id=Q",
                "--",
                "a@x.test",
            ],
            input=b"Subject: x\n\nbody\n",
            capture_output=True,
        )
        assert proc.returncode == 0, proc.stderr
        lst = Listener.parse(context)
        decided = engine.select(lst.address, lst.port, client)
        assert read_deliveries(tmp_path / "delivered")[-1].connector == (decided.connector.identity if decided else "")
    assert [d.connector for d in read_deliveries(tmp_path / "delivered")] == ["EXCH01\\First", "EXCH01\\Exact", ""]
