"""Authenticated submission on the wire (issue #13): seed 003 on its ports and seed 001's
Client Frontend, through the sandbox's real Postfix, its own Dovecot and certificates, with
smtplib and swaks from several 127.0.0.x addresses (tests/data/auth.yaml)."""

from __future__ import annotations

import os
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from exmilter.sandbox import Sandbox, State
from exmilter.sandbox.dovecot import SANDBOX_PASSWORD
from tests.integration.helpers import HOST, delivered_to, free_offset, message, wait_delivered

CONFIG = Path(__file__).resolve().parent.parent / "data" / "auth.yaml"
# The sandbox renders the milter (the default): MAIL and RCPT refusals reach the client as
# Exchange words them, without Postfix's "<address>: Sender address rejected:" wrapping.
SCRIPT_HOST = "127.0.3.13"  # seed 003's 192.168.1.13
PRINTER = "127.0.3.30"  # Printers 587: Tls only
USER_PC = "127.0.3.20"
LEGACY = "127.0.3.31"  # Legacy Device 587: AuthMechanism None  # anything else on 587: Client Frontend (seed 001)

REQUIRE_TLS = "451 4.7.3 STARTTLS is required to send mail"
NOT_AUTHENTICATED = "530 5.7.57 SMTP; Client was not authenticated to send anonymous mail during MAIL FROM"
SEND_AS = "550 5.7.60 SMTP; Client does not have permissions to send as this sender"
AUTH_NOT_ENABLED = "503 5.5.1 Error: authentication not enabled"


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    base = Path(tempfile.mkdtemp(prefix="exmilter-auth-", dir="/tmp"))
    base.chmod(0o755)
    path = base / "auth.yaml"
    shutil.copyfile(CONFIG, path)
    try:
        with Sandbox(path, base / "state", free_offset(path)) as sandbox:
            yield sandbox
    finally:
        shutil.rmtree(base, ignore_errors=True)


def unique(domain: str) -> str:
    return f"t-{uuid.uuid4().hex[:12]}@{domain}"


def line(reply: tuple[int, bytes]) -> str:
    return f"{reply[0]} {reply[1].decode()}"


def connect(sb: Sandbox, source: str, port: str = "*:587") -> smtplib.SMTP:
    s = smtplib.SMTP(HOST, sb.port(port), source_address=(source, 0), timeout=60)
    s.ehlo("app.cloudmonkeys.xyz")
    return s


def starttls(sb: Sandbox, s: smtplib.SMTP) -> None:
    ctx = ssl.create_default_context(cafile=str(sb.ca_file))
    ctx.check_hostname = False  # the client connects to 127.0.0.1; the chain is what is checked
    assert s.starttls(context=ctx)[0] == 220
    s.ehlo("app.cloudmonkeys.xyz")


def login(s: smtplib.SMTP, user: str, mechanism: str = "LOGIN", password: str = SANDBOX_PASSWORD) -> str:
    s.user, s.password = user, password
    try:
        return line(s.auth(mechanism, getattr(s, f"auth_{mechanism.lower()}"), initial_response_ok=True))
    except smtplib.SMTPAuthenticationError as e:
        return f"{e.smtp_code} {e.smtp_error.decode()}"
    except smtplib.SMTPNotSupportedError:
        return line(s.docmd("AUTH", f"{mechanism} dummy"))


def send(s: smtplib.SMTP, sender: str, rcpt: str) -> list[str]:
    """MAIL, RCPT and DATA as far as they go: every reply's line."""
    replies = [line(s.mail(sender))]
    if replies[-1].startswith("250"):
        replies.append(line(s.rcpt(rcpt)))
        if replies[-1].startswith("250"):
            replies.append(line(s.data(message(sender, [rcpt]).as_bytes())))
    return replies


def queue_id(reply: str) -> str:
    return reply.rsplit(" ", 1)[1]


def nothing_delivered(sb: Sandbox, rcpt: str, settle: float = 0.5) -> bool:
    time.sleep(settle)  # the refusals are synchronous; this only guards against a late delivery
    return delivered_to(sb, rcpt) == []


# --- seed 003: SMTP Auth Relay Script on 587 ------------------------------------------------------


def test_587_without_tls_offers_no_auth_and_refuses_mail(sb: Sandbox) -> None:
    s = connect(sb, SCRIPT_HOST)
    assert s.has_extn("starttls") and not s.has_extn("auth")
    assert login(s, "svc-mailer") == AUTH_NOT_ENABLED
    rcpt = unique("gmail.com")
    assert send(s, "svc-mailer@cloudmonkeys.xyz", rcpt) == [REQUIRE_TLS]
    s.quit()
    assert nothing_delivered(sb, rcpt)


def test_587_with_starttls_but_no_auth_is_5_7_57(sb: Sandbox) -> None:
    s = connect(sb, SCRIPT_HOST)
    starttls(sb, s)
    assert s.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
    assert send(s, "svc-mailer@cloudmonkeys.xyz", unique("gmail.com")) == [NOT_AUTHENTICATED]
    s.quit()


@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN"])
def test_587_starttls_and_auth_relays_and_delivers(sb: Sandbox, mechanism: str) -> None:
    s = connect(sb, SCRIPT_HOST)
    starttls(sb, s)
    assert login(s, "svc-mailer", mechanism) == "235 2.7.0 Authentication successful"
    rcpt = unique("gmail.com")
    replies = send(s, "svc-mailer@cloudmonkeys.xyz", rcpt)
    s.quit()
    assert replies[:2] == ["250 2.1.0 Ok", "250 2.1.5 Ok"]
    d = wait_delivered(sb, queue_id(replies[2]))
    assert (d.connector, d.recipients) == ("CMHYBD01\\SMTP Auth Relay Script", [rcpt])


def test_send_as_granted_mailbox_relays_with_swaks(sb: Sandbox) -> None:
    """The seed's own test: -From smb1 with svc-mailer's credentials (Send As on smb1)."""
    rcpt = unique("cloudmonkeys.xyz")
    proc = subprocess.run(
        ["swaks", "--server", f"{HOST}:{sb.port('*:587')}", "--local-interface", SCRIPT_HOST, "--tls",
         "--tls-ca-path", str(sb.ca_file), "--auth", "LOGIN", "--auth-user", "svc-mailer",
         "--auth-password", SANDBOX_PASSWORD, "--from", "smb1@cloudmonkeys.xyz", "--to", rcpt],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "<~  235 2.7.0 Authentication successful" in proc.stdout.splitlines()
    queued = next(x for x in proc.stdout.splitlines() if "queued as" in x)
    assert wait_delivered(sb, queue_id(queued)).recipients == [rcpt]


def test_send_as_another_user_is_5_7_60_and_nothing_is_delivered(sb: Sandbox) -> None:
    s = connect(sb, SCRIPT_HOST)
    starttls(sb, s)
    assert login(s, "svc-mailer") == "235 2.7.0 Authentication successful"
    rcpt = unique("gmail.com")
    assert send(s, "raghu@cloudmonkeys.xyz", rcpt) == [SEND_AS]
    s.quit()
    assert nothing_delivered(sb, rcpt)


@pytest.mark.parametrize(
    ("user", "password"), [("svc-mailer", "wrong"), ("nobody", SANDBOX_PASSWORD), ("Exchange Servers", "x")]
)
def test_failed_auth_is_refused_and_leaves_the_daemons_alone(sb: Sandbox, user: str, password: str) -> None:
    pids = (sb.policyd_pid, sb.dovecot_pid)
    s = connect(sb, SCRIPT_HOST)
    starttls(sb, s)
    assert login(s, user, password=password).startswith("535 5.7.8 Error: authentication failed")
    rcpt = unique("gmail.com")
    assert send(s, "svc-mailer@cloudmonkeys.xyz", rcpt) == [NOT_AUTHENTICATED]
    s.quit()
    assert nothing_delivered(sb, rcpt)
    assert (sb.policyd_pid, sb.dovecot_pid) == pids


def test_tls_handshake_failure_is_refused_and_the_next_session_works(sb: Sandbox) -> None:
    with socket.create_connection((HOST, sb.port("*:587")), timeout=30, source_address=(SCRIPT_HOST, 0)) as raw:
        f = raw.makefile("rwb")
        assert f.readline().startswith(b"220 ")
        f.write(b"EHLO app\r\n")
        f.flush()
        while not f.readline().startswith(b"250 "):
            pass
        f.write(b"STARTTLS\r\n")
        f.flush()
        assert f.readline().startswith(b"220 ")
        f.write(b"this is not a TLS client hello\r\n" * 4)
        f.flush()
        try:
            rest = f.read()
        except ConnectionResetError:  # Postfix drops the connection, by reset or by close
            rest = b""
        assert rest == b""
    test_587_starttls_and_auth_relays_and_delivers(sb, "LOGIN")


# --- the other connectors -------------------------------------------------------------------------


def test_2526_anonymous_relay_unchanged(sb: Sandbox) -> None:
    s = connect(sb, SCRIPT_HOST, "*:2526")
    assert not s.has_extn("auth")
    rcpt = unique("cloudmonkeys.xyz")
    replies = send(s, "test@cloudmonkeys.xyz", rcpt)
    s.quit()
    assert replies[:2] == ["250 2.1.0 Ok", "250 2.1.5 Ok"]
    assert wait_delivered(sb, queue_id(replies[2])).connector == "CMHYBD01\\SMTP Relay Script"


def test_connector_without_basic_auth_hides_and_refuses_auth_on_a_shared_listener(sb: Sandbox) -> None:
    s = connect(sb, PRINTER)
    starttls(sb, s)
    assert not s.has_extn("auth")
    assert login(s, "svc-mailer") == AUTH_NOT_ENABLED
    rcpt = unique("gmail.com")
    replies = send(s, "scanner@cloudmonkeys.xyz", rcpt)
    s.quit()
    assert replies == [
        "250 2.1.0 Ok",
        "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain",
    ]


def test_seed_001_client_frontend_send_mailmessage_use_ssl(sb: Sandbox) -> None:
    """Send-MailMessage -Port 587 -UseSsl -Credential: STARTTLS, then AUTH, then relay."""
    s = connect(sb, USER_PC)
    assert not s.has_extn("auth")  # BasicAuthRequireTLS
    starttls(sb, s)
    assert login(s, "adam.wally") == "235 2.7.0 Authentication successful"
    rcpt = unique("gmail.com")
    replies = send(s, "adam.wally@exchange2016demo.com", rcpt)
    s.quit()
    assert replies[:2] == ["250 2.1.0 Ok", "250 2.1.5 Ok"]
    assert wait_delivered(sb, queue_id(replies[2])).connector == "CMHYBD01\\Client Frontend CMHYBD01"


def test_authenticated_user_without_submit_rights_is_5_7_1(sb: Sandbox) -> None:
    """Default Frontend (port 25) offers AUTH after STARTTLS but grants users nothing."""
    s = connect(sb, USER_PC, "*:25")
    starttls(sb, s)
    assert login(s, "svc-mailer") == "235 2.7.0 Authentication successful"
    assert send(s, "svc-mailer@cloudmonkeys.xyz", unique("cloudmonkeys.xyz")) == [
        "550 5.7.1 Client does not have permissions to submit to this server"
    ]
    s.quit()


def test_dovecot_killed_is_restarted(sb: Sandbox) -> None:
    """Like the policy daemon, the sandbox's Dovecot is restarted when it dies (a new PID), and
    AUTH works again. (Its auth worker outlives a killed master while smtpd processes still
    hold connections to it, so "Dovecot down" is not a state a test can hold reliably.)"""
    pid = sb.dovecot_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (sb.dovecot_pid in (None, pid) or sb.dovecot_state is not State.RUNNING):
        time.sleep(0.1)
    assert sb.dovecot_pid not in (None, pid)
    test_587_starttls_and_auth_relays_and_delivers(sb, "LOGIN")


def test_connector_without_tls_hides_and_refuses_starttls_on_a_shared_listener(sb: Sandbox) -> None:
    s = connect(sb, LEGACY)
    assert not s.has_extn("starttls") and not s.has_extn("auth")
    assert line(s.docmd("STARTTLS")) == "502 5.5.1 Error: command not implemented"  # Postfix's refusal
    assert line(s.docmd("AUTH", "LOGIN")) == AUTH_NOT_ENABLED
    rcpt = unique("cloudmonkeys.xyz")
    replies = send(s, "device@cloudmonkeys.xyz", rcpt)
    s.quit()
    assert replies[:2] == ["250 2.1.0 Ok", "250 2.1.5 Ok"]
    assert wait_delivered(sb, queue_id(replies[2])).connector == "CMHYBD01\\Legacy Device 587"
