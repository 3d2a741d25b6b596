"""``exmilter policyd``: run the Postfix policy daemon until SIGTERM (docs/policyd.md)."""

from __future__ import annotations

import argparse

from exmilter.commands._common import EXIT_REFUSED, add_config_option, load_or_report


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
        "replaces policyd.listen from the file",
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return EXIT_REFUSED
    from exmilter.policy import daemon

    settings = loaded.organization.policyd
    listen = list(args.listen or settings.listen)
    if args.metrics is None:
        metrics = settings.metrics
    else:
        metrics = None if args.metrics.strip().lower() == "none" else args.metrics
    m = loaded.organization.milter
    if args.coverage is None:
        coverage = m.coverage if m.enabled else None
    else:
        coverage = None if args.coverage.strip().lower() == "none" else args.coverage
    return daemon.run(args.config, loaded, listen, metrics, verbose=args.verbose, coverage=coverage)
