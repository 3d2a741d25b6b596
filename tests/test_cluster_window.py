"""Two policy daemons (two nodes) sharing one MessageRateLimit window on a real redis-server (issue #17).

The daemons are driven through their real connection code (PolicyFactory, a StringTransport
per Postfix connection); the window talks to Redis over TCP on a private reactor.
"""

from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry
from twisted.internet import defer
from twisted.internet.selectreactor import SelectReactor
from twisted.internet.testing import MemoryReactorClock, StringTransport

from exmilter.config import load
from exmilter.policy.factory import PolicyFactory
from exmilter.policy.metrics import PolicyMetrics
from exmilter.policy.redis_window import FAILURES, RedisWindow
from exmilter.policy.reload import Runtime
from tests.policy_fixtures import CONFIG_FILE, answer, wire
from tests.redis_server import RedisServer

RATE_421 = "421 4.4.2 Message submission rate for this client has exceeded the configured limit"
UNAVAILABLE_451 = "451 4.4.3 Temporary server error. Please try again later"
DEADLINE = 20.0


class Node:
    """One node's policy daemon; ``window`` None: the local window (Exchange's per-server count)."""

    def __init__(self, path, window: RedisWindow | None) -> None:
        self.runtime = Runtime(
            str(path), load(path), PolicyMetrics(CollectorRegistry()), run_blocking=defer.maybeDeferred
        )
        self.runtime.shared_window = window
        self.factory = PolicyFactory(self.runtime, MemoryReactorClock())

    def mail(self, reactor: SelectReactor, client: str, port: int) -> bytes:
        proto = self.factory.buildProtocol(None)
        t = StringTransport()
        proto.makeConnection(t)
        attrs = {
            "request": "smtpd_access_policy",
            "protocol_state": "MAIL",
            "client_address": client,
            "client_port": str(port),
            "policy_context": "10.0.0.5:2727",
            "helo_name": "h",
            "sender": "a@labs.local",
        }
        proto.dataReceived(wire(attrs))
        end = time.monotonic() + DEADLINE
        while not t.value() and time.monotonic() < end:
            reactor.iterate(0.01)
        return t.value()


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "exmilter.yaml"
    path.write_text(CONFIG_FILE)  # connector Dedicated: MessageRateLimit 2, on 10.0.0.5:2727
    return path


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def test_redis_window_counts_the_pool_local_counts_each_node(config, redis):
    r = SelectReactor()
    a = Node(config, RedisWindow(r, "127.0.0.1", redis.port, timeout=2.0))
    b = Node(config, RedisWindow(r, "127.0.0.1", redis.port, timeout=2.0))
    got = [n.mail(r, "192.168.50.7", 40000 + i) for i, n in enumerate((a, b, a))]
    assert got == [answer("DUNNO"), answer("DUNNO"), answer(RATE_421)]
    # local: each node counts alone, so the pool passes 2 per node (Exchange's behaviour)
    la, lb = Node(config, None), Node(config, None)
    got = [n.mail(r, "192.168.50.8", 41000 + i) for i, n in enumerate((la, lb, la, lb, la))]
    assert got == [answer("DUNNO")] * 4 + [answer(RATE_421)]


def test_redis_down_is_a_temporary_failure_then_counting_resumes(config, redis):
    r = SelectReactor()
    node = Node(config, RedisWindow(r, "127.0.0.1", redis.port, timeout=0.5))
    assert node.mail(r, "192.168.50.9", 42000) == answer("DUNNO")
    redis.stop()
    before = FAILURES.labels("unreachable")._value.get()
    assert node.mail(r, "192.168.50.9", 42001) == answer(UNAVAILABLE_451)
    assert FAILURES.labels("unreachable")._value.get() > before
    redis.start()
    end = time.monotonic() + DEADLINE
    got = answer(UNAVAILABLE_451)
    port = 42002
    while got == answer(UNAVAILABLE_451) and time.monotonic() < end:
        got = node.mail(r, "192.168.50.9", port)
        port += 1
        time.sleep(0.2)
    assert got == answer("DUNNO")  # a fresh Redis: a fresh window (docs/cluster.md)


def test_a_connector_without_a_limit_never_asks_redis(config):
    r = SelectReactor()
    node = Node(config, RedisWindow(r, "127.0.0.1", 1, timeout=0.2))  # nothing listens on port 1
    proto = node.factory.buildProtocol(None)
    t = StringTransport()
    proto.makeConnection(t)
    attrs = {
        "request": "smtpd_access_policy",
        "protocol_state": "MAIL",
        "client_address": "10.83.4.56",
        "client_port": "40000",
        "policy_context": "*:25",
        "helo_name": "h",
        "sender": "a@labs.local",
    }
    proto.dataReceived(wire(attrs))
    assert t.value() == answer("DUNNO")  # answered at once, no round trip
