"""Policy decisions (exmilter.policy.decide): the spec's replies as access(5) actions, table-driven."""

from __future__ import annotations

import pytest

from exmilter.engine import Engine
from exmilter.policy.decide import Decider
from tests.conftest import FakeClock, org_from
from tests.policy_fixtures import (
    CLIENT_FRONTEND,
    CONFIG_PROBLEM,
    CONNECTORS,
    DEDICATED,
    FRONTEND,
    RELAY,
    RELAY_554,
    SECURE,
    answer,
    req,
)


@pytest.fixture
def engine(clock: FakeClock) -> Engine:
    return Engine(org_from(CONNECTORS), clock=clock)


@pytest.fixture
def decider(clock: FakeClock) -> Decider:
    return Decider(clock)


@pytest.mark.parametrize(
    ("request_", "action", "connector"),
    [
        # connection (§3.1): a match is a pass, no match is Exchange's 421 (Postfix disconnects)
        (req("CONNECT"), "DUNNO", FRONTEND),
        (req("CONNECT", "10.9.9.9", "10.0.0.5:2727"), "421 4.3.2 Service not available", ""),
        (req("CONNECT", "192.168.50.7", "10.0.0.5:2727"), "DUNNO", DEDICATED),
        # MAIL FROM (§3.4)
        (req("MAIL", sender="a@example.net"), "DUNNO", FRONTEND),
        (req("MAIL", sender="not an address"), "501 5.1.7 Invalid address", FRONTEND),
        (req("MAIL", helo_name="", sender="a@example.net"), "503 5.5.2 Send hello first", FRONTEND),
        (
            req("MAIL", context="*:587", sender="a@example.net"),
            "530 5.7.57 SMTP; Client was not authenticated to send anonymous mail during MAIL FROM",
            CLIENT_FRONTEND,
        ),
        (
            req("MAIL", "192.168.50.7", "10.0.0.5:2727", sender="a@example.net", size=str(2 << 20)),
            "552 5.3.4 Message size exceeds fixed maximum message size",
            DEDICATED,
        ),
        (req("MAIL", context="*:2600", sender="a@example.net"), "451 4.7.3 STARTTLS is required to send mail", SECURE),
        (req("MAIL", context="*:2600", sender="a@example.net", encryption_protocol="TLSv1.3"), "DUNNO", SECURE),
        # RCPT TO (§3.5): accepted recipients are OK (the renderer permits relay on OK only)
        (req("RCPT", instance="i1", recipient="user@labs.local"), "OK", FRONTEND),
        (req("RCPT", instance="i1", recipient="someone@gmail.com"), RELAY_554, FRONTEND),
        (req("RCPT", "10.83.4.56", instance="i1", recipient="someone@gmail.com"), "OK", RELAY),
        (req("RCPT", "10.83.4.57", instance="i1", recipient="someone@gmail.com"), RELAY_554, FRONTEND),
        (req("RCPT", instance="i1", recipient="bad address"), "501 5.1.3 Invalid address", FRONTEND),
        # end of data (§3.6)
        (
            req("END-OF-MESSAGE", "192.168.50.7", "10.0.0.5:2727", instance="i1", size=str(2 << 20)),
            "552 5.3.4 Message size exceeds fixed maximum message size",
            DEDICATED,
        ),
        (req("END-OF-MESSAGE", instance="i1", size="1000", sender="a@example.net"), "DUNNO", FRONTEND),
    ],
)
def test_spec_replies(engine, decider, request_, action, connector):
    d = decider.decide(engine, request_)
    assert d.action == action
    assert d.connector == connector
    assert d.payload == answer(action)
    assert d.stage == request_["protocol_state"]


@pytest.mark.parametrize("state", ["EHLO", "HELO", "DATA", "VRFY", "ETRN", "", "STARTTLS", "AUTH"])
def test_stages_without_engine_decision_pass(engine, decider, state):
    d = decider.decide(engine, req(state, "10.9.9.9", "10.0.0.5:2727", recipient="x@gmail.com"))
    assert d.action == "DUNNO"
    assert d.reply is None
    assert d.code == "none"
    assert d.stage == (state if state in {"EHLO", "HELO", "DATA", "VRFY", "ETRN"} else "OTHER")


def test_every_attribute_optional(engine, decider):
    assert decider.decide(engine, {}).action == "DUNNO"
    assert decider.decide(engine, {"protocol_state": "RCPT"}).action == CONFIG_PROBLEM
    minimal = {
        "protocol_state": "RCPT",
        "client_address": "203.0.113.9",
        "policy_context": "*:25",
        "recipient": "u@labs.local",
    }
    assert decider.decide(engine, minimal).action == "OK"


def test_other_request_types_pass(engine, decider):
    d = decider.decide(engine, req("RCPT", request="something_else", recipient="x@gmail.com"))
    assert d.action == "DUNNO"
    assert "something_else" in d.note


@pytest.mark.parametrize(
    ("attrs", "note"),
    [
        (
            {"policy_context": "", "server_address": "", "server_port": ""},
            "no policy_context and no server_address/server_port: cannot identify the listener",
        ),
        ({"client_address": ""}, "no client_address in the request"),
        ({"client_address": "not-an-ip"}, "bad address in the request: 'not-an-ip' is not an IP address"),
    ],
)
def test_cannot_place_the_request_is_a_temporary_failure(engine, decider, attrs, note):
    d = decider.decide(engine, req("RCPT", instance="i", recipient="u@labs.local") | attrs)
    assert d.action == CONFIG_PROBLEM
    assert d.payload == answer(CONFIG_PROBLEM)
    assert d.note == note
    assert d.connector == ""


@pytest.mark.parametrize("size", ["1_000", " 12", "+5", "-1", "١٢", "0x10", "1e3", "9" * 20, "9" * 4000])
@pytest.mark.parametrize("state", ["MAIL", "END-OF-MESSAGE"])
def test_a_size_postfix_would_not_send_is_a_temporary_failure(engine, decider, size, state):
    """Postfix writes sizes as ASCII digits. Anything else was once read leniently (Python's
    int() takes "1_000", " 12", other scripts' digits) or as 0, which passes every size check."""
    d = decider.decide(engine, req(state, instance="i", sender="a@example.net", size=size))
    assert d.action == CONFIG_PROBLEM
    assert d.note == f"size {size[:40]!r} is not a number"


@pytest.mark.parametrize(
    ("size", "action"),
    [("", "DUNNO"), ("0", "DUNNO"), ("1000", "DUNNO"), (str(36 << 20), "DUNNO"), (str((36 << 20) + 1), None)],
)
def test_sizes_postfix_sends(engine, decider, size, action):
    d = decider.decide(engine, req("MAIL", sender="a@example.net", size=size))
    assert d.action == action or (action is None and d.action.startswith("552 5.3.4"))


@pytest.mark.parametrize("port", ["0_1", " 25", "+25", "２５", "25.0", "0", "65536", "9" * 30])
def test_a_server_port_postfix_would_not_send_cannot_place_the_request(engine, decider, port):
    d = decider.decide(engine, req("CONNECT", "0.0.0.0", context=None, server_address="", server_port=port))
    assert d.action == CONFIG_PROBLEM
    assert d.note == "no policy_context and no server_address/server_port: cannot identify the listener"


@pytest.mark.parametrize(
    ("context", "reason"),
    [
        ("Internet", "'Internet' is not a listener context (forms: *:25, 10.1.1.1:25, [::1]:25)"),
        ("999.1.1.1:25", "'999.1.1.1' is not an IP address"),
        ("10.0.0.5:0", "'10.0.0.5:0': port must be 1-65535"),
        ("10.0.0.5", "'10.0.0.5' is not a listener context (forms: *:25, 10.1.1.1:25, [::1]:25)"),
    ],
)
@pytest.mark.parametrize("state", ["CONNECT", "MAIL", "RCPT", "END-OF-MESSAGE"])
def test_unparseable_policy_context_fails_closed(engine, decider, context, reason, state):
    # server_address/server_port would place the request (10.0.0.5:25 is the Default
    # Frontend's binding); a context the renderer did not write must not be second-guessed.
    r = req(
        state,
        context=context,
        server_address="10.0.0.5",
        server_port="25",
        instance="i",
        recipient="u@labs.local",
        sender="a@example.net",
    )
    for _ in range(2):  # the second answer comes from the context cache: the same
        d = decider.decide(engine, r, conn=1)
        assert d.action == CONFIG_PROBLEM
        assert d.payload == answer(CONFIG_PROBLEM)
        assert d.connector == ""
        assert d.note == f"unusable policy_context {context!r}: {reason}"
        r = r | {"instance": "j"}  # a new transaction, not a re-send


def test_empty_policy_context_falls_back_to_server_address(engine, decider):
    r = req("CONNECT", "192.168.50.7", context="", server_address="10.0.0.5", server_port="2727")
    d = decider.decide(engine, r)
    assert (d.action, d.connector, d.note) == ("DUNNO", DEDICATED, "")


def test_listener_from_server_address_when_no_context(engine, decider):
    base = req("CONNECT", "192.168.50.7", context=None, server_address="10.0.0.5", server_port="2727")
    assert decider.decide(engine, base).connector == DEDICATED
    # a wildcard context consults only the wildcard binding, whatever server_address says
    wild = base | {"policy_context": "*:2727"}
    assert decider.decide(engine, wild).action == "421 4.3.2 Service not available"


def test_max_recipients_counts_only_what_this_daemon_accepted(engine, decider):
    def rcpt(n: int, instance: str = "tx1") -> str:
        return decider.decide(
            engine,
            req(
                "RCPT",
                "192.168.50.7",
                "10.0.0.5:2727",
                instance=instance,
                recipient=f"u{n}@labs.local",
                recipient_count="0",
            ),
        ).action

    assert [rcpt(n) for n in range(3)] == ["OK"] * 3
    assert rcpt(3) == "452 4.5.3 Too many recipients"
    assert rcpt(4) == "452 4.5.3 Too many recipients"
    assert rcpt(0, "tx2") == "OK"  # a new transaction starts from zero


def test_refused_recipients_do_not_count(engine, decider):
    for n in range(5):
        d = decider.decide(
            engine, req("RCPT", "192.168.50.7", "10.0.0.5:2727", instance="tx", recipient=f"u{n}@gmail.com")
        )
        assert d.action == RELAY_554
    d = decider.decide(engine, req("RCPT", "192.168.50.7", "10.0.0.5:2727", instance="tx", recipient="u@labs.local"))
    assert d.action == "OK"


def test_resent_rcpt_same_answer_not_double_counted(engine, decider):
    def rcpt(n: int):
        return decider.decide(
            engine, req("RCPT", "192.168.50.7", "10.0.0.5:2727", instance="tx", recipient=f"u{n}@labs.local")
        )

    first = [rcpt(n) for n in range(3)]
    again = [rcpt(n) for n in range(3)]  # Postfix re-sent each after a timeout
    assert [d.action for d in first] == [d.action for d in again] == ["OK"] * 3
    assert not any(d.duplicate for d in first)
    assert all(d.duplicate for d in again)
    assert rcpt(3).action == "452 4.5.3 Too many recipients"
    assert rcpt(3).duplicate


def test_resent_end_of_message_is_a_duplicate(engine, decider):
    r = req("END-OF-MESSAGE", instance="tx", size="10", sender="a@example.net")
    assert not decider.decide(engine, r).duplicate
    assert decider.decide(engine, r).duplicate


def test_mail_resent_on_a_new_connection_is_not_counted_twice(engine, decider, clock):
    mail = req("MAIL", "192.168.50.7", "10.0.0.5:2727", sender="a@example.net")
    assert decider.decide(engine, mail, conn=1).action == "DUNNO"
    d = decider.decide(engine, mail, conn=2)  # Postfix reconnected and re-sent: rate slot not taken again
    assert d.duplicate and d.action == "DUNNO"
    assert decider.decide(engine, mail, conn=2).action == "DUNNO"  # the same SMTP session's next MAIL: counted
    limited = "421 4.4.2 Message submission rate for this client has exceeded the configured limit"
    assert decider.decide(engine, mail, conn=2).action == limited  # third counted MAIL within 60 s (limit 2)
    clock.now += 61
    assert decider.decide(engine, mail, conn=3).action == "DUNNO"  # past the dedupe window and the rate window


def test_transactions_are_bounded_and_expire(engine, clock):
    decider = Decider(clock, max_transactions=3, transaction_ttl=100)
    for i in range(10):
        decider.decide(engine, req("RCPT", instance=f"i{i}", recipient="u@labs.local"))
        assert len(decider) <= 4
    clock.now += 101
    decider.decide(engine, req("RCPT", instance="fresh", recipient="u@labs.local"))
    assert len(decider) == 1


def test_recent_transaction_survives_while_active(engine, clock):
    decider = Decider(clock, max_transactions=100, transaction_ttl=100)
    r = req("RCPT", instance="long", recipient="u@labs.local")
    decider.decide(engine, r)
    for i in range(5):
        clock.now += 60
        decider.decide(engine, r)  # touches "long"
        decider.decide(engine, req("RCPT", instance=f"o{i}", recipient="u@labs.local"))
    assert decider.decide(engine, r).duplicate


def test_new_engine_is_used_at_once_and_state_survives(engine, decider, clock):
    r = req("RCPT", "10.83.4.56", instance="a", recipient="x@gmail.com")
    assert decider.decide(engine, r).action == "OK"
    stricter = Engine(org_from(CONNECTORS.replace("10.83.4.56", "10.83.4.99")), clock=clock)
    # a new session (another client port) is judged by the new file at once; the session of
    # ``r`` keeps its connector, which no longer takes the client (tests/test_auth.py)
    assert decider.decide(stricter, r | {"instance": "b", "client_port": "40001"}).action == RELAY_554
    assert decider.decide(stricter, r).action == "OK"  # a re-send keeps its first answer


def test_same_verdict_same_answer(engine, decider):
    a = decider.decide(engine, req("RCPT", instance="a", recipient="x@gmail.com"))
    b = decider.decide(engine, req("RCPT", instance="b", recipient="y@gmail.com"))
    assert (
        (a.action, a.payload, a.connector, a.stage, a.duplicate, a.note)
        == (b.action, b.payload, b.connector, b.stage, b.duplicate, b.note)
        == (RELAY_554, answer(RELAY_554), FRONTEND, "RCPT", False, "")
    )


def test_decision_cache_shares_one_prerendered_decision(engine, decider):
    # Caching IS the behaviour under test here: one Decision (and its encoded payload) per
    # (reply, connector, stage), so the request path allocates nothing per answer.
    # Identity is what distinguishes a cache hit from an equal, freshly built value.
    a = decider.decide(engine, req("RCPT", instance="a", recipient="x@gmail.com"))
    b = decider.decide(engine, req("RCPT", instance="b", recipient="y@gmail.com"))
    assert a is b
    c = decider.decide(engine, req("RCPT", "10.83.4.56", instance="c", recipient="x@gmail.com"))
    assert c is not a and c.action == "OK" and c.connector == RELAY


def test_default_bounds_keep_10000_transactions(engine, clock):
    decider = Decider(clock)
    for i in range(10_050):
        decider.decide(engine, req("END-OF-MESSAGE", instance=f"t{i}", size="10"))
    assert len(decider) == 10_000
    # the least recently used went first; the newest are still remembered
    assert not decider.decide(engine, req("END-OF-MESSAGE", instance="t0", size="10")).duplicate
    assert decider.decide(engine, req("END-OF-MESSAGE", instance="t10049", size="10")).duplicate


def test_default_ttl_outlasts_postfix_pauses_inside_a_transaction(engine, clock):
    # 600 s idle: longer than smtpd_timeout (300 s) between two commands and the policy
    # re-send window (try_limit x timeout + retry_delay, 201 s at Postfix's defaults)
    decider = Decider(clock)
    r = req("RCPT", "192.168.50.7", "10.0.0.5:2727", instance="slow", recipient="u0@labs.local")
    assert decider.decide(engine, r).action == "OK"
    clock.now += 599
    assert decider.decide(engine, r).duplicate  # re-sent late: still the same answer
    clock.now += 599
    later = [decider.decide(engine, r | {"recipient": f"u{n}@labs.local"}).action for n in (1, 2, 3)]
    assert later == ["OK", "OK", "452 4.5.3 Too many recipients"]  # the count survived both pauses
    clock.now += 600
    decider.decide(engine, req("RCPT", instance="other", recipient="u@labs.local"))  # sweeps
    assert len(decider) == 1
    assert not decider.decide(engine, r).duplicate  # forgotten after 600 s idle
