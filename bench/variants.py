"""Sizing experiment: the policy daemon with candidate optimisations monkeypatched in.

    .venv/bin/python bench/variants.py [--rounds 3] [VARIANT ...]
    e.g.  bench/variants.py base cheaplog nolog nolog,nometrics nolog,eager,notimeout,nometrics

Not run by bench/run.sh and not a measurement of the shipped daemon: it starts the daemon
through this file with ``--as-daemon`` and patches, before the reactor starts,

- ``nolog``      PolicyProtocol.log_decision does nothing;
- ``cheaplog``   the same line %-formatted and written straight to stderr (no twisted.logger);
- ``eager``      transport.write tries ``socket.send`` at once when nothing is buffered;
- ``notimeout``  no TimeoutMixin.resetTimeout per dataReceived;
- ``nometrics``  no prometheus_client counters/histogram per request.

It depends on the daemon's internals as of commit d3f7fac (exmilter/policy/service.py,
exmilter/metrics.py) and is expected to break when they change; it exists to size the
suggestions in docs/performance.md. Each variant runs at C=20 for 3 s per round; the
daemon's CPU time per request is the figure to compare (least sensitive to other load).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _patch(variants: set[str]) -> None:
    from exmilter.policy import service

    proto = service.PolicyProtocol
    if "nolog" in variants:
        proto.log_decision = lambda self, req, d: None
    if "cheaplog" in variants:

        def log_decision(self, req, d, _w=sys.stderr.write):  # type: ignore[no-untyped-def]
            _w("%s c%d.%d %s client=%s connector=%r from=<%s> to=<%s>: %s\n" % (  # noqa: UP031
                time.strftime("%Y-%m-%dT%H:%M:%S"), self.conn_id, self.seq, d.stage,
                req.get("client_address", ""), d.connector or "-", req.get("sender", ""),
                req.get("recipient", ""), d.action))

        proto.log_decision = log_decision
    if "eager" in variants:
        made = proto.connectionMade

        def connection_made(self):  # type: ignore[no-untyped-def]
            made(self)
            t = self.transport
            sock = t.getHandle()
            write = t.write

            def eager(data: bytes) -> None:
                if not t.dataBuffer and not t._tempDataBuffer and not t.disconnecting:
                    try:
                        n = sock.send(data)
                    except BlockingIOError:
                        n = 0
                    except OSError:
                        write(data)
                        return
                    if n == len(data):
                        return
                    data = data[n:]
                write(data)

            t.write = eager

        proto.connectionMade = connection_made
    if "notimeout" in variants:
        proto.resetTimeout = lambda self: None
    if "nometrics" in variants:
        from exmilter import metrics

        class _NoHistogram:
            def observe(self, value: float) -> None:
                pass

        init = metrics.PolicyMetrics.__init__

        def metrics_init(self, registry):  # type: ignore[no-untyped-def]
            init(self, registry)
            self.latency = _NoHistogram()

        metrics.PolicyMetrics.__init__ = metrics_init
        metrics.PolicyMetrics.request = lambda self, state: None
        metrics.PolicyMetrics.decision = lambda self, *a: None


def run_variants(variants: list[str], rounds: int) -> None:
    import policyload
    from common import BENCH_CONFIG, PYTHON, ROOT, free_port, stop, wait_port

    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"exmilter-variants-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "bench.yaml"
    cfg.write_text(BENCH_CONFIG)
    for r in range(rounds):
        for v in variants:
            port = free_port()
            env = {**os.environ, "EXMILTER_BENCH_VARIANT": "" if v == "base" else v}
            with open(work / f"{v}.log", "wb") as fh:
                proc = subprocess.Popen([PYTHON, __file__, "--as-daemon", "policyd", "-c", str(cfg), "--listen",
                                         f"tcp:{port}:interface=127.0.0.1", "--metrics", "none"],
                                        cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
            try:
                wait_port(port, 60, proc)
                res = policyload.run(port, 20, 3.0, 0.5, pid=proc.pid)
            finally:
                stop(proc)
            print(f"[{r + 1}/{rounds}] {v:34} {res.line()}", flush=True)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--as-daemon":
        _patch(set(filter(None, os.environ.get("EXMILTER_BENCH_VARIANT", "").split(","))))
        from exmilter.cli import main as cli_main

        return cli_main(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("variants", nargs="*", default=["base", "cheaplog", "nolog", "nolog,nometrics",
                                                   "nolog,eager,notimeout,nometrics"])
    args = ap.parse_args()
    run_variants(args.variants, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
