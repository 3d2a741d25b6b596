"""The relay harness: every address form an open-relay tester tries, completed with DATA.

nmap's smtp-open-relay script (its 16 MAIL/RCPT combinations, rebuilt here from
/usr/share/nmap/scripts/smtp-open-relay.nse) plus the percent-hack, bang-path,
quoted, source-route, trailing-dot, IP-literal, unqualified and IDN forms of issue 10.
Each accepted RCPT is followed by DATA with a unique tag in the subject, and the verdict
comes from the sandbox's delivered files, not from the RCPT reply: a leak is a delivered
message with a recipient outside the accepted domains.

The accepted destinations are written out literally (:data:`ACCEPTED`), not computed
with exmilter's own domain code, so the harness cannot share a bug with what it tests.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from exmilter.engine import Engine
from exmilter.model import Right
from exmilter.sandbox import Sandbox, SandboxListener
from exmilter.sandbox.deliver import Delivery

HOST = "127.0.0.1"
#: The domain nmap relays to (its default, nmap.scanme.org) and a second external one.
EXTERNAL = "nmap.scanme.org"
OUTSIDE = "example.org"
#: Where a delivered recipient may be, for tests/data/integration.yaml and its DefaultDomain
#: variant: the accepted domains as Postfix writes them into the envelope (lower-cased here),
#: both forms of the internationalised one, and the wildcard's subdomains.
ACCEPTED = frozenset(
    {"labs.local", "exchangelabs.nl", "branch.exchangelabs.nl", "strasse.de", "bücher.example", "xn--bcher-kva.example"}
)
ACCEPTED_SUFFIXES = (".branch.exchangelabs.nl",)
#: Sources tried, in order, for the non-relay client of a listener: Default Frontend's
#: anonymous clients, the Limited connector's, a host outside every relay range.
NON_RELAY_CANDIDATES = ("127.0.0.20", "127.0.0.41", "127.0.0.57")
#: Postfix's anvil may still count a connection that just ended (one per source on 2527).
TOO_MANY = "421 4.7.0"


@dataclass(frozen=True)
class Case:
    name: str
    sender: str  # inside MAIL FROM:<...>
    recipient: str  # inside RCPT TO:<...>

    @property
    def smtputf8(self) -> bool:
        return not (self.sender + self.recipient).isascii()


@dataclass
class Attempt:
    case: Case
    listener: str
    source: str
    tag: str
    replies: dict[str, str] = field(default_factory=dict)  # stage -> last reply line

    @property
    def queued(self) -> bool:
        return self.replies.get("data", "").startswith("250")

    @property
    def rcpt(self) -> str:
        return self.replies.get("rcpt", "")


def nmap_cases(domain: str, srvname: str, ip: str, sender: str = "antispam", to: str = "relaytest") -> list[Case]:
    """nmap smtp-open-relay's 16 tests, in its order (``domain`` is where it tries to relay)."""
    at_ip = f"{sender}@[{ip}]"
    pairs = [
        ("", f"{to}@{domain}"),
        (f"{sender}@{domain}", f"{to}@{domain}"),
        (f"{sender}@{srvname}", f"{to}@{domain}"),
        (at_ip, f"{to}@{domain}"),
        (at_ip, f"{to}%{domain}@[{ip}]"),
        (at_ip, f"{to}%{domain}@{srvname}"),
        (at_ip, f'"{to}@{domain}"'),
        (at_ip, f'"{to}%{domain}"'),
        (at_ip, f"{to}@{domain}@[{ip}]"),
        (at_ip, f'"{to}@{domain}"@[{ip}]'),
        (at_ip, f"{to}@{domain}@{srvname}"),
        (at_ip, f"@[{ip}]:{to}@{domain}"),
        (at_ip, f"@{srvname}:{to}@{domain}"),
        (at_ip, f"{domain}!{to}"),
        (at_ip, f"{domain}!{to}@[{ip}]"),
        (at_ip, f"{domain}!{to}@{srvname}"),
    ]
    return [Case(f"nmap-{i}", s, r) for i, (s, r) in enumerate(pairs, 1)]


def address_forms(accepted: str = "labs.local", outside: str = OUTSIDE, ip: str = HOST) -> list[Case]:
    """The forms where Postfix and a naive engine can disagree on the destination (issue 10 #1, #2)."""
    forms = [
        # percent hack and bang paths, bare and at an accepted domain
        f"relaytest%{outside}",
        f"relaytest%{outside}@{accepted}",
        f"{outside}!relaytest",
        f"{outside}!relaytest@{accepted}",
        # quoted local parts (smtpd hands them on unquoted)
        f'"relaytest@{outside}"@{accepted}',
        f'"relaytest%{outside}"@{accepted}',
        f'"relaytest@{outside}"',
        f'"{outside}!relaytest"@{accepted}',
        # source routes (smtpd drops the route)
        f"@{accepted}:relaytest@{outside}",
        f"@a.test,@b.test:relaytest@{outside}",
        f"@{outside}:relaytest@{accepted}",
        # trailing dots, IP literals, case
        f"relaytest@{accepted}.",
        f"relaytest@{outside}.",
        f"relaytest@{accepted}..",
        "relaytest@[192.0.2.1]",
        f"relaytest@[{ip}]",
        f"relaytest%{outside}@[{ip}]",
        f"RELAYTEST@{accepted.upper()}",
        f"RELAYTEST@{outside.upper()}",
        # unqualified
        "postmaster",
        "PostMaster",
        "relaytest",
        # internationalised: straße.de is not strasse.de; ẞ maps differently across Unicode versions
        "relaytest@straße.de",
        "relaytest@STRAẞE.de",
        "relaytest@strasse.de",
        "relaytest@bücher.example",
        "relaytest@BÜCHER.example",
        "relaytest@xn--bcher-kva.example",
        "relaytest@xn--strae-oqa.de",
        "relaytest@bücher.example.org",
    ]
    return [Case(f"form-{f}", "probe@example.com", f) for f in forms]


def all_cases(srvname: str) -> list[Case]:
    return [*nmap_cases(EXTERNAL, srvname, HOST), *nmap_cases(OUTSIDE, "labs.local", HOST), *address_forms()]


DEFAULT_CONNECTORS = ("Default Frontend", "Client Frontend", "Outbound Proxy Frontend", "Default", "Client Proxy")


def default_domain_config(base: Path, target: Path) -> None:
    """integration.yaml with a DefaultDomain on every connector.

    bücher.example is written as its A-label here (the plain file has the U-label). On *:25
    SMTP Relay's DefaultDomain (exchangelabs.nl) conflicts with the others' (labs.local), so
    its unqualified addresses are refused; Monitoring, alone on *:2526, completes with
    exchangelabs.nl. The Limited connector (*:2527) rejects bare linefeeds (test_smuggling).
    """
    doc = yaml.safe_load(base.read_text(encoding="utf-8"))
    doc["accepted_domains"] = [
        {"domain_name": "xn--bcher-kva.example"} if d == {"domain_name": "bücher.example"} else d
        for d in doc["accepted_domains"]
    ]
    conflict = {"SMTP Relay (EXCH01)": "exchangelabs.nl", "Monitoring (EXCH01)": "exchangelabs.nl"}
    for c in doc["receive_connectors"]:
        c["default_domain"] = conflict.get(c["name"], "labs.local")
        if c["name"] == "Limited (EXCH01)":
            c["bare_linefeed_rejection_enabled"] = True
    server = doc["server"]["name"]
    doc["receive_connectors"] += [{"name": f"{n} {server}", "default_domain": "labs.local"} for n in DEFAULT_CONNECTORS]
    target.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")


# -- one SMTP transaction on a raw socket ---------------------------------------------------------


class _Conversation:
    def __init__(self, port: int, source: str, timeout: float) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout, source_address=(source, 0))
        self.file = self.sock.makefile("rb")

    def reply(self) -> str:
        line = b""
        while True:
            raw = self.file.readline()
            if not raw:
                return "000 connection closed"
            line = raw
            if len(raw) < 4 or raw[3:4] != b"-":
                return line.decode("utf-8", "replace").rstrip("\r\n")

    def command(self, text: str) -> str:
        self.sock.sendall(text.encode("utf-8") + b"\r\n")
        return self.reply()

    def close(self) -> None:
        try:
            self.sock.sendall(b"QUIT\r\n")
            self.reply()
        except OSError:
            pass
        self.file.close()
        self.sock.close()


def attempt(port: int, source: str, case: Case, listener: str = "", *, timeout: float = 30) -> Attempt:
    """MAIL, RCPT and, when the recipient is accepted, DATA with a unique subject tag."""
    a = Attempt(case, listener, source, uuid.uuid4().hex)
    for _ in range(50):
        conv = _Conversation(port, source, timeout)
        a.replies["connect"] = conv.reply()
        if not a.replies["connect"].startswith(TOO_MANY):
            break
        conv.close()
        time.sleep(0.05)
    try:
        if not a.replies["connect"].startswith("220"):
            return a
        a.replies["ehlo"] = conv.command("EHLO relay-harness.test")
        a.replies["mail"] = conv.command(f"MAIL FROM:<{case.sender}>" + (" SMTPUTF8" if case.smtputf8 else ""))
        if not a.replies["mail"].startswith("250"):
            return a
        a.replies["rcpt"] = conv.command(f"RCPT TO:<{case.recipient}>")
        if not a.rcpt.startswith("250"):
            return a
        a.replies["354"] = conv.command("DATA")
        if a.replies["354"].startswith("354"):
            a.replies["data"] = conv.command(
                f"From: <probe@example.com>\r\nSubject: relay-harness {a.tag}\r\n\r\n{case.name}\r\n."
            )
        return a
    finally:
        conv.close()


# -- verdicts from the delivered files ----------------------------------------------------------------


def accepted_destination(recipient: str) -> bool:
    domain = recipient.rpartition("@")[2].lower()
    return domain in ACCEPTED or domain.endswith(ACCEPTED_SUFFIXES)


def tagged(deliveries: Iterable[Delivery], tags: set[str]) -> dict[str, Delivery]:
    out = {}
    for d in deliveries:
        for tag in tags:
            if tag.encode() in d.content:
                out[tag] = d
    return out


def wait_for(sb: Sandbox, attempts: list[Attempt], timeout: float = 60) -> dict[str, Delivery]:
    """The delivery of every queued attempt, by tag (all of them, or an assertion error)."""
    tags = {a.tag for a in attempts if a.queued}
    deadline = time.monotonic() + timeout
    while True:
        found = tagged(sb.deliveries(), tags)
        if set(found) == tags or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    missing = [a.case.recipient for a in attempts if a.queued and a.tag not in found]
    assert not missing, f"queued but not delivered within {timeout}s: {missing}\n{sb.postfix.maillog_tail(30)}"
    return found


def leaks(attempts: list[Attempt], delivered: dict[str, Delivery]) -> list[str]:
    """``listener source <RCPT as sent> -> <delivered recipient>`` for each delivery outside ACCEPTED."""
    out = []
    for a in attempts:
        d = delivered.get(a.tag)
        if d is not None:
            out += [
                f"{a.listener} {a.source} <{a.case.recipient}> -> {r}"
                for r in d.recipients
                if not accepted_destination(r)
            ]
    return out


def non_relay_source(engine: Engine, listener: SandboxListener) -> str:
    """A client address that reaches a connector without relay rights on ``listener`` if there
    is one (else an address no connector takes: it gets 421 4.3.2)."""
    host, _, port = listener.context.rpartition(":")
    local = None if host == "*" else host.strip("[]")
    for source in NON_RELAY_CANDIDATES:
        s = engine.open_session(local, int(port), source)
        if s.connector is not None and not s.has(Right.SMTPAcceptAnyRecipient):
            return source
    for source in NON_RELAY_CANDIDATES:
        if engine.open_session(local, int(port), source).connector is None:
            return source
    raise AssertionError(f"{listener.context}: every candidate source may relay")


def banner_name(port: int, source: str) -> str:
    """What nmap takes as the server name: the first word after the 220."""
    conv = _Conversation(port, source, 10)
    try:
        words = conv.reply().split()
    finally:
        conv.close()
    return words[1] if len(words) > 1 and words[0] == "220" else "localhost"


def run(
    sb: Sandbox, engine: Engine, listeners: Iterable[SandboxListener], source: str | None = None
) -> tuple[list[Attempt], dict[str, Delivery]]:
    """Every case against every listener (from its non-relay source unless ``source`` is given)."""
    attempts = []
    for lst in listeners:
        src = source or non_relay_source(engine, lst)
        srvname = banner_name(lst.port, src)
        attempts += [attempt(lst.port, src, c, lst.context) for c in all_cases(srvname)]
    return attempts, wait_for(sb, attempts)
