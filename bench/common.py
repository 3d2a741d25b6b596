"""Shared helpers for the benchmarks: synthetic configurations, free ports, daemons.

Not part of the test suite. Everything here binds to 127.0.0.1 only, and every process
it starts is stopped by PID by the code that started it.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = sys.executable

# The organisation used for the policy and end-to-end runs: the example's relay setup
# (conf/exmilter.yaml) without the listeners it does not need.
BENCH_CONFIG = """\
server:
  name: EXCH01
  fqdn: exch01.labs.local
  domain: LABS
  addresses: [10.83.4.10]
default_connectors: true
accepted_domains:
  - domain_name: labs.local
    domain_type: Authoritative
  - domain_name: exchangelabs.nl
    domain_type: Authoritative
  - domain_name: "*.branch.exchangelabs.nl"
    domain_type: InternalRelay
receive_connectors:
  - name: SMTP Relay (EXCH01)
    transport_role: FrontendTransport
    usage: Custom
    bindings: [0.0.0.0:25]
    remote_ip_ranges: [10.83.4.56, 10.83.4.60-10.83.4.69, 127.0.0.0/8]
    permission_groups: [AnonymousUsers]
    permissions:
      - user: NT AUTHORITY\\ANONYMOUS LOGON
        extended_rights: [ms-Exch-SMTP-Accept-Any-Recipient]
  - name: Scanner Relay (EXCH01)
    transport_role: FrontendTransport
    usage: Custom
    bindings: [0.0.0.0:25]
    remote_ip_ranges: [10.83.5.0/24]
    auth_mechanism: [Tls, ExternalAuthoritative]
    permission_groups: [ExchangeServers]
"""

# The same policy for postfwd1: relay list -> OK, accepted domain -> OK, else 5.7.54.
POSTFWD_RULES = """\
# exmilter bench: the ruleset equivalent to bench/common.py BENCH_CONFIG
id=RELAY ; client_address=10.83.4.56, 10.83.4.60/31, 10.83.4.62/31, 10.83.4.64/30, 10.83.4.68/31, \
    10.83.5.0/24, 127.0.0.0/8 ; action=OK
id=DOMAIN ; recipient_domain=~/(^|\\.)(labs\\.local|exchangelabs\\.nl)$/ ; action=OK
id=DEFAULT ; action=550 5.7.54 SMTP, Unable to relay recipient in non-accepted domain
"""


def synthetic_config(connectors: int, ranges_per_connector: int) -> str:
    """``connectors`` Custom connectors on 0.0.0.0:25 with disjoint remote ranges.

    Exchange refuses partially overlapping ranges on one binding, so range ``i`` is the
    ``i``-th 4-address block of 10.0.0.0/8 (and of 11.0.0.0/8 beyond it), written in the
    three Exchange forms in turn: single address, ``first-last`` and CIDR ``/30``.
    """
    lines = [
        "server:",
        "  name: BENCH01",
        "  fqdn: bench01.labs.local",
        "  domain: LABS",
        "  addresses: [10.255.255.254]",
        "default_connectors: false",
        "accepted_domains:",
        "  - domain_name: labs.local",
        "    domain_type: Authoritative",
        "receive_connectors:",
    ]
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    i = 0
    for c in range(connectors):
        rs = []
        for _ in range(ranges_per_connector):
            first = base + 4 * i
            i += 1
            kind = i % 3
            if kind == 0:
                rs.append(str(ipaddress.IPv4Address(first)))
            elif kind == 1:
                rs.append(f"{ipaddress.IPv4Address(first)}-{ipaddress.IPv4Address(first + 2)}")
            else:
                rs.append(f"{ipaddress.IPv4Address(first)}/30")
        lines += [
            f"  - name: Relay {c:06d}",
            "    usage: Custom",
            "    bindings: [0.0.0.0:25]",
            f"    remote_ip_ranges: [{', '.join(rs)}]",
            "    permission_groups: [AnonymousUsers]",
        ]
    return "\n".join(lines) + "\n"


def synthetic_addresses(total_ranges: int, n: int, seed: int = 7) -> list[str]:
    """``n`` client addresses spread over the synthetic ranges (hits) and just beyond (misses)."""
    import random

    rnd = random.Random(seed)
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    span = 4 * total_ranges + 4 * total_ranges // 10 + 4
    return [str(ipaddress.IPv4Address(base + rnd.randrange(span))) for _ in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def stop(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """Stop one process we started, by PID: TERM, then KILL."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def policyd_cmd(config: Path, port: int, also: tuple[str, ...] = ()) -> list[str]:
    """The daemon as deployed, on 127.0.0.1:``port`` and on the ``also`` endpoints (e.g. a
    unix socket): Prometheus metrics on (the default), served on a free loopback port."""
    extra = [arg for endpoint in also for arg in ("--listen", endpoint)]
    return [
        PYTHON,
        "-m",
        "exmilter.cli",
        "policyd",
        "-c",
        str(config),
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        *extra,
        "--metrics",
        f"tcp:{free_port()}:interface=127.0.0.1",
    ]


def policyd_available() -> bool:
    return (ROOT / "exmilter" / "commands" / "policyd.py").exists()


def start_policyd(config: Path, port: int, log: Path, also: tuple[str, ...] = ()) -> subprocess.Popen:
    """Started and listening: the daemon opens every endpoint before the TCP port answers."""
    with open(log, "wb") as fh:  # the child keeps its own descriptor
        proc = subprocess.Popen(policyd_cmd(config, port, also), cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    try:
        wait_port(port, 120, proc)
    except Exception:
        stop(proc)
        raise
    return proc


def postfwd_binary() -> str | None:
    for b in ("/usr/sbin/postfwd1", "/usr/sbin/postfwd"):
        if os.access(b, os.X_OK):
            return b
    return None


def start_postfwd(rules: Path, port: int, log: Path) -> subprocess.Popen:
    """postfwd1 (single process, Net::Server::Multiplex) in the foreground.

    ``-d`` is what makes postfwd1 listen; bench/postfwd-foreground.pl stops Net::Server
    from forking it into the background, so the PID we hold is the server. No DNS, no
    syslog (``-P``), default request cache.
    """
    exe = postfwd_binary()
    if exe is None:
        raise RuntimeError("postfwd is not installed (apt-get install postfwd)")
    cmd = [
        "perl",
        str(BENCH / "postfwd-foreground.pl"),
        "-d",
        "-f",
        str(rules),
        "--interface",
        "127.0.0.1",
        "--port",
        str(port),
        "--nodns",
        "-P",
        "-u",
        "nobody",
        "-g",
        "nogroup",
    ]
    with open(log, "wb") as fh:  # the child keeps its own descriptor
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "POSTFWD": exe})
    try:
        wait_port(port, 30, proc)
    except Exception:
        stop(proc)
        raise
    return proc


def machine_load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"
