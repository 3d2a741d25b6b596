"""The policy daemon's metrics (exmilter.policy.metrics) and the metrics page
(exmilter.runtime.metrics_site) on a fresh registry per test: names, labels, exposition."""

from __future__ import annotations

import inspect

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web.test.requesthelper import DummyRequest

from exmilter.policy.metrics import LATENCY_BUCKETS, NullMetrics, PolicyMetrics
from exmilter.runtime.metrics import NOTHING, exposition
from exmilter.runtime.metrics_site import MetricsPage, metrics_site


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
    assert value(registry, "exmilter_policy_requests_total", stage="RCPT") == 2
    assert value(registry, "exmilter_policy_requests_total", stage="OTHER") == 1
    assert value(registry, "exmilter_policy_requests_total", stage="SOMETHING-NEW") is None


def test_decisions_by_connector_stage_code(registry, m):
    m.decision("EXCH01\\Relay", "RCPT", "250")
    m.decision("EXCH01\\Relay", "RCPT", "250")
    m.decision("", "CONNECT", "421")
    assert value(registry, "exmilter_policy_decisions_total", connector="EXCH01\\Relay", stage="RCPT", code="250") == 2
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
    assert 'exmilter_policy_requests_total{stage="RCPT"} 2.0' in body
    assert 'exmilter_policy_requests_total{stage="EHLO"} 0.0' in body  # every state, from the start
    assert 'exmilter_policy_requests_total{stage="OTHER"} 1.0' in body
    assert 'exmilter_policy_duplicate_requests_total{stage="RCPT"} 1.0' in body
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
    assert value(registry, "exmilter_config_info", source="/etc/exmilter/exmilter.yaml", fingerprint="") == 1


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
    assert value(b, "exmilter_policy_requests_total", stage="RCPT") == 0


def test_exposition_page(registry, m):
    m.request("MAIL")
    request = DummyRequest([b"metrics"])
    body = MetricsPage(registry).render_GET(request)
    assert b'exmilter_policy_requests_total{stage="MAIL"} 1.0' in body
    assert request.responseHeaders.getRawHeaders(b"content-type")[0].startswith(b"text/plain")
    for name in (
        b"exmilter_policy_decisions_total",
        b"exmilter_policy_decision_seconds",
        b"exmilter_config_info",
        b"exmilter_config_reloads_total",
        b"exmilter_config_reload_failures_total",
        b"exmilter_policy_connections",
        b"exmilter_config_generation",
    ):
        assert b"# TYPE " + name.removesuffix(b"_total") in body


def http_get(site, path: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """One HTTP/1.1 GET through the site's own HTTP parser, in memory: status line, headers, body."""
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1:9142\r\n\r\n")
    head, _, body = transport.value().partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines)}
    channel.connectionLost(None)
    return status, headers, body


def _stable(body: bytes) -> list[bytes]:
    return [line for line in body.splitlines() if not line.startswith(b"process_")]


@pytest.mark.parametrize("path", [b"/metrics", b"/", b"/anything", b"/metrics/deeper?x=1"])
def test_site_serves_every_path(registry, m, path):
    m.request("MAIL")
    m.decision("EXCH01\\Relay", "RCPT", "250")
    status, headers, body = http_get(metrics_site(registry, MemoryReactorClock()), path)
    assert status == b"HTTP/1.1 200 OK"
    assert headers[b"content-type"].startswith(b"text/plain")
    assert int(headers[b"content-length"]) == len(body)
    # the same exposition, but for the process_* values that change from one call to the next
    assert _stable(body) == _stable(exposition(registry)[0])
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    assert samples[("exmilter_policy_requests_total", (("stage", "MAIL"),))] == 1
    assert (
        samples[
            ("exmilter_policy_decisions_total", (("code", "250"), ("connector", "EXCH01\\Relay"), ("stage", "RCPT")))
        ]
        == 1
    )


# -- metrics disabled ----------------------------------------------------------------------------


def _public(obj: object) -> set[str]:
    return {n for n in dir(obj) if not n.startswith("_")}


def test_null_metrics_has_the_same_interface(m):
    null = NullMetrics()
    assert _public(null) == _public(m)
    assert m.enabled is True and null.enabled is False
    assert null.registry is None


#: A value for each parameter type of the metrics interface.
SAMPLES = {"str": "RCPT", "int": 2, "bool": False, "float": 0.5}
#: How the daemon updates a metric object (counter, gauge, histogram).
UPDATES = ("inc", "dec", "set", "observe")


def _call(method, signature: inspect.Signature) -> object:
    params = [p for p in signature.parameters.values() if p.name != "self"]
    positional = [SAMPLES[p.annotation] for p in params if p.kind is not p.KEYWORD_ONLY]
    keywords = {p.name: SAMPLES[p.annotation] for p in params if p.kind is p.KEYWORD_ONLY}
    return method(*positional, **keywords)


def _metric_calls(real, null) -> int:
    """Every update the real metric object supports, made on both; returns how many."""
    n = 0
    names = getattr(real, "_labelnames", ())
    if names:  # a labelled metric: its children carry the updates
        assert inspect.signature(null.labels).bind(*("x",) * len(names))
        real, null = real.labels(*("x",) * len(names)), null.labels(*("x",) * len(names))
    for verb in UPDATES:
        if hasattr(real, verb):
            real_sig, null_sig = inspect.signature(getattr(real, verb)), inspect.signature(getattr(null, verb))
            assert list(null_sig.parameters) == list(real_sig.parameters)[: len(null_sig.parameters)], verb
            args = [SAMPLES["float"]] * sum(1 for p in real_sig.parameters.values() if p.default is p.empty)
            getattr(real, verb)(*args)
            getattr(null, verb)(*args)
            n += 1
    return n


def test_null_metrics_accepts_every_call(registry, m):
    """Derived from PolicyMetrics: a method or metric added there and not to NullMetrics fails
    here; each call made on both changes the real exposition and records nothing when off."""
    null = NullMetrics()
    methods = sorted(n for n, _ in inspect.getmembers(PolicyMetrics, inspect.isfunction) if not n.startswith("_"))
    assert {"request", "duplicate", "decision", "config_loaded", "reload_result"} <= set(methods)
    for name in methods:
        real_sig = inspect.signature(getattr(PolicyMetrics, name))
        assert inspect.signature(getattr(NullMetrics, name)) == real_sig, name
        before = exposition(registry)[0]
        _call(getattr(m, name), real_sig)
        assert _call(getattr(null, name), real_sig) is None
        assert exposition(registry)[0] != before, f"{name}() recorded nothing on the real metrics"
    objects = sorted(_public(m) - set(methods) - {"registry", "enabled"})
    assert {"latency", "connections", "timeouts", "reloads", "info"} <= set(objects)
    for name in objects:
        before = exposition(registry)[0]
        assert _metric_calls(getattr(m, name), getattr(null, name)) > 0, name
        assert exposition(registry)[0] != before, f"{name}: the calls changed nothing on the real metrics"
    # nothing recorded with metrics off: no state anywhere, nothing in the process-wide registry
    assert vars(null) == {}
    assert all(getattr(null, name) is NOTHING for name in objects)
    assert NOTHING.__slots__ == ()
    assert not [f.name for f in prometheus_client.REGISTRY.collect() if f.name.startswith("exmilter")]


# -- what every daemon exports: process, build, configuration ------------------------------------


def test_process_metrics_on_the_injected_registry(registry, m):
    """process_* come from prometheus_client's ProcessCollector on the daemon's own registry
    (descriptor use is what the alert on running out of descriptors reads)."""
    import resource

    assert value(registry, "process_open_fds") > 0
    assert value(registry, "process_max_fds") == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert value(registry, "process_start_time_seconds") > 0
    assert value(registry, "process_resident_memory_bytes") > 0
    assert prometheus_client.REGISTRY.get_sample_value("exmilter_build_info", {}) is None


def test_build_info(registry, m):
    import platform

    from exmilter import __version__

    assert value(registry, "exmilter_build_info", version=__version__, python_version=platform.python_version()) == 1


def test_reload_timestamps_from_the_wall_clock():
    registry, now = CollectorRegistry(), [1000.0]
    m = PolicyMetrics(registry, wall=lambda: now[0])
    assert value(registry, "exmilter_config_last_reload_timestamp_seconds") == 0  # no reload yet
    m.config_loaded(1, "/etc/exmilter/exmilter.yaml", fingerprint="aa")
    assert value(registry, "exmilter_config_last_reload_success_timestamp_seconds") == 1000
    now[0] = 2000.0
    m.reload_result(False)
    assert value(registry, "exmilter_config_last_reload_timestamp_seconds") == 2000
    assert value(registry, "exmilter_config_last_reload_success_timestamp_seconds") == 1000  # still the old file
    now[0] = 3000.0
    m.reload_result(True)
    m.config_loaded(2, "/etc/exmilter/exmilter.yaml", fingerprint="bb")
    assert value(registry, "exmilter_config_last_reload_timestamp_seconds") == 3000
    assert value(registry, "exmilter_config_last_reload_success_timestamp_seconds") == 3000


def test_config_info_adds_no_series_per_reload(registry, m):
    """Reloading the same file keeps the one series (it used to carry the generation number,
    a new series per reload); a changed file replaces it, so there is always exactly one."""
    for generation in (1, 2, 3):
        m.config_loaded(generation, "/etc/exmilter/exmilter.yaml", fingerprint="0123456789abcdef")
    m.config_loaded(4, "/etc/exmilter/exmilter.yaml", fingerprint="fedcba9876543210")
    samples = [s for f in registry.collect() if f.name == "exmilter_config_info" for s in f.samples]
    assert [(s.labels, s.value) for s in samples] == [
        ({"source": "/etc/exmilter/exmilter.yaml", "fingerprint": "fedcba9876543210"}, 1)
    ]
    assert value(registry, "exmilter_config_generation") == 4


def test_one_label_name_per_dimension(registry, m):
    """The SMTP stage is labelled ``stage`` on every metric (requests were ``protocol_state``)."""
    m.request("RCPT")
    m.duplicate("RCPT")
    m.decision("x", "RCPT", "250")
    labels = {f.name: set(s.labels) for f in registry.collect() for s in f.samples if s.labels}
    assert labels["exmilter_policy_requests"] == {"stage"}
    assert labels["exmilter_policy_duplicate_requests"] == {"stage"}
    assert "stage" in labels["exmilter_policy_decisions"]
    assert not any("protocol_state" in names for names in labels.values())
