"""``exmilter explain``: which connector a client gets, and Exchange's reply at each stage."""

from __future__ import annotations

import argparse
import json

from exmilter.commands._common import EXIT_REFUSED, add_config_option, load_or_report
from exmilter.explain import explain, format_text
from exmilter.values import parse_ip


def _ip(text: str) -> str:
    try:
        return str(parse_ip(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="show the connector, permissions and replies for one client",
        description="Walk one SMTP transaction through the receive-connector engine and show which "
        "connector matched and why, the session permissions and the reply at each stage; with send connectors, "
        "each accepted recipient's route (connector or mailboxes, next hop, TLS requirement; docs/send-connectors.md). "
        "Exit status: 0 explained, 2 configuration or arguments refused.",
    )
    add_config_option(p)
    p.add_argument("--client-ip", required=True, type=_ip, help="the client's address")
    p.add_argument("--server-ip", type=_ip, help="the local address the client connected to (default: any)")
    p.add_argument("--port", type=int, default=25, help="the local port (default 25)")
    p.add_argument("--helo", default="explain.invalid", help="HELO/EHLO name; '' means none was sent")
    p.add_argument("--from", dest="mail_from", metavar="ADDR", help="MAIL FROM address ('' for <>)")
    p.add_argument(
        "--to", dest="rcpt_to", metavar="ADDR", nargs="+", action="extend", default=[], help="RCPT TO address(es)"
    )
    p.add_argument(
        "--auth",
        metavar="USER",
        help="authenticate as USER (SASL login; judged anonymous where the connector could not have "
        "accepted it: no BasicAuth, or BasicAuthRequireTLS without --tls)",
    )
    p.add_argument("--tls", action="store_true", help="the session is under TLS")
    p.add_argument("--size", type=int, metavar="BYTES", help="message size (MAIL SIZE= and end of data)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return EXIT_REFUSED
    result = explain(
        loaded.organization,
        client_ip=args.client_ip,
        server_ip=args.server_ip,
        port=args.port,
        helo=args.helo,
        mail_from=args.mail_from,
        rcpt_to=args.rcpt_to,
        auth=args.auth,
        tls=args.tls,
        size=args.size,
    )
    print(json.dumps(result, indent=2) if args.json else format_text(result))
    return 0
