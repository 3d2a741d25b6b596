"""Issue 10 #1, #2: no address form relays, on any listener, with or without DefaultDomain.

The relay harness (tests/integration/relay_harness.py) runs nmap's 16 open-relay tests and
the percent/bang/quoted/source-route/IDN forms, each completed with DATA, against every
listener of tests/data/integration.yaml from a client without relay rights, and judges by
the delivered files. It runs twice: on the session sandbox (no DefaultDomain) and on the
second sandbox of conftest.py, whose connectors all have one (one of them in conflict on *:25).
"""

from __future__ import annotations

import pytest

from exmilter.config import load
from exmilter.engine import Engine
from exmilter.sandbox import Sandbox
from exmilter.sandbox.deliver import Delivery
from tests.integration import relay_harness as H

RELAY_DENIED = "550 5.7.54 <{}>: Recipient address rejected: SMTP; Unable to relay recipient in non-accepted domain"
INVALID = "501 5.1.3 <{}>: Recipient address rejected: Invalid address"
BAD_SYNTAX = "501 5.1.3 Bad recipient address syntax"

Run = tuple[list[H.Attempt], dict[str, Delivery]]


def engine_of(sb: Sandbox) -> Engine:
    return Engine(load(sb.config).organization)


@pytest.fixture(scope="module")
def plain_run(sandbox: Sandbox) -> Run:
    return H.run(sandbox, engine_of(sandbox), sandbox.listeners)


@pytest.fixture(scope="module")
def dd_run(default_domain_sandbox: Sandbox) -> Run:
    return H.run(default_domain_sandbox, engine_of(default_domain_sandbox), default_domain_sandbox.listeners)


@pytest.mark.parametrize("which", ["plain_run", "dd_run"])
def test_no_listener_delivers_to_a_non_accepted_domain(which: str, request: pytest.FixtureRequest) -> None:
    attempts, delivered = request.getfixturevalue(which)
    listeners = {a.listener for a in attempts}
    assert listeners == {"*:25", "*:465", "*:587", "*:717", "*:2525", "*:2526", "*:2527"}
    assert len(attempts) == 7 * len(H.all_cases("x"))
    assert H.leaks(attempts, delivered) == []
    # not vacuous: the accepted forms did go through DATA to the delivered files, on two listeners
    assert {a.listener for a in attempts if a.tag in delivered} == {"*:25", "*:2527"}


def _outcome(attempts: list[H.Attempt], delivered: dict[str, Delivery], listener: str) -> dict[str, tuple[str, list]]:
    return {
        a.case.recipient: (a.rcpt, delivered[a.tag].recipients if a.tag in delivered else [])
        for a in attempts
        if a.listener == listener and a.case.name.startswith("form-")
    }


ALWAYS: dict[str, tuple[str, list[str]]] = {
    # form as sent: (RCPT reply, delivered recipients), Default Frontend's anonymous client on *:25
    "relaytest%example.org@labs.local": (RELAY_DENIED, []),  # routing operator: refused without relay right
    "example.org!relaytest@labs.local": (RELAY_DENIED, []),
    '"relaytest@example.org"@labs.local': (INVALID.format("relaytest@example.org@labs.local"), []),
    '"relaytest%example.org"@labs.local': (RELAY_DENIED.format("relaytest%example.org@labs.local"), []),
    '"relaytest@example.org"': (RELAY_DENIED.format("relaytest@example.org"), []),  # unquoted: example.org
    '"example.org!relaytest"@labs.local': (RELAY_DENIED.format("example.org!relaytest@labs.local"), []),
    "@labs.local:relaytest@example.org": (RELAY_DENIED.format("relaytest@example.org"), []),  # route dropped
    "@a.test,@b.test:relaytest@example.org": (RELAY_DENIED.format("relaytest@example.org"), []),
    "@example.org:relaytest@labs.local": ("250 2.1.5 Ok", ["relaytest@labs.local"]),
    "relaytest@labs.local.": ("250 2.1.5 Ok", ["relaytest@labs.local"]),
    "relaytest@example.org.": (RELAY_DENIED, []),
    "relaytest@labs.local..": (BAD_SYNTAX, []),  # Postfix's own syntax check
    "relaytest@[192.0.2.1]": (RELAY_DENIED, []),
    "relaytest@[127.0.0.1]": (RELAY_DENIED, []),
    "relaytest%example.org@[127.0.0.1]": (RELAY_DENIED, []),
    "RELAYTEST@LABS.LOCAL": ("250 2.1.5 Ok", ["RELAYTEST@LABS.LOCAL"]),
    "RELAYTEST@EXAMPLE.ORG": (RELAY_DENIED, []),
    # RFC 5321 §4.5.1: Postfix accepts it without asking exmilter; the listener's cleanup
    # completes it with the organisation's default accepted domain
    "postmaster": ("250 2.1.5 Ok", ["postmaster@labs.local"]),
    "PostMaster": ("250 2.1.5 Ok", ["PostMaster@labs.local"]),
    "relaytest@straße.de": (RELAY_DENIED, []),  # xn--strae-oqa.de, not strasse.de
    "relaytest@STRAẞE.de": (RELAY_DENIED, []),  # ICU 72: strasse.de; newer UTS #46: straße.de: refused
    "relaytest@strasse.de": ("250 2.1.5 Ok", ["relaytest@strasse.de"]),
    "relaytest@xn--strae-oqa.de": (RELAY_DENIED, []),
    "relaytest@bücher.example": ("250 2.1.5 Ok", ["relaytest@bücher.example"]),
    "relaytest@BÜCHER.example": ("250 2.1.5 Ok", ["relaytest@BÜCHER.example"]),
    "relaytest@xn--bcher-kva.example": ("250 2.1.5 Ok", ["relaytest@xn--bcher-kva.example"]),
    "relaytest@bücher.example.org": (RELAY_DENIED, []),
}
Expected = dict[str, tuple[str, list[str]]]
WITHOUT_DEFAULT_DOMAIN: Expected = {
    "relaytest%example.org": (INVALID, []),
    "example.org!relaytest": (INVALID, []),
    "relaytest": (INVALID, []),
}
WITH_DEFAULT_DOMAIN: Expected = {
    # judged and routed as relaytest%example.org@labs.local: a routing operator, refused
    "relaytest%example.org": (RELAY_DENIED.format("relaytest%example.org"), []),
    "example.org!relaytest": (RELAY_DENIED.format("example.org!relaytest"), []),
    "relaytest": ("250 2.1.5 Ok", ["relaytest@labs.local"]),
}


@pytest.mark.parametrize(
    ("which", "unqualified"), [("plain_run", WITHOUT_DEFAULT_DOMAIN), ("dd_run", WITH_DEFAULT_DOMAIN)]
)
def test_each_address_form_end_to_end(which: str, unqualified: dict, request: pytest.FixtureRequest) -> None:
    """What Postfix answers and where it delivers, form by form (anonymous, no relay right)."""
    attempts, delivered = request.getfixturevalue(which)
    got = _outcome(attempts, delivered, "*:25")
    expected = {form: (reply.format(form), rcpts) for form, (reply, rcpts) in {**ALWAYS, **unqualified}.items()}
    assert got == expected


def test_the_harness_sees_a_relay(sandbox: Sandbox) -> None:
    """The same harness from a relay host (Accept-Any-Recipient) finds the external deliveries:
    it can fail."""
    star25 = [lst for lst in sandbox.listeners if lst.context == "*:25"]
    attempts, delivered = H.run(sandbox, engine_of(sandbox), star25, source="127.0.0.56")
    found = H.leaks(attempts, delivered)
    assert f"*:25 127.0.0.56 <relaytest@{H.EXTERNAL}> -> relaytest@{H.EXTERNAL}" in found
    assert "*:25 127.0.0.56 <@labs.local:relaytest@example.org> -> relaytest@example.org" in found
    assert "*:25 127.0.0.56 <relaytest@straße.de> -> relaytest@straße.de" in found
    # the percent hack and bang path are not applied even for a relay host: the local part stays
    assert "*:25 127.0.0.56 <relaytest%example.org@labs.local> -> relaytest%example.org@labs.local" not in found
    percent = next(a for a in attempts if a.case.recipient == "relaytest%example.org@labs.local")
    assert delivered[percent.tag].recipients == ["relaytest%example.org@labs.local"]


def test_default_domain_conflict_on_one_listener(default_domain_sandbox: Sandbox) -> None:
    """*:25: SMTP Relay's DefaultDomain differs from its neighbours': Postfix can complete with
    one domain per listener, so exmilter refuses SMTP Relay's unqualified addresses. Monitoring,
    alone on *:2526, gets its own (exchangelabs.nl)."""
    sb = default_domain_sandbox
    bare = H.Case("bare", "probe@example.com", "relaytest")
    relay = H.attempt(sb.port("*:25"), "127.0.0.56", bare)
    assert relay.rcpt == INVALID.format("relaytest")
    monitor = H.attempt(sb.port("*:2526"), "127.0.0.13", bare)
    assert monitor.rcpt == "250 2.1.5 Ok"
    assert H.wait_for(sb, [monitor])[monitor.tag].recipients == ["relaytest@exchangelabs.nl"]
