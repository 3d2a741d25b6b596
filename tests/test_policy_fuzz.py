"""Hypothesis fuzzing of the policy daemon's edge: the request parser and the decider.

Parser (sans-I/O, so every chunking can be tried): any byte stream, cut anywhere, with any
per-feed batch bound, gives requests or a ProtocolError and nothing else; the same
requests and the same verdict (error or not) whatever the chunking; never more than
``max_line_length`` bytes of an unfinished line buffered.

Decider: any attribute set (garbage addresses, contexts, sizes, states, unicode, control
characters) is decided without an exception, answered with one well-formed access(5)
action, and never ``OK`` unless the client and the listener are known; an unusable
request at a decided stage gets the temporary failure.

Each test is bounded by its example count (a few seconds together); a failure prints the
shrunk input.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exmilter.engine import Engine
from exmilter.listener import Listener
from exmilter.policy.decide import Decider
from exmilter.policy.protocol import POSTFIX_ATTRIBUTES, ProtocolError, RequestParser
from exmilter.selection import normalise
from tests.conftest import FakeClock, org_from
from tests.policy_fixtures import CONFIG_PROBLEM, CONNECTORS, wire

# -- the parser -------------------------------------------------------------------------------------

LIMITS = {"max_line_length": 48, "max_attributes": 6}

#: Pieces that make streams near the interesting edges: requests, empty lines, CR/LF in every
#: arrangement, lines at and over the limit, bad names, bad UTF-8 (also split mid-character).
pieces = st.one_of(
    st.sampled_from(
        [
            b"a=1\n",
            b"protocol_state=RCPT\n",
            b"\n",
            b"\r\n",
            b"\r",
            b"\n\n",
            b"b==\n",
            b"=v\n",
            b"c d=1\n",
            b"noeq\n",
            b"\xff=1\n",
            "é=ü\n".encode(),
            "ü".encode()[:1],
            b"x\x00=\x1b\n",
            b"n=" + b"x" * 45 + b"\n",
            b"n=" + b"x" * 46 + b"\n",
            b"n=" + b"x" * 46 + b"\r\n",
            b"n=" + b"y" * 60,
            b"request=smtpd_access_policy\n",
        ]
    ),
    st.binary(max_size=12),
    st.dictionaries(
        st.sampled_from(sorted(POSTFIX_ATTRIBUTES)),
        st.text(max_size=8).map(lambda v: v.replace("\n", "").replace("\r", "")),
        max_size=4,
    ).map(wire),
)
streams = st.lists(pieces, max_size=30).map(b"".join)


def parse(
    data: bytes, sizes: list[int], max_requests: int | None, limits: dict[str, int] = LIMITS
) -> tuple[list[dict[str, str]], bool]:
    """Every request of ``data`` fed in chunks of ``sizes`` (cycled), and whether it ended in
    a ProtocolError; checks the per-feed bounds on the way."""
    p = RequestParser(**limits, max_requests=max_requests)
    out: list[dict[str, str]] = []
    i = k = 0
    while i < len(data) or k == 0:
        n = sizes[k % len(sizes)]
        chunk, i, k = data[i : i + n], i + n, k + 1
        try:
            got = p.feed(chunk)
            while True:
                assert max_requests is None or len(got) <= max_requests
                assert all(type(r) is dict and all(type(v) is str for v in r.values()) for r in got)
                out += got
                if not p.more:
                    break
                got = p.feed(b"")  # what the daemon does on its next turn
        except ProtocolError as e:
            assert not p.more and not p.pending
            with pytest.raises(ProtocolError):
                p.feed(b"a=1\n\n")  # a failed parser stays failed
            return out + e.complete, True
        # an unfinished line only; one CR more when it may be the start of a CRLF
        assert p.buffered <= limits["max_line_length"] + (data[:i].endswith(b"\r"))
        assert p.pending == (p.buffered > 0 or p._count > 0)
    return out, False


@settings(max_examples=400, deadline=None)
@given(streams, st.lists(st.integers(1, 40), min_size=1, max_size=8), st.none() | st.integers(1, 4))
def test_any_stream_parses_the_same_whatever_the_chunking(data, sizes, max_requests):
    reference = parse(data, [len(data) or 1], None)  # the whole stream at once, no batch bound
    assert parse(data, sizes, max_requests) == reference
    assert parse(data, [1], max_requests) == reference  # byte by byte


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.text(
                st.characters(
                    min_codepoint=33, max_codepoint=0x2FF, exclude_characters="=", exclude_categories=("Cc", "Cf", "Zs")
                ),
                min_size=1,
                max_size=8,
            ),
            st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\n\r"), max_size=12),
            max_size=5,
        ),
        max_size=5,
    ),
    st.lists(st.integers(1, 30), min_size=1, max_size=5),
)
def test_well_formed_requests_come_back_exactly(requests, sizes):
    data = b"".join(wire(r) for r in requests)
    assert parse(data, sizes, 2, {"max_line_length": 128, "max_attributes": 6}) == (requests, False)


# -- the decider -------------------------------------------------------------------------------------

STATES = ["CONNECT", "EHLO", "HELO", "MAIL", "RCPT", "DATA", "END-OF-MESSAGE", "VRFY", "ETRN", "rcpt", "RCPT ", ""]
DECIDED = {"CONNECT", "MAIL", "RCPT", "END-OF-MESSAGE"}

junk = st.text(max_size=30)  # any code point: controls, surrogates, RTL overrides, NUL
numbers = st.one_of(
    junk,
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(["1e9", "0x10", "١٢٣", " 12 ", "1_000", "-0", "NaN", "9" * 400]),
)
addresses = st.one_of(
    junk,
    st.ip_addresses().map(str),
    st.sampled_from(
        [
            "203.0.113.9",
            "10.83.4.56",
            "192.168.50.7",
            "::1",
            "::ffff:10.83.4.56",
            "fe80::1%eth0",
            "1.2.3.4%x",
            "999.1.1.1",
            "0",
            " 10.83.4.56",
            "10.83.4.56\x00",
            "١٢٣.1.1.1",
            "unknown",
            "10.83.4.56/32",
            "[10.83.4.56]",
        ]
    ),
)
contexts = st.one_of(
    junk,
    st.sampled_from(
        [
            "*:25",
            "*:2600",
            "*:0",
            "*:65536",
            "10.0.0.5:2727",
            "[::1]:25",
            "[2001:db8::25]:2600",
            "Internet",
            "",
            " *:25",
            "*:25\x1b",
        ]
    ),
)
mailboxes = st.one_of(
    junk,
    st.sampled_from(
        [
            "",
            "<>",
            "user@labs.local",
            "x@gmail.com",
            "relaytest%example.org",
            "example.org!relaytest",
            "@a:b@labs.local",
            '"q q"@labs.local',
            "a@[10.0.0.1]",
            "jörg@straße.de",
            "a@labs.local\r\nRCPT TO:<b@c>",
        ]
    ),
)
requests = st.fixed_dictionaries(
    {},
    optional={
        "request": st.sampled_from(["smtpd_access_policy", "junk", ""]),
        "protocol_state": st.one_of(st.sampled_from(STATES), junk),
        "client_address": addresses,
        "client_port": numbers,
        "policy_context": contexts,
        "server_address": addresses,
        "server_port": numbers,
        "helo_name": junk,
        "sender": mailboxes,
        "recipient": mailboxes,
        "size": numbers,
        "instance": st.sampled_from(["", "i1", "i2"]) | junk,
        "sasl_username": st.sampled_from(["", "LABS\\user", "user@labs.local"]) | junk,
        "encryption_protocol": st.sampled_from(["", "TLSv1.3"]) | junk,
        "recipient_count": numbers,
        "x-unknown": junk,
    },
)

ENGINE = Engine(org_from(CONNECTORS), clock=FakeClock())
ACTION = re.compile(r"(OK|DUNNO|[45][0-9][0-9] [45]\.[0-9]{1,3}\.[0-9]{1,3} [^\r\n]+)")


def decimal(text: str) -> bool:
    """A number as Postfix writes one (ASCII digits, at most 64 bits), or nothing."""
    return not text or (len(text) <= 19 and text.isascii() and text.isdigit())


def usable(req: dict[str, str]) -> bool:
    """What the decider needs before any verdict: the client, the listener, and at MAIL and
    END-OF-MESSAGE a size that is a number."""
    if req.get("protocol_state") in ("MAIL", "END-OF-MESSAGE") and not decimal(req.get("size", "")):
        return False
    try:
        normalise(req.get("client_address", ""))
        ctx = req.get("policy_context")
        if ctx:
            Listener.parse(ctx)
            return True
    except ValueError:
        return False
    port = req.get("server_port", "")
    return bool(port) and decimal(port) and 0 < int(port) < 65536


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests)
def test_any_request_gets_one_well_formed_answer_and_never_relay_when_unusable(req):
    d = Decider(FakeClock()).decide(ENGINE, req, 1)
    assert ACTION.fullmatch(d.action), d.action
    assert d.payload == f"action={d.action}\n\n".encode()
    state = req.get("protocol_state", "")
    if d.action == "OK":
        assert state == "RCPT" and usable(req)
    if state in DECIDED and req.get("request", "smtpd_access_policy") == "smtpd_access_policy" and not usable(req):
        assert d.action == CONFIG_PROBLEM, req  # the temporary failure, never a pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(requests, min_size=2, max_size=8))
def test_sequences_on_one_decider_never_raise(reqs):
    """Transaction and re-send memory under garbage: instances, recipients and sizes collide."""
    decider = Decider(FakeClock())
    for conn, req in enumerate(reqs):
        d = decider.decide(ENGINE, req, conn % 2)
        assert ACTION.fullmatch(d.action), d.action
        if d.action == "OK" and not d.duplicate:
            assert usable(req)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["MAIL", "END-OF-MESSAGE"]), numbers, st.sampled_from(["203.0.113.9", "10.83.4.56"]))
def test_a_size_is_a_number_or_the_request_is_not_decided(state, size, client):
    """A placeable request with any ``size``: ASCII digits are judged, anything else is the
    temporary failure (never read as 0, which passes every size check)."""
    req = {
        "protocol_state": state,
        "client_address": client,
        "policy_context": "*:25",
        "sender": "a@example.net",
        "helo_name": "h",
        "instance": "i",
        "size": size,
    }
    d = Decider(FakeClock()).decide(ENGINE, req, 1)
    assert (d.action == CONFIG_PROBLEM) == (not decimal(size)), (size, d.action)
