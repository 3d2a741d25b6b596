"""``exmilter replay``: an Exchange server's protocol logs judged with the new configuration."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from exmilter.commands._common import EXIT_REFUSED, add_config_option, load_or_report
from exmilter.engine import Engine
from exmilter.logs.replay import Progress, as_json, format_text, replay
from exmilter.logs.w3c import parse_file_name

#: Exit status when at least one session would differ.
EXIT_DIFFERENCES = 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay",
        help="replay Exchange protocol logs (RECV*.LOG) against the configuration",
        description="Read an Exchange server's SMTP receive protocol logs (RECV*.LOG files or directories "
        "holding them; MSGTRK*.LOG tracking logs may be given too, for message sizes), rebuild each session "
        "and run it through the engine with this configuration. Reports every session whose connector, "
        "permissions or MAIL/RCPT/end-of-data reply would differ, grouped by client and connector, then "
        "which client IPs used which connector. Streams; progress goes to stderr. "
        "Exit status: 0 no difference, 1 differences found, 2 configuration or arguments refused.",
    )
    add_config_option(p)
    p.add_argument("logs", nargs="+", metavar="LOG", help="RECV*.LOG / MSGTRK*.LOG files or directories")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--limit", type=int, default=20, metavar="N", help="sessions shown per client/connector (text)")
    p.set_defaults(func=run)


def _split(paths: list[str]) -> tuple[list[str], list[str]]:
    protocol, tracking = [], []
    for p in paths:
        parsed = None if os.path.isdir(p) else parse_file_name(os.path.basename(p))
        if parsed is not None and parsed[0].startswith("MSGTRK"):
            tracking.append(p)
        else:
            protocol.append(p)
            if os.path.isdir(p):
                tracking.append(p)
    return protocol, tracking


def run(args: argparse.Namespace) -> int:
    missing = [p for p in args.logs if not os.path.exists(p)]
    if missing:
        print(f"exmilter replay: no such file or directory: {', '.join(missing)}", file=sys.stderr)
        return EXIT_REFUSED
    loaded = load_or_report(args.config)
    if loaded is None:
        return EXIT_REFUSED
    protocol, tracking = _split(args.logs)
    last = [0.0]

    def progress(p: Progress) -> None:
        now = time.monotonic()
        if args.quiet or (now - last[0] < 1.0 and p.files_done < p.files):
            return
        last[0] = now
        pct = 100 * p.bytes_done / p.bytes_total if p.bytes_total else 100
        print(
            f"replay: {p.files_done}/{p.files} files, {p.bytes_done / 1e6:.1f}/{p.bytes_total / 1e6:.1f} MB "
            f"({pct:.0f}%), {p.rows} rows, {p.sessions} sessions",
            file=sys.stderr,
        )

    report = replay(Engine(loaded.organization), protocol, tracking, progress)
    if args.json:
        print(json.dumps(as_json(report), indent=2))
    else:
        for line in format_text(report, limit=args.limit):
            print(line)
    return EXIT_DIFFERENCES if report.total_differing else 0
