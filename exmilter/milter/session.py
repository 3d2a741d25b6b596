"""One SMTP connection as the milter sees it: typed facts in, typed verdicts out.

Pure (no pymilter, no sockets, clocks and ids injected): :mod:`exmilter.milter.callbacks`
turns libmilter's callbacks into calls here and the verdicts back into libmilter's
answers. The connector is chosen at connect, from the listener context Postfix hands over
as ``{daemon_name}``, and it stays the same for the whole connection, as does the
configuration generation (the engine) the session was opened with.

Stages (spec §3.4-§3.7, §4): MAIL and RCPT are the engine's; the end-of-headers checks run
when the header block ends (Postfix reports a refusal there after the final dot, as
Exchange does); the size check, the header firewall and the stamps at end of data.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from exmilter import replies as R
from exmilter.engine import Engine, Session
from exmilter.headers import HeaderEdit, Stamp, Who, edits
from exmilter.limits import MILTER_MAX_HEADERS, MILTER_MAX_TRACKED_RECIPIENTS
from exmilter.message import HEADER_BLOCK_END, ORIGINAL_SIZE, Message, header_bytes, size_value
from exmilter.milter.macros import AuthFacts, ConnectFacts, TlsFacts
from exmilter.replies import Reply

WallClock = Callable[[], datetime]
IdSource = Callable[[], str]


@dataclass(frozen=True, slots=True)
class Continue:
    """Go on: an accepted command (``reply`` the engine's, for the protocol log) or a stage
    the engine has nothing to say about."""

    reply: Reply | None = None


@dataclass(frozen=True, slots=True)
class Refuse:
    """Refuse with ``reply``, verbatim: a 4xx is a temporary failure, a 5xx a rejection.
    ``note`` is the protocol log's ``*`` row saying why, where spec §5.1 has one (not part of
    the verdict: two refusals with the same reply are the same)."""

    reply: Reply
    note: str = field(default="", compare=False)

    @property
    def temporary(self) -> bool:
        return self.reply.code < 500


@dataclass(frozen=True, slots=True)
class Received:
    """What an accepted message's RECEIVE tracking row says of it (spec §5.2)."""

    sender: str
    recipients: tuple[str, ...]
    size: int
    message_id: str
    subject: str
    network_message_id: str


@dataclass(frozen=True, slots=True)
class Accept:
    """End of data: accept the message after applying ``edits`` (firewall and stamps)."""

    edits: tuple[HeaderEdit, ...]
    received: Received | None = None
    reply: Reply = R.QUEUED


Verdict = Continue | Refuse
CONTINUE = Continue()


def wire(reply: Reply) -> tuple[str, str, str]:
    """``(code, enhanced code, text)`` as ``setreply`` must get them (postfix-notes §2.3).

    The enhanced code's class follows the reply code's (Postfix refuses ``451 5.7.3``); a
    ``%`` in the text is doubled (libmilter reads the text as a format).
    """
    code = str(reply.code)
    enhanced = reply.enhanced
    if enhanced and enhanced[0] != code[0]:
        enhanced = code[0] + enhanced[1:]
    return code, enhanced, reply.text.replace("%", "%%")


def _wall_clock() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


def mail_parameter(params: Sequence[str], name: str) -> str | None:
    """The value of ESMTP parameter ``name`` (``AUTH``, ``SIZE``) of MAIL FROM, else None."""
    key = name.upper() + "="
    for p in params:
        if p[: len(key)].upper() == key:
            return p[len(key) :]
    return None


class _Transaction:
    """What one MAIL FROM ... end of data gathers."""

    __slots__ = (
        "accepted",
        "auth_param",
        "body_size",
        "content_type",
        "header_from",
        "header_sender",
        "header_size",
        "headers",
        "mail_from",
        "original_size",
        "received",
        "recipients",
    )

    def __init__(self, mail_from: str, auth_param: str | None) -> None:
        self.mail_from = mail_from
        self.auth_param = auth_param
        self.recipients = 0
        self.accepted: list[str] = []  # for the tracking row, at most MILTER_MAX_TRACKED_RECIPIENTS
        self.headers: list[tuple[str, str]] = []
        self.header_size = HEADER_BLOCK_END
        self.body_size = 0
        self.received: list[str] = []
        self.header_from: str | None = None
        self.header_sender: str | None = None
        self.content_type: str | None = None
        self.original_size: int | None = None

    def message(self, with_body: bool) -> Message:
        return Message(
            size=self.header_size + (self.body_size if with_body else 0),
            header_size=self.header_size,
            received=tuple(self.received),
            mail_from=self.mail_from,
            header_from=self.header_from,
            header_sender=self.header_sender,
            content_type=self.content_type,
            original_size=self.original_size,
            auth_param=self.auth_param,
        )


class MilterSession:
    """The milter's state for one SMTP connection (one libmilter context)."""

    def __init__(self, engine: Engine, *, wall_clock: WallClock = _wall_clock, new_id: IdSource = _new_id) -> None:
        self.engine = engine  # the generation of the connect, for the whole connection
        self._wall_clock = wall_clock
        self._new_id = new_id
        self.facts: ConnectFacts | None = None
        self.tls = TlsFacts()
        self.helo: str | None = None
        self.session: Session | None = None
        self._txn: _Transaction | None = None

    # -- connection ------------------------------------------------------------------------

    def connect(self, facts: ConnectFacts) -> Verdict:
        """Select the connector. CONNECT is judged by the policy daemon (a milter 421 would
        carry Postfix's generic text, postfix-notes §2.4), so this always continues; a
        session that cannot be placed is refused at MAIL."""
        self.facts = facts
        if facts.listener is not None:
            self.session = self._open(None)
        return CONTINUE

    @property
    def covered(self) -> bool:
        """The milter judges this session (a connector was selected): the policy daemon need not."""
        return self.session is not None and self.session.connector is not None

    def hello(self, name: str, tls: TlsFacts) -> Verdict:
        self.helo = name
        self.tls = tls
        return CONTINUE

    def _open(self, auth: AuthFacts | None) -> Session | None:
        f = self.facts
        if f is None or f.listener is None:
            return None
        return self.engine.open_session(
            f.listener.address,
            f.listener.port,
            f.client_ip,
            auth_user=auth.user if auth else None,
            tls=self.tls.active,
            helo=self.helo,
        )

    # -- envelope ---------------------------------------------------------------------------

    def mail(self, sender: str, params: Sequence[str], auth: AuthFacts, tls: TlsFacts | None = None) -> Verdict:
        """MAIL FROM (spec §3.4), with the SASL login Postfix knows by now."""
        self._txn = None
        if tls is not None and tls.active:
            self.tls = tls
        if self.facts is None or self.facts.listener is None:
            return Refuse(R.CONFIGURATION_PROBLEM)
        try:
            self.session = s = self._open(auth)
        except ValueError:
            return Refuse(R.CONFIGURATION_PROBLEM)
        assert s is not None
        size = size_value(mail_parameter(params, "SIZE")) or 0
        reply = self.engine.mail(s, sender, size=size)
        if not reply.accepted:
            return Refuse(reply)
        self._txn = _Transaction(sender, mail_parameter(params, "AUTH"))
        return Continue(reply)

    def rcpt(self, recipient: str) -> Verdict:
        """RCPT TO (spec §3.5): the count of recipients accepted so far decides 452 4.5.3."""
        t, s = self._txn, self.session
        if t is None or s is None:
            return Refuse(R.CONFIGURATION_PROBLEM)
        reply = self.engine.rcpt(s, recipient, accepted=t.recipients)
        if not reply.accepted:
            return Refuse(reply)
        t.recipients += 1
        if len(t.accepted) < MILTER_MAX_TRACKED_RECIPIENTS:
            t.accepted.append(recipient.strip().strip("<>"))
        return Continue(reply)

    def data(self) -> Reply:
        """DATA: Postfix sends it to the milter only once a recipient was accepted."""
        t, s = self._txn, self.session
        if t is None or s is None:
            return R.CONFIGURATION_PROBLEM
        return self.engine.data(s, accepted=t.recipients)

    # -- content ------------------------------------------------------------------------------

    def header(self, name: str, value: str) -> Verdict:
        t = self._txn
        if t is None:
            return Refuse(R.CONFIGURATION_PROBLEM)
        t.header_size += header_bytes(name, value)
        key = name.lower()
        if key == "received":
            t.received.append(value)
        elif key == "from" and t.header_from is None:
            t.header_from = value
        elif key == "sender" and t.header_sender is None:
            t.header_sender = value
        elif key == "content-type" and t.content_type is None:
            t.content_type = value
        elif key == ORIGINAL_SIZE and t.original_size is None:
            t.original_size = size_value(value)
        if len(t.headers) < MILTER_MAX_HEADERS:
            t.headers.append((name, value))
        return CONTINUE

    def end_of_headers(self) -> Verdict:
        """Spec §3.6 #1-#5 (sender authorisation §3.7 among them)."""
        t, s = self._txn, self.session
        if t is None or s is None:
            return Refuse(R.CONFIGURATION_PROBLEM)
        if len(t.headers) >= MILTER_MAX_HEADERS:
            # more headers than kept: the firewall could not remove every one it must
            return Refuse(R.HEADER_SIZE_EXCEEDED, f"HeaderCount: {len(t.headers)} > {MILTER_MAX_HEADERS}")
        m = t.message(with_body=False)
        refused = self.engine.end_of_headers(s, m)
        return Refuse(refused, self._why(s, m, refused)) if refused is not None else CONTINUE

    def _why(self, s: Session, m: Message, refused: Reply) -> str:
        """Spec §5.1's ``*`` text for a header-block refusal ("" where it names none)."""
        c = s.connector
        if c is None:
            return ""
        if refused == R.HEADER_SIZE_EXCEEDED:
            return f"HeaderSize: {m.header_size} > MaxHeaderSize: {c.max_header_size}"
        if refused == R.HOP_COUNT_EXCEEDED:
            if len(m.received) > c.max_hop_count:
                return f"ReceivedHeadersLength: {len(m.received)} > MaxHopCount: {c.max_hop_count}"
            return f"LocalHopCount: {self.engine.local_hops(c, m.received)} > MaxLocalHopCount: {c.max_local_hop_count}"
        return ""

    @property
    def message_id(self) -> str:
        """The first Message-ID header of the transaction's header block ("" when none)."""
        t = self._txn
        if t is None:
            return ""
        return next((v.strip() for n, v in t.headers if n.lower() == "message-id"), "")

    def body(self, chunk: bytes) -> Verdict:
        t = self._txn
        if t is None:
            return Refuse(R.CONFIGURATION_PROBLEM)
        t.body_size += len(chunk)
        return CONTINUE

    def end_of_message(self) -> Refuse | Accept:
        """Spec §3.6 (all of it again, then #6 size), then §4: the header edits to apply."""
        t, s = self._txn, self.session
        self._txn = None
        if t is None or s is None:
            return Refuse(R.CONFIGURATION_PROBLEM)
        m = t.message(with_body=True)
        reply = self.engine.end_of_message(s, m)
        if not reply.accepted:
            return Refuse(reply, self._why(s, m, reply))
        fqdn = self.engine.org.server.fqdn
        who = Who(s.rights, s.principal.name, s.authenticated, s.tls, s.client_ip)
        stamp = Stamp(
            server_fqdn=fqdn,
            arrival=self._wall_clock(),
            size=m.size,
            network_message_id=self._new_id(),
            message_id=f"<{self._new_id()}@{fqdn}>",
            mail_from=self.engine.qualify(s.connector, t.mail_from) if s.connector else t.mail_from,
            auth_param=t.auth_param,
        )
        header = {name.lower(): value for name, value in reversed(t.headers)}  # the first of each
        received = Received(
            sender=t.mail_from.strip().strip("<>"),
            recipients=tuple(t.accepted),
            size=m.size,
            message_id=header.get("message-id", stamp.message_id).strip(),
            subject=header.get("subject", "").strip(),
            network_message_id=stamp.network_message_id,
        )
        return Accept(edits(who, t.headers, stamp), received, reply)

    def abort(self) -> None:
        """RSET, or a transaction Postfix ended early: the next MAIL starts afresh."""
        self._txn = None
