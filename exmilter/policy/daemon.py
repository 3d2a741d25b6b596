"""The policy daemon assembled and run: metrics, the service tree, logging, the reactor.

``exmilter policyd`` (exmilter.commands.policyd) parses the command line and calls
:func:`run`; tests build the same tree with :func:`build` on a memory reactor.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.python.failure import Failure

from exmilter.config import Loaded
from exmilter.logs.events import Ready, StartFailed
from exmilter.logs.twistedlog import start_logging, twisted_sink
from exmilter.policy.coverage import CoverageReader, CoverageReceiver
from exmilter.policy.decide import Decider
from exmilter.policy.factory import PolicyFactory
from exmilter.policy.limits import raise_open_files_limit
from exmilter.policy.metrics import Metrics, NullMetrics, PolicyMetrics
from exmilter.policy.reload import Runtime, log
from exmilter.policy.service import ListenService, SignalService, endpoint_errors
from exmilter.runtime.metrics import new_registry
from exmilter.runtime.metrics_site import metrics_site
from exmilter.runtime.notify import READY, STOPPING, sd_notify

#: Exit statuses of :func:`run` (docs/commands.md): stopped by SIGTERM, could not start,
#: refused before starting (an endpoint that does not parse).
EXIT_OK, EXIT_START_FAILED, EXIT_REFUSED = 0, 1, 2


def choose_metrics(enabled: bool) -> Metrics:
    """The daemon's metrics: Prometheus on a fresh registry, or :class:`NullMetrics` (no cost)."""
    return PolicyMetrics(new_registry()) if enabled else NullMetrics()


@dataclass
class Daemon:
    """The assembled service tree and the pieces tests and the command need."""

    top: MultiService
    runtime: Runtime
    policy: ListenService
    metrics: ListenService | None
    ready: defer.Deferred[None]


def build(
    reactor: Any,
    runtime: Runtime,
    listen: Sequence[str],
    metrics_endpoint: str | None,
    *,
    notify: Callable[[str], Any] | None = None,
    signals: bool = True,
) -> Daemon:
    """The service tree: the policy listeners, the metrics listener, SIGHUP; ``ready`` tells
    systemd once every listener is bound."""
    tell = notify or functools.partial(sd_notify, log=runtime.log)
    top = MultiService()
    policy = ListenService(reactor, listen, PolicyFactory(runtime, reactor), "policy service", runtime.log)
    policy.setServiceParent(top)
    waits = [policy.ready]
    metrics_service = None
    if metrics_endpoint:
        registry = runtime.metrics.registry
        if registry is None:
            raise ValueError(f"metrics endpoint {metrics_endpoint!r} given, but metrics are disabled")
        metrics_service = ListenService(
            reactor, [metrics_endpoint], metrics_site(registry, reactor), "metrics", runtime.log
        )
        metrics_service.setServiceParent(top)
        waits.append(metrics_service.ready)
    if signals:
        SignalService(reactor, runtime).setServiceParent(top)
    ready = defer.gatherResults(waits, consumeErrors=True)

    def up(_: object) -> None:
        g = runtime.current
        runtime.log(Ready(g.number, g.source))
        tell(f"{READY}\nSTATUS=generation {g.number} from {g.source}")

    return Daemon(top, runtime, policy, metrics_service, ready.addCallback(up))


def open_coverage(path: str | None, err: TextIO) -> CoverageReceiver | None:
    """The milter's coverage socket (docs/milter.md); None when not configured or not bindable:
    then this daemon judges every session itself (the milter too: stricter, never open)."""
    if not path:
        return None
    try:
        return CoverageReceiver(path)
    except OSError as e:
        print(f"exmilter policyd: coverage socket {path}: {e}; judging every session here", file=err)
        return None


def run(
    path: str,
    loaded: Loaded,
    listen: Sequence[str],
    metrics_endpoint: str | None,
    *,
    verbose: bool = False,
    stderr: TextIO | None = None,
    coverage: str | None = None,
) -> int:
    """Serve until SIGTERM; the exit status. Endpoints that do not parse are reported on
    ``stderr`` before anything starts (:data:`EXIT_REFUSED`); a listener that cannot bind
    is logged and ends the daemon (:data:`EXIT_START_FAILED`)."""
    from twisted.internet import reactor

    err = stderr or sys.stderr
    errors = endpoint_errors(reactor, [*listen, *([metrics_endpoint] if metrics_endpoint else [])])
    if errors:
        for e in errors:
            print(e, file=err)
        return EXIT_REFUSED

    start_logging(verbose, err)
    raise_open_files_limit()  # one descriptor per Postfix smtpd process (docs/policyd.md, Limits)
    metrics = choose_metrics(metrics_endpoint is not None)
    sink = twisted_sink(log)
    notify = functools.partial(sd_notify, log=sink)
    receiver = open_coverage(coverage, err)
    if receiver is not None:
        reactor.addReader(CoverageReader(receiver))  # drained as datagrams arrive, not only on requests
    decider = Decider(coverage=receiver) if receiver is not None else None
    runtime = Runtime(path, loaded, metrics, verbose=verbose, notify=notify, log_sink=sink, decider=decider)
    daemon = build(reactor, runtime, listen, metrics_endpoint, notify=notify)
    status = {"code": EXIT_OK}

    def failed(failure: Failure) -> None:
        while isinstance(failure.value, defer.FirstError):  # gatherResults nests the listener's failure
            failure = failure.value.subFailure
        runtime.log(StartFailed(failure.getErrorMessage()))
        status["code"] = EXIT_START_FAILED
        reactor.stop()

    def stopping() -> Any:
        notify(STOPPING)
        return daemon.top.stopService()

    daemon.ready.addErrback(failed)
    reactor.callWhenRunning(daemon.top.startService)
    reactor.addSystemEventTrigger("before", "shutdown", stopping)
    reactor.run()
    return status["code"]
