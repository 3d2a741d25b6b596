"""What the daemons log, as typed values: one frozen dataclass per kind of event.

An event holds the facts as they are (a sender exactly as the client sent it, a reply as a
:class:`~exmilter.replies.Reply`), never a formatted line: sinks format. The text line of
today (:mod:`exmilter.logs.text`), a JSON line or Exchange's protocol and message-tracking
logs can each be written from the same event. How serious each event is lives in one
place too (:func:`exmilter.logs.levels.severity`).

Standard library and the engine's values only: both daemons (Twisted and threaded) use them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from exmilter.replies import Reply


class Event:
    """Base of every log event (for typing and for tests that walk all kinds)."""

    __slots__ = ()

    def __format__(self, spec: str) -> str:
        """``format(event)``, what generic formatters call (twisted.logger's ``formatEvent``):
        the text sink's line. Formatting stays in the sink; this is only the way to it."""
        from exmilter.logs.text import message  # the sink imports this module

        return message(self)


#: Where a component sends its events: the daemon decides what writes them.
EventSink = Callable[[Event], None]


# -- the policy daemon: one decision ----------------------------------------------------------------------


@dataclass(frozen=True, init=False)
class PolicyDecision(Event):
    """The answer to one policy request (refusals, re-sends, notes; every one with ``--verbose``).

    ``conn`` and ``seq`` name the policy connection and the request's number on it;
    ``client``, ``sender``, ``recipient``, ``queue_id`` and ``instance`` are the request's
    attributes as Postfix sent them ("" when absent); ``reply`` is the engine's verdict
    (None when the engine was not asked) and ``action`` the access(5) action answered.
    """

    conn: int
    seq: int
    stage: str
    connector: str  # identity, "" when none was selected
    client: str
    sender: str
    recipient: str
    queue_id: str
    instance: str
    action: str
    reply: Reply | None
    note: str  # why the request could not be decided as asked, "" when it was
    duplicate: bool  # a request Postfix re-sent, answered from memory

    def __init__(
        self,
        conn: int,
        seq: int,
        stage: str,
        connector: str,
        client: str,
        sender: str,
        recipient: str,
        queue_id: str,
        instance: str,
        action: str,
        reply: Reply | None,
        note: str,
        duplicate: bool,
    ) -> None:
        """The fields, in order. Made for every refusal: a frozen dataclass's generated
        ``__init__`` sets each field through ``object.__setattr__``, as costly as the rest
        of the log line; this one writes the instance dict directly, a third of that
        (docs/performance.md, "Typed log events"). Still frozen: assignment raises
        ``FrozenInstanceError``; tests/test_logs.py keeps it in step with the fields."""
        d = self.__dict__
        d["conn"] = conn
        d["seq"] = seq
        d["stage"] = stage
        d["connector"] = connector
        d["client"] = client
        d["sender"] = sender
        d["recipient"] = recipient
        d["queue_id"] = queue_id
        d["instance"] = instance
        d["action"] = action
        d["reply"] = reply
        d["note"] = note
        d["duplicate"] = duplicate


# -- the policy daemon: connections and their bounds (docs/policyd.md, "Limits") ------------------------


@dataclass(frozen=True, slots=True)
class ProtocolViolation(Event):
    """A connection sent something that is not a policy request; it is closed."""

    conn: int
    error: str


@dataclass(frozen=True, slots=True)
class ReadPaused(Event):
    """Reading from a connection paused, for ``reason`` (``unsent_answers``,
    ``pipelined_requests``); logged once per connection and reason."""

    conn: int
    reason: str


@dataclass(frozen=True, slots=True)
class IdleTimeout(Event):
    """No request answered on a connection for ``seconds``: it is dropped."""

    conn: int
    seconds: float


@dataclass(frozen=True, slots=True)
class RequestTimeout(Event):
    """A request was still incomplete ``seconds`` after its first byte: the connection is dropped."""

    conn: int
    seconds: float


@dataclass(frozen=True, slots=True)
class CloseTimeout(Event):
    """A closing connection did not read its last answers within ``seconds``: dropped."""

    conn: int
    seconds: float


@dataclass(frozen=True, slots=True)
class ConnectionsRefused(Event):
    """``count`` connections closed at once since the last such event: ``open`` were open,
    the cap is ``limit`` (``reason`` says where it comes from)."""

    count: int
    open: int
    limit: int
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionCapSet(Event):
    """The connection cap in force (at start, and when a reload changes it)."""

    limit: int
    reason: str
    clamped: bool  # the wanted cap was above what the open-files limit allows


# -- configuration generations (exmilter.runtime) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReloadStarted(Event):
    path: str


@dataclass(frozen=True, slots=True)
class ConfigWarning(Event):
    """A warning of a file that was loaded (located: ``file:line:col: warning: key: problem``)."""

    problem: str


@dataclass(frozen=True, slots=True)
class ReloadLoaded(Event):
    """Generation ``generation`` from ``path`` is in use."""

    generation: int
    path: str
    connectors: int  # receive connectors in it


@dataclass(frozen=True, slots=True)
class ReloadRefused(Event):
    """One located problem of a file that was refused (``file:line:col: key: problem``)."""

    problem: str


@dataclass(frozen=True, slots=True)
class GenerationKept(Event):
    """A reload failed before the swap: ``generation`` stays in use."""

    generation: int


@dataclass(frozen=True, slots=True)
class GenerationInUse(Event):
    """A reload failed after the swap, while reporting it: ``generation`` (the new one) is in use."""

    generation: int


@dataclass(frozen=True, slots=True)
class RestartNeeded(Event):
    """Settings in ``path`` that a reload cannot apply (``what``, e.g. ``policyd.listen/metrics``) changed."""

    what: str
    path: str


# -- Exchange's log files (exmilter.logs.w3c) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogWriteFailed(Event):
    """Rows of ``log`` could not be written in ``directory`` (unwritable, full disk): they are
    lost and counted, mail is not held up. Reported at most once a minute per log."""

    log: str  # "protocol", "tracking"
    directory: str
    error: str


# -- the daemon's life ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listening(Event):
    what: str  # "policy service", "metrics"
    where: str  # the endpoint as configured


@dataclass(frozen=True, slots=True)
class Ready(Event):
    """Every listener is bound; ``generation`` from ``source`` is in use."""

    generation: int
    source: str


@dataclass(frozen=True, slots=True)
class NotifyFailed(Event):
    """systemd's notification socket did not take a message."""

    address: str
    error: str


@dataclass(frozen=True, slots=True)
class WatchdogProbeFailed(Event):
    """The daemon could not reach its own policy listener: systemd's watchdog is not fed."""

    where: str
    error: str


@dataclass(frozen=True, slots=True)
class CoverageUnavailable(Event):
    """The milter's coverage socket cannot be opened: this daemon judges every session itself
    (the milter's too: wrapped texts, never more open)."""

    path: str
    error: str


@dataclass(frozen=True, slots=True)
class StartFailed(Event):
    """The daemon cannot start (a listener cannot bind): it exits 1."""

    error: str
