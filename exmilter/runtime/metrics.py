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

from typing import Protocol

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest


class ReloadMetrics(Protocol):
    """What configuration generations report (exmilter.runtime.generation)."""

    def config_loaded(self, generation: int, source: str) -> None: ...

    def reload_result(self, ok: bool) -> None: ...


def new_registry() -> CollectorRegistry:
    """A fresh registry for a daemon's metrics, without the ``*_created`` series."""
    if hasattr(prometheus_client, "disable_created_metrics"):  # 0.17+; Debian 12 ships 0.16
        prometheus_client.disable_created_metrics()  # they double the output and say nothing here
    return CollectorRegistry()


class ConfigMetrics:
    """``exmilter_config_*``: reloads, their failures, the generation in use. Every daemon has them."""

    enabled = True

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
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
        self.generation = Gauge(
            "exmilter_config_generation", "Number of the configuration in use (1 at start).", registry=registry
        )
        self.info = Gauge(
            "exmilter_config_info", "The configuration in use; always 1.", ["generation", "source"], registry=registry
        )
        self.last_reload_ok.set(1)

    def config_loaded(self, generation: int, source: str) -> None:
        self.generation.set(generation)
        self.info.clear()
        self.info.labels(str(generation), source).set(1)

    def reload_result(self, ok: bool) -> None:
        self.reloads.inc()
        if not ok:
            self.reload_failures.inc()
        self.last_reload_ok.set(1 if ok else 0)


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

    def config_loaded(self, generation: int, source: str) -> None:
        pass

    def reload_result(self, ok: bool) -> None:
        pass


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The text exposition of ``registry`` and its content type; it takes microseconds."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
