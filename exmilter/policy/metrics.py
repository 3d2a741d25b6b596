"""Prometheus metrics of the policy daemon, on an injected registry.

The registry is a parameter so tests build a fresh one each and nothing lands in the
process-wide default. Labels are bounded by the configuration (connector identities,
protocol states, reply codes): never an address, a sender or a message id. The
configuration metrics every daemon has come from :class:`exmilter.runtime.metrics.ConfigMetrics`.

Single-threaded by design: the per-request counts are plain numbers, updated without a
lock, which is right only because requests and scrapes both run on the reactor thread.
A threaded daemon uses prometheus_client's own (locked) types instead.

With metrics disabled (``--metrics none``, ``policyd.metrics: null``) the daemon uses
:class:`NullMetrics` instead: the same interface, no registry, nothing recorded, and the
request path skips even its clock reads (it checks ``enabled``).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exmilter.policy.protocol import OTHER_STATE, PROTOCOL_STATES
from exmilter.runtime.metrics import NOTHING, ConfigMetrics, LogWriteFailures, NullConfigMetrics

#: Decisions take tens of microseconds; the buckets resolve that and still show stalls.
LATENCY_BUCKETS = (2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 1.0)

_STATES = (*PROTOCOL_STATES, OTHER_STATE)

#: ``exmilter_policy_timeouts_total{kind}``: which deadline closed a connection.
TIMEOUT_KINDS = ("request", "idle", "close")
#: ``exmilter_policy_read_pauses_total{reason}``: why reading from a connection paused.
PAUSE_REASONS = ("unsent_answers", "pipelined_requests")


class LatencyHistogram:
    """A histogram of plain numbers, observed on the request path, exported at scrape time.

    prometheus_client's ``Histogram.observe`` takes a lock and walks the buckets; this is
    one bisection and two additions. The daemon is single-threaded (requests and scrapes
    both run on the reactor), so nothing needs a lock.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        """Count ``amount`` (seconds); named as prometheus_client's ``Histogram.observe`` names it."""
        self.counts[bisect_left(self.bounds, amount)] += 1  # le is inclusive: v == bound counts there
        self.sum += amount

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append((floatToGoString(bound), total))
        return out


class _RequestCollector(Collector):
    """Exports the per-request counts of :class:`PolicyMetrics` when the registry is scraped."""

    def __init__(self, metrics: PolicyMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._m
        for name, doc, counts in (
            ("exmilter_policy_requests", "Policy requests received, by stage (Postfix's protocol_state).", m._requests),
            (
                "exmilter_policy_duplicate_requests",
                "Requests Postfix re-sent after a timeout, answered from memory.",
                m._duplicates,
            ),
        ):
            # "stage", as on every metric with this dimension (exmilter_policy_decisions_total too)
            by_state = CounterMetricFamily(name, doc, labels=["stage"])
            for state, n in counts.items():
                by_state.add_metric([state], n)
            yield by_state
        decisions = CounterMetricFamily(
            "exmilter_policy_decisions",
            "Engine decisions, by connector identity, stage and SMTP reply code.",
            labels=["connector", "stage", "code"],
        )
        for (connector, stage, code), n in m._decisions.items():
            decisions.add_metric([connector or "none", stage, code], n)
        yield decisions
        latency = HistogramMetricFamily("exmilter_policy_decision_seconds", "Time to decide one policy request.")
        latency.add_metric([], m.latency.cumulative(), sum_value=m.latency.sum)
        yield latency


class PolicyMetrics(ConfigMetrics):
    """Every metric the daemon exports.

    What changes per request (requests, re-sends, decisions, decision time) is counted in
    plain integers and turned into metric families only when the registry is scraped (:class:`_RequestCollector`):
    ~1 µs per request where prometheus_client's labelled counters and histogram cost ~8 µs
    (docs/performance.md). The rest (connections, limits, reloads, configuration) changes
    rarely and uses prometheus_client's own types.
    """

    def __init__(self, registry: CollectorRegistry, *, wall: Callable[[], float] = time.time) -> None:
        super().__init__(registry, wall=wall)
        self._requests: dict[str, int] = dict.fromkeys(_STATES, 0)
        self._duplicates: dict[str, int] = dict.fromkeys(_STATES, 0)
        self._decisions: dict[tuple[str, str, str], int] = {}
        self.latency = LatencyHistogram(LATENCY_BUCKETS)
        registry.register(_RequestCollector(self))
        self.connections = Gauge(
            "exmilter_policy_connections", "Open policy connections from Postfix.", registry=registry
        )
        self.protocol_errors = Counter(
            "exmilter_policy_protocol_errors_total",
            "Connections closed for malformed or oversized input.",
            registry=registry,
        )
        self.internal_errors = Counter(
            "exmilter_policy_internal_errors_total",
            "Requests left unanswered because deciding raised (Postfix fails closed).",
            registry=registry,
        )
        self.max_connections = Gauge(
            "exmilter_policy_max_connections",
            "Open policy connections admitted (policyd.max_connections, or auto).",
            registry=registry,
        )
        self.refused_connections = Counter(
            "exmilter_policy_refused_connections_total",
            "Connections closed at once because max_connections were open (Postfix retries, then fails closed).",
            registry=registry,
        )
        self.timeouts = Counter(
            "exmilter_policy_timeouts_total",
            "Connections closed by a deadline: request (a request not complete within request_timeout), idle "
            "(no request for idle_timeout), close (the last answers not read within request_timeout of closing).",
            ["kind"],
            registry=registry,
        )
        self.read_pauses = Counter(
            "exmilter_policy_read_pauses_total",
            "Times reading from a connection paused: unsent_answers (over 64 KiB of answers not read by the "
            "client), pipelined_requests (more requests at once than are answered per turn).",
            ["reason"],
            registry=registry,
        )
        for kind in TIMEOUT_KINDS:
            self.timeouts.labels(kind)
        for reason in PAUSE_REASONS:
            self.read_pauses.labels(reason)

    def request(self, state: str) -> None:
        if state not in self._requests:
            state = OTHER_STATE
        self._requests[state] += 1

    def duplicate(self, state: str) -> None:
        if state not in self._duplicates:
            state = OTHER_STATE
        self._duplicates[state] += 1

    def decision(self, connector: str, stage: str, code: str) -> None:
        key = (connector, stage, code)
        self._decisions[key] = self._decisions.get(key, 0) + 1


class NullMetrics(NullConfigMetrics):
    """:class:`PolicyMetrics`'s interface with every method a no-op: metrics disabled.

    ``enabled`` is False so the request path can skip the timing around a decision too;
    ``registry`` is None, so there is nothing to serve.
    """

    latency = connections = protocol_errors = internal_errors = NOTHING
    max_connections = refused_connections = timeouts = read_pauses = NOTHING

    def request(self, state: str) -> None:
        pass

    def duplicate(self, state: str) -> None:
        pass

    def decision(self, connector: str, stage: str, code: str) -> None:
        pass


#: What the daemon accepts: the real metrics or none at all.
Metrics = PolicyMetrics | NullMetrics


def watch_log_failures(metrics: Metrics, count: Callable[[], dict[str, int]]) -> None:
    """Export ``exmilter_policy_log_write_failures_total{log}``: rows of Exchange's logs lost
    (unwritable directory, full disk, writer behind), read from the writers at scrape time.
    Nothing when metrics are off."""
    if metrics.registry is not None:
        metrics.registry.register(LogWriteFailures("exmilter_policy_log_write_failures", count))
