"""What every policy connection shares, and reload on the reactor.

:class:`Runtime` is the daemon's :class:`~exmilter.runtime.generation.Generations` (the
generation in use, swapped in one assignment) plus what outlives a generation: the
decider's memory, the metrics, the log sink. A reload loads the file in a thread
(``deferToThread``) and swaps on the reactor thread, so a request is always decided
against one whole configuration.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.failure import Failure

from exmilter.config import ConfigError, Loaded
from exmilter.engine import Clock
from exmilter.logs.events import ConnectionCapSet, EventSink, ReloadStarted, RestartNeeded
from exmilter.logs.twistedlog import twisted_sink
from exmilter.policy.decide import Decider
from exmilter.policy.limits import ConnectionCap, connection_cap, open_files_limit
from exmilter.policy.metrics import Metrics
from exmilter.policy.protolog import LogHook
from exmilter.runtime.generation import Candidate, Generation, Generations
from exmilter.runtime.notify import READY, RELOADING

#: The policy daemon's twisted.logger: every line it writes is in this namespace.
log = Logger(namespace="exmilter.policyd")


class SharedWindow(TypingProtocol):
    """What the policy connection needs of a shared window: one MAIL's counts, or None on failure."""

    def count(self, keys: Sequence[tuple[str, int]]) -> defer.Deferred[dict[str, int] | None]: ...


#: Runs a blocking call off the reactor thread: ``deferToThread``, or at once in tests.
Blocking = Callable[..., defer.Deferred[Any]]


class Runtime(Generations):
    """The current generation, the decider state that outlives it, and reload.

    ``cap`` is the connection cap of the generation in use (computed when a generation
    comes into use, so it can never belong to another one).
    """

    def __init__(
        self,
        path: str,
        loaded: Loaded,
        metrics: Metrics,
        *,
        clock: Clock = time.monotonic,
        decider: Decider | None = None,
        run_blocking: Blocking | None = None,
        notify: Callable[[str], Any] | None = None,
        verbose: bool = False,
        fd_limit: Callable[[], int | None] = open_files_limit,
        log_sink: EventSink | None = None,
    ) -> None:
        super().__init__(path, loaded, metrics, log_sink or twisted_sink(log), clock=clock)
        self.metrics: Metrics = metrics
        self.decider = decider if decider is not None else Decider(clock)  # an empty Decider is falsy
        self.verbose = verbose
        #: Called after each decision: the protocol log's recorder and the tracking log's receipts
        #: (exmilter.policy.protolog, exmilter.policy.receipts), when their paths are set.
        self.log_hooks: tuple[LogHook, ...] = ()
        #: The cluster-wide MessageRateLimit window (exmilter.policy.redis_window), when the
        #: configuration asks for one; None: the engine's local window counts (Exchange's way).
        self.shared_window: SharedWindow | None = None
        self._run_blocking: Blocking = run_blocking or threads.deferToThread
        self._notify = notify or (lambda _msg: None)
        self._fd_limit = fd_limit
        self._reloading: defer.Deferred[bool] | None = None
        self._again = False
        self._cap_of: Generation | None = None
        self._cap = ConnectionCap(0, "")
        self._reported_cap: ConnectionCap | None = None
        self._report_cap()

    @property
    def cap(self) -> ConnectionCap:
        """How many policy connections the generation in use admits."""
        g = self.current
        if self._cap_of is not g:
            self._cap = connection_cap(g.org, self._fd_limit())
            self._cap_of = g
        return self._cap

    def _report_cap(self) -> None:
        cap = self.cap
        if cap != self._reported_cap:
            self._reported_cap = cap
            self.metrics.max_connections.set(cap.limit)
            self.log(ConnectionCapSet(cap.limit, cap.reason, cap.clamped))

    # -- reload -------------------------------------------------------------------------------

    def reload(self) -> defer.Deferred[bool]:
        """Load the file again off the reactor thread, then swap; fires with True on success.

        A reload asked for while one runs is queued once (several SIGHUPs collapse). Whatever
        happens (a bad file, an unexpected exception while swapping), the reload ends: the
        next one can run, and systemd is told ``READY=1`` again.
        """
        if self._reloading is not None:
            self._again = True
            return self._reloading
        self._notify(RELOADING)
        self.log(ReloadStarted(self.path))
        before = self.current
        d: defer.Deferred[Any] = self._run_blocking(self.build)
        d.addCallbacks(self._swap, self._refused)
        d.addErrback(self._broken, before)  # a bug in _swap or _refused: logged, not fatal
        self._reloading = d

        def done(result: bool) -> bool:
            self._reloading = None
            self._notify(READY)
            if self._again:
                self._again = False
                self.reload()
            return result

        d.addBoth(done)  # runs on success and on failure: _reloading can never stay set
        return d

    def _swap(self, candidate: Candidate) -> bool:
        old_org = self.current.org
        new_org = self.swap(candidate).org
        old, new = old_org.policyd, new_org.policyd
        if (new.listen, new.metrics) != (old.listen, old.metrics):
            self.log(RestartNeeded("policyd.listen/metrics", self.path))
        if new_org.logs != old_org.logs:  # the log writers are opened at start (docs/logs.md)
            self.log(RestartNeeded("logs", self.path))
        self._report_cap()
        return True

    def _refused(self, failure: Failure) -> bool:
        if failure.check(ConfigError):
            self.refused(failure.value.problems)
        else:
            log.failure("reload refused: unexpected error", failure)
            self.refused()
        return False

    def _broken(self, failure: Failure, before: Generation) -> bool:
        """An exception that is not a refused file (a bug): log it and keep serving."""
        log.failure("reload failed: unexpected error", failure)
        self.broken(before)
        return False
