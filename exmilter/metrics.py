"""Prometheus metrics of the policy daemon, on an injected registry.

The registry is a parameter so tests build a fresh one each and nothing lands in the
process-wide default. Labels are bounded by the configuration (connector identities,
protocol states, reply codes): never an address, a sender or a message id.

With metrics disabled (``--metrics none``, ``policyd.metrics: null``) the daemon uses
:class:`NullMetrics` instead: the same interface, no registry, nothing recorded, and the
request path skips even its clock reads (it checks ``enabled``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.web.http import Request
from twisted.web.resource import Resource
from twisted.web.server import Site

#: Decisions take tens of microseconds; the buckets resolve that and still show stalls.
LATENCY_BUCKETS = (2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 1.0)

_STATES = ("CONNECT", "EHLO", "HELO", "MAIL", "RCPT", "DATA", "END-OF-MESSAGE", "VRFY", "ETRN", "OTHER")


class PolicyMetrics:
    """Every metric the daemon exports; label children are cached for the hot path."""

    enabled = True

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter("exmilter_policy_requests_total", "Policy requests received, by protocol_state.",
                                ["protocol_state"], registry=registry)
        self.duplicates = Counter("exmilter_policy_duplicate_requests_total",
                                  "Requests Postfix re-sent after a timeout, answered from memory.",
                                  ["protocol_state"], registry=registry)
        self.decisions = Counter("exmilter_policy_decisions_total",
                                 "Engine decisions, by connector identity, stage and SMTP reply code.",
                                 ["connector", "stage", "code"], registry=registry)
        self.latency = Histogram("exmilter_policy_decision_seconds", "Time to decide one policy request.",
                                 buckets=LATENCY_BUCKETS, registry=registry)
        self.connections = Gauge("exmilter_policy_connections", "Open policy connections from Postfix.",
                                 registry=registry)
        self.protocol_errors = Counter("exmilter_policy_protocol_errors_total",
                                       "Connections closed for malformed or oversized input.", registry=registry)
        self.internal_errors = Counter("exmilter_policy_internal_errors_total",
                                       "Requests left unanswered because deciding raised (Postfix fails closed).",
                                       registry=registry)
        self.reloads = Counter("exmilter_config_reloads_total", "Configuration reload attempts (SIGHUP).",
                               registry=registry)
        self.reload_failures = Counter("exmilter_config_reload_failures_total",
                                       "Reloads refused because the new file is invalid; the old one stays.",
                                       registry=registry)
        self.last_reload_ok = Gauge("exmilter_config_last_reload_successful",
                                    "1 if the last reload succeeded (or none happened), else 0.", registry=registry)
        self.generation = Gauge("exmilter_config_generation", "Number of the configuration in use (1 at start).",
                                registry=registry)
        self.info = Gauge("exmilter_config_info", "The configuration in use; always 1.",
                          ["generation", "source"], registry=registry)
        self.last_reload_ok.set(1)
        self._requests = {s: self.requests.labels(s) for s in _STATES}
        self._duplicates = {s: self.duplicates.labels(s) for s in _STATES}
        self._decisions: dict[tuple[str, str, str], Counter] = {}

    def request(self, state: str) -> None:
        self._requests.get(state, self._requests["OTHER"]).inc()

    def duplicate(self, state: str) -> None:
        self._duplicates.get(state, self._duplicates["OTHER"]).inc()

    def decision(self, connector: str, stage: str, code: str) -> None:
        key = (connector, stage, code)
        child = self._decisions.get(key)
        if child is None:
            child = self._decisions[key] = self.decisions.labels(connector or "none", stage, code)
        child.inc()

    def config_loaded(self, generation: int, source: str) -> None:
        self.generation.set(generation)
        self.info.clear()
        self.info.labels(str(generation), source).set(1)

    def reload_result(self, ok: bool) -> None:
        self.reloads.inc()
        if not ok:
            self.reload_failures.inc()
        self.last_reload_ok.set(1 if ok else 0)


class _Nothing:
    """Stands for any counter, gauge or histogram of :class:`PolicyMetrics`; records nothing."""

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

    def labels(self, *values: str) -> _Nothing:
        return self


_NOTHING = _Nothing()


class NullMetrics:
    """:class:`PolicyMetrics`'s interface with every method a no-op: metrics disabled.

    ``enabled`` is False so the request path can skip the timing around a decision too;
    ``registry`` is None, so there is nothing to serve.
    """

    enabled = False
    registry: CollectorRegistry | None = None
    requests = duplicates = decisions = latency = connections = _NOTHING
    protocol_errors = internal_errors = reloads = reload_failures = _NOTHING
    last_reload_ok = generation = info = _NOTHING

    def request(self, state: str) -> None:
        pass

    def duplicate(self, state: str) -> None:
        pass

    def decision(self, connector: str, stage: str, code: str) -> None:
        pass

    def config_loaded(self, generation: int, source: str) -> None:
        pass

    def reload_result(self, ok: bool) -> None:
        pass


#: What the daemon accepts: the real metrics or none at all.
Metrics = PolicyMetrics | NullMetrics


class MetricsPage(Resource):
    """The text exposition of one registry, rendered synchronously (it takes microseconds)."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self.registry)


class _QuietSite(Site):
    noisy = False

    def log(self, request: Request) -> None:  # a scrape every 15 s is not worth a log line
        pass


def metrics_site(registry: CollectorRegistry) -> Site:
    """A site answering the exposition on every path (``/metrics`` included)."""
    site = _QuietSite(MetricsPage(registry))
    site.displayTracebacks = False
    return site
