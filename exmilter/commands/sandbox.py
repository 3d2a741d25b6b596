"""``exmilter sandbox``: the whole stack on loopback until Ctrl-C (docs/sandbox.md)."""

from __future__ import annotations

import argparse

from exmilter.commands._common import add_config_option
from exmilter.sandbox import foreground
from exmilter.sandbox.dovecot import SANDBOX_PASSWORD
from exmilter.sandbox.stack import DEFAULT_OFFSET, DEFAULT_STATE
from exmilter.sandbox.supervisor import RESTART_DELAY, START_LIMIT_BURST, START_LIMIT_INTERVAL


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sandbox",
        help="run a private Postfix + policy daemon on loopback",
        description="Start a private Postfix (config, queue and logs under the state directory) rendered "
        "from the file with every listener on 127.0.0.1:port+offset, the policy daemon, and delivery "
        "of every accepted message into STATE/delivered/. The private Postfix makes no DNS query. "
        "STARTTLS uses a throw-away certificate from the sandbox's own CA (STATE/tls/ca.pem); where a "
        "connector offers AUTH, a private Dovecot (never the system one) checks the users: logins, "
        f"each with the password {SANDBOX_PASSWORD!r} (docs/authentication.md). "
        "Ctrl-C or SIGTERM stops everything. SIGHUP reloads the file; a file that does not load is "
        "reported and the running rules are kept. A policy daemon that dies is restarted after "
        f"{RESTART_DELAY:g} s; after {START_LIMIT_BURST} restarts within {START_LIMIT_INTERVAL:g} s the "
        "sandbox gives up, says the stack is degraded (Postfix answers 451 4.3.5) and keeps Postfix "
        "running; SIGHUP starts the daemon again. Needs root; never touches /etc/postfix "
        "(docs/sandbox.md).",
    )
    add_config_option(p)
    p.add_argument(
        "--port-offset",
        type=int,
        default=DEFAULT_OFFSET,
        metavar="N",
        help=f"added to every listener port (default {DEFAULT_OFFSET}: 25 -> {25 + DEFAULT_OFFSET})",
    )
    p.add_argument(
        "--state-dir",
        default=str(DEFAULT_STATE),
        metavar="DIR",
        help=f"where the instance keeps config, queue, logs and delivered mail (default {DEFAULT_STATE})",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return foreground.run(args.config, args.state_dir, args.port_offset)
