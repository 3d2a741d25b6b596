"""``exmilter policyd``: run the Postfix policy daemon until SIGTERM (docs/policyd.md)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from exmilter.commands._common import EXIT_REFUSED, add_config_option, load_or_report
from exmilter.model import PolicydSettings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "policyd",
        help="run the Postfix policy daemon",
        description="Answer Postfix policy requests with Exchange's receive-connector decisions. "
        "SIGHUP reloads the file (a bad file keeps the running configuration); SIGTERM stops.",
    )
    add_config_option(p)
    p.add_argument(
        "--listen",
        action="append",
        metavar="ENDPOINT",
        help="Twisted endpoint to serve policy requests on, e.g. tcp:10040:interface=127.0.0.1 or "
        "unix:/run/exmilter/policy.sock:mode=660[:group=postfix]; repeatable; "
        "replaces policyd.listen from the file (with a warning when the file sets it); "
        "systemd:domain=UNIX:index=0 takes the socket of a .socket unit (socket activation)",
    )
    p.add_argument(
        "--metrics",
        metavar="ENDPOINT",
        help="endpoint for the Prometheus metrics (default: policyd.metrics from the file, "
        "tcp:9142:interface=127.0.0.1); 'none' disables",
    )
    p.add_argument(
        "--coverage",
        metavar="PATH",
        help="unix datagram socket on which the milter registers the sessions it judges "
        "(default: milter.coverage from the file when milter.enabled; 'none' disables: this daemon "
        "then judges every session; docs/milter.md)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log every decision, not only refusals")
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="the daemon's own log lines on stderr (default: logs.format from the file, text); each line "
        "starts with its syslog priority <N> when stderr is the journal (JOURNAL_STREAM is set)",
    )
    p.add_argument(
        "--protocol-log-path",
        metavar="DIR",
        help="directory of the SMTP receive protocol log (replaces logs.receive_protocol_log_path from the "
        "file; '' turns it off); only connectors with protocol_logging_level Verbose write to it",
    )
    p.add_argument(
        "--tracking-log-path",
        metavar="DIR",
        help="directory of the message tracking log (replaces logs.message_tracking_log_path; '' turns it off)",
    )
    p.add_argument(
        "--follow-maillog",
        metavar="FILE",
        help="Postfix's log file (maillog_file or syslog's): its delivery lines become DELIVER/SEND/DEFER/FAIL/DSN "
        "tracking events",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return EXIT_REFUSED
    from exmilter.policy import daemon

    settings = loaded.organization.policyd
    listen = list(args.listen or settings.listen)
    if args.listen and settings.listen != PolicydSettings().listen and tuple(args.listen) != settings.listen:
        # Not silently: the file says where to listen, and the command line says otherwise.
        print(
            f"exmilter policyd: --listen {' '.join(args.listen)} replaces policyd.listen from {args.config} "
            f"({', '.join(settings.listen)})",
            file=sys.stderr,
        )
    if args.metrics is None:
        metrics = settings.metrics
    else:
        metrics = None if args.metrics.strip().lower() == "none" else args.metrics
    m = loaded.organization.milter
    if args.coverage is None:
        coverage = m.coverage if m.enabled else None
    else:
        coverage = None if args.coverage.strip().lower() == "none" else args.coverage
    log_format = args.log_format or loaded.organization.logs.format
    paths = {}
    if args.protocol_log_path is not None:
        paths["receive_protocol_log_path"] = args.protocol_log_path
    if args.tracking_log_path is not None:
        paths["message_tracking_log_path"] = args.tracking_log_path
    if paths:
        org = loaded.organization
        logs = dataclasses.replace(org.logs, **paths)
        loaded = dataclasses.replace(loaded, organization=dataclasses.replace(org, logs=logs))
    return daemon.run(
        args.config,
        loaded,
        listen,
        metrics,
        verbose=args.verbose,
        log_format=log_format,
        follow_maillog=args.follow_maillog,
        coverage=coverage,
    )
