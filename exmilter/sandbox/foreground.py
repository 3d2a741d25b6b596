"""``exmilter sandbox`` in the foreground: up, a summary, then signals until Ctrl-C.

SIGINT/SIGTERM stop the stack, SIGHUP reloads the file (docs/sandbox.md). Signal handlers
only set flags; the main thread acts on them, so a reload never runs inside a handler.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from exmilter.sandbox.stack import Sandbox, SandboxError

#: Exit status when the stack cannot start (the reason is printed).
EXIT_NOT_STARTED = 2
#: How often the main thread looks at the flags when no signal wakes it.
POLL_INTERVAL = 1.0


def summary(sb: Sandbox) -> str:
    """What the operator needs once the stack is up: where everything is and what to try."""
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
        f"Exchange logs   {sb.protocol_log_dir}/RECV*.LOG, {sb.tracking_log_dir}/MSGTRK*.LOG",
        "",
        "Try it:",
        f"  {sb.swaks_line()}",
        f"  {sb.swaks_line('someone@gmail.com')}",
        f"  exmilter track --path {sb.tracking_log_dir} --start -10m",
    ]
    auth = sb.auth_swaks_line()
    if auth:
        dovecot = d["dovecot"]
        lines[-4:-4] = [
            f"AUTH            Dovecot (pid {dovecot['pid']}), users {', '.join(dovecot['users']) or '(none)'}, "
            f"password {dovecot['password']}",
            f"STARTTLS        certificate signed by {d['tls']['ca']}",
        ]
        lines.append(f"  {auth}")
    return "\n".join(lines)


def run(config: Path | str, state_dir: Path | str, port_offset: int) -> int:
    """Start the stack, serve until SIGINT/SIGTERM (reloading on SIGHUP), stop it; the exit status."""
    sb = Sandbox(config, state_dir, port_offset)
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
        return EXIT_NOT_STARTED
    print(summary(sb), flush=True)
    try:
        while not asked["stop"]:
            wake.wait(POLL_INTERVAL)
            wake.clear()
            if asked["reload"] and not asked["stop"]:
                asked["reload"] = False
                try:
                    sb.reload()  # reports a file that does not load and keeps the rules
                except Exception as e:  # a bug must not stop the stack: say it, keep serving
                    print(
                        f"exmilter sandbox: reload failed ({type(e).__name__}: {e}); the running rules stay",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        print("stopping...", flush=True)
        sb.stop()
    print("stopped", flush=True)
    return 0
