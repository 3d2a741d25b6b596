"""The balancer's health check (issue #17): up, drain after a refused reload, down when Postfix does not accept."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.selectreactor import SelectReactor

from exmilter.policy.health import Health, probe_postfix, verdict

DEADLINE = 20.0


def wait(reactor: SelectReactor, d: defer.Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    end = time.monotonic() + DEADLINE
    while not out and time.monotonic() < end:
        reactor.iterate(0.01)
    assert out, "no answer within the deadline"
    return out[0]


class FakeSmtp:
    """A listener that records the first bytes it gets and answers ``banner`` (None: says nothing)."""

    def __init__(self, banner: bytes | None, expect_proxy: bool = False) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.banner, self.expect_proxy = banner, expect_proxy
        self.got: list[bytes] = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            if self.expect_proxy:
                self.got.append(conn.recv(200))
            if self.banner is None:
                time.sleep(3)
                return
            conn.sendall(self.banner)
            with contextlib.suppress(OSError):
                self.got.append(conn.recv(100))

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize(
    ("config_ok", "postfix_error", "expected"),
    [
        (True, None, Health(200, "up")),
        (False, None, Health(503, "drain config: the last reload was refused (the old configuration still serves)")),
        (True, "no banner within 2s", Health(503, "down postfix: no banner within 2s")),
        (False, "closed before a banner", Health(503, "down postfix: closed before a banner")),
    ],
)
def test_verdict(config_ok, postfix_error, expected):
    assert verdict(config_ok, postfix_error) == expected


def test_a_220_banner_is_up_and_the_probe_quits():
    srv = FakeSmtp(b"220 exa.labs.local ESMTP\r\n")
    r = SelectReactor()
    assert wait(r, probe_postfix(r, "127.0.0.1", srv.port, proxy=False)) is None
    end = time.monotonic() + DEADLINE
    while not srv.got and time.monotonic() < end:
        r.iterate(0.01)
    assert srv.got == [b"QUIT\r\n"]
    srv.close()


def test_behind_haproxy_the_probe_sends_a_true_proxy_v1_header():
    srv = FakeSmtp(b"220 ok\r\n", expect_proxy=True)
    r = SelectReactor()
    assert wait(r, probe_postfix(r, "127.0.0.1", srv.port, proxy=True)) is None
    header = srv.got[0].decode()
    assert header.startswith("PROXY TCP4 127.0.0.1 127.0.0.1 ") and header.endswith(f" {srv.port}\r\n")
    srv.close()


def test_a_421_banner_is_down():
    srv = FakeSmtp(b"421 4.3.2 Service not available\r\n")
    r = SelectReactor()
    assert wait(r, probe_postfix(r, "127.0.0.1", srv.port, proxy=False)) == "banner '421 4.3.2 Service not available'"
    srv.close()


def test_silence_is_down_within_the_timeout():
    srv = FakeSmtp(None)
    r = SelectReactor()
    t0 = time.monotonic()
    assert wait(r, probe_postfix(r, "127.0.0.1", srv.port, proxy=False, timeout=0.3)) == "no banner within 0.3s"
    assert time.monotonic() - t0 < 2
    srv.close()


def test_nothing_listening_is_down():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    r = SelectReactor()
    got = wait(r, probe_postfix(r, "127.0.0.1", port, proxy=False))
    assert got is not None and got.startswith(f"cannot connect to 127.0.0.1:{port}")


def test_the_daemon_serves_health_and_a_refused_reload_drains_the_node(tmp_path):
    """Wired in the daemon from the cluster section; the generation's last load decides up/drain."""
    from prometheus_client import CollectorRegistry
    from twisted.internet.testing import MemoryReactorClock
    from twisted.web.test.requesthelper import DummyRequest

    from exmilter.config import load
    from exmilter.policy.daemon import build, health_site
    from exmilter.policy.metrics import PolicyMetrics
    from exmilter.policy.reload import Runtime
    from tests.conftest import EXAMPLE

    path = tmp_path / "exmilter.yaml"
    path.write_text(
        EXAMPLE.read_text() + "cluster:\n  health: tcp:9143:interface=127.0.0.1\n  message_rate_window: redis\n"
    )
    registry = CollectorRegistry()
    runtime = Runtime(
        str(path),
        load(path),
        PolicyMetrics(registry),
        run_blocking=lambda f, *a: defer.maybeDeferred(f, *a),
        notify=lambda m: None,
    )
    reactor = MemoryReactorClock()
    daemon = build(reactor, runtime, ["tcp:10040"], None, notify=lambda m: None, signals=False)
    daemon.top.startService()
    assert (9143, "127.0.0.1") in [(p[0], p[3]) for p in reactor.tcpServers]
    assert runtime.shared_window is not None  # message_rate_window: redis
    names = {f.name for f in registry.collect()}
    assert {"exmilter_rate_window_failures", "exmilter_rate_window_round_trips"} <= names

    def get() -> tuple[int, bytes]:
        page = health_site(runtime, reactor).resource
        req = DummyRequest([b"health"])
        page.render_GET(req)
        return req.responseCode or 200, b"".join(req.written)

    assert get() == (200, b"up\n")
    daemon.top.stopService()
    runtime.refused(["x.yaml:1:1: bogus: unknown key"])
    status, body = get()
    assert status == 503 and body.startswith(b"drain config:")
