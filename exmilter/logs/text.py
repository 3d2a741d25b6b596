"""The text sink: each event as the one line the daemons write (docs/policyd.md, "Logs").

:func:`message` is the line's text, :class:`Stamp` its time and :func:`guarded` the second
guard against control characters; the stderr observer (:mod:`exmilter.logs.twistedlog`)
assembles ``TIME [NAMESPACE#LEVEL] TEXT`` from them. Every value a peer chose (client,
sender, recipient, the text of a protocol error, a note quoting a request) is escaped here
(:func:`~exmilter.logs.escape.escape`); values from the configuration and the daemon are not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from exmilter.limits import LOG_NOTE_MAX, POLICY_MAX_REQUESTS_PER_TURN, POLICY_OUTPUT_BUFFER
from exmilter.logs import events as ev
from exmilter.logs.escape import escape, printable_lines
from exmilter.replies import CONFIGURATION_PROBLEM

_DEFAULT_ACTION = f"{CONFIGURATION_PROBLEM.code} {CONFIGURATION_PROBLEM.enhanced}"


def _decision(e: ev.PolicyDecision) -> str:
    """``c<conn>.<seq> [<queue id>: ]<stage> client=… connector=… from=<…> to=<…>: <action>``; the
    Postfix queue id, where Postfix sent one, as Postfix's own lines carry it (``grep QUEUEID``)."""
    qid = f"{escape(e.queue_id)}: " if e.queue_id else ""
    return (
        f"c{e.conn}.{e.seq} {qid}{e.stage} client={escape(e.client)} connector={e.connector or '-'!r} "
        f"from=<{escape(e.sender)}> to=<{escape(e.recipient)}>: {e.action}"
        f"{' (re-sent request, same answer)' if e.duplicate else ''}"
        f"{f' ({escape(e.note, LOG_NOTE_MAX)})' if e.note else ''}"
    )


_PAUSES = {
    "unsent_answers": f"the client is not reading its answers (over {POLICY_OUTPUT_BUFFER // 1024} KiB unsent): "
    "reading paused until it does",
    "pipelined_requests": f"more than {POLICY_MAX_REQUESTS_PER_TURN} requests in one read: answered "
    f"{POLICY_MAX_REQUESTS_PER_TURN} per reactor turn, reading paused meanwhile",
}


def _paused(e: ev.ReadPaused) -> str:
    return f"c{e.conn}: {_PAUSES.get(e.reason) or escape(e.reason)}"


def _refused(e: ev.ConnectionsRefused) -> str:
    return (
        f"refused {e.count} policy connection(s): {e.open} open, the limit is {e.limit} ({e.reason}); "
        f"Postfix retries, then answers its default_action ({_DEFAULT_ACTION})"
    )


#: How each kind of event reads, by its type (:func:`message` looks it up).
MESSAGES: dict[type[ev.Event], Callable[[Any], str]] = {
    ev.PolicyDecision: _decision,
    ev.ProtocolViolation: lambda e: f"c{e.conn}: {escape(e.error)}; closing the connection",
    ev.ReadPaused: _paused,
    ev.IdleTimeout: lambda e: f"c{e.conn}: no request for {e.seconds:.0f}s, closing",
    ev.RequestTimeout: lambda e: f"c{e.conn}: request incomplete after {e.seconds:.0f}s; closing",
    ev.CloseTimeout: lambda e: (
        f"c{e.conn}: the client did not read the last answers within {e.seconds:.0f}s of closing; "
        "dropping the connection"
    ),
    ev.ConnectionsRefused: _refused,
    ev.ConnectionCapSet: lambda e: f"accepting up to {e.limit} policy connections ({e.reason})",
    ev.ReloadStarted: lambda e: f"reloading {e.path}",
    ev.ConfigWarning: lambda e: e.problem,
    ev.ReloadLoaded: lambda e: (
        f"configuration generation {e.generation} loaded from {e.path} ({e.connectors} receive connectors)"
    ),
    ev.ReloadRefused: lambda e: f"reload refused: {e.problem}",
    ev.GenerationKept: lambda e: f"keeping configuration generation {e.generation}",
    ev.GenerationInUse: lambda e: f"configuration generation {e.generation} is in use",
    ev.RestartNeeded: lambda e: f"{e.what} changed in {e.path}: restart the daemon to apply",
    ev.LogWriteFailed: lambda e: (
        f"cannot write the {e.log} log in {e.directory}: {e.error}; rows are dropped and counted, mail flows"
    ),
    ev.Listening: lambda e: f"{e.what} listening on {e.where}",
    ev.Ready: lambda e: f"ready: configuration generation {e.generation} from {e.source}",
    ev.NotifyFailed: lambda e: f"cannot notify systemd at {e.address}: {e.error}",
    ev.WatchdogProbeFailed: lambda e: (
        f"watchdog: {e.where} does not answer ({e.error}); not feeding systemd's watchdog"
    ),
    ev.CoverageUnavailable: lambda e: f"coverage socket {e.path}: {e.error}; judging every session here",
    ev.StartFailed: lambda e: f"cannot start: {e.error}",
}


def message(event: ev.Event) -> str:
    """The text of ``event``'s line (without time, namespace and level)."""
    return MESSAGES[type(event)](event)


def guarded(text: str) -> str:
    """``text`` with no control character left: escaped, and a newline continues the line
    on the next one, tab-indented (a second guard after :func:`escape`)."""
    if text.isprintable():
        return text
    return printable_lines(text).replace("\n", "\n\t")


class Stamp:
    """The line's local time to the second (RFC 3339, as twisted.logger writes it),
    formatted once per second: a per-line cost the busy path would otherwise pay."""

    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def at(self, when: float | None) -> str:
        """``when`` (now if None) as the line's time."""
        if when is None:
            when = time.time()
        second = int(when)
        if second != self._second:
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(second))
            self._second = second
        return self._text
