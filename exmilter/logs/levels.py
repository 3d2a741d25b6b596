"""How serious each event is: the one mapping from event to severity, and the names sinks write.

Severities are syslog's (RFC 5424 numbers), so a sink can hand them to journald or syslog
as they are; the text line writes Twisted's level names (``warn``, ``info``), as it always
has. What an admin must act on is an error (a refused reload); a refusal of mail is info
(docs/policyd.md, "Logs").
"""

from __future__ import annotations

from enum import IntEnum

from exmilter.logs import events as ev
from exmilter.replies import CONFIGURATION_PROBLEM


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
    ev.LogWriteFailed: Severity.ERROR,
    ev.Listening: Severity.INFO,
    ev.Ready: Severity.INFO,
    ev.NotifyFailed: Severity.WARNING,
    ev.WatchdogProbeFailed: Severity.ERROR,
    ev.CoverageUnavailable: Severity.WARNING,
    ev.StartFailed: Severity.CRITICAL,
}


def decision_severity(e: ev.PolicyDecision) -> Severity:
    """A decision is info (a refusal of mail is routine), but a request exmilter could not
    decide because of the deployment (an unusable ``policy_context``, no client address: the
    answer is the temporary failure ``451 4.3.5``, so all mail through that listener stops)
    is an error, and a note without a verdict (a request that is not a policy request) a warning."""
    if not e.note:
        return Severity.INFO
    if e.reply is None:
        return Severity.WARNING
    return Severity.ERROR if e.reply == CONFIGURATION_PROBLEM else Severity.INFO


def severity(event: ev.Event) -> Severity:
    """The severity of ``event``: by its kind, or for a few kinds by its content."""
    s = FIXED.get(type(event))
    if s is not None:
        return s
    if type(event) is ev.PolicyDecision:
        return decision_severity(event)
    if isinstance(event, ev.ConnectionCapSet):  # a cap below what Postfix may open needs the admin
        return Severity.WARNING if event.clamped else Severity.INFO
    raise TypeError(f"no severity for {type(event).__name__}")
