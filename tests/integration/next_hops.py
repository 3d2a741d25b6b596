"""SMTP next hops for the send-connector tests: real servers (aiosmtpd) on loopback free ports.

Each records what it received and how: whether the session was under TLS and who
authenticated. One may offer STARTTLS (with a certificate from the sandbox's CA) and
require it before MAIL; one may require AUTH (PLAIN/LOGIN) with one user and password.
Started and stopped by the tests (:meth:`NextHop.stop`), never left running.
"""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from exmilter.sandbox.certificates import Certificate
from exmilter.sandbox.ports import HOST, free_port


@dataclass
class Received:
    """One message as a next hop got it."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool
    login: str | None
    helo: str


@dataclass
class _Handler:
    hop: NextHop

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        self.hop.record(
            Received(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                bytes(envelope.original_content or b""),
                session.ssl is not None,
                login,
                session.host_name or "",
            )
        )
        return "250 2.0.0 OK queued by test next hop"


@dataclass
class NextHop:
    """An SMTP server on 127.0.0.1 and a free port; :attr:`received` is what it accepted."""

    name: str
    certificate: Certificate | None = None  # offer STARTTLS and require it before MAIL
    credentials: tuple[str, str] | None = None  # require AUTH with this user and password
    port: int = 0
    received: list[Received] = field(default_factory=list)
    auth_failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: Controller | None = None

    def record(self, message: Received) -> None:
        with self._lock:
            self.received.append(message)

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and self.credentials is not None
            and (data.login.decode(), data.password.decode()) == self.credentials
        )
        if not ok:
            with self._lock:
                self.auth_failures += 1
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

    def start(self) -> NextHop:
        self.port = free_port(HOST)
        kwargs: dict[str, Any] = {"hostname": HOST, "port": self.port, "server_hostname": f"{self.name}.test"}
        if self.certificate is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.certificate.cert, self.certificate.key)
            kwargs |= {"tls_context": context, "require_starttls": True}
        if self.credentials is not None:
            kwargs |= {
                "authenticator": self._authenticate,
                "auth_required": True,
                "auth_require_tls": False,  # BasicAuth: the password may travel in clear, as Exchange allows
            }
        self._controller = Controller(_Handler(self), **kwargs)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def wait_for(self, recipient: str, timeout: float = 60) -> Received:
        """The message for ``recipient``, once it arrives (polled; generous under load)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for m in self.received:
                    if recipient in m.rcpt_tos:
                        return m
            time.sleep(0.1)
        raise AssertionError(f"{self.name}: nothing for {recipient} after {timeout:g} s; got {self.received}")

    def got(self, recipient: str) -> bool:
        with self._lock:
            return any(recipient in m.rcpt_tos for m in self.received)
