"""The watchdog's decision, shared by both daemons: ``WATCHDOG=1`` only after an answer.

Each daemon probes itself the way its client does (the policy daemon connects to its policy
listener, exmilter.policy.watchdog; the milter negotiates over libmilter's socket,
exmilter.milter.watchdog) and reports the outcome here: an answer pings systemd, a failure
does not, and is logged once per outage rather than once per probe.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exmilter.logs.events import EventSink, WatchdogProbeFailed
from exmilter.runtime.notify import WATCHDOG


class Pinger:
    """Feeds systemd's watchdog after each answered probe; one log line per outage."""

    def __init__(self, notify: Callable[[str], Any], log: EventSink) -> None:
        self.notify = notify
        self.log = log
        self.failing = False

    def answered(self) -> None:
        self.failing = False
        self.notify(WATCHDOG)

    def failed(self, where: str, error: str) -> None:
        if not self.failing:
            self.log(WatchdogProbeFailed(where, error))
        self.failing = True
