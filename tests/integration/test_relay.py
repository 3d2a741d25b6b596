"""Exchange's relay decisions through a real Postfix, with exact replies (issue 3, Tests)."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from exmilter.sandbox import Sandbox
from tests.integration.helpers import delivered_to, metric, raw_session, send, wait_delivered

RELAY_DENIED = "550 5.7.54 <{}>: Recipient address rejected: SMTP; Unable to relay recipient in non-accepted domain"
DEFAULT_FRONTEND = "EXCH01\\Default Frontend EXCH01"
SMTP_RELAY = "EXCH01\\SMTP Relay (EXCH01)"


def unique(domain: str) -> str:
    return f"t-{uuid.uuid4().hex[:12]}@{domain}"


def test_default_frontend_accepts_internal_recipient(sandbox: Sandbox) -> None:
    rcpt = unique("labs.local")
    out = send(sandbox.port("*:25"), "127.0.0.20", "someone@example.com", [rcpt])
    assert out.rcpt_replies == ["250 2.1.5 Ok"]
    assert out.stage == "queued", out
    d = wait_delivered(sandbox, out.queue_id)
    assert d.envelope["sender"] == "someone@example.com"
    assert d.recipients == [rcpt]
    assert d.client == "127.0.0.20"
    assert d.envelope["listener"] == "*:25"
    assert d.connector == DEFAULT_FRONTEND
    assert b"integration test body" in d.content
    assert d.content.startswith(b"Received: from client.test (")


def test_default_frontend_refuses_external_recipient(sandbox: Sandbox) -> None:
    rcpt = unique("gmail.com")
    out = send(sandbox.port("*:25"), "127.0.0.20", "someone@example.com", [rcpt])
    assert (out.stage, out.reply) == ("rcpt", RELAY_DENIED.format(rcpt))
    assert delivered_to(sandbox, rcpt) == []


def test_banner_of_a_listener_with_several_connectors(sandbox: Sandbox) -> None:
    """*:25 serves Default Frontend and two relays: Exchange's default text with the server FQDN."""
    out = subprocess.run(
        [
            "swaks",
            "--server",
            f"127.0.0.1:{sandbox.port('*:25')}",
            "--local-interface",
            "127.0.0.20",
            "--quit-after",
            "CONNECT",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "<-  220 exch01.labs.local Microsoft ESMTP MAIL Service ready" in out.stdout.splitlines()


def test_anonymous_relay_connector_relays(sandbox: Sandbox) -> None:
    for source in ("127.0.0.56", "127.0.0.65"):
        rcpt = unique("gmail.com")
        out = send(sandbox.port("*:25"), source, "scanner@labs.local", [rcpt])
        assert out.rcpt_replies == ["250 2.1.5 Ok"], source
        d = wait_delivered(sandbox, out.queue_id)
        assert (d.recipients, d.client, d.connector) == ([rcpt], source, SMTP_RELAY)


def test_host_outside_relay_ranges_is_refused(sandbox: Sandbox) -> None:
    for source in ("127.0.0.57", "127.0.0.70"):
        rcpt = unique("gmail.com")
        out = send(sandbox.port("*:25"), source, "scanner@labs.local", [rcpt])
        assert out.reply == RELAY_DENIED.format(rcpt), source
        assert delivered_to(sandbox, rcpt) == []


def test_mixed_recipients_only_accepted_ones_delivered(sandbox: Sandbox) -> None:
    inside, outside = unique("exchangelabs.nl"), unique("gmail.com")
    deep = unique("a.branch.exchangelabs.nl")
    out = send(sandbox.port("*:25"), "127.0.0.21", "x@example.com", [inside, outside, deep])
    assert out.rcpt_replies == ["250 2.1.5 Ok", RELAY_DENIED.format(outside), "250 2.1.5 Ok"]
    d = wait_delivered(sandbox, out.queue_id)
    assert sorted(d.recipients) == sorted([inside, deep])


def test_externally_secured_variant_relays(sandbox: Sandbox) -> None:
    rcpt = unique("gmail.com")
    out = send(sandbox.port("*:25"), "127.0.5.7", "app@partner.example", [rcpt])
    assert out.rcpt_replies == ["250 2.1.5 Ok"]
    d = wait_delivered(sandbox, out.queue_id)
    assert d.connector == "EXCH01\\Scanner Relay (EXCH01)"


def test_no_connector_on_dedicated_binding_gets_421_and_close(sandbox: Sandbox) -> None:
    data = raw_session(sandbox.port("*:2526"), "127.0.0.20")
    assert data == b"421 4.3.2 <unknown[127.0.0.20]>: Client host rejected: Service not available\r\n"


def test_dedicated_binding_host_relays_with_its_banner(sandbox: Sandbox) -> None:
    rcpt = unique("gmail.com")
    proc = subprocess.run(
        [
            "swaks",
            "--server",
            f"127.0.0.1:{sandbox.port('*:2526')}",
            "--local-interface",
            "127.0.0.13",
            "--from",
            "monitor@labs.local",
            "--to",
            rcpt,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stdout
    assert "<-  220 EXCH01 Monitoring Connector" in lines
    assert "<-  250 2.1.5 Ok" in lines
    queued = next(x for x in lines if x.startswith("<-  250 2.0.0 Ok: queued as "))
    d = wait_delivered(sandbox, queued.rsplit(" ", 1)[1])
    assert d.connector == "EXCH01\\Monitoring (EXCH01)" and d.recipients == [rcpt]


def test_swaks_refusal_is_the_exact_exchange_reply(sandbox: Sandbox) -> None:
    rcpt = unique("gmail.com")
    proc = subprocess.run(
        [
            "swaks",
            "--server",
            f"127.0.0.1:{sandbox.port('*:25')}",
            "--local-interface",
            "127.0.0.22",
            "--from",
            "a@example.com",
            "--to",
            rcpt,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert f"<** {RELAY_DENIED.format(rcpt)}" in proc.stdout.splitlines()


def test_metrics_count_the_decisions(sandbox: Sandbox) -> None:
    before = metric(sandbox, "exmilter_policy_decisions_total", connector=DEFAULT_FRONTEND, stage="RCPT", code="550")
    send(sandbox.port("*:25"), "127.0.0.23", "a@example.com", [unique("gmail.com")])
    after = metric(sandbox, "exmilter_policy_decisions_total", connector=DEFAULT_FRONTEND, stage="RCPT", code="550")
    assert after == before + 1
    assert metric(sandbox, "exmilter_policy_requests_total", stage="END-OF-MESSAGE") > 0
    assert metric(sandbox, "exmilter_policy_decisions_total", connector=SMTP_RELAY, stage="RCPT", code="250") > 0
    assert metric(sandbox, "exmilter_config_generation") >= 1


STATES = ("CONNECT", "EHLO", "HELO", "MAIL", "RCPT", "DATA", "END-OF-MESSAGE")


@pytest.mark.parametrize(
    ("listener", "source", "rcpt_domain", "at_connect"),
    [
        # Default Frontend holds every address on *:25: CONNECT can only pass, it is not asked
        ("*:25", "127.0.0.24", "labs.local", 0),
        # Monitoring holds one host on *:2526: others get 421 4.3.2 at CONNECT, so it is asked
        ("*:2526", "127.0.0.13", "gmail.com", 1),
    ],
)
def test_policy_is_asked_only_at_the_states_it_decides(
    sandbox: Sandbox, listener: str, source: str, rcpt_domain: str, at_connect: int
) -> None:
    """One accepted message: MAIL, RCPT and END-OF-MESSAGE once each, CONNECT where it can refuse;
    EHLO and DATA never."""
    before = {s: metric(sandbox, "exmilter_policy_requests_total", stage=s) for s in STATES}
    out = send(sandbox.port(listener), source, "a@example.com", [unique(rcpt_domain)])
    assert out.stage == "queued", out
    after = {s: metric(sandbox, "exmilter_policy_requests_total", stage=s) for s in STATES}
    assert {s: after[s] - before[s] for s in STATES} == {
        "CONNECT": at_connect,
        "EHLO": 0,
        "HELO": 0,
        "MAIL": 1,
        "RCPT": 1,
        "DATA": 0,
        "END-OF-MESSAGE": 1,
    }
    assert after["EHLO"] == after["HELO"] == after["DATA"] == 0
