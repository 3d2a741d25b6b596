"""The policy daemon's Twisted services: listeners on endpoint strings, and SIGHUP → reload.

Assembled into the daemon's service tree by :mod:`exmilter.policy.daemon`.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Generator, Sequence
from types import FrameType
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory

from exmilter.logs.events import EventSink, Listening
from exmilter.policy.reload import Runtime


def split_group(description: str) -> tuple[str, str | None]:
    """Strip our ``group=NAME`` option from a ``unix:`` endpoint (Twisted has none)."""
    if not description.startswith("unix:"):
        return description, None
    parts = description.split(":")
    group = next((p[6:] for p in parts if p.startswith("group=")), None)
    return ":".join(p for p in parts if not p.startswith("group=")), group


def endpoint_errors(reactor: Any, descriptions: Sequence[str]) -> list[str]:
    """Why each of ``descriptions`` is not a Twisted server endpoint (empty: all are)."""
    errors = []
    for d in descriptions:
        try:
            serverFromString(reactor, split_group(d)[0])
        except IndexError:  # Twisted's systemd: endpoint, with fewer sockets passed than its index
            errors.append(
                f"{d}: systemd passed no socket with that index (socket activation: start the daemon "
                "through its .socket unit, docs/operations.md)"
            )
        except (ValueError, TypeError, KeyError) as e:
            errors.append(f"{d}: not a Twisted server endpoint: {e}")
    return errors


class ListenService(Service):
    """Listens on every endpoint string; ``ready`` fires once all are bound."""

    def __init__(
        self, reactor: Any, descriptions: Sequence[str], factory: IProtocolFactory, what: str, log: EventSink
    ) -> None:
        self.reactor = reactor
        self.descriptions = tuple(descriptions)
        self.factory = factory
        self.what = what
        self.log = log
        self.ports: list[IListeningPort] = []
        self.ready: defer.Deferred[list[IListeningPort]] = defer.Deferred()

    def startService(self) -> None:
        super().startService()
        ds = [self._listen(d) for d in self.descriptions]
        defer.gatherResults(ds, consumeErrors=True).chainDeferred(self.ready)

    @defer.inlineCallbacks
    def _listen(self, description: str) -> Generator[defer.Deferred[Any], Any, IListeningPort]:
        endpoint_text, group = split_group(description)
        port = yield serverFromString(self.reactor, endpoint_text).listen(self.factory)
        self.ports.append(port)
        if group:
            import grp

            path = port.getHost().name
            os.chown(path, -1, grp.getgrnam(group).gr_gid)
        self.log(Listening(self.what, description))
        return port

    def stopService(self) -> defer.Deferred[list[Any]]:
        super().stopService()
        ports, self.ports = self.ports, []
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports])


class SignalService(Service):
    """SIGHUP → reload, handled on the reactor thread."""

    def __init__(self, reactor: Any, runtime: Runtime) -> None:
        self.reactor = reactor
        self.runtime = runtime
        self._previous: Any = None

    def startService(self) -> None:
        super().startService()
        self._previous = signal.signal(signal.SIGHUP, self._hup)

    def _hup(self, signum: int, frame: FrameType | None) -> None:
        self.reactor.callFromThread(self.runtime.reload)

    def stopService(self) -> None:
        super().stopService()
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
