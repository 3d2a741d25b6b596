"""The SMTP receive protocol log (spec §5.1): one row per thing said in a session.

Usage (a front end, per SMTP connection whose connector logs ``Verbose``)::

    plog = ProtocolLog(sink)                       # one per daemon, sink: w3c.HourlyLog/BackgroundLog
    s = plog.session(connector.identity, local_ip, local_port, client_ip, client_port, now)
    s.connect(now)                                 # "+"
    s.permissions(session.rights, now)             # "*  ... ,Set Session Permissions"
    s.sent("220 mx.contoso.com Microsoft ESMTP MAIL Service ready", now)   # ">"
    s.received("MAIL FROM:<a@b>", now)             # "<"
    s.info("Tarpit for '0.00:00:05'", now)         # "*"
    s.disconnect("Remote", now)                    # "-"

Rows are formatted here, in one f-string each (the session's constant fields once per
session, a reply's field once per distinct reply, the time once per millisecond), and
handed to the sink; nothing here raises on I/O (the sink counts failures). A session is
not thread-safe: one connection's callbacks are serialised by the front end (the milter's
per-connection object, the policy daemon's single reactor thread).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from exmilter.limits import PROTOCOL_LOG_DATA_MAX, PROTOCOL_LOG_REPLY_CACHE
from exmilter.logs.escape import escape
from exmilter.logs.w3c import RowSink, field, header, timestamp
from exmilter.model import Right

#: Spec §5.1 "Header".
VERSION = "15.0.0.0"
LOG_TYPE = "SMTP Receive Protocol Log"
FIELDS = (
    "date-time",
    "connector-id",
    "session-id",
    "sequence-number",
    "local-endpoint",
    "remote-endpoint",
    "event",
    "data",
    "context",
)
PREFIX = "RECV"
#: The policy daemon's files where a milter is deployed (``milter.enabled``): the milter writes
#: ``RECV`` for the sessions it judges, the policy daemon only for the few it judges itself
#: (a lost coverage registration, a listener without the milter), each process its own files.
FALLBACK_PREFIX = "RECVPD"

#: A file's header from the time the file is started.
HeaderMaker = Callable[[float], str]

#: Offset of .NET ticks (100 ns since 0001-01-01) at the Unix epoch: Exchange's session ids
#: are tick counts (``08D675E58CA1DA38`` is 2019-01-…), so exmilter's sort like Exchange's.
_TICKS_AT_EPOCH = 621_355_968_000_000_000

#: The disconnect reasons Exchange writes in the context field.
LOCAL, REMOTE, REMOTE_SOCKET_ERROR = "Local", "Remote", "Remote(SocketError)"


def protocol_header(created: float) -> str:
    return header(VERSION, LOG_TYPE, created, FIELDS)


def endpoint(ip: str, port: int | str) -> str:
    """``ip:port`` as Exchange writes it: an IPv6 address without brackets."""
    return f"{ip}:{port}"


def permission_tokens(rights: Right) -> str:
    """The ``Set Session Permissions`` data: the rights' tokens in Exchange's order."""
    return rights.tokens()


def _data(text: str) -> str:
    """A peer's or a reply's text as one field: control characters escaped, length bounded;
    a multi-line reply is one row, its lines joined by spaces (``250  host Hello``)."""
    if "\n" in text:
        text = " ".join(part.rstrip("\r") for part in text.split("\n"))
    return escape(text, PROTOCOL_LOG_DATA_MAX)


class SessionIds:
    """16 uppercase hex digits per session: the start time in .NET ticks, kept strictly
    increasing so two sessions in the same tick still differ (thread-safe)."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self, now: float) -> str:
        ticks = int(now * 10_000_000) + _TICKS_AT_EPOCH
        with self._lock:
            if ticks <= self._last:
                ticks = self._last + 1
            self._last = ticks
        return f"{ticks & 0xFFFF_FFFF_FFFF_FFFF:016X}"


_reply_fields: dict[str, str] = {}


def _reply_field(text: str) -> str:
    """A reply's data field, formatted once per distinct reply (the engine's replies are
    constants; the table is bounded, and a race between threads only formats one twice)."""
    f = _reply_fields.get(text)
    if f is None:
        f = field(_data(text))
        if len(_reply_fields) >= PROTOCOL_LOG_REPLY_CACHE:
            _reply_fields.clear()
        _reply_fields[text] = f
    return f


class ProtocolSession:
    """One SMTP connection's rows: the sequence number counts from 0 per session."""

    __slots__ = ("_prefix", "_seq", "_sink", "_suffix", "connector_id", "id", "local", "remote", "start")

    def __init__(self, sink: RowSink, connector_id: str, session_id: str, local: str, remote: str, start: float):
        self._sink = sink
        self.connector_id = connector_id
        self.id = session_id
        self.local = local
        self.remote = remote
        self.start = start
        self._seq = 0
        self._prefix = f",{field(connector_id)},{field(session_id)},"
        self._suffix = f",{field(local)},{field(remote)},"

    def _row(self, when: float, event: str, data: str, context: str) -> None:
        """One row; ``data`` and ``context`` are fields already (:func:`field`)."""
        seq = self._seq
        self._seq = seq + 1
        self._sink.write(when, f"{timestamp(when)}{self._prefix}{seq}{self._suffix}{event},{data},{context}\r\n")

    def exchange(self, command: str, reply: str, when: float) -> None:
        """A command received and the reply sent to it: ``<`` and ``>``, one time and one
        sink write for both (a sink's text may hold several rows)."""
        seq = self._seq
        self._seq = seq + 2
        head = timestamp(when) + self._prefix
        tail = self._suffix
        self._sink.write(
            when, f"{head}{seq}{tail}<,{field(_data(command))},\r\n{head}{seq + 1}{tail}>,{_reply_field(reply)},\r\n"
        )

    def connect(self, when: float) -> None:
        self._row(when, "+", "", "")

    def permissions(self, rights: Right, when: float) -> None:
        self._row(when, "*", field(permission_tokens(rights)), "Set Session Permissions")

    def sent(self, text: str, when: float) -> None:
        self._row(when, ">", _reply_field(text), "")

    def received(self, text: str, when: float) -> None:
        self._row(when, "<", field(_data(text)), "")

    def info(self, text: str, when: float, context: str = "") -> None:
        self._row(when, "*", field(_data(text)), field(_data(context)))

    def disconnect(self, reason: str, when: float) -> None:
        self._row(when, "-", "", field(reason))


class ProtocolLog:
    """The daemon's protocol log: sessions share one sink (one directory per service)."""

    def __init__(self, sink: RowSink, ids: SessionIds | None = None) -> None:
        self.sink = sink
        self.ids = ids or SessionIds()

    def session(
        self,
        connector_id: str,
        local_ip: str,
        local_port: int | str,
        client_ip: str,
        client_port: int | str,
        now: float,
        *,
        session_id: str | None = None,
    ) -> ProtocolSession:
        """A new session's rows (nothing is written until its first event)."""
        return ProtocolSession(
            self.sink,
            connector_id,
            session_id or self.ids.next(now),
            endpoint(local_ip, local_port),
            endpoint(client_ip, client_port),
            now,
        )


class MemorySink:
    """Rows kept in memory (tests, ``explain``): ``(when, text)`` pairs."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, str]] = []

    def write(self, when: float, text: str) -> bool:
        self.rows.append((when, text))
        return True

    def text(self) -> str:
        return "".join(t for _, t in self.rows)

    def lines(self) -> Sequence[str]:
        """One string per row (a write may carry several: :meth:`ProtocolSession.exchange`)."""
        return [line for _, t in self.rows for line in t.rstrip("\r\n").split("\r\n")]
