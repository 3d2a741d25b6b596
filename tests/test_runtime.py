"""What both daemons share (exmilter.runtime), without a reactor: configuration generations
and their reporting, the common metrics from several threads, systemd notifications."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from exmilter.config import ConfigError, load
from exmilter.logs import events as ev
from exmilter.logs.levels import Severity, severity
from exmilter.runtime.fingerprint import config_fingerprint, file_fingerprint
from exmilter.runtime.generation import Generations
from exmilter.runtime.metrics import ConfigMetrics, exposition, new_registry
from exmilter.runtime.notify import sd_notify, watchdog_interval
from tests.policy_fixtures import CONFIG_FILE


class Recorder:
    """The metrics calls a generation store makes, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.fingerprints: list[str] = []

    def config_loaded(self, generation: int, source: str, *, fingerprint: str = "") -> None:
        self.calls.append(("loaded", generation, source))
        self.fingerprints.append(fingerprint)

    def reload_result(self, ok: bool) -> None:
        self.calls.append(("reload", ok))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = tmp_path / "exmilter.yaml"
    p.write_text(CONFIG_FILE)
    return p


@pytest.fixture
def store(path: Path) -> tuple[Generations, Recorder, list[ev.Event]]:
    metrics, events = Recorder(), []
    return Generations(str(path), load(path), metrics, events.append), metrics, events


def test_the_first_generation(store, path):
    g, metrics, events = store
    assert (g.current.number, g.current.source) == (1, str(path))
    assert g.current.engine.org is g.current.org
    assert metrics.calls == [("loaded", 1, str(path))]
    assert events == []


def test_a_swap_replaces_the_generation_whole_and_reports_it(store, path):
    g, metrics, events = store
    old = g.current
    path.write_text(CONFIG_FILE.replace("10.83.4.56", "10.83.4.99"))
    candidate = g.build()
    assert g.current is old  # building touches nothing in use
    new = g.swap(candidate)
    assert g.current is new and new.number == 2 and new.engine is candidate.engine
    # The message-rate windows belong to the clients, not to the file: kept, even while empty
    # (a MAIL counted between the build and the swap must not be lost).
    assert new.engine.rate_limiter is old.engine.rate_limiter
    assert metrics.calls[1:] == [("reload", True), ("loaded", 2, str(path))]
    assert events == [ev.ReloadLoaded(2, str(path), len(new.org.receive_connectors))]


def test_warnings_of_a_loaded_file_are_logged_with_the_swap(store, path):
    g, _, events = store
    path.write_text(CONFIG_FILE.replace("remote_ip_ranges: [10.83.4.56]", "remote_ip_ranges: [0.0.0.0/1]"))
    g.swap(g.build())
    assert [type(e) for e in events] == [ev.ConfigWarning, ev.ReloadLoaded]
    assert events[0].problem.startswith(f"{path}:17:9: warning: open relay: Relay: permissions: ANONYMOUS LOGON")
    assert severity(events[0]) is Severity.WARNING


def test_a_refused_file_keeps_the_generation_and_logs_every_problem_as_an_error(store, path):
    g, metrics, events = store
    old = g.current
    path.write_text(CONFIG_FILE.replace("max_attributes: 16", "max_attributes: lots") + "bogus: 1\n")
    with pytest.raises(ConfigError) as e:
        g.build()
    g.refused(e.value.problems)
    assert g.current is old
    assert metrics.calls[1:] == [("reload", False)]
    assert events == [*(ev.ReloadRefused(str(p)) for p in e.value.problems), ev.GenerationKept(1)]
    assert [x.problem for x in events[:2]] == [  # located, each one
        f"{path}:38:19: policyd.max_attributes: 'lots' is not an integer",
        f"{path}:39:1: bogus: unknown key; expected one of server, default_connectors, accepted_domains, "
        "receive_connectors, users, policyd, tls, sasl, send_connectors, mailbox_next_hop, logs, cluster, milter",
    ]
    assert {severity(x) for x in events} == {Severity.ERROR}


def test_an_unexpected_failure_says_which_generation_is_in_use(store, path):
    g, metrics, events = store
    before = g.current
    g.broken(before)  # failed before the swap
    g.swap(g.build())
    g.broken(before)  # failed while reporting after the swap
    assert events[0] == ev.GenerationKept(1) and events[-1] == ev.GenerationInUse(2)
    assert metrics.calls.count(("reload", False)) == 2


def test_a_reload_thread_swaps_while_other_threads_read():
    """The milter's shape: one thread reloads, request threads read ``current`` once each."""
    registry = CollectorRegistry()
    metrics = ConfigMetrics(registry)
    events: list[ev.Event] = []
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"exmilter-runtime-{os.getpid()}.yaml"
    path.write_text(CONFIG_FILE)
    try:
        g = Generations(str(path), load(path), metrics, events.append)
        seen: set[int] = set()
        stop = threading.Event()

        def reader() -> None:
            while not stop.is_set():
                current = g.current
                assert current.engine.org is current.org  # never a half-swapped generation
                seen.add(current.number)

        readers = [threading.Thread(target=reader) for _ in range(3)]
        for t in readers:
            t.start()
        reload = threading.Thread(target=lambda: [g.swap(g.build()) for _ in range(5)])
        reload.start()
        reload.join(60)
        stop.set()
        for t in readers:
            t.join(10)
    finally:
        path.unlink()
    assert g.current.number == 6
    assert registry.get_sample_value("exmilter_config_generation") == 6
    assert registry.get_sample_value("exmilter_config_reloads_total") == 5
    assert seen <= set(range(1, 7)) and 6 in seen | {g.current.number}


def test_the_config_metrics_count_exactly_from_many_threads():
    registry = new_registry()
    m = ConfigMetrics(registry)
    threads = [threading.Thread(target=lambda: [m.reload_result(False) for _ in range(2000)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert registry.get_sample_value("exmilter_config_reloads_total") == 16000
    assert registry.get_sample_value("exmilter_config_reload_failures_total") == 16000
    body, content_type = exposition(registry)
    assert content_type.startswith("text/plain") and b"exmilter_config_reloads_total 16000.0" in body
    assert b"_created" not in body  # new_registry(): no *_created series


# -- systemd ------------------------------------------------------------------------------------


def test_sd_notify_sends_to_a_path_or_an_abstract_socket(tmp_path):
    events: list[ev.Event] = []
    assert sd_notify("READY=1", {}, events.append) is False  # not under systemd: nothing to do
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(tmp_path / "notify"))
        assert sd_notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "notify")}, events.append) is True
        assert s.recv(100) == b"READY=1"
    name = f"exmilter-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        assert sd_notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name}, events.append) is True
        assert s.recv(100) == b"WATCHDOG=1"
    assert events == []


def test_sd_notify_failure_is_an_event_not_an_exception(tmp_path):
    events: list[ev.Event] = []
    gone = str(tmp_path / "gone")
    assert sd_notify("READY=1", {"NOTIFY_SOCKET": gone}, events.append) is False
    assert len(events) == 1 and isinstance(events[0], ev.NotifyFailed)
    assert events[0].address == gone and "No such file" in events[0].error


@pytest.mark.parametrize(
    ("environ", "interval"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval_is_half_of_what_systemd_allows(environ, interval):
    assert watchdog_interval(environ, pid=4242) == interval


def test_each_generation_carries_the_fingerprint_of_the_bytes_it_was_loaded_from(store, path):
    """The fingerprint names the file's contents: equal for the same bytes, different after an edit."""
    g, metrics, _ = store
    first = config_fingerprint(path.read_bytes())
    assert g.current.fingerprint == first and len(first) == 16
    g.swap(g.build())  # the same file again
    assert g.current.fingerprint == first
    path.write_text(CONFIG_FILE.replace("10.83.4.56", "10.83.4.99"))
    g.swap(g.build())
    assert g.current.fingerprint == config_fingerprint(path.read_text()) != first
    assert metrics.fingerprints == [first, first, g.current.fingerprint]


def test_file_fingerprint_of_an_unreadable_file_is_empty(tmp_path):
    assert file_fingerprint(str(tmp_path / "missing.yaml")) == ""
    assert config_fingerprint("a") == config_fingerprint(b"a") != config_fingerprint("b")
