"""The policy daemon assembled and run: metrics, the service tree, logging, the reactor.

``exmilter policyd`` (exmilter.commands.policyd) parses the command line and calls
:func:`run`; tests build the same tree with :func:`build` on a memory reactor.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.python.failure import Failure

from exmilter.config import Loaded
from exmilter.logs.events import CoverageUnavailable, Event, Ready, StartFailed
from exmilter.logs.files import Writers
from exmilter.logs.twistedlog import start_logging, twisted_sink
from exmilter.policy.coverage import CoverageReader, CoverageReceiver
from exmilter.policy.decide import Decider
from exmilter.policy.factory import PolicyFactory
from exmilter.policy.health import HealthPage
from exmilter.policy.limits import raise_open_files_limit
from exmilter.policy.metrics import Metrics, NullMetrics, PolicyMetrics, watch_log_failures
from exmilter.policy.protolog import open_exchange_logs
from exmilter.policy.redis_window import FAILURES as WINDOW_FAILURES
from exmilter.policy.redis_window import ROUND_TRIPS as WINDOW_ROUND_TRIPS
from exmilter.policy.redis_window import RedisWindow
from exmilter.policy.reload import Runtime, log
from exmilter.policy.service import ListenService, SignalService, endpoint_errors
from exmilter.policy.watchdog import WatchdogService
from exmilter.runtime.metrics import new_registry
from exmilter.runtime.metrics_site import QuietSite, metrics_site
from exmilter.runtime.notify import READY, STOPPING, sd_notify, watchdog_interval

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


def health_site(runtime: Runtime, reactor: Any) -> QuietSite:
    """The HTTP check HAProxy polls: up, drain (last reload refused) or down (Postfix not accepting)."""
    cluster = runtime.current.org.cluster
    probe = None
    if cluster.health_probe:
        host, _, port = cluster.health_probe.rpartition(":")
        probe = (host.strip("[]"), int(port))
    page = HealthPage(reactor, lambda: runtime.last_load_ok, probe, proxy=cluster.proxy_protocol == "haproxy")
    site = QuietSite(page, reactor=reactor)
    site.displayTracebacks = False
    return site


def build(
    reactor: Any,
    runtime: Runtime,
    listen: Sequence[str],
    metrics_endpoint: str | None,
    *,
    notify: Callable[[str], Any] | None = None,
    signals: bool = True,
    watchdog: float | None = None,
) -> Daemon:
    """The service tree: the policy listeners, the metrics listener, SIGHUP; ``ready`` tells
    systemd once every listener is bound. With ``watchdog`` (seconds), systemd's watchdog is
    fed that often while the policy listener answers (exmilter.policy.watchdog)."""
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
    cluster = runtime.current.org.cluster
    if cluster.message_rate_window == "redis":  # one window for the pool (docs/cluster.md); read at start
        host, _, port = cluster.redis.rpartition(":")
        registry = runtime.metrics.registry
        if registry is not None:
            for collector in (WINDOW_FAILURES, WINDOW_ROUND_TRIPS):
                with contextlib.suppress(ValueError):  # already there: a second build on one registry
                    registry.register(collector)
        runtime.shared_window = RedisWindow(
            reactor, host.strip("[]"), int(port), timeout=cluster.redis_timeout_ms / 1000
        )
    if cluster.health:  # the balancer's check (docs/cluster.md); read at start, like the listeners
        health = ListenService(reactor, [cluster.health], health_site(runtime, reactor), "health", runtime.log)
        health.setServiceParent(top)
        waits.append(health.ready)
    if signals:
        SignalService(reactor, runtime).setServiceParent(top)
    if watchdog:
        WatchdogService(reactor, watchdog, lambda: policy.ports, tell, runtime.log).setServiceParent(top)
    ready = defer.gatherResults(waits, consumeErrors=True)

    def up(_: object) -> None:
        g = runtime.current
        runtime.log(Ready(g.number, g.source))
        tell(f"{READY}\nSTATUS=generation {g.number} from {g.source}")

    return Daemon(top, runtime, policy, metrics_service, ready.addCallback(up))


def open_coverage(path: str | None, sink: Callable[[Event], None]) -> CoverageReceiver | None:
    """The milter's coverage socket (docs/milter.md); None when not configured or not bindable:
    then this daemon judges every session itself (the milter too: stricter, never open)."""
    if not path:
        return None
    try:
        return CoverageReceiver(path)
    except OSError as e:
        sink(CoverageUnavailable(path, str(e)))
        return None


def run(
    path: str,
    loaded: Loaded,
    listen: Sequence[str],
    metrics_endpoint: str | None,
    *,
    verbose: bool = False,
    stderr: TextIO | None = None,
    log_format: str = "text",
    follow_maillog: str | None = None,
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

    start_logging(verbose, err, log_format=log_format)
    raise_open_files_limit()  # one descriptor per Postfix smtpd process (docs/policyd.md, Limits)
    metrics = choose_metrics(metrics_endpoint is not None)
    sink = twisted_sink(log)
    notify = functools.partial(sd_notify, log=sink)
    receiver = open_coverage(coverage, sink)
    if receiver is not None:
        reactor.addReader(CoverageReader(receiver))  # drained as datagrams arrive, not only on requests
    decider = Decider(coverage=receiver) if receiver is not None else None
    runtime = Runtime(path, loaded, metrics, verbose=verbose, notify=notify, log_sink=sink, decider=decider)
    writers = Writers()
    from_thread = reactor.callFromThread  # type: ignore[attr-defined]
    hooks, follower = open_exchange_logs(
        loaded.organization,
        lambda e: from_thread(sink, e),
        writers,
        follow_maillog,
        recipients=runtime.decider.accepted_recipients,
    )
    runtime.log_hooks = hooks
    watch_log_failures(metrics, writers.failures_by_log)
    if follower is not None:
        follower.start()
        reactor.addSystemEventTrigger("before", "shutdown", follower.stop.set)
    reactor.addSystemEventTrigger("after", "shutdown", writers.close)
    daemon = build(reactor, runtime, listen, metrics_endpoint, notify=notify, watchdog=watchdog_interval())
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
