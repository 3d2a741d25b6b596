"""``exmilter sandbox``: the whole stack on loopback until Ctrl-C (docs/sandbox.md)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from exmilter.commands._common import add_config_option
from exmilter.sandbox import DEFAULT_OFFSET, DEFAULT_STATE, Sandbox, SandboxError
from exmilter.supervisor import RESTART_DELAY, START_LIMIT_BURST, START_LIMIT_INTERVAL


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sandbox",
        help="run a private Postfix + policy daemon on loopback",
        description="Start a private Postfix (config, queue and logs under the state directory) rendered "
        "from the file with every listener on 127.0.0.1:port+offset, the policy daemon, and delivery "
        "of every accepted message into STATE/delivered/. The private Postfix makes no DNS query. "
        "Ctrl-C or SIGTERM stops everything. SIGHUP reloads the file; a file that does not load is "
        "reported and the running rules are kept. A policy daemon that dies is restarted after "
        f"{RESTART_DELAY:g} s; after {START_LIMIT_BURST} restarts within {START_LIMIT_INTERVAL:g} s the "
        "sandbox gives up, says the stack is degraded (Postfix answers 451 4.3.5) and keeps Postfix "
        "running; SIGHUP starts the daemon again. Needs root; never touches /etc/postfix "
        "(docs/sandbox.md).",
    )
    add_config_option(p)
    p.add_argument("--port-offset", type=int, default=DEFAULT_OFFSET, metavar="N",
                   help=f"added to every listener port (default {DEFAULT_OFFSET}: 25 -> {25 + DEFAULT_OFFSET})")
    p.add_argument("--state-dir", default=str(DEFAULT_STATE), metavar="DIR",
                   help=f"where the instance keeps config, queue, logs and delivered mail (default {DEFAULT_STATE})")
    p.set_defaults(func=run)


def summary(sb: Sandbox) -> str:
    d = sb.describe()
    width = max(len(x["context"]) for x in d["listeners"])
    lines = [
        "exmilter sandbox is running (Ctrl-C stops it, SIGHUP reloads the file)",
        "",
        "Listeners (Exchange listener -> sandbox address):",
    ]
    for x in d["listeners"]:
        lines.append(f"  {x['context']:<{width}}  ->  {x['listen']:<16} {', '.join(x['connectors'])}")
    lines += [
        "",
        f"Policy daemon   {d['policyd']['listen']} (pid {d['policyd']['pid']}, restarted if it dies), "
        f"log {d['policyd']['log']}",
        f"Metrics         {d['policyd']['metrics']}",
        f"Delivered mail  {d['delivered']}/",
        f"Postfix log     {d['maillog']}",
        f"Postfix config  postconf -c {sb.postfix.etc} -n",
        "",
        "Try it:",
        f"  {sb.swaks_line()}",
        f"  {sb.swaks_line('someone@gmail.com')}",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    sb = Sandbox(args.config, args.state_dir, args.port_offset)
    wake = threading.Event()
    asked = {"stop": False, "reload": False}

    def on_signal(what: str) -> None:
        asked[what] = True
        wake.set()

    signal.signal(signal.SIGINT, lambda *_: on_signal("stop"))
    signal.signal(signal.SIGTERM, lambda *_: on_signal("stop"))
    signal.signal(signal.SIGHUP, lambda *_: on_signal("reload"))
    try:
        sb.start()
    except SandboxError as e:
        print(f"exmilter sandbox: {e}", file=sys.stderr)
        return 2
    print(summary(sb), flush=True)
    try:
        while not asked["stop"]:
            wake.wait(1.0)
            wake.clear()
            if asked["reload"] and not asked["stop"]:
                asked["reload"] = False
                try:
                    sb.reload()  # reports a file that does not load and keeps the rules
                except Exception as e:  # a bug must not stop the stack: say it, keep serving
                    print(f"exmilter sandbox: reload failed ({type(e).__name__}: {e}); the running rules stay",
                          file=sys.stderr, flush=True)
    finally:
        print("stopping...", flush=True)
        sb.stop()
    print("stopped", flush=True)
    return 0
