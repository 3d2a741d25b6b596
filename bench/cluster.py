"""The cost of the shared MessageRateLimit window per MAIL: local vs Redis, side by side (issue #17).

    .venv/bin/python bench/cluster.py [--quick] [--json OUT]

One policy daemon's connection code (PolicyFactory, a StringTransport per MAIL, as in
tests/test_cluster_window.py) answers MAILs on a rate-limited connector, first counting in
the engine's local window, then in a private redis-server on loopback (started here on a
free port, stopped by PID). Per mode: p50/p99 latency per MAIL (request in -> answer out,
the Redis round trip included) and CPU per MAIL of this process (Redis's own CPU is not
included). Target (issue #17): Redis adds < 0.3 ms p99 per MAIL on loopback.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry  # noqa: E402
from twisted.internet import defer  # noqa: E402
from twisted.internet.selectreactor import SelectReactor  # noqa: E402
from twisted.internet.testing import MemoryReactorClock, StringTransport  # noqa: E402

from exmilter.config import load  # noqa: E402
from exmilter.policy.factory import PolicyFactory  # noqa: E402
from exmilter.policy.metrics import PolicyMetrics  # noqa: E402
from exmilter.policy.redis_window import RedisWindow  # noqa: E402
from exmilter.policy.reload import Runtime  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

CONFIG = """\
server: {name: EXA, fqdn: exa.labs.local, domain: LABS}
accepted_domains: [{domain_name: labs.local}]
receive_connectors:
  - name: Apps
    transport_role: FrontendTransport
    usage: Custom
    bindings: [0.0.0.0:25]
    remote_ip_ranges: [10.0.0.0/16]
    permission_groups: [AnonymousUsers]
    message_rate_limit: 1000000
"""


def run(mode: str, n: int, path: Path, redis_port: int | None) -> dict[str, float]:
    reactor = SelectReactor()
    runtime = Runtime(str(path), load(path), PolicyMetrics(CollectorRegistry()), run_blocking=defer.maybeDeferred)
    if redis_port is not None:
        runtime.shared_window = RedisWindow(reactor, "127.0.0.1", redis_port, timeout=2.0)
    factory = PolicyFactory(runtime, MemoryReactorClock())
    lat: list[float] = []
    cpu0 = time.process_time()
    for i in range(n):
        proto = factory.buildProtocol(None)
        assert proto is not None, "over the connection cap"
        t = StringTransport()
        proto.makeConnection(t)
        client = f"10.0.{(i >> 8) & 255}.{i & 255}"
        data = (
            f"request=smtpd_access_policy\nprotocol_state=MAIL\nclient_address={client}\n"
            f"client_port={1024 + i % 60000}\npolicy_context=*:25\nhelo_name=h\nsender=a@labs.local\n\n"
        ).encode()
        t0 = time.perf_counter()
        proto.dataReceived(data)
        while not t.value():
            reactor.iterate(0)
        lat.append(time.perf_counter() - t0)
        assert t.value() == b"action=DUNNO\n\n", t.value()
        proto.connectionLost(None)  # closed, as Postfix's smtpd would: under the connection cap
    cpu = time.process_time() - cpu0
    lat.sort()
    return {
        "mode": mode,  # type: ignore[dict-item]
        "mails": n,
        "p50_ms": round(statistics.median(lat) * 1000, 4),
        "p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 4),
        "cpu_us_per_mail": round(cpu / n * 1e6, 1),
    }


def measure(quick: bool = False) -> dict:
    """Both modes side by side (bench/run.py): 1,000 MAILs per mode quick, else 20,000."""
    n = 1000 if quick else 20000
    with tempfile.TemporaryDirectory(prefix="exmilter-bench-cluster-") as tmp:
        path = Path(tmp) / "exmilter.yaml"
        path.write_text(CONFIG)
        redis = RedisServer(Path(tmp) / "redis").start()
        try:
            rows = [run("local", n, path, None), run("redis", n, path, redis.port)]
        finally:
            redis.stop()
    return {"rows": rows, "redis_adds_p99_ms": round(rows[1]["p99_ms"] - rows[0]["p99_ms"], 4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1,000 MAILs per mode instead of 20,000")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args()
    n = 1000 if args.quick else 20000
    with tempfile.TemporaryDirectory(prefix="exmilter-bench-cluster-") as tmp:
        path = Path(tmp) / "exmilter.yaml"
        path.write_text(CONFIG)
        redis = RedisServer(Path(tmp) / "redis").start()
        try:
            results = [run("local", n, path, None), run("redis", n, path, redis.port)]
        finally:
            redis.stop()
    for r in results:
        print(
            f"{r['mode']:>6}: {r['mails']} MAILs  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  "
            f"CPU {r['cpu_us_per_mail']} µs/MAIL"
        )
    added = results[1]["p99_ms"] - results[0]["p99_ms"]
    print(f"Redis adds {added:.4f} ms p99 per MAIL (target < 0.3 ms)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
