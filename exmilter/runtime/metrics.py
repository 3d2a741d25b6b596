"""What every daemon's metrics share: the registry, the configuration metrics, the exposition.

Registries are injected (tests build a fresh one each; nothing lands in prometheus_client's
process-wide default). The ``exmilter_config_*`` metrics use prometheus_client's own
Counter and Gauge, which are thread-safe: the threaded milter can update them from any
thread. (The policy daemon's per-request counters are plain numbers instead, safe only
because that daemon has one thread: exmilter.policy.metrics.)

No Twisted here: the policy daemon serves :func:`exposition` with Twisted web
(:mod:`exmilter.runtime.metrics_site`), a threaded daemon can serve it from a standard
library HTTP server thread.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator
from typing import Protocol

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector


class ReloadMetrics(Protocol):
    """What configuration generations report (exmilter.runtime.generation)."""

    def config_loaded(self, generation: int, source: str, *, fingerprint: str = "") -> None: ...

    def reload_result(self, ok: bool) -> None: ...


def new_registry() -> CollectorRegistry:
    """A fresh registry for a daemon's metrics, without the ``*_created`` series."""
    if hasattr(prometheus_client, "disable_created_metrics"):  # 0.17+; Debian 12 ships 0.16
        prometheus_client.disable_created_metrics()  # they double the output and say nothing here
    return CollectorRegistry()


class ConfigMetrics:
    """What every daemon exports besides its own work: the process (``process_*``: CPU, memory,
    open descriptors and their limit, start time), the build (``exmilter_build_info``) and the
    configuration (``exmilter_config_*``: reloads, their result and time, the file in use).

    Series are stable: ``exmilter_config_info`` is labelled with the file and its fingerprint,
    never with the generation number, so a reload of the same file adds no series.
    ``wall`` is the wall clock the timestamps are read from (injected by tests).
    """

    enabled = True

    def __init__(self, registry: CollectorRegistry, *, wall: Callable[[], float] = time.time) -> None:
        from exmilter import __version__

        self.registry = registry
        self._wall = wall
        # process_cpu_seconds_total, process_open_fds, process_max_fds, process_resident_memory_bytes, ...
        ProcessCollector(registry=registry)
        self.build_info = Gauge(
            "exmilter_build_info",
            "The running exmilter: its version and Python's; always 1.",
            ["version", "python_version"],
            registry=registry,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.reloads = Counter(
            "exmilter_config_reloads_total", "Configuration reload attempts (SIGHUP).", registry=registry
        )
        self.reload_failures = Counter(
            "exmilter_config_reload_failures_total",
            "Reloads refused because the new file is invalid; the old one stays.",
            registry=registry,
        )
        self.last_reload_ok = Gauge(
            "exmilter_config_last_reload_successful",
            "1 if the last reload succeeded (or none happened), else 0.",
            registry=registry,
        )
        self.last_reload_time = Gauge(
            "exmilter_config_last_reload_timestamp_seconds",
            "When the last reload attempt ended, successful or not (Unix time; 0: none yet).",
            registry=registry,
        )
        self.loaded_time = Gauge(
            "exmilter_config_last_reload_success_timestamp_seconds",
            "When the configuration in use was loaded: at start or by the last successful reload (Unix time).",
            registry=registry,
        )
        self.generation = Gauge(
            "exmilter_config_generation", "Number of the configuration in use (1 at start).", registry=registry
        )
        self.info = Gauge(
            "exmilter_config_info",
            "The configuration in use: its file and the fingerprint of its contents; always 1.",
            ["source", "fingerprint"],
            registry=registry,
        )
        self.last_reload_ok.set(1)

    def config_loaded(self, generation: int, source: str, *, fingerprint: str = "") -> None:
        self.generation.set(generation)
        self.loaded_time.set(self._wall())
        self.info.clear()
        self.info.labels(source, fingerprint).set(1)

    def reload_result(self, ok: bool) -> None:
        self.reloads.inc()
        if not ok:
            self.reload_failures.inc()
        self.last_reload_ok.set(1 if ok else 0)
        self.last_reload_time.set(self._wall())


class Nothing:
    """Stands for any counter, gauge or histogram when metrics are off; records nothing."""

    __slots__ = ()

    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass

    def clear(self) -> None:
        pass

    def labels(self, *values: str) -> Nothing:
        return self


NOTHING = Nothing()


class NullConfigMetrics:
    """:class:`ConfigMetrics`'s interface with every method a no-op: metrics disabled.

    ``enabled`` is False so a caller can skip work done only for metrics (timing);
    ``registry`` is None, so there is nothing to serve.
    """

    enabled = False
    registry: CollectorRegistry | None = None
    reloads = reload_failures = last_reload_ok = generation = info = NOTHING
    build_info = last_reload_time = loaded_time = NOTHING

    def config_loaded(self, generation: int, source: str, *, fingerprint: str = "") -> None:
        pass

    def reload_result(self, ok: bool) -> None:
        pass


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The text exposition of ``registry`` and its content type; it takes microseconds."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


class LogWriteFailures(Collector):
    """``<name>_total{log}``: rows of Exchange's protocol/tracking logs a daemon lost, read
    from its writers (``count``: ``{"protocol": n, "tracking": n}``) at scrape time."""

    def __init__(self, name: str, count: Callable[[], dict[str, int]]) -> None:
        self._name = name
        self._count = count

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            self._name,
            "Rows of Exchange's protocol/tracking logs that could not be written (the mail was not held up).",
            labels=["log"],
        )
        for log, n in self._count().items():
            family.add_metric([log], n)
        yield family
