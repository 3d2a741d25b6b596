"""SMTP clients for the integration tests: one transaction, every reply kept verbatim."""

from __future__ import annotations

import random
import smtplib
import socket
import time
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from exmilter.config import load
from exmilter.deployment import plan_listeners
from exmilter.sandbox import Sandbox, port_free
from exmilter.sandbox.deliver import Delivery, read_deliveries

HOST = "127.0.0.1"


@dataclass
class Outcome:
    """How far a transaction got: the stage of the last reply and that reply's line."""

    stage: str  # connect, mail, rcpt, data, queued
    reply: str  # "550 5.7.54 <x@gmail.com>: Recipient address rejected: ..."
    rcpt_replies: list[str] = field(default_factory=list)

    @property
    def code(self) -> int:
        return int(self.reply[:3])

    @property
    def queue_id(self) -> str | None:
        marker = "Ok: queued as "
        return self.reply.split(marker, 1)[1].strip() if self.stage == "queued" and marker in self.reply else None


def _line(code: int, msg: bytes | str) -> str:
    text = msg.decode(errors="replace") if isinstance(msg, bytes) else msg
    return f"{code} {text}"


def message(sender: str, rcpts: list[str], subject: str = "exmilter test") -> EmailMessage:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = sender, ", ".join(rcpts), subject
    m.set_content("integration test body\n")
    return m


def send(port: int, source: str, sender: str, rcpts: list[str], *, timeout: float = 30) -> Outcome:
    """One SMTP transaction from ``source`` (a 127.0.0.x address) to the sandbox."""
    try:
        s = smtplib.SMTP(HOST, port, source_address=(source, 0), timeout=timeout)
    except smtplib.SMTPConnectError as e:
        return Outcome("connect", _line(e.smtp_code, e.smtp_error))
    try:
        s.ehlo("client.test")
        code, msg = s.mail(sender)
        if code != 250:
            return Outcome("mail", _line(code, msg))
        replies = []
        for r in rcpts:
            code, msg = s.rcpt(r)
            replies.append(_line(code, msg))
        if not any(r.startswith("250") for r in replies):
            return Outcome("rcpt", next(r for r in replies), replies)
        try:
            code, msg = s.data(message(sender, rcpts).as_bytes())
        except smtplib.SMTPDataError as e:
            return Outcome("data", _line(e.smtp_code, e.smtp_error), replies)
        return Outcome("queued" if code == 250 else "data", _line(code, msg), replies)
    except smtplib.SMTPServerDisconnected as e:
        return Outcome("disconnected", f"000 {e}")
    finally:
        try:
            s.quit()
        except (smtplib.SMTPException, OSError):
            s.close()


def raw_session(port: int, source: str, timeout: float = 10) -> bytes:
    """Everything the server sends before it closes the connection, sending nothing."""
    with socket.create_connection((HOST, port), timeout=timeout, source_address=(source, 0)) as s:
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        return data


def free_offset(config: Path) -> int:
    """A random port offset under which every listener of ``config`` is free on 127.0.0.1."""
    ports = [p.listener.port for p in plan_listeners(load(config).organization)]
    for _ in range(200):
        offset = random.randrange(20000, 65535 - max(ports))
        if all(port_free(p + offset) for p in ports):
            return offset
    raise RuntimeError("no free port offset found")


def wait_delivered(sb: Sandbox | Path, queue_id: str | None, timeout: float = 30) -> Delivery:
    """The delivered file of ``queue_id``; ``sb`` is a sandbox or its delivered/ directory."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for d in sb.deliveries() if isinstance(sb, Sandbox) else read_deliveries(sb):
            if d.envelope.get("queue_id") == queue_id:
                return d
        time.sleep(0.1)
    tail = sb.postfix.maillog_tail(30) if isinstance(sb, Sandbox) else "(see the state directory's maillog)"
    raise AssertionError(f"{queue_id} not delivered within {timeout}s; maillog:\n{tail}")


def delivered_to(sb: Sandbox, recipient: str) -> list[Delivery]:
    return [d for d in sb.deliveries() if recipient in d.recipients]


def metrics(sb: Sandbox, url: str | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a metrics endpoint (the policy daemon's unless ``url``): (name, sorted labels) -> value."""
    with urllib.request.urlopen(url or sb.metrics_url, timeout=10) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(sb: Sandbox, name: str, *, url: str | None = None, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(
        v
        for (n, ls), v in metrics(sb, url).items()
        if n == name and all(dict(ls).get(k) == x for k, x in labels.items())
    )


def wait_counted(sb: Sandbox, name: str, *, url: str | None = None, timeout: float = 20, **labels: str) -> float:
    """The value of ``name`` (as :func:`metric`) once it is above 0; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (value := metric(sb, name, url=url, **labels)) == 0:
        assert time.monotonic() < deadline, f"{name} {labels} never counted"
        time.sleep(0.2)
    return value


def reload_and_wait(sb: Sandbox, timeout: float = 15) -> bool:
    """SIGHUP the daemon and wait for its verdict: True loaded, False refused (old rules kept)."""
    generation = metric(sb, "exmilter_config_generation")
    failures = metric(sb, "exmilter_config_reload_failures_total")
    sb.reload()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metric(sb, "exmilter_config_generation") > generation:
            return True
        if metric(sb, "exmilter_config_reload_failures_total") > failures:
            return False
        time.sleep(0.05)
    raise AssertionError("the policy daemon did not finish reloading")
