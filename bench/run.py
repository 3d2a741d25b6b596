"""Run every benchmark side by side and write the results into docs/performance.md.

    bash bench/run.sh [--quick] [--no-doc]      (installs what is missing, then runs this)
    .venv/bin/python bench/run.py [--quick] [--no-doc]

Order: configuration scale (bench/lookup.py), policy load against the do-nothing
ceiling (two implementations), postfwd1 and exmilter's daemon at C = 1, 20, 100
(bench/policyload.py, rounds interleaved, medians reported), a py-spy profile of the
daemon at C = 20 (bench/profiler.py), end to end through a private Postfix
(bench/e2e.py), then the policy daemon's CPU per request with Exchange's logs on and off
(bench/loghooks.py), the shared Redis rate window per MAIL (bench/cluster.py) and
``exmilter track`` over a million tracking events (bench/track.py). The section of
docs/performance.md between the GENERATED markers is
replaced, one row is appended to its history table, and the raw figures are written
to bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cluster
import e2e
import loghooks
import lookup
import policyload
import profiler as prof
import track
from common import (
    BENCH,
    BENCH_CONFIG,
    POSTFWD_RULES,
    PYTHON,
    ROOT,
    free_port,
    machine_load,
    policyd_available,
    postfwd_binary,
    start_policyd,
    start_postfwd,
    stop,
    wait_port,
)

DOC = ROOT / "docs" / "performance.md"
BEGIN = "<!-- BEGIN GENERATED RESULTS: bench/run.py replaces everything down to the END marker -->"
END = "<!-- END GENERATED RESULTS -->"
HISTORY = "<!-- HISTORY: bench/run.py appends one row above this line per full run -->"
CONCURRENCY = (1, 20, 100)

TARGETS = {
    "rps_vs_postfwd": 4.0,  # at C=20
    "p99_ms": 2.0,  # at C=20
    "rps_vs_ceiling": 0.5,  # at C=20
    "e2e_vs_bare": 0.9,
    "lookup_us": 20.0,  # at 100,000 ranges
    "rss_mb": 80.0,  # 10,000 connectors
}


def sh(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> dict:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    pf = sh("/usr/sbin/postconf", "-d", "-h", "mail_version")
    pfwd = sh("dpkg-query", "-W", "-f=${Version}", "postfwd")
    twisted = sh(PYTHON, "-c", "import twisted; print(twisted.__version__)")
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "commit": sh("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD")
        + ("+dirty" if sh("git", "-C", str(ROOT), "status", "--porcelain", "--", "exmilter") else ""),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "twisted": twisted,
        "postfix": pf,
        "postfwd": f"postfwd1 {pfwd}" if pfwd else "not installed",
        "load_before": machine_load(),
    }


# -- policy load ------------------------------------------------------------------------------


def policy_bench(duration: float, rounds: int, work: Path) -> dict:
    """Start every target, then load each in turn, rounds interleaved; medians per (target, C)."""
    targets: dict[str, subprocess.Popen] = {}
    ports: dict[str, int] = {}
    notes: dict[str, str] = {}
    try:
        for impl in ("epoll", "asyncio"):
            name = f"ceiling-{impl}"
            ports[name] = free_port()
            targets[name] = subprocess.Popen(
                [PYTHON, str(BENCH / "ceiling.py"), "--port", str(ports[name]), "--impl", impl]
            )
            wait_port(ports[name], 10, targets[name])
        if postfwd_binary():
            rules = work / "postfwd.cf"
            rules.write_text(POSTFWD_RULES)
            ports["postfwd"] = free_port()
            targets["postfwd"] = start_postfwd(rules, ports["postfwd"], work / "postfwd.log")
        else:
            notes["postfwd"] = "postfwd not installed"
        if policyd_available():
            cfg = work / "bench.yaml"
            cfg.write_text(BENCH_CONFIG)
            ports["exmilter"] = free_port()
            targets["exmilter"] = start_policyd(cfg, ports["exmilter"], work / "policyd.log")
        else:
            notes["exmilter"] = "policy daemon not present yet"
        runs: dict[tuple[str, int], list[policyload.Result]] = {}
        for r in range(rounds):
            for c in CONCURRENCY:
                for name, port in ports.items():
                    res = policyload.run(port, c, duration, warmup=0.5, pid=targets[name].pid)
                    runs.setdefault((name, c), []).append(res)
                    print(f"  [{r + 1}/{rounds}] {name:>16} {res.line()}", file=sys.stderr)
                    time.sleep(0.2)
        rss = {name: _rss_mb(p.pid) for name, p in targets.items()}
    finally:
        for p in targets.values():
            stop(p)
    rows = []
    for (name, _c), rs in runs.items():
        rs = sorted(rs, key=lambda x: x.rps)
        med = rs[len(rs) // 2]
        d = asdict(med)
        d["target"] = name
        d["rps_all"] = [round(x.rps) for x in rs]
        d["rss_mb"] = rss.get(name)
        rows.append(d)
    # the ceiling is the faster do-nothing implementation at each C
    for c in CONCURRENCY:
        cands = [r for r in rows if r["target"].startswith("ceiling-") and r["connections"] == c]
        if cands:
            best = max(cands, key=lambda r: r["rps"])
            rows.append({**best, "target": "ceiling", "impl": best["target"]})
    return {"rows": rows, "notes": notes, "duration": duration, "rounds": rounds}


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# -- report -------------------------------------------------------------------------------------


def _row(policy: dict, target: str, c: int) -> dict | None:
    for r in policy["rows"]:
        if r["target"] == target and r["connections"] == c:
            return r
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _fmt(x: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "—" if x is None else f"{x:{spec}}{suffix}"


def evaluate(res: dict) -> list[tuple[str, str, str, str]]:
    """(target, goal, measured, verdict) rows."""
    out = []
    pol = res.get("policy", {})
    ex, pf, ce = (_row(pol, t, 20) for t in ("exmilter", "postfwd", "ceiling")) if pol else (None, None, None)

    def verdict(value: float | None, goal: float, higher_better: bool) -> str:
        if value is None:
            return "not measured"
        ok = value >= goal if higher_better else value <= goal
        if ok:
            return "**met**"
        if higher_better:
            return f"**not met**: {value / goal:.0%} of the target ({goal / value:.1f}× short)"
        return f"**not met**: {value / goal:.1f}× the limit"

    r = _ratio(ex and ex["rps"], pf and pf["rps"])
    out.append(
        ("policy req/s vs postfwd1, C=20", "≥ 4×", _fmt(r, ".2f", "×"), verdict(r, TARGETS["rps_vs_postfwd"], True))
    )
    p99 = ex["p99_ms"] if ex else None
    out.append(("policy p99 latency, C=20", "< 2 ms", _fmt(p99, ".2f", " ms"), verdict(p99, TARGETS["p99_ms"], False)))
    r = _ratio(ex and ex["rps"], ce and ce["rps"])
    out.append(
        (
            "policy req/s vs do-nothing ceiling, C=20",
            "≥ 0.5×",
            _fmt(r, ".2f", "×"),
            verdict(r, TARGETS["rps_vs_ceiling"], True),
        )
    )
    e = next((x for x in res.get("e2e", {}).get("rows", []) if x["scenario"] == "exmilter"), None)
    r = e["ratio_to_bare"] if e else None
    out.append(
        ("end to end msg/s vs bare Postfix", "≥ 0.9×", _fmt(r, ".2f", "×"), verdict(r, TARGETS["e2e_vs_bare"], True))
    )
    lk = next(
        (x for x in res.get("lookup", {}).get("lookup", []) if x["ranges"] == 100_000 and x["connectors"] == 100), None
    )
    v = lk["lookup_us"] if lk else None
    out.append(
        ("connector lookup, 100,000 ranges", "< 20 µs", _fmt(v, ".1f", " µs"), verdict(v, TARGETS["lookup_us"], False))
    )
    rs = next((x for x in res.get("lookup", {}).get("rss", []) if x.get("connectors") == 10_000), None)
    v = rs.get("rss_mb") if rs else None
    out.append(
        ("daemon RSS, 10,000 connectors", "< 80 MB", _fmt(v, ".0f", " MB"), verdict(v, TARGETS["rss_mb"], False))
    )
    return out


def render(res: dict) -> str:
    m = res["machine"]
    L: list[str] = [BEGIN, ""]
    quick = ", quick mode: not representative" if res["quick"] else ""
    L.append(f"### Run of {m['date']} (commit {m['commit']}{quick})")
    L.append("")
    L.append(
        f"- Machine: {m['nproc']} CPU ({m['cpu']}), {m['ram_gb']} GB RAM, Linux {m['kernel']}; "
        f"Python {m['python']}, Twisted {m['twisted']}, Postfix {m['postfix']}, {m['postfwd']}."
    )
    L.append(
        f"- Load average (1/5/15 min) before the run: {m['load_before']}; after: {res['load_after']}. "
        "Everything (load generator, servers, Postfix, smtp-source) shares these CPUs."
    )
    L.append(f"- Command: `bash bench/run.sh{' --quick' if res['quick'] else ''}` — {res['elapsed_s']:.0f} s.")
    L.append("")
    L.append("#### Targets")
    L.append("")
    L.append("| Target | Goal | Measured | Verdict |")
    L.append("|---|---|---|---|")
    for t, g, v, ver in evaluate(res):
        L.append(f"| {t} | {g} | {v} | {ver} |")
    L.append("")

    pol = res.get("policy")
    if pol:
        L.append(
            f"#### Policy throughput and latency (bench/policyload.py, {pol['duration']:.0f} s per run "
            "after 0.5 s "
            f"warm-up, median of {pol['rounds']} interleaved rounds)"
        )
        L.append("")
        L.append(
            "| Target | C | req/s (median) | each round | p50 ms | p99 ms | server CPU µs/req | answers | RSS MB |"
        )
        L.append("|---|---:|---:|---|---:|---:|---:|---|---:|")
        order = ["exmilter", "postfwd", "ceiling-epoll", "ceiling-asyncio"]
        for t in order:
            for c in CONCURRENCY:
                r = _row(pol, t, c)
                if r is None:
                    continue
                acts = ", ".join(f"{k} {v}" for k, v in sorted(r["actions"].items()))
                bad = f"; {r['mismatches']} wrong, {r['errors']} errors" if r["mismatches"] or r["errors"] else ""
                each = ", ".join(f"{x:,}" for x in r.get("rps_all", []))
                L.append(
                    f"| {t} | {c} | {r['rps']:,.0f} | {each} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                    f"{_fmt(r.get('server_cpu_us'), '.0f')} | {acts}{bad} | "
                    f"{_fmt(r.get('rss_mb'), '.0f')} |"
                )
        for t, n in pol["notes"].items():
            L.append(f"| {t} | | | | | | | {n} | |")
        L.append("")
        L.append("| C | exmilter / postfwd1 | exmilter / ceiling | ceiling used |")
        L.append("|---:|---:|---:|---|")
        for c in CONCURRENCY:
            ex, pf, ce = (_row(pol, t, c) for t in ("exmilter", "postfwd", "ceiling"))
            L.append(
                f"| {c} | {_fmt(_ratio(ex and ex['rps'], pf and pf['rps']), '.2f', '×')} | "
                f"{_fmt(_ratio(ex and ex['rps'], ce and ce['rps']), '.2f', '×')} | {ce['impl'] if ce else '—'} |"
            )
        L.append("")

    e = res.get("e2e")
    if e:
        if "error" in e:
            L.append(f"#### End to end: failed: {e['error']}")
        else:
            L.append(
                f"#### End to end through Postfix (bench/e2e.py: `smtp-source -s {e['sessions']} "
                f"-m {e['messages']} "
                f"-l {e['size']}`, median of {e['repeat']})"
            )
            L.append("")
            L.append(
                "| Scenario | msg/s (median) | each run | seconds | ratio to bare Postfix | machine CPU busy "
                "| policy server CPU µs/msg |"
            )
            L.append("|---|---:|---|---:|---:|---:|---:|")
            for r in e["rows"]:
                runs = ", ".join(str(x) for x in r.get("runs_msg_per_s", []))
                L.append(
                    f"| {r['scenario']} | {r['msg_per_s']:.0f} | {runs} | {r['seconds']:.2f} | "
                    f"{_fmt(r['ratio_to_bare'], '.2f', '×')} | {r['cpu_busy']:.0%} | "
                    f"{_fmt(r.get('policy_cpu_us_per_msg'), '.0f')} |"
                )
            L.append("")
            L.append(
                f"Delivered to `discard:` per the maillog: {e.get('delivered_logged')} of "
                f"{e.get('expected_delivered')} (warm-up included); rejects logged: {e.get('rejects_logged')}."
            )
        L.append("")

    lk = res.get("lookup")
    if lk:
        L.append("#### Configuration scale (bench/lookup.py)")
        L.append("")
        L.append(
            "| Configuration | Connectors | Ranges | Index segments | Lookup µs (median) "
            "| of which bisection µs | Load s (`config.loads`) | Engine s |"
        )
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in lk["lookup"]:
            L.append(
                f"| {r['case']} | {r['connectors']:,} | {r['ranges']:,} | {r['segments']:,} "
                f"| {r['lookup_us']:.2f} | {_fmt(r.get('index_us'), '.2f')} "
                f"| {r['load_s']:.3f} | {r['engine_s']:.3f} |"
            )
        L.append("")
        if lk.get("rss"):
            L.append("| Daemon on | RSS MB (VmRSS once listening) | Start to listening s |")
            L.append("|---|---:|---:|")
            for r in lk["rss"]:
                if "error" in r:
                    L.append(f"| {r['case']} | failed: {r['error']} | |")
                else:
                    L.append(f"| {r['case']} ({r['ranges']:,} ranges) | {r['rss_mb']:.0f} | {r['ready_s']:.1f} |")
            L.append("")
        elif lk.get("rss_note"):
            L.append(f"Daemon RSS: {lk['rss_note']}.")
            L.append("")

    p = res.get("profile")
    if p:
        L.append("#### Profile of the daemon at C=20 (bench/profiler.py: py-spy, 250 Hz, non-blocking)")
        L.append("")
        if "error" in p:
            L.append(f"Not taken: {p['error']}")
        else:
            L.append(f"Load during the profile: `{p.get('load', '').strip()}`; {p['samples']} samples.")
            L.append("")
            if p.get("components"):
                L.append("| Component (first match from the leaf's stack, approximate) | % of samples |")
                L.append("|---|---:|")
                for name, pct in p["components"]:
                    L.append(f"| {name} | {pct} |")
                L.append("")
            L.append("| Inclusive % | Frame | | Self % | Frame |")
            L.append("|---:|---|---|---:|---|")
            inc = [x for x in p["inclusive"] if not re.search(r"runpy|cli.py|ReactorBase|commands/policyd", x[0])][:14]
            slf = p["self"][:14]
            for i in range(max(len(inc), len(slf))):
                a = inc[i] if i < len(inc) else ("", "")
                b = slf[i] if i < len(slf) else ("", "")
                L.append(f"| {a[1]} | `{a[0]}` | | {b[1]} | `{b[0]}` |")
        L.append("")
    lg = res.get("logs")
    if lg:
        d, p = lg["daemon"], lg["in_process"]
        pin = "daemon on CPU 0, load generator on CPU 1" if d["pinned"] else "not pinned"
        L.append(
            f"#### Exchange's logs on vs off (bench/loghooks.py: C=20, {d['duration']:.0f} s per round, "
            f"median of {d['rounds']} interleaved rounds, {pin})"
        )
        L.append("")
        L.append(
            "| Policy daemon | server CPU µs/req | of which reactor thread | log writer threads | each round "
            "| req/s | p99 ms | in process µs/req (thread) | in process µs/req (process) |"
        )
        L.append("|---|---:|---:|---:|---|---:|---:|---:|---:|")
        for name, label in (("on", "logs on (protocol log + tracking)"), ("off", "logs off")):
            x, q = d[name], p[name]
            L.append(
                f"| {label} | {x['cpu_us']:.1f} | {x['reactor_us']:.1f} | {x['writers_us']:.2f} | "
                f"{', '.join(str(v) for v in x['cpu_all'])} | {x['rps']:,.0f} | {x['p99_ms']:.2f} | "
                f"{q['thread_us']:.2f} | {q['process_us']:.2f} |"
            )
        L.append(
            f"| on − off | {d['on']['cpu_us'] - d['off']['cpu_us']:+.1f} | | | | | | "
            f"{p['on']['thread_us'] - p['off']['thread_us']:+.2f} | "
            f"{p['on']['process_us'] - p['off']['process_us']:+.2f} |"
        )
        L.append("")
    cl = res.get("cluster")
    if cl:
        if "error" in cl:
            L.append(f"#### Shared rate window per MAIL: failed: {cl['error']}")
        else:
            L.append("#### Shared MessageRateLimit window per MAIL (bench/cluster.py, loopback redis-server)")
            L.append("")
            L.append("| Window | MAILs | p50 ms | p99 ms | CPU µs/MAIL (this process) |")
            L.append("|---|---:|---:|---:|---:|")
            for r in cl["rows"]:
                L.append(f"| {r['mode']} | {r['mails']:,} | {r['p50_ms']} | {r['p99_ms']} | {r['cpu_us_per_mail']} |")
            L.append("")
            L.append(f"Redis adds {cl['redis_adds_p99_ms']:.3f} ms p99 per MAIL (target < 0.3 ms).")
        L.append("")
    tr = res.get("track")
    if tr:
        L.append(
            f"#### exmilter track (bench/track.py: {tr['events']:,} events in {tr['files']} hourly files, "
            f"{tr['bytes'] / 1e6:.0f} MB, page cache warm, median of 3)"
        )
        L.append("")
        L.append("| Filter | seconds | rows found |")
        L.append("|---|---:|---:|")
        for r in tr["filters"]:
            L.append(f"| `{r['filter']}` | {r['seconds']:.2f} | {r['rows']:,} |")
        L.append("")
    L.append(END)
    return "\n".join(L)


def write_doc(res: dict) -> None:
    text = DOC.read_text() if DOC.exists() else f"# Performance\n\n{BEGIN}\n{END}\n\n## History\n\n{HISTORY}\n"
    block = render(res)
    if BEGIN in text and END in text:
        a = text.index(BEGIN)
        b = text.index(END) + len(END)
        text = text[:a] + block + text[b:]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    if not res["quick"] and HISTORY in text:
        ev = {t: v for t, _g, v, _ver in evaluate(res)}
        m = res["machine"]
        e_rows = {r["scenario"]: r for r in res.get("e2e", {}).get("rows", [])}
        ex = _row(res.get("policy", {"rows": []}), "exmilter", 20)
        row = (
            f"| {m['date']} | {m['commit']} | {_fmt(ex and ex['rps'], ',.0f')} | "
            f"{ev['policy p99 latency, C=20']} | {ev['policy req/s vs postfwd1, C=20']} | "
            f"{ev['policy req/s vs do-nothing ceiling, C=20']} | "
            f"{_fmt(e_rows.get('exmilter', {}).get('msg_per_s'), '.0f')} | "
            f"{ev['end to end msg/s vs bare Postfix']} | "
            f"{ev['connector lookup, 100,000 ranges']} | {ev['daemon RSS, 10,000 connectors']} | "
            f"{m['load_before']} |"
        )
        text = text.replace(HISTORY, row + "\n" + HISTORY)
    DOC.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="short runs, to check the harness (writes bench/results/quick.json only)"
    )
    ap.add_argument("--no-doc", action="store_true", help="do not touch docs/performance.md")
    ap.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=("lookup", "policy", "profile", "e2e", "logs", "cluster", "track"),
    )
    args = ap.parse_args()
    t0 = time.monotonic()
    res: dict = {"quick": args.quick, "machine": machine()}
    print(f"machine: {res['machine']}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="exmilter-bench-") as tmp:
        work = Path(tmp)
        if "lookup" not in args.skip:
            print("== configuration scale", file=sys.stderr)
            res["lookup"] = lookup.measure(args.quick)
        if "policy" not in args.skip:
            print("== policy load", file=sys.stderr)
            res["policy"] = policy_bench(1.0 if args.quick else 3.0, 1 if args.quick else 3, work)
        if "profile" not in args.skip and policyd_available():
            print("== profile", file=sys.stderr)
            res["profile"] = prof.profile(3.0 if args.quick else 8.0, 20, work / "profile")
            res["profile"].pop("raw", None)
        if "e2e" not in args.skip:
            print("== end to end", file=sys.stderr)
            try:
                n, rep = (1000, 1) if args.quick else (5000, 5)  # runs of one scenario spread ±15 %
                res["e2e"] = e2e.measure(n, 20, 1024, rep, work / "e2e")
                res["e2e"]["repeat"] = rep
            except Exception as ex:
                res["e2e"] = {"error": str(ex)[:300]}
        if "logs" not in args.skip and policyd_available():
            print("== logs on vs off", file=sys.stderr)
            res["logs"] = loghooks.measure(args.quick)
        if "cluster" not in args.skip:
            print("== shared rate window per MAIL", file=sys.stderr)
            try:
                res["cluster"] = cluster.measure(args.quick)
            except Exception as ex:  # no redis-server: reported, the rest of the run stands
                res["cluster"] = {"error": str(ex)[:300]}
        if "track" not in args.skip:
            print("== exmilter track", file=sys.stderr)
            res["track"] = track.bench(100_000 if args.quick else 1_000_000)
    res["load_after"] = machine_load()
    res["elapsed_s"] = time.monotonic() - t0
    out = BENCH / "results"
    out.mkdir(exist_ok=True)
    (out / ("quick.json" if args.quick else "latest.json")).write_text(json.dumps(res, indent=2, default=str))
    if args.quick or args.skip:
        print("quick or partial run: docs/performance.md left alone (only a full run writes it)", file=sys.stderr)
    elif not args.no_doc:
        write_doc(res)
        print(f"wrote {DOC.relative_to(ROOT)}", file=sys.stderr)
    for t, g, v, ver in evaluate(res):
        print(f"{t:45} {g:8} {v:>10}  {ver}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
