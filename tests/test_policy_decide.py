"""Policy decisions (exmilter.policy.decide): the spec's replies as access(5) actions, table-driven."""

from __future__ import annotations

import pytest

from exmilter.engine import Engine
from exmilter.policy.decide import Decider
from tests.conftest import FakeClock, org_from

CONFIG = """
default_connectors: true
accepted_domains:
  - domain_name: labs.local
receive_connectors:
  - name: Relay
    transport_role: FrontendTransport
    usage: Custom
    bindings: [0.0.0.0:25]
    remote_ip_ranges: [10.83.4.56]
    permission_groups: [AnonymousUsers]
    permissions:
      - user: NT AUTHORITY\\ANONYMOUS LOGON
        extended_rights: [ms-Exch-SMTP-Accept-Any-Recipient]
  - name: Dedicated
    transport_role: FrontendTransport
    usage: Custom
    bindings: [10.0.0.5:2727]
    remote_ip_ranges: [192.168.50.0/24]
    permission_groups: [AnonymousUsers]
    max_recipients_per_message: 3
    max_message_size: 1MB
    message_rate_limit: 2
  - name: Secure
    transport_role: FrontendTransport
    usage: Custom
    bindings: [0.0.0.0:2600]
    remote_ip_ranges: [0.0.0.0-255.255.255.255]
    permission_groups: [AnonymousUsers]
    require_tls: true
"""

FRONTEND = "EXCH01\\Default Frontend EXCH01"
RELAY_554 = "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def engine(clock: FakeClock) -> Engine:
    return Engine(org_from(CONFIG), clock=clock)


@pytest.fixture
def decider(clock: FakeClock) -> Decider:
    return Decider(clock)


def req(state: str, client: str = "203.0.113.9", context: str | None = "*:25", **attrs: str) -> dict[str, str]:
    r = {"request": "smtpd_access_policy", "protocol_state": state, "protocol_name": "ESMTP",
         "client_address": client, "client_port": "40000", "helo_name": "client.example", "instance": "",
         "sender": "", "recipient": "", "size": "0", "sasl_username": "", "encryption_protocol": ""}
    if context is not None:
        r["policy_context"] = context
    r.update(attrs)
    return r


@pytest.mark.parametrize(
    ("request_", "action", "connector"),
    [
        # connection (§3.1): a match is a pass, no match is Exchange's 421 (Postfix disconnects)
        (req("CONNECT"), "DUNNO", FRONTEND),
        (req("CONNECT", "10.9.9.9", "10.0.0.5:2727"), "421 4.3.2 Service not available", ""),
        (req("CONNECT", "192.168.50.7", "10.0.0.5:2727"), "DUNNO", "EXCH01\\Dedicated"),
        # MAIL FROM (§3.4)
        (req("MAIL", sender="a@example.net"), "DUNNO", FRONTEND),
        (req("MAIL", sender="not an address"), "501 5.1.7 Invalid address", FRONTEND),
        (req("MAIL", helo_name="", sender="a@example.net"), "503 5.5.2 Send hello first", FRONTEND),
        (req("MAIL", context="*:587", sender="a@example.net"),
         "530 5.7.57 SMTP; Client was not authenticated to send anonymous mail during MAIL FROM",
         "EXCH01\\Client Frontend EXCH01"),
        (req("MAIL", "192.168.50.7", "10.0.0.5:2727", sender="a@example.net", size=str(2 << 20)),
         "552 5.3.4 Message size exceeds fixed maximum message size", "EXCH01\\Dedicated"),
        (req("MAIL", context="*:2600", sender="a@example.net"), "451 4.7.3 STARTTLS is required to send mail",
         "EXCH01\\Secure"),
        (req("MAIL", context="*:2600", sender="a@example.net", encryption_protocol="TLSv1.3"), "DUNNO",
         "EXCH01\\Secure"),
        # RCPT TO (§3.5): accepted recipients are OK (the renderer permits relay on OK only)
        (req("RCPT", instance="i1", recipient="user@labs.local"), "OK", FRONTEND),
        (req("RCPT", instance="i1", recipient="someone@gmail.com"), RELAY_554, FRONTEND),
        (req("RCPT", "10.83.4.56", instance="i1", recipient="someone@gmail.com"), "OK", "EXCH01\\Relay"),
        (req("RCPT", "10.83.4.57", instance="i1", recipient="someone@gmail.com"), RELAY_554, FRONTEND),
        (req("RCPT", instance="i1", recipient="bad address"), "501 5.1.3 Invalid address", FRONTEND),
        # end of data (§3.6)
        (req("END-OF-MESSAGE", "192.168.50.7", "10.0.0.5:2727", instance="i1", size=str(2 << 20)),
         "552 5.3.4 Message size exceeds fixed maximum message size", "EXCH01\\Dedicated"),
        (req("END-OF-MESSAGE", instance="i1", size="1000", sender="a@example.net"), "DUNNO", FRONTEND),
    ],
)
def test_spec_replies(engine, decider, request_, action, connector):
    d = decider.decide(engine, request_)
    assert d.action == action
    assert d.connector == connector
    assert d.payload == f"action={action}\n\n".encode()
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
    assert decider.decide(engine, {"protocol_state": "RCPT"}).action == "451 4.3.5 Server configuration problem"
    minimal = {"protocol_state": "RCPT", "client_address": "203.0.113.9", "policy_context": "*:25",
               "recipient": "u@labs.local"}
    assert decider.decide(engine, minimal).action == "OK"


def test_other_request_types_pass(engine, decider):
    d = decider.decide(engine, req("RCPT", request="something_else", recipient="x@gmail.com"))
    assert d.action == "DUNNO"
    assert "something_else" in d.note


@pytest.mark.parametrize(
    ("attrs", "action"),
    [
        ({"policy_context": "", "server_address": "", "server_port": ""}, "451 4.3.5 Server configuration problem"),
        ({"client_address": ""}, "451 4.3.5 Server configuration problem"),
        ({"client_address": "not-an-ip"}, "451 4.3.5 Server configuration problem"),
        ({"policy_context": "Internet", "server_address": "10.0.0.5", "server_port": "25"}, "OK"),  # fallback
    ],
)
def test_cannot_place_the_request_is_a_temporary_failure(engine, decider, attrs, action):
    d = decider.decide(engine, req("RCPT", instance="i", recipient="u@labs.local") | attrs)
    assert d.action == action
    if action.startswith("451"):
        assert d.note


def test_listener_from_server_address_when_no_context(engine, decider):
    base = req("CONNECT", "192.168.50.7", context=None, server_address="10.0.0.5", server_port="2727")
    assert decider.decide(engine, base).connector == "EXCH01\\Dedicated"
    # a wildcard context consults only the wildcard binding, whatever server_address says
    wild = base | {"policy_context": "*:2727"}
    assert decider.decide(engine, wild).action == "421 4.3.2 Service not available"


def test_max_recipients_counts_only_what_this_daemon_accepted(engine, decider):
    def rcpt(n: int, instance: str = "tx1") -> str:
        return decider.decide(engine, req("RCPT", "192.168.50.7", "10.0.0.5:2727", instance=instance,
                                          recipient=f"u{n}@labs.local", recipient_count="0")).action

    assert [rcpt(n) for n in range(3)] == ["OK"] * 3
    assert rcpt(3) == "452 4.5.3 Too many recipients"
    assert rcpt(4) == "452 4.5.3 Too many recipients"
    assert rcpt(0, "tx2") == "OK"  # a new transaction starts from zero


def test_refused_recipients_do_not_count(engine, decider):
    for n in range(5):
        d = decider.decide(engine, req("RCPT", "192.168.50.7", "10.0.0.5:2727", instance="tx",
                                       recipient=f"u{n}@gmail.com"))
        assert d.action == RELAY_554
    d = decider.decide(engine, req("RCPT", "192.168.50.7", "10.0.0.5:2727", instance="tx", recipient="u@labs.local"))
    assert d.action == "OK"


def test_resent_rcpt_same_answer_not_double_counted(engine, decider):
    def rcpt(n: int):
        return decider.decide(engine, req("RCPT", "192.168.50.7", "10.0.0.5:2727", instance="tx",
                                          recipient=f"u{n}@labs.local"))

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
    stricter = Engine(org_from(CONFIG.replace("10.83.4.56", "10.83.4.99")), clock=clock)
    assert decider.decide(stricter, r | {"instance": "b"}).action == RELAY_554
    assert decider.decide(stricter, r).action == "OK"  # a re-send keeps its first answer


def test_decisions_are_shared_values(engine, decider):
    a = decider.decide(engine, req("RCPT", instance="a", recipient="x@gmail.com"))
    b = decider.decide(engine, req("RCPT", instance="b", recipient="y@gmail.com"))
    assert a is b
