"""``exmilter track`` on a month of tracking logs: seconds per filter over N events.

    .venv/bin/python bench/track.py [--events 1000000] [--days 30] [--dir DIR] [--keep] [--json OUT]

Writes ``--events`` tracking rows (RECEIVE, then DELIVER or SEND for each message; 2 % of
messages DEFER first) spread over ``--days`` of hourly MSGTRK files in a temporary
directory (about 400 bytes a row: 1 million rows is ~400 MB of disk), then times one
search per filter as ``exmilter track`` runs it (:func:`exmilter.logs.query.search`),
the median of 3 runs with the page cache warm. Not part of the test suite; the lead runs
it for docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exmilter.logs import tracking as T
from exmilter.logs import w3c
from exmilter.logs.query import TrackingFilter, search

END = w3c.parse_timestamp("2026-01-31T00:00:00Z")
CONNECTORS = ("EX01\\Default Frontend EX01", "EX01\\Client Frontend EX01", "EX01\\SMTP Relay Script")


def generate(directory: Path, events: int, days: int) -> dict[str, str]:
    """The files; returns a few values of one message in the middle, to search for."""
    messages = events // 2
    start = END - days * 86400
    step = (END - start) / messages
    probe: dict[str, str] = {}
    out = None
    hour = ""
    written = 0
    for i in range(messages):
        t = start + i * step
        h = w3c.hour_stamp(t)
        if h != hour:
            if out is not None:
                out.close()
            hour = h
            out = open(directory / f"{T.PREFIX}{h}-1.LOG", "w", encoding="utf-8", newline="")  # noqa: SIM115
            out.write(T.tracking_header(t))
        qid = f"{i:010X}"
        sender = f"app{i % 5000}@contoso.com"
        rcpt = (f"user{i % 20011}@fabrikam.example",)
        mid = f"<{i}.{qid}@app.contoso.com>"
        facts = T.MessageFacts(
            time=t,
            queue_id=qid,
            connector_id=CONNECTORS[i % 3],
            client_ip=f"10.{i % 250}.{(i // 250) % 250}.{i % 7 + 1}",
            client_hostname="app.contoso.com",
            server_ip="192.0.2.10",
            server_hostname="ex01.contoso.com",
            sender=sender,
            recipients=rcpt,
            size=2000 + i % 50_000,
            message_id=mid,
            subject=f"Report {i}",
            auth_mechanism="00",
            auth_as="Anonymous",
            session_id=f"{i:016X}",
            session_start=t,
        )
        assert out is not None
        out.write(w3c.row(T.receive_row(facts)))
        event = "DELIVER" if i % 2 else "SEND"
        o = T.Outcome(t + 0.5, event, qid, rcpt, "250 2.0.0 Ok", sender, mid, facts.size, "mx.fabrikam.example")
        out.write(w3c.row(T.outcome_row(o, "ex01.contoso.com")))
        written += 2
        if i == messages // 2:
            probe = {"sender": sender, "recipient": rcpt[0], "message_id": mid, "queue_id": qid}
    if out is not None:
        out.close()
    probe["rows"] = str(written)
    return probe


def filters(probe: dict[str, str]) -> list[tuple[str, TrackingFilter]]:
    now = END
    return [
        ("--start -10m", TrackingFilter(start=now - 600)),
        ("--start -1h --event-id DELIVER", TrackingFilter(start=now - 3600, event_id="DELIVER")),
        ("--message-id", TrackingFilter(message_id=probe["message_id"])),
        ("--queue-id", TrackingFilter(queue_id=probe["queue_id"])),
        ("--sender (1 in 5000)", TrackingFilter(sender=probe["sender"])),
        ("--recipients (1 in 20011)", TrackingFilter(recipients=(probe["recipient"],))),
        ("--sender --start -1d", TrackingFilter(sender=probe["sender"], start=now - 86400)),
    ]


def measure(directory: Path, probe: dict[str, str], runs: int = 3) -> list[dict]:
    rows = []
    for label, flt in filters(probe):
        times, found = [], 0
        for _ in range(runs):
            t0 = time.perf_counter()
            found = sum(1 for _ in search([str(directory)], flt))
            times.append(time.perf_counter() - t0)
        rows.append({"filter": label, "seconds": statistics.median(times), "rows": found})
    return rows


def bench(events: int = 1_000_000, days: int = 30) -> dict:
    """Generate into a temporary directory, time each filter, remove the files (bench/run.py)."""
    directory = Path(tempfile.mkdtemp(prefix="exmilter-track-bench-"))
    try:
        t0 = time.perf_counter()
        probe = generate(directory, events, days)
        gen = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in directory.iterdir())
        files = len(os.listdir(directory))
        return {
            "events": int(probe["rows"]),
            "files": files,
            "bytes": size,
            "generate_s": gen,
            "filters": measure(directory, probe),
        }
    finally:
        shutil.rmtree(directory)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--dir", help="generate into (or reuse) this directory")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args()
    directory = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="exmilter-track-bench-"))
    directory.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        probe = generate(directory, args.events, args.days)
        gen = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in directory.iterdir())
        print(
            f"{probe['rows']} events in {len(os.listdir(directory))} files, {size / 1e6:.0f} MB, written in {gen:.1f} s"
        )
        res = measure(directory, probe)
        for r in res:
            print(f"{r['filter']:<34} {r['seconds'] * 1000:8.1f} ms  {r['rows']} rows")
        if args.json:
            Path(args.json).write_text(json.dumps({"events": int(probe["rows"]), "bytes": size, "filters": res}))
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
