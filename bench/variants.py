"""Sizing experiment: the policy daemon with candidate optimisations monkeypatched in.

    .venv/bin/python bench/variants.py [--rounds 3] [--baseline DIR] [VARIANT ...]
    e.g.  bench/variants.py base nolog metrics nolog,notimeout
          git worktree add /tmp/exmilter-old HEAD~1   # or: git archive COMMIT | tar -x -C DIR
          bench/variants.py --baseline /tmp/exmilter-old baseline base

Not run by bench/run.sh and not a measurement of the shipped daemon: it starts the daemon
(``--metrics none``, unlike bench/run.sh, which measures with metrics on as deployed)
through this file with ``--as-daemon`` and patches, before the reactor starts,

- ``base``       nothing: the daemon as it is in this tree;
- ``nolog``      PolicyProtocol.log_decision does nothing (no refusal lines at all);
- ``notimeout``  no TimeoutMixin.resetTimeout per dataReceived;
- ``metrics``    not a patch: the daemon with Prometheus metrics on (a listener on a free
  loopback port, never scraped), to size what metrics cost per request;
- ``baseline``   not a patch: the daemon from the source tree given with ``--baseline``
  (another commit checked out or unpacked), for before/after figures in one run.

The patches depend on the daemon's internals (exmilter/policy/connection.py) and are expected
to break when those change; they exist to size the suggestions in docs/performance.md.
(``cheaplog``, ``nometrics`` and ``eager``, which sized the first passes, are now how the
daemon works.)
Each variant runs at C=20 for 3 s per round, interleaved; the daemon's CPU time per request
is the figure to compare (least sensitive to other load).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _patch(variants: set[str]) -> None:
    from exmilter.policy import connection

    proto = connection.PolicyProtocol
    if "nolog" in variants:
        proto.log_decision = lambda self, req, d: None
    if "notimeout" in variants:
        proto.resetTimeout = lambda self: None


def _rss_mb(pid: int) -> int:
    """The process's resident set after the load (it has served every request by then)."""
    with open(f"/proc/{pid}/status") as fh:
        kb = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
    return round(kb / 1024)


def run_variants(variants: list[str], rounds: int, baseline: Path | None = None) -> None:
    import policyload
    from common import BENCH_CONFIG, PYTHON, ROOT, free_port, stop, wait_port

    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"exmilter-variants-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "bench.yaml"
    cfg.write_text(BENCH_CONFIG)
    for r in range(rounds):
        for v in variants:
            port = free_port()
            patches = {p for p in v.split(",") if p not in ("base", "metrics", "baseline")}
            metrics = f"tcp:{free_port()}:interface=127.0.0.1" if "metrics" in v.split(",") else "none"
            args = ["policyd", "-c", str(cfg), "--listen", f"tcp:{port}:interface=127.0.0.1", "--metrics", metrics]
            if v == "baseline":
                if baseline is None:
                    raise SystemExit("variant 'baseline' needs --baseline DIR")
                cmd, cwd = [PYTHON, "-m", "exmilter.cli", *args], baseline  # that tree's exmilter comes first
                env = {**os.environ, "PYTHONPATH": str(baseline)}
            else:
                cmd, cwd = [PYTHON, __file__, "--as-daemon", *args], ROOT
                env = {
                    **os.environ,
                    "PYTHONPATH": str(ROOT),  # this tree's exmilter, not an installed one
                    "EXMILTER_BENCH_VARIANT": ",".join(sorted(patches)),
                }
            with open(work / f"{v}.log", "wb") as fh:
                proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
            try:
                wait_port(port, 60, proc)
                res = policyload.run(port, 20, 3.0, 0.5, pid=proc.pid)
                rss = _rss_mb(proc.pid)
            finally:
                stop(proc)
            print(f"[{r + 1}/{rounds}] {v:34} {res.line()} rss {rss} MB", flush=True)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--as-daemon":
        _patch(set(filter(None, os.environ.get("EXMILTER_BENCH_VARIANT", "").split(","))))
        from exmilter.cli import main as cli_main

        return cli_main(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--baseline", type=Path, metavar="DIR", help="source tree (with exmilter/) to run for the variant 'baseline'"
    )
    ap.add_argument("variants", nargs="*", default=["base", "nolog", "metrics", "nolog,notimeout"])
    args = ap.parse_args()
    run_variants(args.variants, args.rounds, args.baseline.resolve() if args.baseline else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
