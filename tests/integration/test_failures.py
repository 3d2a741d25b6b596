"""Fail-closed behaviour: a killed daemon and bad reloads never open the relay (issue 3, Tests)."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from exmilter.sandbox import Sandbox
from tests.integration.helpers import Outcome, metric, reload_and_wait, send, wait_delivered

RELAY_DENIED = "550 5.7.54 <{}>: Recipient address rejected: SMTP; Unable to relay recipient in non-accepted domain"
#: (source address, relay allowed by the configuration?)
CLIENTS = [("127.0.0.56", True), ("127.0.0.61", True), ("127.0.0.30", False), ("127.0.0.31", False)]


Result = tuple[str, bool, str, Outcome]


def run_traffic(sb: Sandbox, during: Callable[[], None], limit: int = 300) -> list[Result]:
    """Clients send to external recipients until ``during()`` has returned (at most ``limit`` each)."""
    results: list[Result] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(source: str, allowed: bool) -> None:
        for _ in range(limit):
            if stop.is_set():
                return
            rcpt = f"k-{uuid.uuid4().hex[:12]}@gmail.com"
            out = send(sb.port("*:25"), source, "app@labs.local", [rcpt], timeout=30)
            with lock:
                results.append((source, allowed, rcpt, out))
            time.sleep(0.02)

    threads = [threading.Thread(target=client, args=c) for c in CLIENTS]
    for t in threads:
        t.start()
    try:
        during()
        time.sleep(0.3)  # traffic continues a little after the event
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    return results


def assert_safe(sb: Sandbox, results: list[Result], *, allow_tempfail: bool) -> None:
    """Accepted ⇒ allowed and delivered; refused ⇒ 4xx, or exactly 5.7.54 for a forbidden host."""
    for source, allowed, rcpt, out in results:
        if out.stage == "queued":
            assert allowed, f"{source} relayed to {rcpt} although the configuration forbids it"
            d = wait_delivered(sb, out.queue_id)
            assert d.recipients == [rcpt]
        elif out.code // 100 == 4 and allow_tempfail:
            continue
        else:
            assert not allowed and out.reply == RELAY_DENIED.format(rcpt), (source, out)


def test_killed_daemon_fails_closed_and_is_restarted_by_the_sandbox(sandbox: Sandbox) -> None:
    """kill -9 under load: 4xx while it is down, then the supervisor brings it back unasked."""
    old_pid = sandbox.policyd_pid
    # A restart delay longer than Postfix's two tries (1 s apart) makes the outage certain
    # to be seen: each client's next policy request fails twice and gets 451.
    outage = replace(sandbox.supervisor.policy, delay=2.5)
    restarted: list[int] = []

    def crash() -> None:
        time.sleep(0.3)
        sandbox.kill_policyd()
        restarted.append(sandbox.wait_policyd())  # nobody calls start_policyd(): the sandbox does

    with sandbox.supervisor.using(outage):
        results = run_traffic(sandbox, crash)
    assert_safe(sandbox, results, allow_tempfail=True)
    assert any(out.code // 100 == 4 for *_, out in results), "the kill went unnoticed"
    assert restarted and restarted[0] != old_pid
    assert any(
        m.startswith(f"the policy daemon (pid {old_pid}) was killed by SIGKILL; restarting it in 2.5 s")
        for m in sandbox.messages
    ), sandbox.messages
    assert f"the policy daemon was restarted (pid {restarted[0]}) and serves again" in sandbox.messages
    # Traffic resumes after the restart: exact decisions again.
    rcpt = f"r-{uuid.uuid4().hex[:12]}@gmail.com"
    ok = send(sandbox.port("*:25"), "127.0.0.56", "app@labs.local", [rcpt])
    assert ok.rcpt_replies == ["250 2.1.5 Ok"]
    wait_delivered(sandbox, ok.queue_id)
    no = send(sandbox.port("*:25"), "127.0.0.30", "app@labs.local", [rcpt])
    assert no.reply == RELAY_DENIED.format(rcpt)


@pytest.mark.parametrize(
    ("listener", "source", "stage", "reply"),
    [
        # asked at CONNECT (Monitoring holds one host): the first question fails
        (
            "*:2526",
            "127.0.0.13",
            "connect",
            "451 4.3.5 <unknown[127.0.0.13]>: Client host rejected: Server configuration problem",
        ),
        # not asked at CONNECT (Default Frontend holds every address): MAIL is the first question
        (
            "*:25",
            "127.0.0.56",
            "mail",
            "451 4.3.5 <app@labs.local>: Sender address rejected: Server configuration problem",
        ),
    ],
)
def test_dead_daemon_answers_451_at_the_first_question(
    sandbox: Sandbox, listener: str, source: str, stage: str, reply: str
) -> None:
    sandbox.stop_policyd(signal.SIGKILL)  # down, and not restarted until start_policyd()
    try:
        out = send(sandbox.port(listener), source, "app@labs.local", ["x@gmail.com"])
        assert (out.stage, out.reply) == (stage, reply)
    finally:
        sandbox.start_policyd()


def test_broken_reload_keeps_old_rules_without_failed_transactions(sandbox: Sandbox, good_config: Path) -> None:
    failures = metric(sandbox, "exmilter_config_reload_failures_total")

    def break_config() -> None:
        time.sleep(0.3)
        good_config.write_text(good_config.read_text() + "\nreceive_connectors: [unbalanced\n")
        assert reload_and_wait(sandbox) is False

    results = run_traffic(sandbox, break_config)
    assert_safe(sandbox, results, allow_tempfail=False)
    assert metric(sandbox, "exmilter_config_reload_failures_total") == failures + 1
    assert metric(sandbox, "exmilter_config_last_reload_successful") == 0


def test_good_reload_changes_decisions(sandbox: Sandbox, good_config: Path) -> None:
    rcpt = f"g-{uuid.uuid4().hex[:12]}@gmail.com"
    before = send(sandbox.port("*:25"), "127.0.0.70", "app@labs.local", [rcpt])
    assert before.reply == RELAY_DENIED.format(rcpt)
    text = good_config.read_text()
    good_config.write_text(text.replace("127.0.0.60-127.0.0.69]", "127.0.0.60-127.0.0.70]"))
    assert reload_and_wait(sandbox) is True
    after = send(sandbox.port("*:25"), "127.0.0.70", "app@labs.local", [rcpt])
    assert after.rcpt_replies == ["250 2.1.5 Ok"]
    assert wait_delivered(sandbox, after.queue_id).connector == "EXCH01\\SMTP Relay (EXCH01)"
