"""The milter's log sink: one line per event on stderr (the journal), from any thread.

``TIME [exmilter.milter#LEVEL] TEXT``, as the policy daemon writes its lines; the
configuration events (reloads) read exactly as there (exmilter.logs.text). One ``write``
per line under a lock: libmilter runs callbacks on many threads.
"""

from __future__ import annotations

import threading
import time
from typing import TextIO

from exmilter.logs import events as ev
from exmilter.logs.escape import escape
from exmilter.logs.levels import NAMES, Severity, severity
from exmilter.logs.text import guarded, message
from exmilter.milter import events as me

NAMESPACE = "exmilter.milter"


def text(e: me.MilterEvent) -> str:
    if isinstance(e, me.MilterDecision):
        verdict = e.reply.line if e.reply is not None else "accepted"
        qid = f"{escape(e.queue_id)}: " if e.queue_id else ""
        return (
            f"{qid}{e.stage} client={escape(e.client)} connector={e.connector or '-'!r} "
            f"from=<{escape(e.sender)}> to=<{escape(e.recipient)}>: {verdict}"
        )
    if isinstance(e, me.CallbackFailed):
        return (
            f"{e.stage} client={escape(e.client)}: internal error ({escape(e.error)}); "
            "the session gets a temporary failure"
        )
    if isinstance(e, me.Unplaced):
        return f"client={escape(e.client)}: {escape(e.problem)}; MAIL gets a temporary failure"
    if isinstance(e, me.MilterStarted):
        cov = (
            f"registering sessions on {e.coverage}"
            if e.coverage
            else "no coverage socket: the policy daemon judges too"
        )
        return f"milter on {e.socket}: generation {e.generation} from {e.source}; {cov}"
    return f"milter stopping: {e.reason}"


def level(e: object) -> Severity:
    if isinstance(e, ev.Event):
        return severity(e)
    if isinstance(e, me.CallbackFailed):
        return Severity.ERROR
    if isinstance(e, me.Unplaced):
        return Severity.WARNING
    if isinstance(e, me.MilterDecision) and e.reply is None:
        return Severity.DEBUG
    return Severity.INFO


class StderrSink:
    """Writes events at info and above (debug too when ``verbose``)."""

    def __init__(self, stream: TextIO, verbose: bool = False) -> None:
        self._stream = stream
        self._lowest = Severity.DEBUG if verbose else Severity.INFO
        self._lock = threading.Lock()

    def __call__(self, e: object) -> None:
        sev = level(e)
        if sev > self._lowest:
            return
        line = message(e) if isinstance(e, ev.Event) else text(e)  # type: ignore[arg-type]
        if not line.isprintable():
            line = guarded(line)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        with self._lock:
            try:
                self._stream.write(f"{stamp} [{NAMESPACE}#{NAMES[sev]}] {line}\n")
                self._stream.flush()
            except (OSError, ValueError):
                pass  # a closed stderr must not fail a callback
