"""The sandbox supervises its policy daemon like systemd (issue 10, item 10).

A daemon that cannot start again is given up on after the start limit: the sandbox says
the stack is degraded, Postfix keeps running and fails closed (451 4.3.5), and SIGHUP
with a good file brings the daemon back. A daemon killed under load and restarted by
itself is in test_failures.py, through the real command in test_sandbox_command.py; the
restart counting in tests/test_supervisor.py.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from exmilter.sandbox import Sandbox
from exmilter.sandbox.supervisor import RestartPolicy, State
from tests.integration.helpers import send, wait_delivered

RELAY_DENIED = "550 5.7.54 <{}>: Recipient address rejected: SMTP; Unable to relay recipient in non-accepted domain"
DOWN_AT_MAIL = "451 4.3.5 <app@labs.local>: Sender address rejected: Server configuration problem"


def assert_serves(sb: Sandbox) -> None:
    """Exact decisions: a relay host's message is accepted and delivered, another host is refused."""
    rcpt = f"s-{uuid.uuid4().hex[:12]}@gmail.com"
    ok = send(sb.port("*:25"), "127.0.0.56", "app@labs.local", [rcpt])
    assert ok.rcpt_replies == ["250 2.1.5 Ok"], ok
    assert wait_delivered(sb, ok.queue_id).recipients == [rcpt]
    no = send(sb.port("*:25"), "127.0.0.30", "app@labs.local", [rcpt])
    assert no.reply == RELAY_DENIED.format(rcpt)


def test_a_daemon_that_cannot_start_degrades_the_stack_and_sighup_brings_it_back(
    sandbox: Sandbox, good_config: Path
) -> None:
    seen = len(sandbox.messages)
    before = sandbox.wait_policyd()
    good = good_config.read_text()
    with sandbox.supervisor.using(RestartPolicy(delay=0.1, burst=2, interval=60)):
        # The daemon refuses to start on this file (exit 2): every restart fails.
        good_config.write_text(good + "\nno_such_key: 1\n")
        sandbox.kill_policyd()
        deadline = time.monotonic() + 30
        while not sandbox.degraded and time.monotonic() < deadline:
            time.sleep(0.05)
    assert sandbox.degraded and sandbox.policyd_state is State.FAILED
    degraded = sandbox.messages[-1]
    assert degraded.splitlines() == [
        "restart 2 of the policy daemon failed.",
        "DEGRADED: the policy daemon was restarted 2 times within 60 s and still fails; it is not restarted "
        "again. Postfix keeps running and answers 451 4.3.5 to every client it asks the daemon about until it "
        f"runs again: see {sandbox.policyd_log}, fix the cause, then send SIGHUP to the sandbox to start it again.",
    ]
    failed_starts = [m for m in sandbox.messages[seen:] if m.startswith("the policy daemon did not start")]
    assert len(failed_starts) == 2
    assert all("no_such_key: unknown key" in m for m in failed_starts), failed_starts  # the log's tail says why
    # Postfix keeps running and fails closed.
    assert sandbox.postfix.running()
    out = send(sandbox.port("*:25"), "127.0.0.56", "app@labs.local", ["x@gmail.com"])
    assert (out.stage, out.reply) == ("mail", DOWN_AT_MAIL)
    # SIGHUP while the file is still broken: still degraded, said so.
    assert sandbox.reload() is False
    assert sandbox.messages[-1] == f"DEGRADED: the policy daemon stays down until {sandbox.config} loads"
    assert sandbox.policyd_state is State.FAILED
    # A good file and SIGHUP: the daemon runs again, decisions are exact again.
    good_config.write_text(good)
    assert sandbox.reload() is True
    pid = sandbox.wait_policyd()
    assert pid != before
    assert sandbox.messages[-2:] == [
        f"the policy daemon runs again (pid {pid}); the stack is no longer degraded",
        f"{sandbox.config} reloaded (the policy daemon re-reads it)",
    ]
    assert not sandbox.degraded
    assert_serves(sandbox)
