"""``exmilter follow-maillog``: Postfix's delivery lines appended to the message tracking log."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time

from exmilter.commands._common import EXIT_REFUSED, add_config_option, load_or_report
from exmilter.logs.files import Writers, open_tracking_log
from exmilter.logs.postfixlog import DeliveryTracker, Follower, outcomes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "follow-maillog",
        help="turn Postfix's delivery log lines into DELIVER/SEND/DEFER/FAIL/DSN tracking events",
        description="Follow Postfix's log (maillog_file, or a file syslog writes) like tail -F and append "
        "each delivery outcome to the message tracking log (logs.message_tracking_log_path) with the queue "
        "id and the message id Postfix logged. --once reads the file to its end and exits (a backfill). "
        "SIGTERM stops. Exit status: 0, 2 configuration refused or no such file.",
    )
    add_config_option(p)
    p.add_argument("maillog", metavar="FILE", help="Postfix's log file, e.g. the instance's maillog_file")
    p.add_argument("--once", action="store_true", help="read the whole file once and exit")
    p.add_argument("--from-start", action="store_true", help="follow from the file's start, not its end")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return EXIT_REFUSED
    org = loaded.organization
    writers = Writers()

    def failed(where: str, e: OSError) -> None:
        print(f"exmilter follow-maillog: cannot write the tracking log in {where}: {e}", file=sys.stderr)

    tlog = open_tracking_log(org.logs, org.server.fqdn, writers, failed)
    if tlog is None:
        print("exmilter follow-maillog: message tracking is off (logs.message_tracking_log_path)", file=sys.stderr)
        return EXIT_REFUSED
    try:
        if args.once:
            if not os.path.exists(args.maillog):
                print(f"exmilter follow-maillog: no such file: {args.maillog}", file=sys.stderr)
                return EXIT_REFUSED
            with open(args.maillog, encoding="utf-8", errors="replace") as f:
                for o in outcomes(f, DeliveryTracker(), time.time()):
                    tlog.outcome(o)
            return 0
        follower = Follower(args.maillog, tlog.outcome, from_start=args.from_start)
        signal.signal(signal.SIGTERM, lambda *_: follower.stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            follower.run()
        return 0
    finally:
        writers.close()
