"""monitoring/: the Prometheus alert rules pass ``promtool test rules``, the Grafana dashboard
loads, and both refer only to metrics the daemons export; each live daemon's scrape passes
``promtool check metrics`` (docs/operations.md).

promtool comes from Debian's ``prometheus`` package (scripts/install.sh installs it): these
tests fail, not skip, without it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from exmilter.milter.metrics import MilterMetrics
from exmilter.milter.watchdog import packet, read_packet
from exmilter.policy.metrics import PolicyMetrics, watch_log_failures
from exmilter.sandbox.ports import free_port
from tests.policy_fixtures import CONFIG_FILE, rcpt_wire

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "monitoring"
RULES = MONITORING / "exmilter-alerts.yml"
RULE_TESTS = MONITORING / "tests" / "exmilter-alerts.test.yml"
CLUSTER_RULES = MONITORING / "cluster-rules.yml"
CLUSTER_RULE_TESTS = MONITORING / "tests" / "cluster-rules.test.yml"
DASHBOARD = MONITORING / "grafana-exmilter.json"

#: PromQL words that are not metric names.
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
#: Prometheus's own series, there for any target.
PROMETHEUS_SERIES = {"up"}


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: bash scripts/install.sh installs Debian's prometheus package"
    return path


def exported_names() -> set[str]:
    """Every sample name the policy daemon and the milter export, with every metric exercised once."""
    registry = CollectorRegistry()
    m = PolicyMetrics(registry)
    m.request("RCPT")
    m.duplicate("RCPT")
    m.decision("x", "RCPT", "250")
    m.latency.observe(1e-4)
    m.config_loaded(1, "f", fingerprint="0")
    m.reload_result(True)
    watch_log_failures(m, lambda: {"protocol": 1, "tracking": 0})
    names = {s.name for family in registry.collect() for s in family.samples}

    registry = CollectorRegistry()  # a daemon of its own: the shared names would clash in one registry
    mm = MilterMetrics(registry)
    mm.decisions.labels("x", "END-OF-MESSAGE", "250").inc()
    mm.errors.labels("BODY").inc()
    mm.sessions.inc()
    mm.unplaced.inc()
    mm.coverage_failures.inc()
    mm.config_loaded(1, "f", fingerprint="0")
    mm.reload_result(False)
    mm.watch_log_failures(lambda: {"protocol": 0, "tracking": 1})
    milter = {s.name for family in registry.collect() for s in family.samples}
    assert {"exmilter_build_info", "exmilter_config_info", "process_open_fds"} <= milter
    return names | milter


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (selectors, not functions or labels)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\$\w+", "", expr)  # Grafana variables
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*(?!\s*\()", expr):
        # the lookahead alone would accept "rat" of "rate("; require the whole identifier
        end = m.end()
        if end < len(expr) and (expr[end].isalnum() or expr[end] in "_:"):
            continue
        word = m.group()
        if word not in PROMQL_WORDS and not re.fullmatch(r"[0-9.e+-]+|Inf|NaN", word):
            names.add(word)
    return names


def test_metric_names_reads_selectors_only():
    expr = 'histogram_quantile(0.99, sum by (job, le) (rate(a_bucket{job=~"$job",x="y z"}[5m]))) > 0.1 or b * 0'
    assert metric_names(expr) == {"a_bucket", "b"}
    assert metric_names('time() - c{job=~"$job"}') == {"c"}


@pytest.mark.parametrize(("rules", "tests"), [(RULES, RULE_TESTS), (CLUSTER_RULES, CLUSTER_RULE_TESTS)])
def test_alert_rules_pass_promtool(rules: Path, tests: Path):
    tool = promtool()
    check = subprocess.run([tool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    run = subprocess.run([tool, "test", "rules", str(tests)], capture_output=True, text=True, cwd=MONITORING)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def test_cluster_rules_select_the_jobs_the_docs_name():
    """docs/operations.md's scrape jobs are exmilter-policyd and exmilter-milter; a rule that
    selects another job name never fires."""
    for group in yaml.safe_load(CLUSTER_RULES.read_text())["groups"]:
        for rule in group["rules"]:
            for job in re.findall(r'job=~?"([^"]*)"', rule["expr"]):
                assert re.fullmatch(job, "exmilter-policyd"), rule["alert"]
            assert metric_names(rule["expr"]) <= {"exmilter_config_info", "exmilter_rate_window_failures_total"}


def test_every_alert_is_tested_firing_and_documented():
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    alerts = {r["alert"] for r in rules}
    assert {
        "ExmilterDaemonDown",
        "ExmilterReloadFailed",
        "ExmilterFailClosedAnswers",
        "ExmilterLatencyOverBudget",
        "ExmilterDescriptorsHigh",
        "ExmilterMilterCallbackErrors",
        "ExmilterLogRowsLost",
    } <= alerts
    firing = {
        t["alertname"]
        for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for t in case["alert_rule_test"]
        if t.get("exp_alerts")
    }
    assert firing == alerts
    operations = (ROOT / "docs" / "operations.md").read_text()
    assert [a for a in alerts if f"`{a}`" not in operations] == []


def test_alert_rules_refer_only_to_exported_metrics():
    exported = exported_names() | PROMETHEUS_SERIES
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            assert metric_names(rule["expr"]) <= exported, rule["alert"]


def _panels(dashboard: dict) -> list[dict]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def test_dashboard_loads_and_refers_only_to_exported_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    panels = _panels(dashboard)
    assert len({p["id"] for p in panels}) == len(panels)
    exported = exported_names() | PROMETHEUS_SERIES
    exprs = [
        (p["title"], t["expr"]) for p in panels if p["type"] != "row" for t in p["targets"]
    ]  # every panel that is not a row has a query
    assert len({title for title, _ in exprs}) == sum(1 for p in panels if p["type"] != "row")
    exprs += [("annotation", a["expr"]) for a in dashboard["annotations"]["list"]]
    exprs += [
        ("variable " + v["name"], re.sub(r",\s*\w+\)$", ")", v["definition"]))  # label_values(metric, label)
        for v in dashboard["templating"]["list"]
        if v.get("definition")
    ]
    read = set()
    for title, expr in exprs:
        names = metric_names(expr)
        assert names, f"{title}: {expr} reads no metric"
        assert names <= exported, f"{title}: {sorted(names - exported)} not exported"
        read |= names
    # the panels: decisions by connector and code, latency, relay refusals, reloads, up
    for name in (
        "exmilter_policy_decisions_total",
        "exmilter_policy_decision_seconds_bucket",
        "exmilter_config_reload_failures_total",
        "exmilter_config_last_reload_successful",
        "up",
        "process_open_fds",
        # the milter's row, and the Exchange log rows both daemons lose
        "exmilter_milter_decisions_total",
        "exmilter_milter_callback_errors_total",
        "exmilter_milter_sessions",
        "exmilter_milter_coverage_send_failures_total",
        "exmilter_milter_unplaced_sessions_total",
        "exmilter_milter_log_write_failures_total",
        "exmilter_policy_log_write_failures_total",
    ):
        assert name in read, name
    for p in panels:
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert p["description"], p["title"]


def _scrape(port: int) -> bytes | None:
    """The metrics page on 127.0.0.1:``port``, None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            return r.read()
    except OSError:
        return None


def _assert_lint_clean(tool: str, body: bytes) -> None:
    lint = subprocess.run([tool, "check", "metrics"], input=body, capture_output=True)
    assert lint.returncode == 0, (lint.stdout + lint.stderr).decode()
    assert lint.stdout + lint.stderr == b""  # not even a lint warning


def _wait_for(predicate, what: str, deadline: float = 30.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_promtool_check_metrics_on_a_live_scrape(tmp_path):
    """A real ``exmilter policyd`` answers one request; its scrape passes promtool's linter."""
    tool = promtool()
    config = tmp_path / "exmilter.yaml"
    config.write_text(CONFIG_FILE)
    sock = tmp_path / "policy.sock"
    port = free_port()
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exmilter.cli",
            "policyd",
            "-c",
            str(config),
            "--listen",
            f"unix:{sock}",
            "--metrics",
            f"tcp:{port}:interface=127.0.0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        _wait_for(lambda: sock.exists() or daemon.poll() is not None, "the policy socket")
        assert daemon.poll() is None, daemon.stderr.read().decode() if daemon.stderr else ""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(str(sock))
            s.sendall(rcpt_wire())
            assert s.recv(4096) == b"action=OK\n\n"

        body = _wait_for(lambda: _scrape(port), "the metrics page")
    finally:
        daemon.terminate()
        daemon.wait(30)
    assert b'exmilter_policy_decisions_total{code="250",connector="EXCH01\\\\Relay",stage="RCPT"} 1.0' in body
    assert b"process_open_fds " in body and b"exmilter_build_info{" in body
    _assert_lint_clean(tool, body)


def test_promtool_check_metrics_on_a_live_milter_scrape(tmp_path):
    """A real ``exmilter milter`` (its own scrape job in docs/operations.md) takes one session
    Postfix gave no listener context; its scrape passes promtool's linter."""
    tool = promtool()
    config = tmp_path / "exmilter.yaml"
    config.write_text(CONFIG_FILE)
    sock = tmp_path / "milter.sock"
    port = free_port()
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exmilter.cli",
            "milter",
            "-c",
            str(config),
            "--listen",
            f"unix:{sock}",
            "--metrics",
            f"tcp:{port}:interface=127.0.0.1",
            "--coverage",
            "none",
            "--tracking-log-path",
            str(tmp_path / "tracking"),
            "--protocol-log-path",
            "",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        _wait_for(lambda: sock.exists() or daemon.poll() is not None, "the milter socket")
        assert daemon.poll() is None, daemon.stderr.read().decode() if daemon.stderr else ""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(str(sock))
            s.sendall(packet(b"O", struct.pack("!III", 6, 0x1FF, 0)))
            assert read_packet(s)[:1] == b"O"
            # a connect without {daemon_name}: unplaced (451 4.3.5 comes at MAIL)
            s.sendall(packet(b"C", b"client.test\0" + b"4" + struct.pack("!H", 4242) + b"127.0.0.1\0"))
            assert read_packet(s) == b"c"
            s.sendall(packet(b"Q"))

        body = _wait_for(lambda: _scrape(port), "the metrics page")
    finally:
        daemon.terminate()
        daemon.wait(30)
    assert b"exmilter_milter_unplaced_sessions_total 1.0" in body
    assert b'exmilter_milter_log_write_failures_total{log="tracking"} 0.0' in body
    assert b"exmilter_milter_sessions " in body and b"exmilter_config_generation 1.0" in body
    assert b"process_open_fds " in body and b"exmilter_build_info{" in body
    _assert_lint_clean(tool, body)
