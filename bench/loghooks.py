"""What Exchange's logs cost the policy daemon per request (issue #15): logs on vs off, side by side.

    .venv/bin/python bench/loghooks.py [--quick] [--json OUT]

Two measurements, each of CPU time (not throughput: other work on the machine moves
throughput more than it moves CPU per request):

* **daemon**: two policy daemons on the bench configuration (bench/common.py), one writing
  the protocol log and the tracking log into a temporary directory (Default Frontend logs
  ``Verbose`` by Exchange's default, so two thirds of bench/policyload.py's RCPTs write two
  rows each; every accepted RCPT is remembered for its RECEIVE row), one with
  ``receive_protocol_log_path: ''`` and ``message_tracking_log_enabled: false``. Each runs
  on CPU 0 and the load generator on CPU 1 when the machine has two (``taskset``), so a
  daemon's threads do not run in parallel and its CPU time is its work. Rounds of C=20
  load alternate between the two; the median server CPU µs per answered request is
  reported, split into the reactor thread and the log writer threads.
* **in process**: the same requests through the daemon's connection code
  (PolicyProtocol over a StringTransport, no sockets), CPU µs per request of the calling
  thread and of the whole process (the writer threads drained at the end of each round).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import policyload
from common import BENCH_CONFIG, ROOT, free_port, policyd_cmd, stop, wait_port

LOGS_OFF = "logs: {receive_protocol_log_path: '', message_tracking_log_enabled: false}\n"


def logs_on(directory: Path) -> str:
    return (
        f"logs: {{receive_protocol_log_path: {directory}/protocol, message_tracking_log_path: {directory}/tracking}}\n"
    )


def _threads(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of ``pid``."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/stat", "rb") as fh:
                f = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        out[int(t)] = (int(f[11]) + int(f[12])) / tick
    return out


def daemon(rounds: int, duration: float, work: Path) -> dict:
    """Median server CPU per request of the two daemons, rounds interleaved."""
    pin = os.cpu_count() is not None and os.cpu_count() >= 2 and shutil.which("taskset") is not None
    procs: dict[str, subprocess.Popen] = {}
    ports: dict[str, int] = {}
    runs: dict[str, list[dict]] = {"on": [], "off": []}
    before = os.sched_getaffinity(0)
    try:
        for name, logs in (("on", logs_on(work / "logs")), ("off", LOGS_OFF)):
            cfg = work / f"{name}.yaml"
            cfg.write_text(BENCH_CONFIG + logs)
            ports[name] = free_port()
            cmd = policyd_cmd(cfg, ports[name])
            with open(work / f"{name}.log", "wb") as fh:
                procs[name] = subprocess.Popen(
                    (["taskset", "-c", "0"] if pin else []) + cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT
                )
            wait_port(ports[name], 120, procs[name])
        if pin:
            os.sched_setaffinity(0, {1})
        for r in range(rounds):
            for name in ("on", "off"):
                pid = procs[name].pid
                t0 = _threads(pid)
                res = policyload.run(ports[name], 20, duration, 0.5, pid=pid)
                t1 = _threads(pid)
                # the warm-up is in the thread split, not in server_cpu_us: use the split as shares
                spent = {t: t1[t] - t0.get(t, 0.0) for t in t1}
                total = sum(spent.values()) or 1.0
                cpu = res.server_cpu_us or 0.0
                runs[name].append(
                    {
                        "cpu_us": cpu,
                        "reactor_us": cpu * spent.get(pid, 0.0) / total,
                        "writers_us": cpu * (total - spent.get(pid, 0.0)) / total,
                        "rps": res.rps,
                        "p99_ms": res.p99_ms,
                        "errors": res.errors + res.mismatches,
                    }
                )
                print(f"  [{r + 1}/{rounds}] logs {name:>3}: {res.line()}", file=sys.stderr)
                time.sleep(0.2)
    finally:
        os.sched_setaffinity(0, before)
        for p in procs.values():
            stop(p)
    out: dict = {"pinned": pin, "rounds": rounds, "duration": duration}
    for name, rs in runs.items():
        out[name] = {k: statistics.median(x[k] for x in rs) for k in rs[0]}
        out[name]["cpu_all"] = [round(x["cpu_us"], 1) for x in rs]
    return out


def in_process(rounds: int, n: int, work: Path) -> dict:
    """CPU per request through PolicyProtocol (no sockets), logs on vs off, rounds interleaved."""
    from prometheus_client import CollectorRegistry
    from twisted.internet import defer
    from twisted.internet.testing import MemoryReactorClock, StringTransport

    from exmilter.config import load
    from exmilter.logs.files import Writers
    from exmilter.policy.factory import PolicyFactory
    from exmilter.policy.metrics import PolicyMetrics
    from exmilter.policy.protolog import open_exchange_logs
    from exmilter.policy.reload import Runtime

    templates = policyload.request_templates()
    setups = {}
    for name, logs in (("on", logs_on(work / "inproc")), ("off", LOGS_OFF)):
        cfg = work / f"inproc-{name}.yaml"
        cfg.write_text(BENCH_CONFIG + logs)
        loaded = load(cfg)
        runtime = Runtime(str(cfg), loaded, PolicyMetrics(CollectorRegistry()), run_blocking=defer.maybeDeferred)
        writers = Writers()
        runtime.log_hooks, _ = open_exchange_logs(
            loaded.organization, lambda _e: None, writers, recipients=runtime.decider.accepted_recipients
        )  # as exmilter.policy.daemon.run opens them
        factory = PolicyFactory(runtime, MemoryReactorClock())
        conns = []
        for _ in range(20):
            proto = factory.buildProtocol(None)
            assert proto is not None
            t = StringTransport()
            proto.makeConnection(t)
            conns.append((proto, t))
        setups[name] = (writers, conns)
    seq = [1 << 32]

    def one(name: str) -> tuple[float, float]:
        writers, conns = setups[name]
        s = seq[0]
        c0, t0 = time.process_time(), time.thread_time()
        for i in range(n):
            proto, t = conns[i % 20]
            before, after, _ = templates[s % len(templates)]
            proto.dataReceived(before + b"%x" % s + after)
            t.clear()
            s += 1
        t1 = time.thread_time()
        writers.flush()
        c1 = time.process_time()
        seq[0] = s
        return (t1 - t0) / n * 1e6, (c1 - c0) / n * 1e6

    for name in setups:  # warm: sessions, decisions, transactions at their bounds
        one(name)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in setups}
    for _ in range(rounds):
        for name in setups:
            runs[name].append(one(name))
    for writers, _ in setups.values():
        writers.close()
    return {
        name: {
            "thread_us": statistics.median(x[0] for x in rs),
            "process_us": statistics.median(x[1] for x in rs),
        }
        for name, rs in runs.items()
    } | {"requests": n, "rounds": rounds}


def measure(quick: bool = False) -> dict:
    with tempfile.TemporaryDirectory(prefix="exmilter-bench-logs-") as tmp:
        work = Path(tmp)
        return {
            "daemon": daemon(2 if quick else 5, 1.0 if quick else 3.0, work),
            "in_process": in_process(3 if quick else 7, 10_000 if quick else 30_000, work),
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer and shorter rounds")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args()
    res = measure(args.quick)
    d, p = res["daemon"], res["in_process"]
    for name in ("on", "off"):
        print(
            f"logs {name:>3}: daemon {d[name]['cpu_us']:5.1f} µs/req (reactor {d[name]['reactor_us']:5.1f}, "
            f"writers {d[name]['writers_us']:4.1f}; rounds {d[name]['cpu_all']})   in process "
            f"{p[name]['thread_us']:5.2f} µs/req (process {p[name]['process_us']:5.2f})"
        )
    print(
        f"logs on - off: daemon {d['on']['cpu_us'] - d['off']['cpu_us']:+.1f} µs/req, "
        f"in process {p['on']['thread_us'] - p['off']['thread_us']:+.2f} µs/req"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
