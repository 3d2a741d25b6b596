"""Profile the policy daemon under load with py-spy and summarise the hottest frames.

    .venv/bin/python bench/profiler.py [--seconds 8] [-c 20] [--out DIR]

Starts the daemon on the bench configuration, runs bench/policyload.py at C connections
while ``py-spy record --nonblocking -f raw`` samples it, and prints the top frames by
self time and by inclusive time (percent of samples). The raw collapsed stacks are kept
in DIR for a flame graph (``py-spy`` can also write SVG with ``-f flamegraph``).
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import policyload
from common import BENCH_CONFIG, free_port, start_policyd, stop


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def summarise(raw: Path, top: int = 15) -> dict:
    """Self and inclusive sample shares per frame from py-spy's collapsed stacks."""
    self_c: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        n = int(n)
        total += n
        frames = [_short(f) for f in stack.split(";")]
        # the first frame is the thread/process name
        frames = [f for f in frames[1:] if f] if frames and frames[0].startswith(("process", "thread")) else frames
        if not frames:
            continue
        self_c[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    pct = (lambda c: [(f, round(100.0 * v / total, 1)) for f, v in c.most_common(top)]) if total else (lambda c: [])
    return {"samples": total, "self": pct(self_c), "inclusive": pct(incl)}


#: Where the daemon's time goes, by the first marker found in a sample's stack (in this order).
COMPONENTS = (
    ("logging refusals (PolicyProtocol.log_decision → twisted.logger)", ("log_decision",)),
    ("other twisted.logger work", ("twisted/logger/",)),
    ("request parsing (RequestParser)", ("RequestParser.",)),
    ("deciding (Decider.decide → Engine)", ("Decider.",)),
    ("metrics (exmilter/policy/metrics.py, prometheus_client)", ("prometheus_client/", "exmilter/policy/metrics.py")),
    ("idle timer (DelayedCall.reset in PolicyProtocol.dataReceived)", ("DelayedCall.reset",)),
    (
        "answer write path (PolicyProtocol.send → socket.send; transport.write, doWrite)",
        ("PolicyProtocol.send", "FileDescriptor.write", "FileDescriptor.doWrite", "writeSomeData"),
    ),
    ("reactor: epoll, recv, dispatch (callWithLogger, …)", ("",)),
)


def components(raw: Path) -> list[tuple[str, float]]:
    """Share of samples per component; py-spy's non-blocking stacks make this approximate."""
    counts = dict.fromkeys((name for name, _ in COMPONENTS), 0)
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        total += int(n)
        for name, markers in COMPONENTS:
            if any(m in stack for m in markers):
                counts[name] += int(n)
                break
    return [(name, round(100.0 * c / total, 1)) for name, c in counts.items()] if total else []


def _short(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "file.py:func"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif "/work/main/" in path:
        path = path.split("/work/main/", 1)[1]
    elif "/lib/python3" in path:
        path = "stdlib/" + path.rsplit("/", 1)[-1]
    return f"{path}:{name}"


def profile(seconds: float = 8.0, connections: int = 20, out: Path | None = None) -> dict:
    exe = py_spy()
    if exe is None:
        return {"error": "py-spy not installed (pip install py-spy)"}
    tmp = Path(out or tempfile.mkdtemp(prefix="exmilter-profile-"))
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = tmp / "bench.yaml"
    cfg.write_text(BENCH_CONFIG)
    port = free_port()
    proc = start_policyd(cfg, port, tmp / "policyd.log")
    raw = tmp / "policyd.raw"
    try:
        spy = subprocess.Popen(
            [
                exe,
                "record",
                "--nonblocking",
                "-r",
                "250",
                "-d",
                str(int(seconds)),
                "-f",
                "raw",
                "-o",
                str(raw),
                "-p",
                str(proc.pid),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        holder = {}
        t = threading.Thread(target=lambda: holder.update(r=policyload.run(port, connections, seconds + 1, 0.3)))
        t.start()
        spy.wait(seconds + 30)
        t.join()
    finally:
        stop(proc)
    res = summarise(raw, 40) if raw.exists() else {"error": "py-spy wrote nothing"}
    if raw.exists():
        res["components"] = components(raw)
    res["load"] = holder["r"].line() if "r" in holder else ""
    res["raw"] = str(raw)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("-c", "--connections", type=int, default=20)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    res = profile(args.seconds, args.connections, args.out)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(res.get("load", ""), f"samples={res.get('samples')}")
    print("-- by component (% of samples)")
    for name, pct in res.get("components", []):
        print(f"  {pct:5.1f}%  {name}")
    for kind in ("self", "inclusive"):
        print(f"-- top frames by {kind} time (% of samples)")
        for f, p in res.get(kind, []):
            print(f"  {p:5.1f}%  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
