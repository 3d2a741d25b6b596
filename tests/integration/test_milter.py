"""The milter in a real Postfix (issue #12's acceptance): verbatim replies, the header
firewall and AuthAs stamps, end-of-headers checks, from several 127.0.0.x clients."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from exmilter.sandbox import Sandbox
from tests.integration.conftest import CONFIG
from tests.integration.helpers import HOST, free_offset, wait_delivered

RELAY_DENIED = "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain"


@pytest.fixture(scope="module")
def milter_sandbox(config_path: Path) -> Iterator[Sandbox]:
    """integration.yaml (conf/exmilter.yaml on loopback) with the milter enabled, as rendered by default."""
    base = config_path.parent / "milter"
    base.mkdir(exist_ok=True)
    base.chmod(0o755)
    path = base / "exmilter.yaml"
    path.write_text(CONFIG.read_text(encoding="utf-8").replace("  enabled: false", "  enabled: true"))
    with Sandbox(path, base / "state", free_offset(path)) as sb:
        yield sb


def transaction(sb: Sandbox, source: str, sender: str, rcpt: str, raw: bytes) -> tuple[str, str]:
    """(RCPT reply, final reply) of one transaction on *:25 from ``source``."""
    s = smtplib.SMTP(HOST, sb.port("*:25"), source_address=(source, 0), timeout=60)
    try:
        s.ehlo("client.test")
        code, msg = s.mail(sender)
        assert code == 250, msg
        code, msg = s.rcpt(rcpt)
        rcpt_reply = f"{code} {msg.decode()}"
        if code != 250:
            return rcpt_reply, ""
        try:
            code, msg = s.data(raw)
        except smtplib.SMTPDataError as e:
            code, msg = e.smtp_code, e.smtp_error
        return rcpt_reply, f"{code} {msg.decode()}"
    finally:
        try:
            s.quit()
        except (smtplib.SMTPException, OSError):
            s.close()


def raw(headers: list[tuple[str, str]], body: str = "hello\r\n") -> bytes:
    return ("".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n" + body).encode()


BASE = [("From", "a@fabrikam.example"), ("To", "postmaster@labs.local"), ("Subject", "milter test")]


def test_relay_refusal_is_exchange_text_byte_for_byte(milter_sandbox: Sandbox) -> None:
    rcpt, _ = transaction(milter_sandbox, "127.0.0.1", "a@fabrikam.example", "x@gmail.example", raw(BASE))
    assert rcpt == RELAY_DENIED


def test_forged_organization_headers_are_stripped_and_anonymous_is_stamped(milter_sandbox: Sandbox) -> None:
    forged = [
        *BASE,
        ("X-MS-Exchange-Organization-AuthAs", "Internal"),
        ("X-MS-Exchange-Organization-AuthSource", "evil.example"),
        ("x-ms-exchange-organization-scl", "-1"),
    ]
    rcpt, final = transaction(milter_sandbox, "127.0.0.2", "a@fabrikam.example", "postmaster@labs.local", raw(forged))
    assert rcpt.startswith("250") and final.startswith("250"), (rcpt, final)
    d = wait_delivered(milter_sandbox, final.rsplit(" ", 1)[-1])
    text = d.content.decode()
    assert "AuthAs: Internal" not in text and "evil.example" not in text and "scl: -1" not in text.lower()
    assert "X-MS-Exchange-Organization-AuthAs: Anonymous" in text
    assert "X-MS-Exchange-Organization-AuthSource: exch01.labs.local" in text


def test_externally_secured_is_stamped_internal(milter_sandbox: Sandbox) -> None:
    rcpt, final = transaction(
        milter_sandbox,
        "127.0.5.9",
        "scanner@labs.local",
        "someone@gmail.example",
        raw([("From", "scanner@labs.local")]),
    )
    assert rcpt.startswith("250") and final.startswith("250"), (rcpt, final)
    text = wait_delivered(milter_sandbox, final.rsplit(" ", 1)[-1]).content.decode()
    assert "X-MS-Exchange-Organization-AuthAs: Internal" in text
    assert "X-MS-Exchange-Organization-AuthMechanism: 10" in text


def test_61_received_headers_are_a_mail_loop(milter_sandbox: Sandbox) -> None:
    hops = [("Received", f"from h{i}.example by relay{i}.example; Sat, 25 Mar 2023 08:00:00 +0000") for i in range(61)]
    _, final = transaction(milter_sandbox, "127.0.0.3", "a@fabrikam.example", "postmaster@labs.local", raw(hops + BASE))
    assert final == "554 5.4.6 Hop count exceeded - possible mail loop"


def test_header_block_over_max_header_size(milter_sandbox: Sandbox) -> None:
    pad = [(f"X-Pad-{i}", "x" * 990) for i in range(300)]  # ~300 KB > 256 KB
    _, final = transaction(milter_sandbox, "127.0.0.4", "a@fabrikam.example", "postmaster@labs.local", raw(BASE + pad))
    assert final == "552 5.3.4 Header size exceeds fixed maximum size"
