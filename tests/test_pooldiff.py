"""``exmilter diff``: two servers of a pool compared connector by connector (issue #17)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from exmilter.config import CONNECTOR_FIELDS, loads
from exmilter.importer.parameters import EXCHANGE_NAME
from exmilter.model import ReceiveConnector
from exmilter.pooldiff import compare, exchange_name

DATA = Path(__file__).parent / "data" / "cluster"
EXA, EXB = DATA / "pool-exa.ps1", DATA / "pool-exb.ps1"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exmilter.cli", *args], capture_output=True, text=True, check=False)


def test_two_runbooks_differing_by_one_range_one_permission_one_connector_report_exactly_those_three():
    proc = run("diff", str(EXA), str(EXB))
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.splitlines() == [
        "Receive connector 'EXA\\Anon Relay EXA' / 'EXB\\Anon Relay EXB': RemoteIPRanges: only in A: 192.168.0.31",
        "Receive connector 'EXA\\Anon Relay EXA' / 'EXB\\Anon Relay EXB': ADPermission: only in B: "
        "-User 'NT AUTHORITY\\ANONYMOUS LOGON' -ExtendedRights ms-Exch-SMTP-Accept-Any-Sender",
        "Receive connector 'EXA\\Scanners EXA': exists: A yes / B no",
    ]
    assert proc.stderr.strip().endswith("3 difference(s)")


def test_a_runbook_and_the_configuration_imported_from_it_are_the_same(tmp_path):
    out = tmp_path / "exa.yaml"
    assert run("import-exchange", str(EXA), "-o", str(out)).returncode == 0
    proc = run("diff", str(out), str(EXA))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == ""


POOL = """\
server: {{name: {name}, fqdn: {fqdn}, domain: LABS, addresses: [{addr}]}}
accepted_domains:
  - domain_name: labs.local
receive_connectors:
  - name: Relay {name}
    transport_role: FrontendTransport
    usage: Custom
    bindings: [{addr}:25]
    remote_ip_ranges: [10.0.0.5]
    permission_groups: [AnonymousUsers]
    max_message_size: {size}
"""


def org(name: str, fqdn: str, addr: str, size: str = "10MB"):
    return loads(POOL.format(name=name, fqdn=fqdn, addr=addr, size=size)).organization


def test_per_node_values_are_not_differences():
    """Server name, its FQDN and a binding on its own address are what Exchange keeps per server."""
    a = org("EXA", "exa.labs.local", "192.0.2.10")
    b = org("EXB", "exb.labs.local", "192.0.2.11")
    assert compare(a, b) == []


def test_a_parameter_is_named_and_shown_as_exchange_writes_it():
    a = org("EXA", "exa.labs.local", "192.0.2.10")
    b = org("EXB", "exb.labs.local", "192.0.2.11", size="20MB")
    (d,) = compare(a, b)
    assert (d.what, d.a, d.b) == ("MaxMessageSize", str(10 << 20), str(20 << 20))


@pytest.mark.parametrize("key", sorted(k for k in EXCHANGE_NAME if k in CONNECTOR_FIELDS))
def test_exchange_names_match_the_importers(key):
    assert exchange_name(key) == EXCHANGE_NAME[key]


def test_every_connector_field_is_compared():
    """A field added to ReceiveConnector is compared without a change here (only the per-node ones are not)."""
    names = {exchange_name(f.name) for f in dataclasses.fields(ReceiveConnector)}
    assert {"RemoteIPRanges", "Bindings", "PermissionGroups", "AuthMechanism", "MessageRateLimit"} <= names


def test_an_unreadable_file_is_refused_not_a_traceback(tmp_path):
    proc = run("diff", str(tmp_path / "missing.yaml"), str(EXA))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
