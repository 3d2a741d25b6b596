"""What the milter logs, as typed values (the configuration events are exmilter.logs.events').

Formatted only by the sink (:mod:`exmilter.milter.log`). Values a client chose (addresses,
the error of a callback) are escaped there.
"""

from __future__ import annotations

from dataclasses import dataclass

from exmilter.replies import Reply


@dataclass(frozen=True, slots=True)
class MilterDecision:
    """A refusal (every verdict with ``--verbose``) at ``stage`` for one session."""

    stage: str  # MAIL, RCPT, END-OF-HEADERS, END-OF-MESSAGE
    connector: str  # identity, "" when none
    client: str
    queue_id: str
    sender: str
    recipient: str
    reply: Reply | None  # None: accepted


@dataclass(frozen=True, slots=True)
class CallbackFailed:
    """A callback raised: the session gets a temporary failure from here on."""

    stage: str
    client: str
    error: str


@dataclass(frozen=True, slots=True)
class Unplaced:
    """A session the milter cannot place on a listener (fails closed at MAIL)."""

    client: str
    problem: str


@dataclass(frozen=True, slots=True)
class MilterStarted:
    """libmilter listens on ``socket``; ``generation`` from ``source`` is in use."""

    socket: str
    generation: int
    source: str
    coverage: str  # the policy daemon's coverage socket, "" when none


@dataclass(frozen=True, slots=True)
class MilterStopped:
    reason: str


MilterEvent = MilterDecision | CallbackFailed | Unplaced | MilterStarted | MilterStopped
