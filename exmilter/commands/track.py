"""``exmilter track``: ``Get-MessageTrackingLog`` over exmilter's message tracking log."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

from exmilter.commands._common import EXIT_REFUSED
from exmilter.config import DEFAULT_PATH, ConfigError, load
from exmilter.logs.query import (
    SUMMARY_COLUMNS,
    TrackingFilter,
    aligned,
    now,
    parse_when,
    search,
    summary,
    table,
)
from exmilter.model import LogSettings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "track",
        help="search the message tracking log (Get-MessageTrackingLog)",
        description="Search exmilter's message tracking log like Get-MessageTrackingLog: every condition "
        "given must hold. Times are relative (-10m, -2h, -1d, -30s) or absolute (2023-01-11T16:00, local "
        "time unless it ends in Z). The log directory is --path, else the configuration's "
        "logs.message_tracking_log_path. Exit status: 0 (also when nothing matched), 2 arguments or "
        "configuration refused.",
    )
    p.add_argument("-c", "--config", default=DEFAULT_PATH, metavar="FILE", help="configuration naming the log path")
    p.add_argument("--path", action="append", metavar="DIR|FILE", help="tracking log directory or MSGTRK*.LOG file")
    p.add_argument("--start", metavar="WHEN", help="from this time (e.g. -10m)")
    p.add_argument("--end", metavar="WHEN", help="up to this time")
    p.add_argument("--sender", metavar="ADDR")
    p.add_argument("--recipients", metavar="ADDR", nargs="+", action="extend", default=[])
    p.add_argument("--event-id", metavar="EVENT", help="RECEIVE, DELIVER, SEND, DEFER, FAIL, DSN")
    p.add_argument("--message-id", metavar="ID")
    p.add_argument("--connector", metavar="NAME", help="connector name or SERVER\\Name")
    p.add_argument("--queue-id", metavar="ID", help="Postfix queue id (the internal-message-id field)")
    p.add_argument("--result-size", type=int, default=1000, metavar="N", help="at most N rows (0: all; default 1000)")
    p.add_argument("--json", action="store_true", help="one JSON object per row, fields as in the file")
    p.add_argument(
        "--summary",
        action="store_true",
        help="one line per message (queue id): connector, message-info, sender, recipients and its final event",
    )
    # "--start -10m" as Get-MessageTrackingLog users write it: argparse takes a value starting with "-"
    # for an option unless it looks like a negative number; relative times count as numbers here.
    p._negative_number_matcher = re.compile(r"^-\d+(?:\.\d+)?[smhd]?$")
    p.set_defaults(func=run)


def _paths(args: argparse.Namespace) -> list[str] | None:
    if args.path:
        return list(args.path)
    settings = LogSettings()
    if os.path.exists(args.config):
        try:
            settings = load(args.config).organization.logs
        except ConfigError as e:
            for problem in e.problems:
                print(problem, file=sys.stderr)
            print(f"{args.config}: refused; give the log directory with --path", file=sys.stderr)
            return None
    if not settings.message_tracking_log_path:
        print("message tracking is off (logs.message_tracking_log_path is empty); use --path", file=sys.stderr)
        return None
    return [settings.message_tracking_log_path]


def run(args: argparse.Namespace) -> int:
    t = now()
    try:
        flt = TrackingFilter(
            start=parse_when(args.start, t) if args.start else None,
            end=parse_when(args.end, t) if args.end else None,
            sender=args.sender,
            recipients=tuple(args.recipients),
            event_id=args.event_id,
            message_id=args.message_id,
            connector=args.connector,
            queue_id=args.queue_id,
        )
    except ValueError as e:
        print(f"exmilter track: {e}", file=sys.stderr)
        return EXIT_REFUSED
    paths = _paths(args)
    if paths is None:
        return EXIT_REFUSED
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        print(f"exmilter track: no such log directory or file: {', '.join(missing)}", file=sys.stderr)
        return EXIT_REFUSED
    rows = []
    for r in search(paths, flt):
        rows.append(r)
        if args.result_size and len(rows) >= args.result_size:
            print(f"exmilter track: first {args.result_size} rows; --result-size 0 for all", file=sys.stderr)
            break
    if args.summary:
        messages = summary(rows)
        if args.json:
            for m in messages:
                print(json.dumps(m, ensure_ascii=False))
        else:
            for line in aligned(SUMMARY_COLUMNS, [[m[c] for c in SUMMARY_COLUMNS] for m in messages]):
                print(line)
    elif args.json:
        for r in rows:
            print(json.dumps(r, ensure_ascii=False))
    else:
        for line in table(rows):
            print(line)
    return 0
