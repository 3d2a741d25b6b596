"""Postfix's milter macros parsed once into typed facts (postfix-notes §2.2).

The callbacks read the macros a stage carries into a plain mapping (``None`` for a macro
Postfix did not send) and hand it here; nothing below imports pymilter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from exmilter import milter_macros as M
from exmilter.listener import Listener

#: What render-postfix asks Postfix to send at each stage (milter_*_macros).
CONNECT_MACROS = M.CONNECT
HELO_MACROS = M.HELO
MAIL_MACROS = M.MAIL
RCPT_MACROS = M.RCPT

Macros = Mapping[str, str | None]


@dataclass(frozen=True, slots=True)
class ConnectFacts:
    """Where the client came from and which listener it reached.

    ``listener`` is None when ``{daemon_name}`` is not a listener context; ``problem`` then
    says why (the session is answered with a temporary failure: fail closed).
    """

    listener: Listener | None
    client_ip: str
    client_port: int
    daemon_addr: str = ""
    daemon_port: int = 0
    problem: str = ""


@dataclass(frozen=True, slots=True)
class TlsFacts:
    version: str = ""
    cipher: str = ""

    @property
    def active(self) -> bool:
        return bool(self.version)


@dataclass(frozen=True, slots=True)
class AuthFacts:
    """SASL state at MAIL: the login (``{auth_authen}``) and mechanism (``{auth_type}``)."""

    user: str | None = None
    mechanism: str = ""


def _text(m: Macros, name: str) -> str:
    v = m.get(name)
    return v.strip() if isinstance(v, str) else ""


def _port(text: str) -> int:
    return int(text) if text.isascii() and text.isdigit() and 0 < int(text) < 65536 else 0


def connect_facts(m: Macros, peer_ip: str = "", peer_port: int = 0) -> ConnectFacts:
    """The connect macros; ``peer_ip``/``peer_port`` are the connect callback's own
    arguments, used when ``{client_addr}``/``{client_port}`` were not sent."""
    client = _text(m, "{client_addr}") or peer_ip
    port = _port(_text(m, "{client_port}")) or peer_port
    daemon_addr = _text(m, "{daemon_addr}")
    daemon_port = _port(_text(m, "{daemon_port}"))
    name = _text(m, "{daemon_name}")
    if not client:
        return ConnectFacts(None, "", port, daemon_addr, daemon_port, "no client address in the connect macros")
    try:
        listener = Listener.parse(name)
    except ValueError as e:
        why = (
            f"{{daemon_name}} {name[:80]!r} is not a listener context ({e}); "
            "render-postfix sets milter_macro_daemon_name per listener"
        )
        return ConnectFacts(None, client, port, daemon_addr, daemon_port, why)
    return ConnectFacts(listener, client, port, daemon_addr, daemon_port)


def tls_facts(m: Macros) -> TlsFacts:
    return TlsFacts(_text(m, "{tls_version}"), _text(m, "{cipher}"))


def auth_facts(m: Macros) -> AuthFacts:
    return AuthFacts(_text(m, "{auth_authen}") or None, _text(m, "{auth_type}"))


def queue_id(m: Macros) -> str:
    """``i``: missing at MAIL and at the first RCPT (postfix-notes §2.2)."""
    return _text(m, "i")
