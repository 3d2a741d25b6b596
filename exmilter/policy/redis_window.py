"""The cluster-wide MessageRateLimit window on Redis: one round trip per MAIL, bounded by a timeout.

Exchange counts per server, so N servers let a client send N times its limit; with
``message_rate_window: redis`` every node counts in one Redis. The window is the same
fixed 60-second one as the local :class:`~exmilter.engine.MessageRateLimiter` (spec §3.10):
``INCR`` a key, and on its first count ``PEXPIRE`` it 60 s later, so the window starts with
the key's first MAIL and the first MAIL after it opens a new one with count 1.

One ``EVAL`` per MAIL counts every key the engine names (:meth:`Engine.rate_keys`, at most
two: the user's, then the IP's for ``All``) atomically, stops at the first key over the
limit and returns the earlier slots (the user's slot when the IP check fails), exactly as
the local window does; the engine then reads the counts (:class:`~exmilter.engine.CountedWindow`).

Why a small RESP client here rather than a library: exmilter sends one command shape
(``EVAL`` with integer replies) on one connection from the Twisted reactor; a client for
that is ~100 lines with its own timeout, while redis-py would need a thread per call
(latency and a thread pool to size) and txredisapi adds a dependency for a fraction of it.

Failure (Redis down, refusing, slower than the timeout): :meth:`RedisWindow.count` returns
``None``, counts :data:`FAILURES` with the reason, and the caller answers the MAIL with a
temporary failure (:data:`UNAVAILABLE_REPLY`): the client retries later, nothing is lost and
nothing is relayed uncounted. The connection is re-made on the next MAIL after a delay.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter
from twisted.internet import defer, protocol
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.python.failure import Failure

from exmilter.replies import RATE_WINDOW_UNAVAILABLE

#: Exchange's fixed window (spec §3.10), in milliseconds for PEXPIRE.
WINDOW_MS = 60_000
#: Longest wait for Redis's answer to one MAIL before it is a failure (seconds): far below
#: Postfix's policy timeout, so the client gets exmilter's temporary failure, not Postfix's.
DEFAULT_TIMEOUT = 0.25
#: After a failed connection, wait this long before trying again (seconds): a dead Redis
#: costs each MAIL nothing but the refusal, not a connect attempt.
RECONNECT_DELAY = 1.0
#: Keys live under this prefix, so one Redis can serve other things.
KEY_PREFIX = "exmilter:rate:"
#: Bound on one reply's size (bytes): a reply is a short array of integers.
MAX_REPLY_BYTES = 4096

#: What a MAIL gets when the shared window cannot be counted: a temporary failure.
UNAVAILABLE_REPLY = RATE_WINDOW_UNAVAILABLE

#: Counts each key in order; on the first count over the limit, returns the earlier keys'
#: slots and stops (the over-limit slot stays taken: every MAIL takes a slot, spec §3.10).
SCRIPT = b"""\
local limit = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local n = redis.call('INCR', KEYS[i])
  if n == 1 then redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
  out[i] = n
  if n > limit then
    for j = 1, i - 1 do redis.call('DECR', KEYS[j]) end
    return out
  end
end
return out
"""

FAILURES = Counter(
    "exmilter_rate_window_failures_total",
    "MAIL commands answered with a temporary failure because the shared (Redis) MessageRateLimit window "
    "could not be counted, by reason",
    ["reason"],
    registry=None,  # the daemon registers it on its own registry (exmilter.policy.daemon)
)
ROUND_TRIPS = Counter(
    "exmilter_rate_window_round_trips_total", "Shared-window round trips to Redis that answered", registry=None
)


def encode(*parts: bytes) -> bytes:
    """One RESP command: an array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


class ProtocolError(Exception):
    """Redis said something this client does not expect (an error reply, or bad framing)."""


def parse(buf: bytes) -> tuple[Any, int] | None:
    """One reply from the start of ``buf``: (value, bytes used), or None when incomplete.

    Integers, arrays of them, simple strings and errors (an error is a :class:`ProtocolError`
    value, not raised, so the caller fails only that request).
    """
    end = buf.find(b"\r\n")
    if end < 0:
        return None
    kind, line = buf[:1], buf[1:end]
    if kind == b":":
        return int(line), end + 2
    if kind == b"+":
        return line.decode("ascii", "replace"), end + 2
    if kind == b"-":
        return ProtocolError(line.decode("utf-8", "replace")), end + 2
    if kind == b"*":
        n = int(line)
        pos = end + 2
        items = []
        for _ in range(max(n, 0)):
            got = parse(buf[pos:])
            if got is None:
                return None
            items.append(got[0])
            pos += got[1]
        return items, pos
    raise ProtocolError(f"unexpected reply type {kind!r}")


def _abort(transport: Any) -> None:
    """Drop a TCP connection now (its pending requests fail), unlike loseConnection's flush."""
    if transport is not None:
        transport.abortConnection()


class _RespProtocol(protocol.Protocol):
    """Requests in order on one connection; each waits for its reply in a FIFO of Deferreds."""

    def __init__(self) -> None:
        self.pending: deque[defer.Deferred[Any]] = deque()
        self.buf = b""

    def request(self, data: bytes) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.pending.append(d)
        assert self.transport is not None
        self.transport.write(data)
        return d

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        try:
            while self.buf:
                got = parse(self.buf)
                if got is None:
                    break
                value, used = got
                self.buf = self.buf[used:]
                if not self.pending:
                    raise ProtocolError("a reply nobody asked for")
                self.pending.popleft().callback(value)
            if len(self.buf) > MAX_REPLY_BYTES:
                raise ProtocolError("reply too long")
        except (ProtocolError, ValueError) as e:
            self._fail(Failure(e))
            _abort(self.transport)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._fail(reason)

    def _fail(self, reason: Failure) -> None:
        while self.pending:
            self.pending.popleft().errback(reason)


class RedisWindow:
    """The shared window: :meth:`count` per MAIL, one connection, re-made after a failure."""

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        window_ms: int = WINDOW_MS,
        prefix: str = KEY_PREFIX,
    ) -> None:
        self.reactor: IReactorTCP = reactor
        self.clock: IReactorTime = reactor
        self.host, self.port = host, port
        self.timeout = timeout
        self.window_ms = window_ms
        self.prefix = prefix
        self._proto: _RespProtocol | None = None
        self._connecting: defer.Deferred[_RespProtocol] | None = None
        self._retry_at = 0.0

    def _connection(self) -> defer.Deferred[_RespProtocol]:
        if self._proto is not None and self._proto.transport is not None and self._proto.connected:
            return defer.succeed(self._proto)
        if self._connecting is not None:
            return self._connecting
        if self.clock.seconds() < self._retry_at:
            return defer.fail(ConnectionError("redis unreachable, waiting before the next attempt"))
        creator = protocol.ClientCreator(self.reactor, _RespProtocol)
        d: defer.Deferred[_RespProtocol] = creator.connectTCP(self.host, self.port, timeout=max(self.timeout, 0.1))

        def made(p: _RespProtocol) -> _RespProtocol:
            self._proto, self._connecting = p, None
            return p

        def failed(f: Failure) -> Failure:
            self._connecting = None
            self._retry_at = self.clock.seconds() + RECONNECT_DELAY
            return f

        d.addCallbacks(made, failed)
        self._connecting = d
        return d

    def count(self, keys: Sequence[tuple[str, int]]) -> defer.Deferred[dict[str, int] | None]:
        """Count one MAIL: ``{key: count}``, or None (counted in :data:`FAILURES`) when Redis fails.

        All keys of one MAIL share one limit in exmilter's model (the connector's), so the
        script takes the first key's limit. Never errbacks; answers within ``timeout``.
        """
        if not keys:
            return defer.succeed({})
        limit = keys[0][1]
        names = [k for k, _ in keys]
        command = encode(
            b"EVAL",
            SCRIPT,
            b"%d" % len(names),
            *(self.prefix.encode() + k.encode("utf-8") for k in names),
            b"%d" % limit,
            b"%d" % self.window_ms,
        )
        result: defer.Deferred[dict[str, int] | None] = defer.Deferred()
        state = {"done": False}

        def finish(value: dict[str, int] | None, reason: str = "") -> None:
            if state["done"]:
                return
            state["done"] = True
            if timer.active():
                timer.cancel()
            if value is None:
                FAILURES.labels(reason).inc()
            result.callback(value)

        def timed_out() -> None:
            finish(None, "timeout")
            if self._proto is not None and self._proto.transport is not None:
                _abort(self._proto.transport)  # a late reply must not answer the next MAIL
            self._proto = None

        timer = self.clock.callLater(self.timeout, timed_out)

        def send(p: _RespProtocol) -> defer.Deferred[Any]:
            return p.request(command)

        def answered(value: Any) -> None:
            if isinstance(value, ProtocolError):
                finish(None, "error")
                return
            if not isinstance(value, list) or not all(isinstance(v, int) for v in value) or not value:
                finish(None, "error")
                return
            ROUND_TRIPS.inc()
            # Keys after the first over-limit one were not counted: absent -> refused by CountedWindow,
            # but the engine stops at the first refusal, so it never asks for them.
            finish(dict(zip(names, value, strict=False)))

        def failed(f: Failure) -> None:
            finish(None, "unreachable")

        d = self._connection()
        d.addCallback(send)
        d.addCallbacks(answered, failed)
        return result

    def close(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.loseConnection()
        self._proto = None
