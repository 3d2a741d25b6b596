"""``exmilter sandbox``: the whole stack on loopback until Ctrl-C (docs/sandbox.md)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from exmilter.commands._common import add_config_option
from exmilter.sandbox import DEFAULT_OFFSET, DEFAULT_STATE, Sandbox, SandboxError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sandbox",
        help="run a private Postfix + policy daemon on loopback",
        description="Start a private Postfix (config, queue and logs under the state directory) rendered "
        "from the file with every listener on 127.0.0.1:port+offset, the policy daemon, and delivery "
        "of every accepted message into STATE/delivered/. Ctrl-C or SIGTERM stops everything; "
        "SIGHUP reloads the policy daemon. Needs root; never touches /etc/postfix.",
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
    lines = ["exmilter sandbox is running (Ctrl-C stops it)", "", "Listeners (Exchange listener -> sandbox address):"]
    for x in d["listeners"]:
        lines.append(f"  {x['context']:<{width}}  ->  {x['listen']:<16} {', '.join(x['connectors'])}")
    lines += [
        "",
        f"Policy daemon   {d['policyd']['listen']} (pid {d['policyd']['pid']}), log {d['policyd']['log']}",
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
    stop = threading.Event()
    reload = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: reload.set())
    try:
        sb.start()
    except SandboxError as e:
        print(f"exmilter sandbox: {e}", file=sys.stderr)
        return 2
    print(summary(sb), flush=True)
    warned = False
    try:
        while not stop.wait(0.5):
            if reload.is_set():
                reload.clear()
                ok = sb.reload()
                print("reloaded" if ok else f"{args.config} does not load: the daemon keeps its rules", flush=True)
            if sb.policyd_pid is None and not warned:
                print(f"the policy daemon exited; see {sb.policyd_log}. Postfix now answers 451 4.3.5.",
                      file=sys.stderr, flush=True)
                warned = True
    finally:
        print("stopping...", flush=True)
        sb.stop()
    return 0
