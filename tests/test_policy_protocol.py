"""Policy request framing (exmilter.policy.protocol): any chunking, every malformed input."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exmilter.policy.protocol import ProtocolError, RequestParser, encode_action

REQUEST = {
    "request": "smtpd_access_policy",
    "protocol_state": "RCPT",
    "protocol_name": "ESMTP",
    "client_address": "203.0.113.9",
    "client_name": "unknown",
    "helo_name": "client.example",
    "sender": "a@example.net",
    "recipient": "user@labs.local",
    "recipient_count": "0",
    "queue_id": "",
    "instance": "1a2b.6543f1e2.8c0d1.0",
    "size": "0",
    "policy_context": "*:25",
}


def wire(attrs: dict[str, str]) -> bytes:
    return "".join(f"{k}={v}\n" for k, v in attrs.items()).encode() + b"\n"


def feed_chunks(parser: RequestParser, data: bytes, sizes: list[int]) -> list[dict[str, str]]:
    out, i, k = [], 0, 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        out += parser.feed(data[i:i + n])
        i += n
        k += 1
    return out


def test_one_request():
    assert RequestParser().feed(wire(REQUEST)) == [REQUEST]


def test_pipelined_requests_in_one_read():
    second = REQUEST | {"recipient": "other@labs.local"}
    assert RequestParser().feed(wire(REQUEST) + wire(second)) == [REQUEST, second]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 13, 64, 100, 1000, 4096])
def test_fixed_chunk_sizes(size):
    data = wire(REQUEST) * 3
    assert feed_chunks(RequestParser(), data, [size]) == [REQUEST] * 3


@pytest.mark.parametrize("seed", range(25))
def test_random_chunking(seed):
    rnd = random.Random(seed)
    data = wire(REQUEST) + wire(REQUEST | {"protocol_state": "DATA"}) + wire({"protocol_state": "END-OF-MESSAGE"})
    sizes = [rnd.randint(1, 40) for _ in range(50)]
    got = feed_chunks(RequestParser(), data, sizes)
    assert [r["protocol_state"] for r in got] == ["RCPT", "DATA", "END-OF-MESSAGE"]


def test_pending_tracks_partial_requests():
    p = RequestParser()
    assert not p.pending
    assert p.feed(b"protocol_state=RC") == []
    assert p.pending
    assert p.feed(b"PT\n") == []
    assert p.pending
    assert p.feed(b"\n") == [{"protocol_state": "RCPT"}]
    assert not p.pending


def test_attribute_details():
    data = b"a=1\r\nempty=\nequals=x=y\na=2\n\n"
    assert RequestParser().feed(data) == [{"a": "2", "empty": "", "equals": "x=y"}]


def test_empty_request_is_a_request():
    assert RequestParser().feed(b"\n") == [{}]


def test_utf8_values():
    assert RequestParser().feed("recipient=jörg@labs.local\n\n".encode()) == [{"recipient": "jörg@labs.local"}]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"x" * 65 + b"\n\n", "line longer"),
        (b"x" * 65, "line longer"),  # unterminated: refused before the newline ever comes
        (b"".join(b"a%d=1\n" % i for i in range(9)) + b"\n", "attributes"),
        (b"no equals sign\n\n", "name=value"),
        (b"=value\n\n", "name=value"),
        (b"bad name=1\n\n", "name=value"),
        (b"recipient=\xff\xfe@labs.local\n\n", "UTF-8"),
        (b"\x00\x01\x02\n", "name=value"),
    ],
)
def test_malformed(data, message):
    p = RequestParser(max_line_length=64, max_attributes=8)
    with pytest.raises(ProtocolError, match=message):
        p.feed(data)
    with pytest.raises(ProtocolError):
        p.feed(b"a=1\n\n")  # a failed parser stays failed


def test_limits_are_inclusive():
    p = RequestParser(max_line_length=64, max_attributes=8)
    line = b"a=" + b"x" * 62
    attrs = b"".join(b"a%d=1\n" % i for i in range(7))
    assert p.feed(line + b"\n" + attrs + b"\n") != []


def test_error_keeps_the_requests_completed_before_it():
    with pytest.raises(ProtocolError) as e:
        RequestParser().feed(wire(REQUEST) + b"garbage\n\n")
    assert e.value.complete == [REQUEST]


def test_encode_action():
    assert encode_action("550 5.7.54 SMTP; Unable to relay") == b"action=550 5.7.54 SMTP; Unable to relay\n\n"


names = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="="),
                min_size=1, max_size=20)
values = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=60)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(names, values, max_size=10), min_size=1, max_size=4),
       st.lists(st.integers(1, 50), min_size=1, max_size=20))
def test_roundtrip_any_chunking(requests, sizes):
    data = b"".join(wire(r) for r in requests)
    got = feed_chunks(RequestParser(max_line_length=4096, max_attributes=64), data, sizes)
    assert got == requests


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=10))
def test_arbitrary_bytes_never_crash_and_stay_bounded(chunks):
    p = RequestParser(max_line_length=64, max_attributes=8)
    for chunk in chunks:
        try:
            for r in p.feed(chunk):
                assert isinstance(r, dict)
                assert len(r) <= 8
        except ProtocolError:
            return
        assert len(p._buf) <= 64
