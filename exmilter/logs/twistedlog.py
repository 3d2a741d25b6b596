"""Typed events on twisted.logger, and the policy daemon's one observer writing them to stderr.

:func:`twisted_sink` publishes an event as an ordinary twisted.logger event that carries
the typed value (``EVENT_KEY``) unformatted; any twisted.logger observer can still render
it (its ``log_format`` formats the event, which renders the text sink's line). The daemon's own
:class:`StderrObserver` writes one line per event. Only the Twisted daemon imports this
module; the threaded milter will write the same lines from the same text sink without it.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any, TextIO

from twisted.logger import (
    ILogObserver,
    Logger,
    LogLevel,
    formatEvent,
    formatEventAsClassicLogText,
    globalLogBeginner,
)
from zope.interface import implementer

from exmilter.logs.escape import printable_lines
from exmilter.logs.events import Event, EventSink, PolicyDecision
from exmilter.logs.journal import journal_attached
from exmilter.logs.jsonline import json_line
from exmilter.logs.levels import FIXED, Severity, severity
from exmilter.logs.text import MESSAGES, Stamp, guarded

#: Event key of the typed event (an :class:`~exmilter.logs.events.Event`).
EVENT_KEY = "exmilter_event"
_TEXT_FORMAT = "{" + EVENT_KEY + "}"  # for other observers: format(event), the text sink's line

#: Each severity as a twisted.logger level (syslog's notice and below info have none there).
LOG_LEVELS: dict[Severity, LogLevel] = {
    Severity.CRITICAL: LogLevel.critical,
    Severity.ERROR: LogLevel.error,
    Severity.WARNING: LogLevel.warn,
    Severity.INFO: LogLevel.info,
    Severity.DEBUG: LogLevel.debug,
}


#: The level of each kind of event whose severity does not depend on its content.
_FIXED_LEVELS: dict[type[Event], LogLevel] = {kind: LOG_LEVELS[s] for kind, s in FIXED.items()}


def twisted_level(event: Event) -> LogLevel:
    """``event``'s severity as a twisted.logger level."""
    return LOG_LEVELS[severity(event)]


def twisted_sink(logger: Logger) -> EventSink:
    """An :data:`~exmilter.logs.events.EventSink` publishing to ``logger``'s observer.

    The per-refusal path: it builds the event dict itself, as ``Logger.emit`` would, without
    a format string to parse and without ``emit``'s check of the level against every
    constant on each call; a closure, which Python calls faster than an object's ``__call__``.
    """
    fixed = _FIXED_LEVELS
    namespace = logger.namespace
    info = LogLevel.info

    def publish(event: Event) -> None:
        if type(event) is PolicyDecision:  # the per-refusal path: info unless it has a note
            level = twisted_level(event) if event.note else info
        else:
            try:
                level = fixed[type(event)]
            except KeyError:  # a kind whose severity depends on its content
                level = twisted_level(event)
        logger.observer(
            {
                "log_logger": logger,
                "log_level": level,
                "log_namespace": namespace,
                "log_source": None,
                "log_format": _TEXT_FORMAT,
                EVENT_KEY: event,
                "log_time": time.time(),
            }
        )

    return publish


@implementer(ILogObserver)
class StderrObserver:
    """The daemon's one log observer: ``TIME [NAMESPACE#LEVEL] TEXT`` lines on a text stream.

    The output is twisted.logger's classic text format (what ``textFileLogObserver`` wrote),
    but the per-request path is cheap: a set lookup on ``log_level`` instead of a filter
    predicate, the timestamp formatted once per second (:class:`~exmilter.logs.text.Stamp`),
    and typed events formatted by the text sink directly (no format string). Other events
    (failures with their tracebacks) are rendered by Twisted's own formatter, continuation
    lines indented with a tab. One ``write`` per event; stderr is line-buffered, so each
    line reaches the journal as it is written.

    Whatever an event carries, no control character is written: the text sink escapes
    values from requests, and this observer escapes any that is left (a CR, an ANSI escape
    in an exception message) as a second guard; a newline only ever starts a tab-indented
    continuation line.
    """

    def __init__(
        self, stream: TextIO, levels: Collection[LogLevel], *, json: bool = False, priority_prefix: bool = False
    ) -> None:
        self._write = stream.write
        self._levels = frozenset(levels)
        self._stamp = Stamp().at  # a bound method: called per line, cheaper than an object's __call__
        self._messages = MESSAGES
        self._json = json
        self._prefix = priority_prefix

    def __call__(self, event: dict[str, Any]) -> None:
        level = event.get("log_level")
        if level is None or level not in self._levels:
            return
        typed = event.get(EVENT_KEY)
        if self._json or self._prefix:
            self._structured(event, level, typed)
            return
        if typed is None:
            line: str | None = formatEventAsClassicLogText(event, formatTime=self._stamp)
            if line:
                body = line[:-1]  # Twisted ends it with a newline and indents the others: "\n\t"
                if not body.isprintable():
                    line = "\n\t".join(printable_lines(part) for part in body.split("\n\t")) + "\n"
                self._write(line)
            return
        text = self._messages[type(typed)](typed)  # exmilter.logs.text.message, one call less
        if not text.isprintable():
            text = guarded(text)
        self._write(f"{self._stamp(event.get('log_time'))} [{event.get('log_namespace', '-')}#{level.name}] {text}\n")

    def _structured(self, event: dict[str, Any], level: LogLevel, typed: Event | None) -> None:
        """The JSON line, or the text line after journald's ``<N>`` priority prefix (sd-daemon(3))."""
        priority = PRIORITIES[level]
        namespace = event.get("log_namespace", "-")
        when = event.get("log_time")
        if self._json:
            text = None if typed is not None else printable_lines(formatEvent(event) or "")
            line = json_line(typed, priority, namespace, when, text)
        else:
            if typed is not None:
                text = self._messages[type(typed)](typed)
                if not text.isprintable():
                    text = guarded(text)
            else:
                text = guarded(printable_lines(formatEvent(event) or ""))
                failure = event.get("log_failure")
                if failure is not None:
                    text += "\n\t" + guarded(failure.getTraceback())
            line = f"{self._stamp(when)} [{namespace}#{level.name}] {text}"
        self._write(f"<{int(priority)}>{line}\n" if self._prefix else line + "\n")


#: syslog priority of each twisted.logger level (journald reads ``<N>`` at the start of a line).
PRIORITIES: dict[LogLevel, Severity] = {lv: s for s, lv in LOG_LEVELS.items()}


def log_levels(verbose: bool) -> frozenset[LogLevel]:
    """The levels written: info and above, debug too with ``--verbose``."""
    lowest = LogLevel.debug if verbose else LogLevel.info
    return frozenset(lv for lv in LogLevel.iterconstants() if lv >= lowest)


def start_logging(
    verbose: bool, stream: TextIO, *, log_format: str = "text", priority_prefix: bool | None = None
) -> StderrObserver:
    """Send every twisted.logger event to one :class:`StderrObserver` on ``stream``: text or
    JSON lines, each with its syslog priority as ``<N>`` when ``priority_prefix`` (by default
    when stderr is the journal, so ``journalctl -p err`` selects errors)."""
    prefix = journal_attached() if priority_prefix is None else priority_prefix
    observer = StderrObserver(stream, log_levels(verbose), json=log_format == "json", priority_prefix=prefix)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    return observer
