"""How serious each event is: the one mapping from event to severity, and the names sinks write.

Severities are syslog's (RFC 5424 numbers), so a sink can hand them to journald or syslog
as they are; the text line writes Twisted's level names (``warn``, ``info``), as it always
has. What an admin must act on is an error (a refused reload); a refusal of mail is info
(docs/policyd.md, "Logs").
"""

from __future__ import annotations

from enum import IntEnum

from exmilter.logs import events as ev


class Severity(IntEnum):
    """syslog priorities; lower is more serious."""

    CRITICAL = 2
    ERROR = 3
    WARNING = 4
    INFO = 6
    DEBUG = 7


#: The level names of the text line (twisted.logger's, kept for grep and existing parsers).
NAMES: dict[Severity, str] = {
    Severity.CRITICAL: "critical",
    Severity.ERROR: "error",
    Severity.WARNING: "warn",
    Severity.INFO: "info",
    Severity.DEBUG: "debug",
}

#: The severity of each kind of event that has one whatever its content.
FIXED: dict[type[ev.Event], Severity] = {
    ev.PolicyDecision: Severity.INFO,
    ev.ProtocolViolation: Severity.WARNING,
    ev.ReadPaused: Severity.INFO,
    ev.IdleTimeout: Severity.INFO,  # Postfix closes idle connections first: one we close is just old
    ev.RequestTimeout: Severity.WARNING,
    ev.CloseTimeout: Severity.WARNING,
    ev.ConnectionsRefused: Severity.WARNING,
    ev.ReloadStarted: Severity.INFO,
    ev.ConfigWarning: Severity.WARNING,
    ev.ReloadLoaded: Severity.INFO,
    ev.ReloadRefused: Severity.ERROR,
    ev.GenerationKept: Severity.ERROR,
    ev.GenerationInUse: Severity.ERROR,
    ev.RestartNeeded: Severity.WARNING,
    ev.Listening: Severity.INFO,
    ev.Ready: Severity.INFO,
    ev.NotifyFailed: Severity.WARNING,
    ev.WatchdogProbeFailed: Severity.ERROR,
    ev.StartFailed: Severity.CRITICAL,
}


def severity(event: ev.Event) -> Severity:
    """The severity of ``event``: by its kind, or for a few kinds by its content."""
    s = FIXED.get(type(event))
    if s is not None:
        return s
    if isinstance(event, ev.ConnectionCapSet):  # a cap below what Postfix may open needs the admin
        return Severity.WARNING if event.clamped else Severity.INFO
    raise TypeError(f"no severity for {type(event).__name__}")
