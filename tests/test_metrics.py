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
    null.decisions.labels("a", "b", "c").inc()
