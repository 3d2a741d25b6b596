"""``exmilter_milter_*`` and ``exmilter_config_*``: prometheus_client's own metrics, which are
thread-safe (libmilter calls back on many threads). Label names as the policy daemon's:
``connector`` (identity), ``stage``, ``code``."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from exmilter.runtime.metrics import ConfigMetrics, LogWriteFailures


class MilterMetrics(ConfigMetrics):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.decisions = Counter(
            "exmilter_milter_decisions_total",
            "Verdicts by stage and reply code ('continue' for an accepted command, 250 for a message stamped).",
            ["connector", "stage", "code"],
            registry=registry,
        )
        self.errors = Counter(
            "exmilter_milter_callback_errors_total",
            "Callbacks that raised: the session got a temporary failure.",
            ["stage"],
            registry=registry,
        )
        self.sessions = Gauge("exmilter_milter_sessions", "Open SMTP sessions.", registry=registry)
        self.unplaced = Counter(
            "exmilter_milter_unplaced_sessions_total",
            "Sessions whose {daemon_name} is not a listener context (temporary failure at MAIL).",
            registry=registry,
        )
        self.coverage_failures = Counter(
            "exmilter_milter_coverage_send_failures_total",
            "Registrations the policy daemon did not take (it then judges those sessions too).",
            registry=registry,
        )

    def watch_log_failures(self, count: Callable[[], dict[str, int]]) -> None:
        """``exmilter_milter_log_write_failures_total{log}``: the rows of Exchange's logs the
        milter lost, read from ``count`` at scrape time (exmilter.logs.files.Writers)."""
        self.registry.register(LogWriteFailures("exmilter_milter_log_write_failures", count))
