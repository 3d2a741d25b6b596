"""Scale of the configuration: connector lookup time, config load time, daemon RSS.

    .venv/bin/python bench/lookup.py [--quick] [--json OUT]

* lookup: median µs per ``ConnectorTable.select`` (client address given as a string,
  as the daemon does) over rounds of 20,000 lookups on addresses spread over the
  configured ranges and just beyond them (hits and misses);
* load: ``exmilter.config.loads`` + ``Engine(...)`` on a synthetic YAML file (disjoint
  ranges, Custom connectors on 0.0.0.0:25);
* RSS: the policy daemon started on that file (``/proc/PID/status`` VmRSS once it listens).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    free_port,
    policyd_available,
    rss_kb,
    start_policyd,
    stop,
    synthetic_addresses,
    synthetic_config,
)

from exmilter import config
from exmilter.engine import Engine

# (label, connectors, ranges per connector); at most 1,300 ranges per connector, as the loader
# refuses more (exmilter.limits.CONFIG_MAX_RANGE_ENTRIES_REFUSED; Exchange fails above ~1,200)
RANGE_CASES = [("10 ranges", 10, 1), ("1,000 ranges", 10, 100), ("100,000 ranges", 100, 1_000)]
CONNECTOR_CASES = [("10 connectors", 10, 10), ("1,000 connectors", 1_000, 10), ("10,000 connectors", 10_000, 10)]
RSS_CASES = [("10 connectors", 10, 10), ("10,000 connectors", 10_000, 10)]


def time_load(text: str, repeat: int) -> tuple[float, float, Engine]:
    loads, builds = [], []
    engine = None
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        loaded = config.loads(text, "bench.yaml")
        t1 = time.perf_counter()
        engine = Engine(loaded.organization)
        t2 = time.perf_counter()
        loads.append(t1 - t0)
        builds.append(t2 - t1)
    assert engine is not None
    return statistics.median(loads), statistics.median(builds), engine


def time_lookup(engine: Engine, addrs: list[str], rounds: int) -> tuple[float, float]:
    select = engine.table.select
    per = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for a in addrs:
            select("10.255.255.254", 25, a)
        per.append((time.perf_counter_ns() - t0) / len(addrs) / 1000)
    hits = sum(1 for a in addrs if select("10.255.255.254", 25, a) is not None) / len(addrs)
    return statistics.median(per), hits


def time_index(engine: Engine, addrs: list[str], rounds: int) -> float:
    """The bisection alone: IntervalIndex.lookup on a pre-parsed address (internal API)."""
    import ipaddress

    index = max(engine.table._index.values(), key=len)
    points = [int(ipaddress.IPv4Address(a)) for a in addrs]
    look = index.lookup
    per = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for x in points:
            look(x)
        per.append((time.perf_counter_ns() - t0) / len(points) / 1000)
    return statistics.median(per)


def measure(quick: bool = False) -> dict:
    rounds = 3 if quick else 7
    repeat = 1 if quick else 3
    out: dict = {"lookup": [], "rss": []}
    cases = RANGE_CASES + CONNECTOR_CASES
    for label, n, k in cases:
        text = synthetic_config(n, k)
        load_s, build_s, engine = time_load(text, 1 if n * k >= 100_000 else repeat)
        addrs = synthetic_addresses(n * k, 20_000)
        us, hits = time_lookup(engine, addrs, rounds)
        index_us = time_index(engine, addrs, rounds)
        segs = sum(len(ix) for ix in engine.table._index.values())
        row = {
            "case": label,
            "connectors": n,
            "ranges": n * k,
            "segments": segs,
            "yaml_bytes": len(text),
            "load_s": load_s,
            "engine_s": build_s,
            "lookup_us": us,
            "index_us": index_us,
            "hit_ratio": hits,
        }
        print(
            f"  {label:>18}: lookup {us:6.2f} µs (bisection {index_us:.2f}, hits {hits:.0%}), "
            f"load {load_s:.3f}s + engine {build_s:.3f}s",
            file=sys.stderr,
        )
        out["lookup"].append(row)
        del engine
    if not policyd_available():
        out["rss_note"] = "policy daemon not present (exmilter/commands/policyd.py)"
        return out
    with tempfile.TemporaryDirectory(prefix="exmilter-bench-") as tmp:
        for label, n, k in RSS_CASES:
            path = Path(tmp) / f"rss-{n}.yaml"
            path.write_text(synthetic_config(n, k))
            port = free_port()
            t0 = time.monotonic()
            try:
                proc = start_policyd(path, port, Path(tmp) / f"rss-{n}.log")
            except Exception as e:
                out["rss"].append({"case": label, "error": str(e)[:200]})
                continue
            try:
                ready = time.monotonic() - t0
                time.sleep(0.5)
                kb = rss_kb(proc.pid)
            finally:
                stop(proc)
            print(f"  {label:>18}: daemon RSS {kb / 1024:.1f} MB, listening after {ready:.1f}s", file=sys.stderr)
            out["rss"].append({"case": label, "connectors": n, "ranges": n * k, "rss_mb": kb / 1024, "ready_s": ready})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    res = measure(args.quick)
    text = json.dumps(res, indent=2)
    if args.json:
        args.json.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
