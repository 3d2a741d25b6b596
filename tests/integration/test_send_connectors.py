"""Send connectors through the sandbox's real Postfix, to real SMTP next hops on loopback.

Next hops (aiosmtpd, tests/integration/next_hops.py): one requiring STARTTLS with a
certificate from the sandbox's CA, one requiring AUTH, one plain (no STARTTLS offered),
and the mailbox server. Each message must arrive at the hop its address space selects;
a connector that requires TLS never hands mail to the plain hop (the message stays
queued); smart-host authentication works with the credentials file and, without it,
the message stays queued instead of going out unauthenticated or bouncing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from exmilter.sandbox import Sandbox
from exmilter.sandbox.certificates import CertificateAuthority
from exmilter.sandbox.instance import POSTFIX
from exmilter.sandbox.outbound import CA_DIR
from tests.integration.helpers import delivered_to, free_offset, reload_and_wait, send
from tests.integration.next_hops import NextHop

USER, PASSWORD = "relay-user", "s3cret pass"
POSTQUEUE = str(Path(POSTFIX).with_name("postqueue"))
#: The AUTH hop takes the password without TLS on purpose (BasicAuth, as Exchange allows it).
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")

CONFIG = """\
server: {{name: EXCH01, fqdn: exch01.contoso.test, domain: CONTOSO}}
accepted_domains:
  - contoso.test
mailbox_next_hop: "[127.0.0.1]:{mailbox}"
receive_connectors:
  - name: Relay
    usage: Custom
    bindings: [0.0.0.0:25]
    remote_ip_ranges: [127.0.0.0/8]
    permission_groups: [AnonymousUsers]
    permissions:
      - user: NT AUTHORITY\\ANONYMOUS LOGON
        extended_rights: [ms-Exch-SMTP-Accept-Any-Recipient]
send_connectors:
  - name: Internet
    usage: Internet
    address_spaces: ["SMTP:*.test;1"]   # no '*': other domains are unreachable
  - name: Secure Partner
    address_spaces: ["SMTP:tls.example;1"]
    smart_hosts: [127.0.0.1]
    port: {tls}
    require_tls: $true
    tls_auth_level: DomainValidation
    tls_domain: tls-hop.test
    fqdn: relay.contoso.test
  - name: Smart Host
    address_spaces: ["SMTP:auth.example;1"]
    smart_hosts: [127.0.0.1]
    port: {auth}
    smart_host_auth_mechanism: BasicAuth
    authentication_credential_file: {credentials}
  - name: No Credentials
    address_spaces: ["SMTP:noauth.example;1"]
    smart_hosts: ["[127.0.0.1]"]
    port: {auth}
    smart_host_auth_mechanism: BasicAuth
    authentication_credential_file: {missing}
  - name: Wrong Password
    address_spaces: ["SMTP:badpass.example;1"]
    smart_hosts: [127.0.0.1]
    port: {auth}
    smart_host_auth_mechanism: BasicAuth
    authentication_credential_file: {wrong}
  - name: Requires TLS
    address_spaces: ["SMTP:notls.example;1"]
    smart_hosts: [127.0.0.1]
    port: {plain}
    require_tls: $true
"""


@dataclass
class Hops:
    tls: NextHop
    auth: NextHop
    plain: NextHop
    mailbox: NextHop


@pytest.fixture(scope="module")
def hops_and_sandbox() -> Iterator[tuple[Hops, Sandbox]]:
    base = Path(tempfile.mkdtemp(prefix="exmilter-send-", dir="/tmp"))
    base.chmod(0o755)
    state = base / "state"
    ca = CertificateAuthority.create(state / CA_DIR)  # the sandbox trusts this CA; it signs the TLS hop
    hops = Hops(
        tls=NextHop("tls-hop", certificate=ca.issue("tls-hop", ["tls-hop.test", "127.0.0.1"])),
        auth=NextHop("auth-hop", credentials=(USER, PASSWORD)),
        plain=NextHop("plain-hop"),
        mailbox=NextHop("mailbox"),
    )
    started: list[NextHop] = []
    try:
        for hop in (hops.tls, hops.auth, hops.plain, hops.mailbox):
            started.append(hop.start())
        credentials = base / "smarthost.credentials"  # the admin's file: Postfix texthash, read as root
        credentials.write_text(f"[127.0.0.1]:{hops.auth.port} {USER}:{PASSWORD}\n")
        credentials.chmod(0o600)
        wrong = base / "wrong.credentials"
        wrong.write_text(f"[127.0.0.1]:{hops.auth.port} {USER}:not-the-password\n")
        wrong.chmod(0o600)
        config = base / "exmilter.yaml"
        config.write_text(
            CONFIG.format(
                mailbox=hops.mailbox.port,
                tls=hops.tls.port,
                auth=hops.auth.port,
                plain=hops.plain.port,
                credentials=credentials,
                missing=base / "missing.credentials",
                wrong=wrong,
            )
        )
        with Sandbox(config, state, free_offset(config)) as sb:
            yield hops, sb
    finally:
        for hop in started:
            hop.stop()
        shutil.rmtree(base, ignore_errors=True)


def deferred(sb: Sandbox, recipient: str, timeout: float = 60) -> str:
    """The maillog's ``status=deferred`` line for ``recipient``, once Postfix writes it."""
    pattern = re.compile(rf"to=<{re.escape(recipient)}>.*status=deferred.*")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = pattern.search(sb.postfix.maillog_text())
        if m:
            return m.group(0)
        time.sleep(0.2)
    raise AssertionError(f"no deferral for {recipient}:\n{sb.postfix.maillog_tail(40)}")


def sandbox_port(sb: Sandbox) -> int:
    return sb.port("*:25")


def test_each_message_reaches_the_hop_its_address_space_selects(hops_and_sandbox: tuple[Hops, Sandbox]) -> None:
    hops, sb = hops_and_sandbox
    rcpts = ["a@tls.example", "b@auth.example", "c@contoso.test", "d@gmail.test"]
    outcome = send(sandbox_port(sb), "127.0.0.1", "app@contoso.test", rcpts)
    assert outcome.stage == "queued", outcome
    tls = hops.tls.wait_for("a@tls.example")
    assert (tls.rcpt_tos, tls.tls, tls.helo) == (["a@tls.example"], True, "relay.contoso.test")  # Fqdn as HELO
    auth = hops.auth.wait_for("b@auth.example")
    assert (auth.rcpt_tos, auth.login, auth.helo) == (["b@auth.example"], USER, "exch01.contoso.test")
    mailbox = hops.mailbox.wait_for("c@contoso.test")
    assert mailbox.rcpt_tos == ["c@contoso.test"]
    # the Internet connector routes by MX: offline, the sandbox's delivery agent takes it and names the route
    deadline = time.monotonic() + 60
    while not delivered_to(sb, "d@gmail.test") and time.monotonic() < deadline:
        time.sleep(0.1)
    (internet,) = delivered_to(sb, "d@gmail.test")
    assert internet.envelope["listener"] == "send-connector=exsend-internet"
    assert not hops.plain.received  # nobody's address space selects the plain hop


def test_a_hop_that_offers_no_starttls_gets_nothing_and_the_message_stays_queued(
    hops_and_sandbox: tuple[Hops, Sandbox],
) -> None:
    hops, sb = hops_and_sandbox
    outcome = send(sandbox_port(sb), "127.0.0.1", "app@contoso.test", ["x@notls.example"])
    assert outcome.stage == "queued", outcome
    line = deferred(sb, "x@notls.example")
    assert "TLS is required, but was not offered by host 127.0.0.1[127.0.0.1]" in line
    assert not hops.plain.got("x@notls.example")


def test_without_the_credentials_file_the_message_stays_queued(hops_and_sandbox: tuple[Hops, Sandbox]) -> None:
    hops, sb = hops_and_sandbox
    outcome = send(sandbox_port(sb), "127.0.0.1", "app@contoso.test", ["y@noauth.example"])
    assert outcome.stage == "queued", outcome
    deferred(sb, "y@noauth.example")
    assert not hops.auth.got("y@noauth.example")
    assert "bounced" not in sb.postfix.maillog_text()


def test_a_refused_password_defers_instead_of_bouncing(hops_and_sandbox: tuple[Hops, Sandbox]) -> None:
    hops, sb = hops_and_sandbox
    outcome = send(sandbox_port(sb), "127.0.0.1", "app@contoso.test", ["z@badpass.example"])
    assert outcome.stage == "queued", outcome
    line = deferred(sb, "z@badpass.example")
    assert "SASL authentication failed" in line
    assert hops.auth.auth_failures >= 1 and not hops.auth.got("z@badpass.example")


def test_a_domain_no_connector_takes_is_held_and_retried_never_bounced(
    hops_and_sandbox: tuple[Hops, Sandbox],
) -> None:
    _, sb = hops_and_sandbox
    outcome = send(sandbox_port(sb), "127.0.0.1", "app@contoso.test", ["u@nowhere.example"])
    assert outcome.stage == "queued", outcome
    line = deferred(sb, "u@nowhere.example")  # accepted (Exchange queues it as unreachable), held here
    assert "relay=none" in line and line.endswith("status=deferred (deferred transport)")
    queue = subprocess.run(
        [POSTQUEUE, "-c", str(sb.postfix.etc), "-p"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "u@nowhere.example" in queue
    # forced (postqueue -f), the transport itself defers: still queued, never bounced
    subprocess.run([POSTQUEUE, "-c", str(sb.postfix.etc), "-f"], capture_output=True, timeout=60, check=True)
    deadline = time.monotonic() + 60
    pattern = re.compile(r"to=<u@nowhere\.example>, relay=exunreachable.*status=deferred.*")
    while not pattern.search(sb.postfix.maillog_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pattern.search(sb.postfix.maillog_text()), sb.postfix.maillog_tail(20)
    assert "status=bounced" not in sb.postfix.maillog_text()


def test_a_reload_applies_a_new_send_connector(hops_and_sandbox: tuple[Hops, Sandbox]) -> None:
    """Last in the module: it adds a connector to the file (the sandbox's reload, then postfix reload)."""
    hops, sb = hops_and_sandbox
    sb.config.write_text(
        sb.config.read_text() + f'  - name: Added By Reload\n    address_spaces: ["SMTP:reloaded.example;1"]\n'
        f"    smart_hosts: [127.0.0.1]\n    port: {hops.plain.port}\n"
    )
    reloads = sb.postfix.maillog_text().count("reload -- version")
    assert reload_and_wait(sb)
    assert f"{sb.config}: send connectors applied (postfix reload)" in sb.messages
    deadline = time.monotonic() + 30
    while sb.postfix.maillog_text().count("reload -- version") == reloads and time.monotonic() < deadline:
        time.sleep(0.1)
    outcome = send(sandbox_port(sb), "127.0.0.1", "app@contoso.test", ["r@reloaded.example"])
    assert outcome.stage == "queued", outcome
    got = hops.plain.wait_for("r@reloaded.example")
    assert got.rcpt_tos == ["r@reloaded.example"]
