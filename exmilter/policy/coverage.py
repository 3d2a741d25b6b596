"""The policy daemon's side of the coverage registration (exmilter.coverage).

A unix datagram socket the milter writes to; read without blocking, and only when a request
names a session not yet known to be covered (the milter's datagram was sent before Postfix
sent the banner, so by MAIL it is queued). A policy-only session costs one ``recv`` that
finds nothing. The socket is the only thing that can make the daemon skip a judgement:
it is created mode 660 (the milter's group; docs/milter.md, "Deployment").
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import time
from collections.abc import Callable

from twisted.internet.interfaces import IReadDescriptor
from zope.interface import implementer

from exmilter.coverage import MAX_DATAGRAM, CoveredSessions, SessionKey, decode
from exmilter.limits import COVERAGE_MAX_DRAIN, COVERAGE_MAX_SESSIONS, COVERAGE_TTL


class CoverageReceiver:
    """Binds ``path`` and answers whether a session is the milter's."""

    def __init__(
        self,
        path: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_sessions: int = COVERAGE_MAX_SESSIONS,
        ttl: float = COVERAGE_TTL,
        mode: int = 0o660,
    ) -> None:
        self.path = path
        self.clock = clock
        self.sessions = CoveredSessions(max_sessions, ttl)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)  # a stale socket of an earlier run
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)
        self._sock.bind(path)
        os.chmod(path, mode)

    def drain(self) -> int:
        """Apply every queued datagram (at most COVERAGE_MAX_DRAIN); how many were read."""
        now = self.clock()
        n = 0
        while n < COVERAGE_MAX_DRAIN:
            try:
                data = self._sock.recv(MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            n += 1
            notice = decode(data)
            if notice is not None:
                self.sessions.apply(notice, now)
        return n

    def covers(self, context: str, client: str, port: str) -> bool:
        """Read what is queued first (a registration, or a withdrawal or reset that voids
        one), then look the session up."""
        self.drain()
        return self.sessions.covers(SessionKey(context, client, port), self.clock())

    def close(self) -> None:
        self._sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def fileno(self) -> int:
        return self._sock.fileno()


@implementer(IReadDescriptor)
class CoverageReader:
    """Drains the coverage socket whenever it is readable, on the reactor thread.

    Draining only when a request asks is not enough: a unix datagram socket queues few
    datagrams (``net.unix.max_dgram_qlen``, 10 on Debian 12), and sessions that end before
    MAIL (probes, refused connections) would fill it, so the milter's next registration
    would be dropped (the policy daemon then judges that session: stricter, never open).
    """

    def __init__(self, receiver: CoverageReceiver) -> None:
        self.receiver = receiver

    def fileno(self) -> int:
        return self.receiver.fileno()

    def doRead(self) -> None:
        self.receiver.drain()

    def connectionLost(self, reason: object) -> None:
        pass

    def logPrefix(self) -> str:
        return "coverage"
