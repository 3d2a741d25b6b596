"""The node's health for the load balancer: an HTTP check HAProxy polls (docs/cluster.md).

``GET /health`` answers ``200 up`` only when this node can take mail as configured:

- the policy daemon answers (the page is served by it: a dead daemon refuses the check);
- its last configuration load succeeded (a refused reload keeps the old generation
  serving, but the node is drained until the file is fixed, so a pool never runs a
  mix the admin did not intend);
- Postfix accepts: the probe connects to the listener, sends a PROXY v1 header when the
  listener expects one, and reads a ``220`` banner within :data:`PROBE_TIMEOUT`.

Anything else is ``503`` with the reason (``down postfix: …``, ``drain config: …``), which
HAProxy's ``http-check expect status 200`` turns into "stop sending here".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, protocol
from twisted.python.failure import Failure
from twisted.web.http import Request
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

#: Longest wait for Postfix's banner (seconds): well inside HAProxy's check timeout.
PROBE_TIMEOUT = 2.0
#: Bound on what the probe reads before giving up on a banner line.
MAX_BANNER_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Health:
    """A verdict: HTTP status and the one-line reason HAProxy logs."""

    status: int
    text: str


def verdict(config_ok: bool, postfix_error: str | None) -> Health:
    """Pure: the health from the two facts (the daemon answering is implied by the answer)."""
    if postfix_error is not None:
        return Health(503, f"down postfix: {postfix_error}")
    if not config_ok:
        return Health(503, "drain config: the last reload was refused (the old configuration still serves)")
    return Health(200, "up")


class _BannerProbe(protocol.Protocol):
    def __init__(self, proxy: bool, done: defer.Deferred[str | None]) -> None:
        self.proxy, self.done, self.buf = proxy, done, b""

    def connectionMade(self) -> None:
        assert self.transport is not None
        if self.proxy:  # the header's addresses are this very connection's: nothing invented
            local: Any = self.transport.getHost()
            peer: Any = self.transport.getPeer()
            family = "TCP6" if ":" in local.host else "TCP4"
            header = f"PROXY {family} {local.host} {peer.host} {local.port} {peer.port}\r\n"
            self.transport.write(header.encode("ascii"))

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        if b"\n" not in self.buf and len(self.buf) < MAX_BANNER_BYTES:
            return
        line = self.buf.split(b"\n", 1)[0].rstrip(b"\r")
        assert self.transport is not None
        if line.startswith(b"220"):
            self.transport.write(b"QUIT\r\n")
            self._finish(None)
        else:
            self._finish(f"banner {line[:80].decode('ascii', 'replace')!r}")
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._finish("closed before a banner")

    def _finish(self, error: str | None) -> None:
        if not self.done.called:
            self.done.callback(error)


def probe_postfix(
    reactor: Any, host: str, port: int, *, proxy: bool, timeout: float = PROBE_TIMEOUT
) -> defer.Deferred[str | None]:
    """None when ``host:port`` sends a 220 banner in time, else why not. Never errbacks."""
    done: defer.Deferred[str | None] = defer.Deferred()
    creator = protocol.ClientCreator(reactor, _BannerProbe, proxy, done)
    connecting = creator.connectTCP(host, port, timeout=timeout)

    def no_connection(f: Failure) -> None:
        if not done.called:
            done.callback(f"cannot connect to {host}:{port} ({f.getErrorMessage()[:120]})")

    def too_slow() -> None:
        if not done.called:
            done.callback(f"no banner within {timeout:g}s")

    timer = reactor.callLater(timeout, too_slow)

    def cancel_timer(result: str | None) -> str | None:
        if timer.active():
            timer.cancel()
        return result

    def close(p: _BannerProbe) -> None:
        def drop(result: str | None) -> str | None:
            if p.transport is not None:
                p.transport.loseConnection()
            return result

        done.addBoth(drop)

    connecting.addCallbacks(close, no_connection)
    return done.addBoth(cancel_timer)


class HealthPage(Resource):
    """``/health`` (any path): the verdict for HAProxy, computed per request (a check every few seconds)."""

    isLeaf = True

    def __init__(
        self, reactor: Any, config_ok: Callable[[], bool], probe: tuple[str, int] | None, *, proxy: bool
    ) -> None:
        super().__init__()
        self.reactor, self.config_ok, self.probe, self.proxy = reactor, config_ok, probe, proxy

    def render_GET(self, request: Request) -> Any:
        def answer(postfix_error: str | None) -> None:
            h = verdict(self.config_ok(), postfix_error)
            request.setResponseCode(h.status)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            request.write(h.text.encode() + b"\n")
            request.finish()

        if self.probe is None:
            answer(None)
            return b"" if request.finished else NOT_DONE_YET
        probing = probe_postfix(self.reactor, *self.probe, proxy=self.proxy)
        probing.addCallback(answer)
        return NOT_DONE_YET
