"""The policy connections' factory: one protocol per connection, up to the connection cap.

Above the cap (``policyd.max_connections``, or the rendered maxproc total: exmilter.policy.limits)
a new connection is closed at once, unanswered: Postfix retries, then answers its
``default_action`` (a temporary failure). Refusals are counted each and logged at most once
per ``POLICY_REFUSAL_LOG_INTERVAL`` with their number.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from twisted.internet.base import DelayedCall
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory

from exmilter.limits import POLICY_REFUSAL_LOG_INTERVAL
from exmilter.logs.events import ConnectionsRefused
from exmilter.policy.connection import PolicyProtocol
from exmilter.policy.reload import Runtime

if TYPE_CHECKING:
    _Factory = Factory[PolicyProtocol]
else:  # generic at run time only from Twisted 23: Debian 12's python3-twisted 22.4 is not
    _Factory = Factory


class PolicyFactory(_Factory):
    """Builds a protocol per connection while fewer than the generation's cap are open."""

    noisy = False

    def __init__(self, runtime: Runtime, reactor: Any) -> None:
        self.runtime = runtime
        self.metrics = runtime.metrics
        self.metered = runtime.metrics.enabled
        self.log = runtime.log
        self.reactor = reactor
        self.open = 0
        self._ids = itertools.count(1)
        self._refused = 0  # refusals not yet in a log line
        self._refusal_line: DelayedCall | None = None

    def buildProtocol(self, addr: IAddress | None) -> PolicyProtocol | None:
        """None above the cap: Twisted closes the new socket at once. Postfix sees the
        connection closed, retries, then applies its default_action (451 4.3.5)."""
        if self.open >= self.runtime.cap.limit:
            self._refuse()
            return None
        return PolicyProtocol(self, next(self._ids))

    def opened(self) -> None:
        self.open += 1
        self.metrics.connections.inc()

    def closed(self) -> None:
        self.open -= 1
        self.metrics.connections.dec()

    def _refuse(self) -> None:
        self.metrics.refused_connections.inc()
        self._refused += 1
        if self._refusal_line is None:  # the first refusal of a burst is logged at once, the rest summed up
            self._log_refusals()

    def _refusals_later(self) -> None:
        self._refusal_line = None
        if self._refused:
            self._log_refusals()

    def _log_refusals(self) -> None:
        cap = self.runtime.cap
        self._refusal_line = self.reactor.callLater(POLICY_REFUSAL_LOG_INTERVAL, self._refusals_later)
        self.log(ConnectionsRefused(self._refused, self.open, cap.limit, cap.reason))
        self._refused = 0

    def stopFactory(self) -> None:
        if self._refusal_line is not None and self._refusal_line.active():
            self._refusal_line.cancel()
        self._refusal_line = None
