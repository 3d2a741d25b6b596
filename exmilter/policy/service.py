"""The policy daemon on Twisted: listeners, the per-connection protocol, reload and readiness.

Protocols only frame bytes (:mod:`exmilter.policy.protocol`); the factory owns the one
:class:`Runtime`, whose ``current`` generation (engine + configuration) is swapped in a
single assignment on SIGHUP, so a request is always decided against one whole
configuration. Anything unexpected closes that connection without an answer: Postfix
then retries and finally applies its ``default_action``, a temporary failure (fail closed).

Every connection is bounded (docs/policyd.md, "Limits"): unsent answers (reading pauses
above Twisted's write buffer), work per reactor turn, time per request, idle time, and
the number of connections (refused at once above the cap).
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet import defer, threads
from twisted.internet.base import DelayedCall
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer  # type: ignore[import-untyped]  # zope.interface ships no type information

from exmilter.config import ConfigError, Loaded, load
from exmilter.engine import Clock, Engine
from exmilter.logsafe import escape
from exmilter.metrics import Metrics, metrics_site
from exmilter.model import Organization
from exmilter.policy.decide import Decider, Decision
from exmilter.policy.limits import (
    MAX_REQUESTS_PER_TURN,
    REFUSAL_LOG_INTERVAL,
    ConnectionCap,
    connection_cap,
    open_files_limit,
)
from exmilter.policy.protocol import ProtocolError, Request, RequestParser

log = Logger(namespace="exmilter.policyd")

#: Event key of a line formatted by the caller (see :func:`log_line`).
TEXT_KEY = "exmilter_text"
_TEXT_FORMAT = "{" + TEXT_KEY + "}"


def log_line(text: str, level: LogLevel = LogLevel.info) -> None:
    """Publish ``text``, already formatted, as one event of ``log``, at ``level``.

    The per-refusal path: no format string to parse at emit time and no level validation
    (``Logger.emit`` checks the level against every constant on every call). The event
    is a normal twisted.logger event: any observer can render it through ``log_format``,
    and the daemon's own observer (exmilter.commands.policyd) writes ``TEXT_KEY`` as is.
    """
    log.observer({"log_logger": log, "log_level": level, "log_namespace": log.namespace, "log_source": None,
                  "log_format": _TEXT_FORMAT, TEXT_KEY: text, "log_time": time.time()})


@dataclass(frozen=True)
class Generation:
    """One loaded configuration, the engine built from it, and its connection cap."""

    number: int
    org: Organization
    engine: Engine
    source: str
    cap: ConnectionCap


Blocking = Callable[..., defer.Deferred]


class Runtime:
    """The current generation, the decider state that outlives it, and reload."""

    def __init__(self, path: str, loaded: Loaded, metrics: Metrics, *, clock: Clock = time.monotonic,
                 decider: Decider | None = None, run_blocking: Blocking | None = None,
                 notify: Callable[[str], Any] | None = None, verbose: bool = False,
                 fd_limit: Callable[[], int | None] = open_files_limit) -> None:
        self.path = path
        self.metrics = metrics
        self.clock = clock
        self.decider = decider or Decider(clock)
        self.verbose = verbose
        self._run_blocking = run_blocking or threads.deferToThread
        self._notify = notify or (lambda _msg: None)
        self._fd_limit = fd_limit
        self._reloading: defer.Deferred | None = None
        self._again = False
        org = loaded.organization
        cap = connection_cap(org, fd_limit())
        self.current = Generation(1, org, Engine(org, clock=clock), org.source or path, cap)
        metrics.config_loaded(1, self.current.source)
        self._report_cap(cap)

    def _report_cap(self, cap: ConnectionCap) -> None:
        self.metrics.max_connections.set(cap.limit)
        (log.warn if cap.clamped else log.info)("accepting up to {n} policy connections ({why})",
                                                n=cap.limit, why=cap.reason)

    # -- reload -------------------------------------------------------------------------------

    def reload(self) -> defer.Deferred:
        """Load the file again off the reactor thread, then swap; fires with True on success.

        A reload asked for while one runs is queued once (several SIGHUPs collapse). Whatever
        happens (a bad file, an unexpected exception while swapping), the reload ends: the
        next one can run, and systemd is told ``READY=1`` again.
        """
        if self._reloading is not None:
            self._again = True
            return self._reloading
        self._notify("RELOADING=1")
        log.info("reloading {path}", path=self.path)
        before = self.current
        d: defer.Deferred[Any] = self._run_blocking(self._build, self.path, before.engine)
        d.addCallbacks(self._swap, self._refused)
        d.addErrback(self._broken, before)  # a bug in _swap or _refused: logged, not fatal
        self._reloading = d

        def done(result: object) -> object:
            self._reloading = None
            self._notify("READY=1")
            if self._again:
                self._again = False
                self.reload()
            return result

        d.addBoth(done)  # runs on success and on failure: _reloading can never stay set
        return d

    def _build(self, path: str, old: Engine) -> tuple[Loaded, Engine, ConnectionCap]:
        loaded = load(path)
        # The message-rate windows belong to the clients, not to the file: keep them.
        engine = Engine(loaded.organization, clock=self.clock, rate_limiter=old.rate_limiter)
        return loaded, engine, connection_cap(loaded.organization, self._fd_limit())

    def _swap(self, result: tuple[Loaded, Engine, ConnectionCap]) -> bool:
        loaded, engine, cap = result
        for w in loaded.warnings:
            log.warn("{problem}", problem=str(w))
        old = self.current
        org = loaded.organization
        new = Generation(old.number + 1, org, engine, org.source or self.path, cap)
        # The atomic swap: requests read self.current once each. Everything above may fail
        # and leaves the old generation in place; below is only reporting.
        self.current = new
        self.metrics.reload_result(True)
        self.metrics.config_loaded(new.number, new.source)
        if (org.policyd.listen, org.policyd.metrics) != (old.org.policyd.listen, old.org.policyd.metrics):
            log.warn("policyd.listen/metrics changed in {path}: restart the daemon to apply", path=self.path)
        log.info("configuration generation {n} loaded from {path} ({count} receive connectors)",
                 n=new.number, path=self.path, count=len(org.receive_connectors))
        if cap != old.cap:
            self._report_cap(cap)
        return True

    def _refused(self, failure: Failure) -> bool:
        self.metrics.reload_result(False)
        if failure.check(ConfigError):
            for p in failure.value.problems:
                log.error("reload refused: {problem}", problem=str(p))
        else:
            log.failure("reload refused: unexpected error", failure)
        log.error("keeping configuration generation {n}", n=self.current.number)
        return False

    def _broken(self, failure: Failure, before: Generation) -> bool:
        """An exception that is not a refused file (a bug): log it and keep serving."""
        log.failure("reload failed: unexpected error", failure)
        self.metrics.reload_result(False)
        if self.current is before:
            log.error("keeping configuration generation {n}", n=before.number)
        else:  # the swap happened, the reporting after it failed
            log.error("configuration generation {n} is in use", n=self.current.number)
        return False


@implementer(IPushProducer)
class PolicyProtocol(Protocol):
    """One Postfix policy client connection: parse, decide, answer; close on anything odd.

    The protocol is its transport's streaming producer: when more than Twisted's write
    buffer (64 KiB, exmilter.policy.limits.OUTPUT_BUFFER) of answers is unsent, the
    transport calls :meth:`pauseProducing` and we stop reading from that connection until
    it is drained. A read holding more than ``MAX_REQUESTS_PER_TURN`` requests is answered
    a batch per reactor turn, reading paused meanwhile. Two timers: ``idle_timeout`` from
    the last answer (bytes alone do not restart it), and ``request_timeout`` from the first
    byte of a request to its last.
    """

    def __init__(self, factory: PolicyFactory, conn_id: int) -> None:
        self.factory = factory
        self.conn_id = conn_id
        self.seq = 0
        self.closing = False
        policyd = factory.runtime.current.org.policyd
        self.parser = RequestParser(policyd.max_line_length, policyd.max_attributes, MAX_REQUESTS_PER_TURN)
        self.idle_timeout = float(policyd.idle_timeout)
        self.request_timeout = float(policyd.request_timeout)
        self._socket: socket.socket | None = None  # see send()
        self._handle: socket.socket | None = None
        self._idle: DelayedCall | None = None
        self._deadline: DelayedCall | None = None  # request_timeout while a request is partly read, or closing
        self._next: DelayedCall | None = None  # the next batch of a pipelined read
        self._output_paused = False  # the transport holds more unsent answers than its buffer size
        self._reading = True
        self._producing = False  # registered as the transport's producer
        self._reported: set[str] = set()  # read-pause reasons already logged on this connection

    def connectionMade(self) -> None:
        f = self.factory
        f.opened()
        self._idle = f.reactor.callLater(self.idle_timeout, self._idle_expired)
        get_handle = getattr(self.transport, "getHandle", None)
        handle = get_handle() if get_handle is not None else None
        self._socket = self._handle = handle if isinstance(handle, socket.socket) else None
        self.transport.registerProducer(self, True)
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
        parser = self.parser
        error: ProtocolError | None = None
        try:
            requests = parser.feed(data)
        except ProtocolError as e:
            requests, error = e.complete, e
        if requests:
            out = []
            for req in requests:
                payload = self.answer(req)
                if payload is None:
                    error = None  # already logged and closing
                    break
                out.append(payload)
            if out:
                self.send(b"".join(out) if len(out) > 1 else out[0])
            self._idle.reset(self.idle_timeout)  # type: ignore[union-attr]  # set from connectionMade until closing
        if error is not None:
            self.factory.metrics.protocol_errors.inc()
            log_line(f"c{self.conn_id}: {escape(str(error))}; closing the connection", LogLevel.warn)
            self.close()
        elif self.closing:
            self.close()
        elif parser.pending:
            self._started(bool(requests))
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
                self.transport.resumeProducing()
            else:
                self.transport.pauseProducing()

    def _pause(self, reason: str) -> None:
        self.factory.metrics.read_pauses.labels(reason).inc()
        if reason not in self._reported:
            self._reported.add(reason)
            why = ("the client is not reading its answers (over 64 KiB unsent): reading paused until it does"
                   if reason == "unsent_answers" else
                   f"more than {MAX_REQUESTS_PER_TURN} requests in one read: answered {MAX_REQUESTS_PER_TURN} "
                   "per reactor turn, reading paused meanwhile")
            log_line(f"c{self.conn_id}: {why}", LogLevel.info)
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
        log.info("c{conn}: no request for {t:.0f}s, closing", conn=self.conn_id, t=self.idle_timeout)
        self.abort()

    def _request_expired(self) -> None:
        self._deadline = None
        if self.closing:  # close(): the last answers were not read in time
            self.factory.metrics.timeouts.labels("close").inc()
            log_line(f"c{self.conn_id}: the client did not read the last answers within "
                     f"{self.request_timeout:.0f}s of closing; dropping the connection", LogLevel.warn)
        else:
            self.factory.metrics.timeouts.labels("request").inc()
            log_line(f"c{self.conn_id}: request incomplete after {self.request_timeout:.0f}s; closing", LogLevel.warn)
        self.abort()

    # -- deciding and answering -------------------------------------------------------------------

    def answer(self, req: Request) -> bytes | None:
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
            d = runtime.decider.decide(runtime.current.engine, req, self.conn_id)
        except Exception:
            f.metrics.internal_errors.inc()
            log.failure("c{conn}.{seq}: deciding {state} failed; closing without an answer (Postfix fails closed)",
                        conn=self.conn_id, seq=self.seq, state=escape(state, 40))
            self.closing = True
            return None
        if metrics is not None:
            metrics.latency.observe(time.perf_counter() - t0)
            if d.duplicate:
                metrics.duplicate(d.stage)
            elif d.reply is not None:
                metrics.decision(d.connector, d.stage, d.code)
        if d.note or runtime.verbose or (d.reply is not None and not d.reply.accepted) or d.duplicate:
            self.log_decision(req, d)
        return d.payload

    def log_decision(self, req: Request, d: Decision) -> None:
        """One line per refusal, re-send or note (docs/policyd.md, Logs), formatted once here.

        Every value the client chose is escaped (exmilter.logsafe): no control character,
        newline or escape sequence from a request reaches the log.
        """
        log_line(f"c{self.conn_id}.{self.seq} {d.stage} client={escape(req.get('client_address', ''))} "
                 f"connector={d.connector or '-'!r} from=<{escape(req.get('sender', ''))}> "
                 f"to=<{escape(req.get('recipient', ''))}>: "
                 f"{d.action}{' (re-sent request, same answer)' if d.duplicate else ''}"
                 f"{f' ({escape(d.note, 400)})' if d.note else ''}")

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
        self.transport.write(data)

    # -- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close after the answers already due; a client that does not read them within
        ``request_timeout`` is dropped (an unread buffer would hold the connection forever)."""
        self.closing = True
        self._unregister()  # else a paused producer would hold the close
        self.transport.loseConnection()
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
        self.transport.abortConnection()

    def _unregister(self) -> None:
        if self._producing:
            self._producing = False
            self.transport.unregisterProducer()


class PolicyFactory(Factory):
    """Builds a protocol per connection while fewer than the generation's cap are open."""

    noisy = False

    def __init__(self, runtime: Runtime, reactor: Any) -> None:
        self.runtime = runtime
        self.metrics = runtime.metrics
        self.metered = runtime.metrics.enabled
        self.reactor = reactor
        self.open = 0
        self._ids = itertools.count(1)
        self._refused = 0  # refusals not yet in a log line
        self._refusal_line: DelayedCall | None = None

    def buildProtocol(self, addr: Any) -> PolicyProtocol | None:
        """None above the cap: Twisted closes the new socket at once. Postfix sees the
        connection closed, retries, then applies its default_action (451 4.3.5)."""
        cap = self.runtime.current.cap
        if self.open >= cap.limit:
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
        cap = self.runtime.current.cap
        self._refusal_line = self.reactor.callLater(REFUSAL_LOG_INTERVAL, self._refusals_later)
        log.warn("refused {n} policy connection(s): {open} open, the limit is {limit} ({why}); "
                 "Postfix retries, then answers its default_action (451 4.3.5)",
                 n=self._refused, open=self.open, limit=cap.limit, why=cap.reason)
        self._refused = 0

    def stopFactory(self) -> None:
        if self._refusal_line is not None and self._refusal_line.active():
            self._refusal_line.cancel()
        self._refusal_line = None


# -- listeners ----------------------------------------------------------------------------------


def split_group(description: str) -> tuple[str, str | None]:
    """Strip our ``group=NAME`` option from a ``unix:`` endpoint (Twisted has none)."""
    if not description.startswith("unix:"):
        return description, None
    parts = description.split(":")
    group = next((p[6:] for p in parts if p.startswith("group=")), None)
    return ":".join(p for p in parts if not p.startswith("group=")), group


class ListenService(Service):
    """Listens on every endpoint string; ``ready`` fires once all are bound."""

    def __init__(self, reactor: Any, descriptions: Sequence[str], factory: Factory, what: str) -> None:
        self.reactor = reactor
        self.descriptions = tuple(descriptions)
        self.factory = factory
        self.what = what
        self.ports: list[IListeningPort] = []
        self.ready: defer.Deferred = defer.Deferred()

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
        log.info("{what} listening on {where}", what=self.what, where=description)
        return port

    def stopService(self) -> defer.Deferred:
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

    def _hup(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.runtime.reload)

    def stopService(self) -> None:
        super().stopService()
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)


def sd_notify(message: str, environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Tell systemd (``Type=notify``) about our state; a no-op outside systemd."""
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall(message.encode())
    except OSError as e:
        log.warn("cannot notify systemd at {address}: {error}", address=address, error=str(e))
        return False
    return True


@dataclass
class Daemon:
    """The assembled service tree and the pieces tests and the command need."""

    top: MultiService
    runtime: Runtime
    policy: ListenService
    metrics: ListenService | None
    ready: defer.Deferred


def build(reactor: Any, runtime: Runtime, listen: Sequence[str], metrics_endpoint: str | None, *,
          notify: Callable[[str], Any] = sd_notify, signals: bool = True) -> Daemon:
    top = MultiService()
    policy = ListenService(reactor, listen, PolicyFactory(runtime, reactor), "policy service")
    policy.setServiceParent(top)
    waits = [policy.ready]
    metrics_service = None
    if metrics_endpoint:
        registry = runtime.metrics.registry
        if registry is None:
            raise ValueError(f"metrics endpoint {metrics_endpoint!r} given, but metrics are disabled")
        metrics_service = ListenService(reactor, [metrics_endpoint], metrics_site(registry), "metrics")
        metrics_service.setServiceParent(top)
        waits.append(metrics_service.ready)
    if signals:
        SignalService(reactor, runtime).setServiceParent(top)
    ready = defer.gatherResults(waits, consumeErrors=True)

    def up(_: object) -> None:
        g = runtime.current
        log.info("ready: configuration generation {n} from {path}", n=g.number, path=g.source)
        notify(f"READY=1\nSTATUS=generation {g.number} from {g.source}")

    ready.addCallback(up)
    return Daemon(top, runtime, policy, metrics_service, ready)
