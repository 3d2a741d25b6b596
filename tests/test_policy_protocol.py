"""Policy request framing (exmilter.policy.protocol): any chunking, every malformed input."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exmilter.policy.protocol import POSTFIX_ATTRIBUTES, ProtocolError, RequestParser, encode_action
from tests.policy_fixtures import wire

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


def feed_chunks(parser: RequestParser, data: bytes, sizes: list[int]) -> list[dict[str, str]]:
    out, i, k = [], 0, 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        out += parser.feed(data[i : i + n])
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


# -- the fast path: one whole request per read, nothing buffered ------------------------------------
# It must answer exactly like the general path at every boundary where it gives up.


def errors(data: bytes, **limits: int) -> str:
    with pytest.raises(ProtocolError) as e:
        RequestParser(**limits).feed(data)
    return str(e.value)


def test_fast_path_exact_request_leaves_nothing_pending():
    p = RequestParser()
    assert p.feed(wire(REQUEST)) == [REQUEST]
    assert not p.pending
    assert p.feed(wire(REQUEST)) == [REQUEST]


def test_two_requests_in_one_chunk():
    a, b = {"protocol_state": "RCPT", "n": "1"}, {"protocol_state": "DATA", "n": "2"}
    assert RequestParser().feed(wire(a) + wire(b)) == [a, b]


def test_request_completed_exactly_at_the_chunk_end_after_a_partial_one():
    p = RequestParser()
    data = wire(REQUEST)
    assert p.feed(data[:10]) == []
    assert p.feed(data[10:]) == [REQUEST]  # buffered bytes: the general path completes it
    assert not p.pending
    assert p.feed(data) == [REQUEST]  # and the next whole one takes the fast path again


def test_complete_lines_without_the_empty_line_stay_pending():
    p = RequestParser()
    assert p.feed(b"a=1\nb=2\n") == []
    assert p.pending
    assert p.feed(b"\n") == [{"a": "1", "b": "2"}]


def test_request_followed_by_part_of_the_next():
    p = RequestParser()
    assert p.feed(wire({"a": "1"}) + b"b=") == [{"a": "1"}]
    assert p.pending
    assert p.feed(b"2\n\n") == [{"b": "2"}]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\n\n", [{}, {}]),  # two empty requests
        (b"\na=1\n\n", [{}, {"a": "1"}]),  # an empty request, then one
        (b"a=1\n\n\n", [{"a": "1"}, {}]),  # one, then an empty request
        (b"a=1\r\nb=2\r\n\r\n", [{"a": "1", "b": "2"}]),  # CRLF
        (b"a=1\na=2\n\n", [{"a": "2"}]),  # a repeated attribute keeps its last value
        (b"a=\nb==\n\n", [{"a": "", "b": "="}]),
    ],
)
def test_edges_of_a_single_chunk(data, expected):
    assert RequestParser().feed(data) == expected


def test_request_exactly_at_the_line_limit_and_one_over():
    at = b"a=" + b"x" * 60 + b"\n\n"  # 64 bytes: the fast path's own bound
    assert len(at) == 64
    assert RequestParser(max_line_length=64).feed(at) == [{"a": "x" * 60}]
    two = b"a=" + b"x" * 40 + b"\nb=" + b"y" * 40 + b"\n\n"  # over 64 in all, every line within it
    assert RequestParser(max_line_length=64).feed(two) == [{"a": "x" * 40, "b": "y" * 40}]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"a=" + b"x" * 63 + b"\n\n", "line longer than 64 bytes"),  # one line of 65 bytes, in one chunk
        (b"a=1\n" + b"b=" + b"x" * 63 + b"\n\n", "line longer than 64 bytes"),
        (b"".join(b"a%d=1\n" % i for i in range(9)) + b"\n", "more than 8 attributes in one request"),
        (b"=value\n\n", "not a name=value attribute: bad name ''"),
        (b"bad name=1\n\n", "not a name=value attribute: bad name 'bad name'"),
        (b"a=1\n\x01x=1\n\n", "not a name=value attribute: bad name '\\x01x'"),
        (b"a=1\nno equals sign\n\n", "not a name=value attribute: 'no equals sign'"),
        (b"recipient=\xff@labs.local\n\n", "attribute is not UTF-8"),
    ],
)
def test_errors_in_a_single_chunk(data, message):
    assert errors(data, max_line_length=64, max_attributes=8) == message


def test_exactly_max_attributes_in_one_chunk():
    data = b"".join(b"a%d=1\n" % i for i in range(8)) + b"\n"
    assert RequestParser(max_attributes=8).feed(data) == [{f"a{i}": "1" for i in range(8)}]


@pytest.mark.parametrize("second", [b"bad name=1\n\n", b"x=\xff\n\n", b"a=" + b"x" * 300 + b"\n\n"])
def test_error_after_a_good_request_in_the_same_chunk(second):
    with pytest.raises(ProtocolError) as e:
        RequestParser(max_line_length=256).feed(wire({"a": "1"}) + second)
    assert e.value.complete == [{"a": "1"}]


def test_a_failed_parser_refuses_even_a_perfect_request():
    p = RequestParser()
    with pytest.raises(ProtocolError):
        p.feed(b"garbage\n\n")
    with pytest.raises(ProtocolError, match=r"^input after a protocol error$"):
        p.feed(wire(REQUEST))


def _run(data: list[bytes], general: bool, **limits: int) -> tuple[list[dict[str, str]], str | None]:
    p = RequestParser(**limits)
    feed = p._feed if general else p.feed
    out: list[dict[str, str]] = []
    for chunk in data:
        try:
            out += feed(chunk)
        except ProtocolError as e:
            return out + e.complete, str(e)
    return out, None


def general_only(data: list[bytes], **limits: int) -> tuple[list[dict[str, str]], str | None]:
    """What the general path alone makes of ``data`` fed in these chunks (the reference)."""
    return _run(data, True, **limits)


def parsed(data: list[bytes], **limits: int) -> tuple[list[dict[str, str]], str | None]:
    """What ``feed`` (fast path first) makes of the same chunks."""
    return _run(data, False, **limits)


fragments = st.sampled_from(
    [
        b"a=1\n",
        b"bb=x=y\n",
        b"\n",
        b"\r\n",
        b"c d=1\n",
        b"=v\n",
        b"noeq\n",
        b"\xff=1\n",
        b"n=" + b"x" * 30 + b"\n",
        b"\x07=1\n",
        "é=ü\n".encode(),
        b"a=2\n",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(fragments, max_size=12).map(b"".join), min_size=1, max_size=4))
def test_fast_path_answers_like_the_general_path(chunks):
    assert parsed(chunks, max_line_length=40, max_attributes=6) == general_only(
        chunks, max_line_length=40, max_attributes=6
    )


def test_encode_action():
    assert encode_action("550 5.7.54 SMTP; Unable to relay") == b"action=550 5.7.54 SMTP; Unable to relay\n\n"


names = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="="), min_size=1, max_size=20
)
values = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=60)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.dictionaries(names, values, max_size=10), min_size=1, max_size=4),
    st.lists(st.integers(1, 50), min_size=1, max_size=20),
)
def test_roundtrip_any_chunking(requests, sizes):
    data = b"".join(wire(r) for r in requests)
    got = feed_chunks(RequestParser(max_line_length=4096, max_attributes=64), data, sizes)
    assert got == requests


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=10))
def test_arbitrary_bytes_never_crash_and_stay_bounded(chunks):
    """Hypothesis found the CR: a 64-byte line and a CR are 65 buffered bytes, and legal."""
    p = RequestParser(max_line_length=64, max_attributes=8)
    for chunk in chunks:
        try:
            for r in p.feed(chunk):
                assert isinstance(r, dict)
                assert len(r) <= 8
        except ProtocolError:
            return
        assert p.buffered <= 64 + 1  # an unfinished line, and a final CR that may be half of a CRLF


def test_postfix_attribute_shortcut_accepts_only_what_the_full_check_accepts() -> None:
    """The known-name shortcut of the name check can never let through a name the check refuses."""
    for name in POSTFIX_ATTRIBUTES:
        assert name and " " not in name and name.isprintable() and name.isascii(), name
    every = b"".join(f"{n}=v\n".encode() for n in sorted(POSTFIX_ATTRIBUTES)) + b"\n"
    assert RequestParser().feed(every) == [dict.fromkeys(sorted(POSTFIX_ATTRIBUTES), "v")]
    # one unknown bad name among known ones still goes through the full check
    with pytest.raises(ProtocolError, match="bad name"):
        RequestParser().feed(b"request=smtpd_access_policy\nbad\x01name=x\n\n")


def test_a_full_line_and_half_a_crlf_wait_for_the_other_half() -> None:
    """The longest legal line, then CR: 65 bytes buffered, no error; the LF completes the line."""
    p = RequestParser(max_line_length=64, max_attributes=8)
    line = b"a=" + b"x" * 62
    assert p.feed(line + b"\r") == []
    assert p.buffered == 65
    assert p.feed(b"\n\n") == [{"a": "x" * 62}]
