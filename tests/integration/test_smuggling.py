"""Issue 10 #8: SMTP smuggling (CVE-2023-51764 family) through the sandbox's real Postfix.

Each attack ends the DATA of a first message with a non-standard end-of-data sequence and
pipelines a complete second transaction behind it (its own MAIL, RCPT to an external domain
and DATA, ended properly with <CR><LF>.<CR><LF>), then QUIT, all in one write. A server
that takes the variant as the end of DATA runs the smuggled commands and relays the second
message; one that does not sees a single message whose body holds the smuggled text.
Rendered ``smtpd_forbid_bare_newline`` makes Postfix require the standard sequence, so
each attack is one message (the smuggled text stays in its body) and the external
recipient never gets anything; where a listener rejects bare linefeeds (every connector
has BareLinefeedRejectionEnabled) the message is refused instead.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator

import pytest

from exmilter.sandbox import Sandbox

HOST = "127.0.0.1"
VARIANTS = {
    "LF.LF": b"\n.\n",
    "CRLF.LF": b"\r\n.\n",
    "LF.CRLF": b"\n.\r\n",
    "CR.CRLF": b"\r.\r\n",
    "CRLF.CR": b"\r\n.\r",
}
SMUGGLED_TO = "smuggled@example.org"
BARE_LF_REJECTED = "554 5.5.2 exch01.labs.local Error: bare <LF> received"


def _replies(f: object, count: int) -> list[str]:
    out: list[str] = []
    while len(out) < count:
        line = f.readline()  # type: ignore[attr-defined]
        if not line:
            break
        if line[3:4] != b"-":
            out.append(line.decode(errors="replace").rstrip("\r\n"))
    return out


def smuggle(port: int, source: str, first_rcpt: str, variant: bytes) -> tuple[str, list[str]]:
    """One attack; returns its tag and every reply after the 354."""
    tag = uuid.uuid4().hex
    with socket.create_connection((HOST, port), timeout=30, source_address=(source, 0)) as s:
        f = s.makefile("rb")
        assert _replies(f, 1)[0].startswith("220")
        s.sendall(b"EHLO attacker.test\r\n")
        _replies(f, 1)
        s.sendall(f"MAIL FROM:<a@example.com>\r\nRCPT TO:<{first_rcpt}>\r\nDATA\r\n".encode())
        head = _replies(f, 3)
        assert head[1].startswith("250") and head[2].startswith("354"), head
        smuggled = (
            f"MAIL FROM:<a@example.com>\r\nRCPT TO:<{SMUGGLED_TO}>\r\nDATA\r\n"
            f"Subject: smuggled {tag}\r\n\r\nsmuggled body\r\n.\r\n"
        ).encode()
        s.sendall(f"Subject: first {tag}\r\n\r\nfirst body".encode() + variant + smuggled + b"QUIT\r\n")
        s.settimeout(10)
        rest = []
        for raw in f:
            if raw[3:4] != b"-":
                rest.append(raw.decode(errors="replace").rstrip("\r\n"))
        return tag, rest


def _with_tag(sb: Sandbox, tag: str, settle: float) -> list:
    time.sleep(settle)
    return [d for d in sb.deliveries() if tag.encode() in d.content]


@pytest.fixture(scope="module")
def variant_results(sandbox: Sandbox) -> Iterator[dict]:
    """Every variant from a relay host and from a client without relay rights, on *:25."""
    results = {}
    for source, rcpt in (("127.0.0.56", "first@example.net"), ("127.0.0.20", "first@labs.local")):
        for name, seq in VARIANTS.items():
            results[(source, name)] = smuggle(sandbox.port("*:25"), source, rcpt, seq)
    yield results


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("source", ["127.0.0.56", "127.0.0.20"])
def test_each_variant_is_one_message(sandbox: Sandbox, variant_results: dict, source: str, name: str) -> None:
    tag, replies = variant_results[(source, name)]
    # exactly one transaction reached DATA's end: one "queued", then QUIT's 221
    assert [r[:24] for r in replies] == ["250 2.0.0 Ok: queued as ", "221 2.0.0 Bye"], replies
    queue_id = replies[0].rsplit(" ", 1)[1]
    deadline = time.monotonic() + 30
    while not (found := _with_tag(sandbox, tag, 0.1)) and time.monotonic() < deadline:
        pass
    time.sleep(0.5)  # a smuggled second message would be queued right behind the first
    found = _with_tag(sandbox, tag, 0)
    assert len(found) == 1, [d.recipients for d in found]
    d = found[0]
    assert d.envelope["queue_id"] == queue_id
    assert SMUGGLED_TO not in d.recipients
    assert f"smuggled {tag}".encode() in d.content  # the smuggled commands are body text
    assert not [x for x in sandbox.deliveries() if SMUGGLED_TO in x.recipients and tag.encode() in x.content]


def test_bare_linefeed_rejection_refuses_the_attack(default_domain_sandbox: Sandbox) -> None:
    """*:2527's only connector has BareLinefeedRejectionEnabled: smtpd_forbid_bare_newline=reject.
    The bare-LF variants are refused whole (Postfix's text, Exchange's 554); the CR-only ones
    contain no bare LF and are one message."""
    port = default_domain_sandbox.port("*:2527")
    tags = {}
    for name, seq in VARIANTS.items():
        tag, replies = smuggle(port, "127.0.0.41", "first@labs.local", seq)
        tags[name] = tag
        expected = BARE_LF_REJECTED if b"\n" in seq.replace(b"\r\n", b"") else "250 2.0.0 Ok: queued as "
        assert [r[: len(expected)] for r in replies] == [expected, "221 2.0.0 Bye"], (name, replies)
    time.sleep(1.0)
    delivered = {name: len(_with_tag(default_domain_sandbox, tag, 0)) for name, tag in tags.items()}
    assert delivered == {"LF.LF": 0, "CRLF.LF": 0, "LF.CRLF": 0, "CR.CRLF": 1, "CRLF.CR": 1}
    assert not [x for x in default_domain_sandbox.deliveries() if SMUGGLED_TO in x.recipients]
