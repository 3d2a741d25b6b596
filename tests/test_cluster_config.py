"""The ``cluster`` section and the listeners it renders behind HAProxy (issue #17, postfix-notes §4)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from exmilter.config import ConfigError, load, loads
from exmilter.deployment import plan_listeners
from exmilter.model import ClusterSettings
from exmilter.postfix.render import render_main, render_master
from exmilter.sandbox.instance import check_rendered
from tests.conftest import EXAMPLE


def with_cluster(text: str):
    return loads(EXAMPLE.read_text() + "cluster:\n" + text, "x.yaml").organization


def test_default_is_exchanges_per_server_counting_and_no_proxy():
    org = load(EXAMPLE).organization
    assert org.cluster == ClusterSettings()
    assert org.cluster.message_rate_window == "local" and org.cluster.proxy_protocol == "none"
    assert "smtpd_upstream_proxy" not in render_master(plan_listeners(org), org, "inet:127.0.0.1:10040")


def test_cluster_section_parses():
    org = with_cluster(
        "  proxy_protocol: haproxy\n  proxy_timeout: 3\n  message_rate_window: redis\n"
        "  redis: 127.0.0.1:6380\n  redis_timeout_ms: 100\n"
    )
    assert org.cluster == ClusterSettings("haproxy", 3, "redis", "127.0.0.1:6380", 100)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("  proxy_protocol: nginx\n", "cluster.proxy_protocol"),
        ("  message_rate_window: memcached\n", "cluster.message_rate_window"),
        ("  redis: localhost\n", "cluster.redis: 'localhost' is not host:port"),
        ("  redis_timeout_ms: 5000\n", "cluster.redis_timeout_ms: 5000 is out of range 10-2000"),
        ("  proxy: haproxy\n", "cluster.proxy: unknown key"),
    ],
)
def test_bad_cluster_values_are_located_errors(text, problem):
    with pytest.raises(ConfigError) as e:
        with_cluster(text)
    shown = [str(p) for p in e.value.problems]
    assert any(problem in s and s.startswith("x.yaml:") for s in shown), shown


def test_behind_haproxy_every_listener_reads_the_proxy_header_and_passes_postfix_check(tmp_path: Path):
    org = with_cluster("  proxy_protocol: haproxy\n  proxy_timeout: 3\n")
    master = render_master(plan_listeners(org), org, "inet:127.0.0.1:10040")
    instance, warnings = check_rendered(tmp_path, render_main(org), master)
    assert warnings == []
    lines = instance.postconf("-P").splitlines()
    listeners = [p.bind.rsplit(":", 1)[-1] if ":" in p.bind else p.bind for p in plan_listeners(org)]
    assert listeners
    for port in listeners:
        assert f"{port}/inet/smtpd_upstream_proxy_protocol = haproxy" in lines
        assert f"{port}/inet/smtpd_upstream_proxy_timeout = 3s" in lines
        # the listener is named by policy_context, which the proxy cannot change
        assert any(line.startswith(f"{port}/inet/exmilter_policy = ") and "policy_context=" in line for line in lines)


def test_proxy_off_renders_exactly_as_before():
    org = load(EXAMPLE).organization
    off = dataclasses.replace(org, cluster=ClusterSettings(proxy_protocol="none", message_rate_window="redis"))
    plan = plan_listeners(org)
    assert render_master(plan, off, "x") == render_master(plan, org, "x")


def test_docs_cluster_md_shows_exactly_the_haproxy_cfg_the_tests_load():
    from tests.conftest import ROOT

    doc = (ROOT / "docs" / "cluster.md").read_text()
    cfg = (ROOT / "conf" / "haproxy.cfg").read_text()
    assert "```\n" + cfg + "```\n" in doc
