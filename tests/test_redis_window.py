"""The cluster-wide MessageRateLimit window against a real redis-server (issue #17, spec §3.10)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.selectreactor import SelectReactor

from exmilter.engine import CountedWindow, Engine, MessageRateLimiter
from exmilter.policy import redis_window
from exmilter.policy.redis_window import FAILURES, RedisWindow, parse
from exmilter.replies import MESSAGE_RATE_EXCEEDED, RATE_WINDOW_UNAVAILABLE, SENDER_OK
from tests.redis_server import RedisServer

DEADLINE = 20.0


def wait(reactor: SelectReactor, d: defer.Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    end = time.monotonic() + DEADLINE
    while not out and time.monotonic() < end:
        reactor.iterate(0.01)
    assert out, "no answer within the deadline"
    return out[0]


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def reactor():
    return SelectReactor()


def window(reactor, redis, **kw) -> RedisWindow:
    return RedisWindow(reactor, "127.0.0.1", redis.port, timeout=kw.pop("timeout", 2.0), **kw)


def test_n_pass_then_refused_across_two_nodes_sharing_one_window(reactor, redis):
    """Two windows (two nodes) on one Redis: limit 3 is 3 for the pool, not 3 per node."""
    a, b = window(reactor, redis), window(reactor, redis)
    counts = [wait(reactor, (a if i % 2 else b).count([("ip:10.0.0.5", 3)])) for i in range(5)]
    assert [c["ip:10.0.0.5"] for c in counts] == [1, 2, 3, 4, 5]
    assert [CountedWindow(c).take("ip:10.0.0.5", 3, 0.0) for c in counts] == [True, True, True, False, False]


def test_the_window_is_fixed_and_opens_again_after_it(reactor, redis):
    w = window(reactor, redis, window_ms=300)
    assert wait(reactor, w.count([("ip:a", 1)])) == {"ip:a": 1}
    assert wait(reactor, w.count([("ip:a", 1)])) == {"ip:a": 2}
    time.sleep(0.4)
    assert wait(reactor, w.count([("ip:a", 1)])) == {"ip:a": 1}


def test_all_gives_the_users_slot_back_when_the_ip_is_over(reactor, redis):
    w = window(reactor, redis)
    assert wait(reactor, w.count([("ip:c", 1)])) == {"ip:c": 1}
    # user first, then IP: the IP is over, so the user's slot comes back, as the local window does
    assert wait(reactor, w.count([("user:u", 1), ("ip:c", 1)])) == {"user:u": 1, "ip:c": 2}
    assert wait(reactor, w.count([("user:u", 1)])) == {"user:u": 1}


def test_engine_with_counted_window_matches_the_local_window_for_all():
    """Same verdicts whichever window counts: CountedWindow fed with the script's counts."""
    local = MessageRateLimiter()
    assert local.take("user:u", 1, 0.0) and local.take("ip:c", 1, 0.0)
    counted = CountedWindow({"user:u": 1, "ip:c": 2})
    assert counted.take("user:u", 1, 0.0) and not counted.take("ip:c", 1, 0.0)
    assert not CountedWindow({}).take("ip:x", 5, 0.0)  # a key not counted is refused


def test_redis_killed_then_restarted_fails_temporarily_then_counts_again(reactor, redis, tmp_path):
    w = window(reactor, redis, timeout=0.5)
    assert wait(reactor, w.count([("ip:k", 10)])) == {"ip:k": 1}
    before = FAILURES.labels("unreachable")._value.get()
    redis.stop()
    assert wait(reactor, w.count([("ip:k", 10)])) is None
    assert FAILURES.labels("unreachable")._value.get() == before + 1
    redis.start()  # same port, empty: the window restarts (documented in docs/cluster.md)
    end = time.monotonic() + DEADLINE
    got = None
    while got is None and time.monotonic() < end:
        got = wait(reactor, w.count([("ip:k", 10)]))
        if got is None:
            time.sleep(redis_window.RECONNECT_DELAY / 4)
    assert got == {"ip:k": 1}


def test_a_slow_redis_is_a_timeout_within_the_bound(reactor, redis):
    import os
    import signal

    w = window(reactor, redis, timeout=0.3)
    assert wait(reactor, w.count([("ip:s", 10)])) == {"ip:s": 1}
    os.kill(redis.proc.pid, signal.SIGSTOP)  # connected but silent
    try:
        before = FAILURES.labels("timeout")._value.get()
        t0 = time.monotonic()
        assert wait(reactor, w.count([("ip:s", 10)])) is None
        assert time.monotonic() - t0 < 0.3 + 1.0
        assert FAILURES.labels("timeout")._value.get() == before + 1
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)


@pytest.mark.parametrize(
    ("data", "value"),
    [(b":5\r\n", 5), (b"*2\r\n:1\r\n:2\r\n", [1, 2]), (b"*2\r\n:1\r\n", None), (b":1", None)],
)
def test_parse(data, value):
    got = parse(data)
    assert (got[0] if got else None) == value


def test_engine_mail_answers_from_the_counts():
    from exmilter.config import loads

    org = loads(
        "server: {name: EXA, fqdn: exa.labs.local, domain: LABS}\naccepted_domains: [{domain_name: labs.local}]\n"
        "receive_connectors:\n  - name: R\n    transport_role: FrontendTransport\n    usage: Custom\n"
        "    bindings: [0.0.0.0:25]\n    remote_ip_ranges: [10.0.0.5]\n    permission_groups: [AnonymousUsers]\n"
        "    message_rate_limit: 2\n"
    ).organization
    e = Engine(org, clock=lambda: 0.0)
    s = e.open_session("127.0.0.1", 25, "10.0.0.5", helo="x")
    assert e.rate_keys(s) == (("ip:10.0.0.5", 2),)
    assert e.mail(s, "a@labs.local", counted={"ip:10.0.0.5": 2}) == SENDER_OK
    assert e.mail(s, "a@labs.local", counted={"ip:10.0.0.5": 3}) == MESSAGE_RATE_EXCEEDED
    assert len(e.rate_limiter) == 0  # the local window was not touched
    assert RATE_WINDOW_UNAVAILABLE.code == 451
