"""systemd's watchdog, fed only while the daemon answers (``WatchdogSec=`` in the unit).

Every half ``WATCHDOG_USEC`` (:func:`exmilter.runtime.notify.watchdog_interval`) the daemon
connects to its own first policy listener, through the kernel like Postfix does, and sends
``WATCHDOG=1`` only when the connection is accepted in time. A reactor that is blocked or
busy-looping, a listener that was closed or a socket file that was removed all stop the
pings, and systemd restarts the daemon (``Restart=on-failure``). The probe opens and closes
a connection without a request, so no request metric counts it. Outside systemd, or
without ``WatchdogSec=``, nothing runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, UNIXClientEndpoint, connectProtocol
from twisted.internet.interfaces import IListeningPort, IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from exmilter.logs.events import EventSink
from exmilter.runtime.watchdog import Pinger


def client_for(reactor: Any, port: IListeningPort, timeout: float) -> tuple[IStreamClientEndpoint, str]:
    """An endpoint reaching ``port`` (a wildcard TCP listener through loopback), and its name."""
    host = port.getHost()
    if isinstance(host, UNIXAddress):
        path = host.name.decode() if isinstance(host.name, bytes) else str(host.name)
        return UNIXClientEndpoint(reactor, path, timeout=timeout), f"unix:{path}"
    if isinstance(host, IPv6Address):
        address = "::1" if host.host == "::" else host.host
        return TCP6ClientEndpoint(reactor, address, host.port, timeout=timeout), f"[{address}]:{host.port}"
    if isinstance(host, IPv4Address):
        address = "127.0.0.1" if host.host == "0.0.0.0" else host.host
        return TCP4ClientEndpoint(reactor, address, host.port, timeout=timeout), f"{address}:{host.port}"
    raise ValueError(f"cannot probe a listener at {host!r}")


class WatchdogService(Service):
    """Probes the first of ``ports()`` every ``interval`` seconds; ``notify(WATCHDOG)`` on success."""

    def __init__(
        self,
        reactor: Any,
        interval: float,
        ports: Callable[[], Sequence[IListeningPort]],
        notify: Callable[[str], Any],
        log: EventSink,
    ) -> None:
        self.reactor = reactor
        self.interval = interval
        self.ports = ports
        self.pinger = Pinger(notify, log)
        self._loop: task.LoopingCall | None = None
        self._probing = False

    def startService(self) -> None:
        super().startService()
        self._loop = task.LoopingCall(self.probe)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def probe(self) -> defer.Deferred[None] | None:
        """One probe; skipped (no ping) while the previous one has not ended."""
        if self._probing:
            return None
        ports = list(self.ports())
        if not ports:
            self.pinger.failed("no listener", "not listening")
            return None
        try:
            endpoint, where = client_for(self.reactor, ports[0], self.interval)
        except ValueError as e:
            self.pinger.failed("?", str(e))
            return None
        self._probing = True
        d: defer.Deferred[Any] = connectProtocol(endpoint, Protocol())

        def answered(proto: Protocol) -> None:
            if proto.transport is not None:
                proto.transport.loseConnection()
            self.pinger.answered()

        def failed(failure: Failure) -> None:
            self.pinger.failed(where, failure.getErrorMessage())

        def done(_: object) -> None:
            self._probing = False

        d.addCallbacks(answered, failed)
        d.addBoth(done)
        return d
