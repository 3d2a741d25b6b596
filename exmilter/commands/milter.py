"""``exmilter milter``: run the milter until SIGTERM (docs/milter.md)."""

from __future__ import annotations

import argparse

from exmilter.commands._common import EXIT_REFUSED, add_config_option, load_or_report


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "milter",
        help="run the milter (Exchange's end-of-data checks, header firewall, verbatim replies)",
        description="Judge MAIL, RCPT and end of data for Postfix with Exchange's replies byte for byte, strip "
        "the X-MS-Exchange-* headers the session may not send and stamp AuthAs/AuthSource (docs/milter.md). "
        "SIGHUP reloads the file (a bad file keeps the running configuration; a session keeps the one it "
        "started with); SIGTERM stops.",
    )
    add_config_option(p)
    p.add_argument(
        "--listen",
        metavar="ENDPOINT",
        help="where Postfix reaches the milter: unix:/run/exmilter/milter.sock[:mode=660] or "
        "tcp:10042:interface=127.0.0.1 (default: milter.listen from the file)",
    )
    p.add_argument(
        "--metrics",
        metavar="ENDPOINT",
        help="tcp:PORT[:interface=ADDRESS] for the Prometheus metrics (default: milter.metrics from the "
        "file, tcp:9143:interface=127.0.0.1); 'none' disables",
    )
    p.add_argument(
        "--coverage",
        metavar="PATH",
        help="the policy daemon's coverage socket, where the milter registers the sessions it judges "
        "(default: milter.coverage from the file); 'none': register nothing (the policy daemon judges too)",
    )
    p.add_argument(
        "--tracking-log-path",
        metavar="DIR",
        help="where the RECEIVE rows of accepted messages go (MSGTRKMT*.LOG; default: "
        "logs.message_tracking_log_path from the file; docs/logs.md)",
    )
    p.add_argument(
        "--protocol-log-path",
        metavar="DIR",
        help="where the SMTP receive protocol log of the sessions on Verbose connectors goes (RECV*.LOG; "
        "default: logs.receive_protocol_log_path from the file; '' turns it off; docs/logs.md)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log every accepted message, not only refusals")
    p.set_defaults(func=run)


def _none(value: str | None, default: str | None) -> str | None:
    if value is None:
        return default
    return None if value.strip().lower() == "none" else value


def run(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return EXIT_REFUSED
    from exmilter.milter import daemon

    m = loaded.organization.milter
    return daemon.run(
        args.config,
        loaded,
        args.listen or m.listen,
        _none(args.metrics, m.metrics),
        _none(args.coverage, m.coverage),
        verbose=args.verbose,
        tracking_log_path=args.tracking_log_path,
        protocol_log_path=args.protocol_log_path,
    )
