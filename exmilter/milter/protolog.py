"""The SMTP receive protocol log (spec §5.1) from the milter's side: one connection's rows.

The milter sees more of a session than the policy daemon: the EHLO name (and a second one
after STARTTLS, with the TLS macros), MAIL with its ESMTP parameters, every RCPT, DATA, the
header block and end of data, and it gives the replies itself. What it cannot see is written
as docs/logs.md ("What differs from Exchange") says: the banner is the one exmilter would
give, STARTTLS is inferred from the TLS macros of the next EHLO, Postfix's own final
``250 2.0.0 Ok: queued as …`` is logged as the engine's ``250 2.6.0``.

Pure apart from the clock: the callbacks hand typed values in, rows go to the daemon's
:class:`~exmilter.logs.protocol.ProtocolLog` (a background writer: nothing here blocks or
raises on I/O). Every session gets an id, Verbose or not, because the tracking log's
``source-context`` names it too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from exmilter.logs.protocol import LOCAL, REMOTE, ProtocolLog, ProtocolSession, SessionIds
from exmilter.milter.macros import ConnectFacts, TlsFacts
from exmilter.model import ReceiveConnector, Right
from exmilter.replies import Reply

Clock = Callable[[], float]

#: What Postfix answers STARTTLS with (the milter sees only its result, the TLS macros).
STARTTLS_REPLY = "220 2.0.0 Ready to start TLS"


def tls_context(tls: TlsFacts) -> str:
    """The ``*`` row's context after a TLS handshake, in Exchange's wording as far as Postfix's
    macros tell it (protocol and cipher)."""
    cipher = f" using cipher {tls.cipher}" if tls.cipher else ""
    return f"TLS protocol {tls.version} negotiation succeeded{cipher}"


class SessionLog:
    """One SMTP connection's protocol-log rows; writes nothing for a connector that is not
    ``Verbose`` or when the log is off. libmilter serialises one connection's callbacks."""

    __slots__ = ("_clock", "_log", "_rights", "_rows", "_tls", "_user", "id", "local_close", "start")

    def __init__(self, log: ProtocolLog | None, ids: SessionIds, clock: Clock = time.time) -> None:
        self._log = log
        self._clock = clock
        self.start = clock()
        self.id = ids.next(self.start)
        self._rows: ProtocolSession | None = None
        self._rights: Right | None = None
        self._user = ""
        self._tls = False
        #: The milter gave a reply that closes the connection (421): the disconnect is ``Local``.
        self.local_close = False

    @property
    def writing(self) -> bool:
        return self._rows is not None

    def open(self, connector: ReceiveConnector, facts: ConnectFacts, rights: Right, banner: Reply) -> None:
        """The connection reached ``connector``: ``+``, the session's permissions, the banner.

        The local endpoint is the listener's binding (``{daemon_name}``), as the policy daemon
        writes it, so logs written behind moved ports or a proxy replay against the file."""
        if self._log is None or connector.protocol_logging_level != "Verbose" or facts.listener is None:
            return
        lst = facts.listener
        rows = self._log.session(
            connector.identity,
            lst.address or facts.daemon_addr,
            lst.port,
            facts.client_ip,
            facts.client_port,
            self.start,
            session_id=self.id,
        )
        self._rows = rows
        rows.connect(self.start)
        now = self._clock()
        self._permissions(rights, now)
        rows.sent(banner.line, now)

    def _permissions(self, rights: Right, now: float) -> None:
        if self._rows is not None and rights != self._rights:
            self._rights = rights
            self._rows.permissions(rights, now)

    def hello(self, name: str, tls: TlsFacts) -> None:
        """EHLO; TLS macros seen for the first time mean STARTTLS succeeded before it."""
        rows = self._rows
        if rows is None:
            return
        now = self._clock()
        if tls.active and not self._tls:
            self._tls = True
            rows.received("STARTTLS", now)
            rows.sent(STARTTLS_REPLY, now)
            rows.info("", now, tls_context(tls))
        rows.received(f"EHLO {name}", now)

    def mail(self, sender: str, params: Sequence[str], user: str | None, rights: Right | None) -> None:
        """MAIL FROM as the client sent it (with its parameters; the reply is :meth:`sent`'s);
        a SASL login Postfix reports for the first time comes before it, with the permissions
        it gives."""
        rows = self._rows
        if rows is None:
            return
        now = self._clock()
        if user and user != self._user:
            self._user = user
            rows.info(user, now, "authenticated")
        if rights is not None:
            self._permissions(rights, now)
        address = sender if sender.startswith("<") else f"<{sender}>"
        rows.received(" ".join(("MAIL FROM:" + address, *params)), now)

    def rcpt(self, recipient: str, params: Sequence[str]) -> None:
        rows = self._rows
        if rows is not None:
            address = recipient if recipient.startswith("<") else f"<{recipient}>"
            rows.received(" ".join(("RCPT TO:" + address, *params)), self._clock())

    def data(self, reply: Reply) -> None:
        rows = self._rows
        if rows is not None:
            rows.received("DATA", self._clock())
            self.sent(reply)

    def info(self, text: str) -> None:
        """A ``*`` row (spec §5.1's texts: the message id, why a header block was refused)."""
        if self._rows is not None and text:
            self._rows.info(text, self._clock())

    def sent(self, reply: Reply) -> None:
        if reply.close:
            self.local_close = True
        if self._rows is not None:
            self._rows.sent(reply.line, self._clock())

    def close(self) -> None:
        """``-``: Remote, or Local after a reply that closed the connection."""
        rows, self._rows = self._rows, None
        if rows is not None:
            rows.disconnect(LOCAL if self.local_close else REMOTE, self._clock())
