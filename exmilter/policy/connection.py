"""One Postfix policy connection on Twisted: parse, decide, answer; close on anything odd.

Protocols only frame bytes (:mod:`exmilter.policy.protocol`) and ask the factory's
:class:`~exmilter.policy.reload.Runtime` for a decision against the generation in use.
Anything unexpected closes that connection without an answer: Postfix then retries and
finally applies its ``default_action``, a temporary failure (fail closed).

Every connection is bounded (docs/policyd.md, "Limits"): unsent answers (reading pauses
above Twisted's write buffer), work per reactor turn, time per request and idle time.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, cast
from typing import Protocol as TypingProtocol

from twisted.internet import defer
from twisted.internet.base import DelayedCall
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from exmilter.limits import POLICY_MAX_REQUESTS_PER_TURN, POLICY_OUTPUT_BUFFER
from exmilter.logs.escape import escape
from exmilter.logs.events import (
    CloseTimeout,
    IdleTimeout,
    PolicyDecision,
    ProtocolViolation,
    ReadPaused,
    RequestTimeout,
)
from exmilter.policy.decide import Decision
from exmilter.policy.protocol import ProtocolError, Request, RequestParser
from exmilter.policy.reload import log

if TYPE_CHECKING:
    from exmilter.policy.factory import PolicyFactory


class StreamTransport(TypingProtocol):
    """What the protocol uses of its transport: a TCP or UNIX connection (ITCPTransport),
    its IConsumer side for back-pressure, and its IPushProducer side to pause reading."""

    def write(self, data: bytes) -> None: ...

    def loseConnection(self) -> None: ...

    def abortConnection(self) -> None: ...

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None: ...

    def unregisterProducer(self) -> None: ...

    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...


@implementer(IPushProducer)
class PolicyProtocol(Protocol):
    """One Postfix policy client connection: parse, decide, answer; close on anything odd.

    The protocol is its transport's streaming producer: when more than Twisted's write
    buffer (64 KiB, exmilter.limits.POLICY_OUTPUT_BUFFER) of answers is unsent, the
    transport calls :meth:`pauseProducing` and we stop reading from that connection until
    it is drained. A read holding more than ``POLICY_MAX_REQUESTS_PER_TURN`` requests is
    answered a batch per reactor turn, reading paused meanwhile. Two timers: ``idle_timeout``
    from the last answer (bytes alone do not restart it), and ``request_timeout`` from the
    first byte of a request to its last.
    """

    factory: PolicyFactory

    def __init__(self, factory: PolicyFactory, conn_id: int) -> None:
        self.factory = factory
        self.conn_id = conn_id
        self.seq = 0
        self.closing = False
        policyd = factory.runtime.current.org.policyd
        self.parser = RequestParser(policyd.max_line_length, policyd.max_attributes, POLICY_MAX_REQUESTS_PER_TURN)
        self.idle_timeout = float(policyd.idle_timeout)
        self.request_timeout = float(policyd.request_timeout)
        self.out: StreamTransport  # the transport, typed for what we use of it (set by connectionMade)
        self._socket: socket.socket | None = None  # see send()
        self._handle: socket.socket | None = None
        self._idle: DelayedCall | None = None
        self._deadline: DelayedCall | None = None  # request_timeout while a request is partly read, or closing
        self._next: DelayedCall | None = None  # the next batch of a pipelined read
        self._output_paused = False  # the transport holds more unsent answers than its buffer size
        self._reading = True
        self._producing = False  # registered as the transport's producer
        self._reported: set[str] = set()  # read-pause reasons already logged on this connection
        self._held: tuple[list[Request], ProtocolError | None] | None = None  # waiting for the shared window
        self._held_data = b""

    def connectionMade(self) -> None:
        f = self.factory
        # makeConnection() sets the transport before it calls us; the reactor's TCP and UNIX
        # connections (and the tests' StringTransport) provide all of StreamTransport.
        self.out = cast(StreamTransport, self.transport)
        f.opened()
        self._idle = f.reactor.callLater(self.idle_timeout, self._idle_expired)
        get_handle = getattr(self.transport, "getHandle", None)
        handle = get_handle() if get_handle is not None else None
        self._socket = self._handle = handle if isinstance(handle, socket.socket) else None
        self.out.registerProducer(self, True)
        self._producing = True

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closing = True
        for call in (self._idle, self._deadline, self._next):
            if call is not None and call.active():
                call.cancel()
        self._idle = self._deadline = self._next = None
        self.factory.closed()

    # -- input ------------------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Parse ``data``, answer what it completes (one batch at most), then set the timers."""
        if self.closing:
            return
        if self._held is not None:  # a MAIL waits for the shared window: these bytes come after it
            self._held_data += data
            if len(self._held_data) > POLICY_OUTPUT_BUFFER:  # Postfix waits for each answer: not Postfix
                self.abort()
            return
        parser = self.parser
        error: ProtocolError | None = None
        try:
            requests = parser.feed(data)
        except ProtocolError as e:
            requests, error = e.complete, e
        self._process(requests, error, [])

    def _process(self, requests: list[Request], error: ProtocolError | None, out: list[bytes]) -> None:
        """Answer ``requests`` in order (``out``: answers already due), then set the timers.

        A MAIL that a shared window must count first (issue #17) holds the rest: the answers
        so far are sent, and :meth:`_counted` continues from that MAIL when its count arrives
        (bounded by the window's own timeout). Bytes read meanwhile wait in ``_held_data``.
        """
        if requests or out:
            for i, req in enumerate(requests):
                counting = self._shared_count(req)
                if counting is not None:
                    if out:
                        self.send(b"".join(out) if len(out) > 1 else out[0])
                    self._held = (requests[i:], error)
                    counting.addCallback(self._counted)
                    return
                payload = self.answer(req)
                if payload is None:
                    error = None  # already logged and closing
                    break
                out.append(payload)
            if out:
                self.send(b"".join(out) if len(out) > 1 else out[0])
            idle = self._idle
            if idle is not None:  # None only once closing
                idle.reset(self.idle_timeout)
        if error is not None:
            self.factory.metrics.protocol_errors.inc()
            self.factory.log(ProtocolViolation(self.conn_id, str(error)))
            self.close()
        elif self.closing:
            self.close()
        elif self.parser.pending:
            self._started(bool(requests or out))
        elif self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _started(self, answered: bool) -> None:
        """A request is partly received: its deadline runs (restarted when one just completed)."""
        if self._deadline is None:
            self._deadline = self.factory.reactor.callLater(self.request_timeout, self._request_expired)
        elif answered:
            self._deadline.reset(self.request_timeout)
        if self.parser.more:  # a pipelined read: the rest after every other connection had its turn
            self._pause("pipelined_requests")
            if self._next is None and not self._output_paused:
                self._next = self.factory.reactor.callLater(0, self._next_batch)

    def _next_batch(self) -> None:
        self._next = None
        if self.closing or self._output_paused:
            return  # resumeProducing() continues
        self.dataReceived(b"")
        self._sync_reading()

    def _sync_reading(self) -> None:
        """Read while neither unsent answers nor unanswered requests are over their bound."""
        want = not (self._output_paused or self.parser.more or self.closing)
        if want != self._reading:
            self._reading = want
            if want:
                self.out.resumeProducing()
            else:
                self.out.pauseProducing()

    def _pause(self, reason: str) -> None:
        self.factory.metrics.read_pauses.labels(reason).inc()
        if reason not in self._reported:
            self._reported.add(reason)
            self.factory.log(ReadPaused(self.conn_id, reason))
        self._sync_reading()

    # -- IPushProducer: called by the transport about its write buffer -----------------------

    def pauseProducing(self) -> None:
        """Over Twisted's write buffer of answers unsent: read nothing more until it drains."""
        self._output_paused = True
        self._pause("unsent_answers")

    def resumeProducing(self) -> None:
        """Every answer has left: straight socket writes are in order again, reading resumes."""
        self._output_paused = False
        self._socket = self._handle
        if self.closing:
            return
        if self.parser.more:
            if self._next is None:
                self._next = self.factory.reactor.callLater(0, self._next_batch)
        else:
            self._sync_reading()

    def stopProducing(self) -> None:
        """The connection is gone; connectionLost() cleans up."""

    # -- timers ------------------------------------------------------------------------------

    def _idle_expired(self) -> None:
        self._idle = None
        self.factory.metrics.timeouts.labels("idle").inc()
        self.factory.log(IdleTimeout(self.conn_id, self.idle_timeout))
        self.abort()

    def _request_expired(self) -> None:
        self._deadline = None
        if self.closing:  # close(): the last answers were not read in time
            self.factory.metrics.timeouts.labels("close").inc()
            self.factory.log(CloseTimeout(self.conn_id, self.request_timeout))
        else:
            self.factory.metrics.timeouts.labels("request").inc()
            self.factory.log(RequestTimeout(self.conn_id, self.request_timeout))
        self.abort()

    # -- deciding and answering -------------------------------------------------------------------

    def _shared_count(self, req: Request) -> defer.Deferred[dict[str, int] | None] | None:
        """The shared window's count for this request, when one must come first; else None."""
        runtime = self.factory.runtime
        window = runtime.shared_window
        if window is None or req.get("protocol_state") != "MAIL":
            return None
        try:
            keys = runtime.decider.shared_rate_keys(runtime.current.engine, req, self.conn_id)
        except Exception:  # answer() decides it, and reports a failure as it does for any request
            return None
        return window.count(keys) if keys else None

    def _counted(self, counts: dict[str, int] | None) -> None:
        held, self._held = self._held, None
        if held is None or self.closing:
            return
        requests, error = held
        payload = self.answer(requests[0], shared=True, counted=counts)
        if payload is None:
            self._process([], None, [])
            return
        self._process(requests[1:], error, [payload])
        if self._held is None and self._held_data and not self.closing:
            data, self._held_data = self._held_data, b""
            self.dataReceived(data)

    def answer(self, req: Request, *, shared: bool = False, counted: dict[str, int] | None = None) -> bytes | None:
        """The wire answer for one request, or None after an internal error (we close)."""
        self.seq += 1
        f = self.factory
        runtime = f.runtime
        metrics = f.metrics if f.metered else None  # metrics off: not even the clock reads
        state = req.get("protocol_state", "")
        t0 = 0.0
        if metrics is not None:
            metrics.request(state)
            t0 = time.perf_counter()
        try:
            if shared and counted is None:  # the shared window failed: a temporary failure, never uncounted
                d = runtime.decider.window_unavailable(runtime.current.engine, req, "no answer from the window")
            else:
                d = runtime.decider.decide(runtime.current.engine, req, self.conn_id, counted=counted)
        except Exception:
            f.metrics.internal_errors.inc()
            log.failure(
                "c{conn}.{seq}: deciding {state} failed; closing without an answer (Postfix fails closed)",
                conn=self.conn_id,
                seq=self.seq,
                state=escape(state, 40),
            )
            self.closing = True
            return None
        if metrics is not None:
            metrics.latency.observe(time.perf_counter() - t0)
            if d.duplicate:
                metrics.duplicate(d.stage)
            elif d.reply is not None:
                metrics.decision(d.connector, d.stage, d.code)
        if d.notable or runtime.verbose:
            self.log_decision(req, d)
        hooks = runtime.log_hooks  # Exchange's logs (exmilter.policy.protolog, .receipts); often none
        if hooks:
            engine, session = runtime.current.engine, runtime.decider.session
            for hook in hooks:
                hook(engine, req, d, session)
        return d.payload

    def log_decision(self, req: Request, d: Decision) -> None:
        """One event per refusal, re-send or note (docs/policyd.md, Logs), with the request's
        values as they came: the text sink escapes them."""
        get = req.get
        self.factory.log(
            PolicyDecision(
                self.conn_id,
                self.seq,
                d.stage,
                d.connector,
                get("client_address", ""),
                get("sender", ""),
                get("recipient", ""),
                get("queue_id", ""),
                get("instance", ""),
                d.action,
                d.reply,
                d.note,
                d.duplicate,
            )
        )

    def send(self, data: bytes) -> None:
        """Write an answer: straight to the socket while nothing is queued, else through Twisted.

        ``transport.write`` only queues the bytes and registers for writability: the answer
        leaves on the next reactor iteration, after two ``epoll_ctl`` calls and a second
        dispatch through the reactor. Postfix waits for every answer, so that round costs
        ~15 % of the daemon's CPU per request and adds latency (docs/performance.md). An
        answer is a few dozen bytes and the socket buffer is empty between requests, so one
        non-blocking ``send`` nearly always takes all of it. The first time it does not (a
        short send, ``EAGAIN``, an error), the rest goes to ``transport.write`` and so does
        everything after, until Twisted has written all it holds (``resumeProducing`` after
        a pause): Twisted then orders the bytes, reports the error as usual, and pauses this
        connection's reading while its buffer is full. Transports without a socket (tests)
        always use ``write``.
        """
        sock = self._socket
        if sock is not None:
            try:
                sent = sock.send(data)
            except OSError:  # EAGAIN, or a broken connection: Twisted's write path handles both
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
            self._socket = None
        self.out.write(data)

    # -- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close after the answers already due; a client that does not read them within
        ``request_timeout`` is dropped (an unread buffer would hold the connection forever)."""
        self.closing = True
        self._unregister()  # else a paused producer would hold the close
        self.out.loseConnection()
        for call in (self._idle, self._next):
            if call is not None and call.active():
                call.cancel()
        self._idle = self._next = None
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.factory.reactor.callLater(self.request_timeout, self._request_expired)

    def abort(self) -> None:
        """Drop the connection now, unsent answers and all."""
        self.closing = True
        self._unregister()
        self.out.abortConnection()

    def _unregister(self) -> None:
        if self._producing:
            self._producing = False
            self.out.unregisterProducer()
