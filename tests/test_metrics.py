"""Metrics (exmilter.metrics) on a fresh registry per test: names, labels, exposition."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from twisted.web.test.requesthelper import DummyRequest

from exmilter.metrics import LATENCY_BUCKETS, MetricsPage, NullMetrics, PolicyMetrics, metrics_site


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def m(registry) -> PolicyMetrics:
    return PolicyMetrics(registry)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_requests_by_state_with_unknown_states_folded(registry, m):
    m.request("RCPT")
    m.request("RCPT")
    m.request("SOMETHING-NEW")
    assert value(registry, "exmilter_policy_requests_total", protocol_state="RCPT") == 2
    assert value(registry, "exmilter_policy_requests_total", protocol_state="OTHER") == 1
    assert value(registry, "exmilter_policy_requests_total", protocol_state="SOMETHING-NEW") is None


def test_decisions_by_connector_stage_code(registry, m):
    m.decision("EXCH01\\Relay", "RCPT", "250")
    m.decision("EXCH01\\Relay", "RCPT", "250")
    m.decision("", "CONNECT", "421")
    assert value(registry, "exmilter_policy_decisions_total", connector="EXCH01\\Relay", stage="RCPT",
                 code="250") == 2
    assert value(registry, "exmilter_policy_decisions_total", connector="none", stage="CONNECT", code="421") == 1


def test_latency_buckets_are_sub_millisecond(registry, m):
    assert sum(1 for b in LATENCY_BUCKETS if b < 1e-3) >= 4
    m.latency.observe(4e-5)
    assert value(registry, "exmilter_policy_decision_seconds_bucket", le="5e-05") == 1
    assert value(registry, "exmilter_policy_decision_seconds_count") == 1


@pytest.mark.parametrize(
    ("seconds", "first_le"),
    [(1e-6, "2.5e-05"), (2.5e-5, "2.5e-05"), (2.6e-5, "5e-05"), (1.0, "1.0"), (7.0, "+Inf")],
)
def test_latency_is_cumulative_with_inclusive_upper_bounds(registry, m, seconds, first_le):
    """Prometheus's le is "less than or equal": a value on a bound counts in that bucket and all above."""
    m.latency.observe(seconds)
    les = [*(repr(b) for b in LATENCY_BUCKETS), "+Inf"]  # Prometheus writes bounds as Python's repr does
    counts = [value(registry, "exmilter_policy_decision_seconds_bucket", le=le) for le in les]
    first = les.index(first_le)
    assert counts == [0] * first + [1] * (len(les) - first)
    assert value(registry, "exmilter_policy_decision_seconds_sum") == pytest.approx(seconds)
    assert value(registry, "exmilter_policy_decision_seconds_count") == 1


def test_request_counts_match_what_prometheus_client_would_export(registry, m):
    """The scrape-time families carry the same names, labels and values as client counters would."""
    for state in ("RCPT", "RCPT", "MAIL", "X-UNKNOWN"):
        m.request(state)
    m.duplicate("RCPT")
    m.decision("", "MAIL", "451")
    body = MetricsPage(registry).render_GET(DummyRequest([b"metrics"])).decode()
    assert 'exmilter_policy_requests_total{protocol_state="RCPT"} 2.0' in body
    assert 'exmilter_policy_requests_total{protocol_state="EHLO"} 0.0' in body  # every state, from the start
    assert 'exmilter_policy_requests_total{protocol_state="OTHER"} 1.0' in body
    assert 'exmilter_policy_duplicate_requests_total{protocol_state="RCPT"} 1.0' in body
    assert 'exmilter_policy_decisions_total{code="451",connector="none",stage="MAIL"} 1.0' in body
    assert "# TYPE exmilter_policy_decision_seconds histogram" in body


def test_reload_counters_and_generation(registry, m):
    m.config_loaded(1, "/etc/exmilter/exmilter.yaml")
    assert value(registry, "exmilter_config_generation") == 1
    m.reload_result(False)
    assert value(registry, "exmilter_config_reloads_total") == 1
    assert value(registry, "exmilter_config_reload_failures_total") == 1
    assert value(registry, "exmilter_config_last_reload_successful") == 0
    m.reload_result(True)
    m.config_loaded(2, "/etc/exmilter/exmilter.yaml")
    assert value(registry, "exmilter_config_reloads_total") == 2
    assert value(registry, "exmilter_config_reload_failures_total") == 1
    assert value(registry, "exmilter_config_last_reload_successful") == 1
    assert value(registry, "exmilter_config_info", generation="2", source="/etc/exmilter/exmilter.yaml") == 1
    assert value(registry, "exmilter_config_info", generation="1", source="/etc/exmilter/exmilter.yaml") is None


def test_connections_gauge(registry, m):
    m.connections.inc()
    m.connections.inc()
    m.connections.dec()
    assert value(registry, "exmilter_policy_connections") == 1


def test_limit_metrics_exist_from_the_start(registry, m):
    """Every label value of the bounds' counters is exported at 0, so rate() works before the first event."""
    body = MetricsPage(registry).render_GET(DummyRequest([b"metrics"])).decode()
    for kind in ("request", "idle", "close"):
        assert f'exmilter_policy_timeouts_total{{kind="{kind}"}} 0.0' in body
    for reason in ("unsent_answers", "pipelined_requests"):
        assert f'exmilter_policy_read_pauses_total{{reason="{reason}"}} 0.0' in body
    assert "exmilter_policy_refused_connections_total 0.0" in body
    m.max_connections.set(44000)
    m.refused_connections.inc()
    m.timeouts.labels("request").inc()
    m.read_pauses.labels("unsent_answers").inc()
    assert value(registry, "exmilter_policy_max_connections") == 44000
    assert value(registry, "exmilter_policy_refused_connections_total") == 1
    assert value(registry, "exmilter_policy_timeouts_total", kind="request") == 1
    assert value(registry, "exmilter_policy_read_pauses_total", reason="unsent_answers") == 1


def test_registries_are_independent():
    a, b = CollectorRegistry(), CollectorRegistry()
    PolicyMetrics(a).request("RCPT")
    PolicyMetrics(b)
    assert value(b, "exmilter_policy_requests_total", protocol_state="RCPT") == 0


def test_exposition_page(registry, m):
    m.request("MAIL")
    request = DummyRequest([b"metrics"])
    body = MetricsPage(registry).render_GET(request)
    assert b'exmilter_policy_requests_total{protocol_state="MAIL"} 1.0' in body
    assert request.responseHeaders.getRawHeaders(b"content-type")[0].startswith(b"text/plain")
    for name in (b"exmilter_policy_decisions_total", b"exmilter_policy_decision_seconds", b"exmilter_config_info",
                 b"exmilter_config_reloads_total", b"exmilter_config_reload_failures_total",
                 b"exmilter_policy_connections", b"exmilter_config_generation"):
        assert b"# TYPE " + name.removesuffix(b"_total") in body


def test_site_serves_every_path(registry, m):
    site = metrics_site(registry)
    assert site.resource.isLeaf


# -- metrics disabled ----------------------------------------------------------------------------


def _public(obj: object) -> set[str]:
    return {n for n in dir(obj) if not n.startswith("_")}


def test_null_metrics_has_the_same_interface(m):
    null = NullMetrics()
    assert _public(null) == _public(m)
    assert m.enabled is True and null.enabled is False
    assert null.registry is None


def test_null_metrics_accepts_every_call():
    null = NullMetrics()
    null.request("RCPT")
    null.duplicate("RCPT")
    null.decision("EXCH01\\Relay", "RCPT", "250")
    null.config_loaded(1, "/etc/exmilter/exmilter.yaml")
    null.reload_result(False)
    null.latency.observe(4e-5)
    null.connections.inc()
    null.connections.dec()
    null.protocol_errors.inc()
    null.internal_errors.inc()
    null.info.labels("1", "x").set(1)
    null.info.clear()
    null.max_connections.set(10)
    null.refused_connections.inc()
    null.timeouts.labels("idle").inc()
    null.read_pauses.labels("unsent_answers").inc()
