"""Two sandbox nodes behind one HAProxy sending PROXY v2, sharing one Redis window (issue #17).

HAProxy loads conf/haproxy.cfg itself (the file docs/cluster.md documents), with the
addresses in its environment; redis-server and haproxy are the tests' own, stopped by PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from exmilter.sandbox import Sandbox
from exmilter.sandbox.ports import HOST, free_port, wait_port
from tests.integration.helpers import free_offset, send
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent.parent
HAPROXY_CFG = ROOT / "conf" / "haproxy.cfg"
RATE_LIMIT = 3
# Postfix wraps a policy refusal (docs/design.md): the code, status and Exchange's text are exmilter's
RATE_421 = (
    "421 4.4.2 <app@labs.local>: Sender address rejected: "
    "Message submission rate for this client has exceeded the configured limit"
)

NODE = """\
server: {{name: {name}, fqdn: {name_l}.labs.local, domain: LABS, addresses: [127.0.0.1]}}
default_connectors: true
accepted_domains:
  - domain_name: labs.local
receive_connectors:
  - name: SMTP Relay ({name})
    transport_role: FrontendTransport
    usage: Custom
    bindings: [0.0.0.0:25]
    remote_ip_ranges: [127.0.0.56]
    permission_groups: [AnonymousUsers]
    permissions:
      - user: NT AUTHORITY\\ANONYMOUS LOGON
        extended_rights: [ms-Exch-SMTP-Accept-Any-Recipient]
    message_rate_limit: {limit}
cluster:
  proxy_protocol: haproxy
  message_rate_window: redis
  redis: 127.0.0.1:{redis}
  redis_timeout_ms: 500
  health: tcp:{health}:interface=127.0.0.1
  health_probe: 127.0.0.1:{smtp}
"""


def node_config(base: Path, name: str, redis_port: int) -> tuple[Path, int, int]:
    d = base / name.lower()
    d.mkdir(parents=True)
    d.chmod(0o755)
    path = d / "exmilter.yaml"
    health = free_port()
    path.write_text(
        NODE.format(name=name, name_l=name.lower(), limit=RATE_LIMIT, redis=redis_port, health=health, smtp=1)
    )
    offset = free_offset(path)
    path.write_text(
        NODE.format(name=name, name_l=name.lower(), limit=RATE_LIMIT, redis=redis_port, health=health, smtp=25 + offset)
    )
    return path, offset, health


class Pool:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.redis = RedisServer(base / "redis")
        self.nodes: list[Sandbox] = []
        self.health: list[int] = []
        self.haproxy: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        base = self.base
        self.redis.start()
        for name in ("EXA", "EXB"):
            path, offset, health = node_config(base, name, self.redis.port)
            sb = Sandbox(path, path.parent / "state", offset)
            sb.start()
            self.nodes.append(sb)
            self.health.append(health)
        self.port = free_port()
        env = dict(os.environ)
        env["EXMILTER_BIND"] = f"{HOST}:{self.port}"
        for i, (sb, health) in enumerate(zip(self.nodes, self.health, strict=True), 1):
            env[f"EXMILTER_NODE{i}"] = f"{HOST}:{sb.port('*:25')}"
            env[f"EXMILTER_NODE{i}_HEALTH"] = str(health)
        self.haproxy = subprocess.Popen(
            ["haproxy", "-db", "-f", str(HAPROXY_CFG)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        proc = self.haproxy
        assert wait_port(self.port, 30, alive=lambda: proc.poll() is None), "haproxy did not start"
        for h in self.health:
            assert self.wait_health(h, 200), f"node health on {h} never up"

    def wait_health(self, port: int, status: int, timeout: float = 30) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if health(port)[0] == status:
                return True
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        if self.haproxy is not None and self.haproxy.poll() is None:
            os.kill(self.haproxy.pid, signal.SIGTERM)
            self.haproxy.wait(timeout=10)
        for sb in self.nodes:
            sb.stop()
        self.redis.stop()


def health(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


@pytest.fixture(scope="module")
def pool() -> Iterator[Pool]:
    base = Path(tempfile.mkdtemp(prefix="exmilter-cluster-", dir="/tmp"))
    base.chmod(0o755)  # Postfix and the delivery user must reach the state directories
    p = Pool(base)
    try:
        p.start()
        yield p
    finally:
        p.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_relay_host_relays_others_get_5754_through_either_node_with_the_real_ip(pool: Pool) -> None:
    queued = []
    for _ in range(2):  # round robin: one through each node
        out = send(pool.port, "127.0.0.56", "app@labs.local", ["someone@gmail.com"])
        assert out.stage == "queued", out
        queued.append(out.reply)
    for _ in range(2):
        refused = send(pool.port, "127.0.0.2", "x@labs.local", ["someone@gmail.com"])
        assert refused.stage == "rcpt" and refused.reply.startswith("550 5.7.54"), refused
    end = time.monotonic() + 60
    delivered: list = []
    while len(delivered) < 2 and time.monotonic() < end:
        time.sleep(0.2)
        delivered = [d for sb in pool.nodes for d in sb.deliveries()]
    assert len(delivered) == 2, "not delivered"
    assert all(sb.deliveries() for sb in pool.nodes)  # one through each node
    assert {d.envelope.get("client_address") for d in delivered} == {"127.0.0.56"}  # never HAProxy's 127.0.0.1
    for sb in pool.nodes:
        log = sb.postfix.maillog.read_text(errors="replace")
        assert "[127.0.0.56]" in log and "connect from localhost[127.0.0.1]" not in log


def test_the_shared_window_refuses_the_n_plus_first_across_both_nodes(pool: Pool) -> None:
    """The previous test sent 2 of 127.0.0.56's RATE_LIMIT (3) through the two nodes: one more
    passes, through whichever node, and every later one is refused, whichever node counts it."""
    outcomes = [send(pool.port, "127.0.0.56", "app@labs.local", ["someone@labs.local"]) for _ in range(3)]
    assert [o.stage for o in outcomes] == ["queued", "mail", "mail"], outcomes
    assert [o.reply for o in outcomes[1:]] == [RATE_421, RATE_421]


def test_redis_and_a_daemon_killed_mid_run_lose_nothing_and_relay_nothing_wrongly(pool: Pool) -> None:
    """Every message is delivered or refused with a 4xx; nothing from a non-relay host is relayed."""
    outcomes = []
    pool.redis.stop()
    # the relay host's MAIL cannot be counted: a temporary failure, through either node
    for _ in range(2):
        out = send(pool.port, "127.0.0.56", "app@labs.local", ["someone@gmail.com"])
        assert out.stage == "mail" and out.reply.startswith("451 4.4.3 "), out
    pool.redis.start()  # an empty Redis: a fresh window
    a = pool.nodes[0]
    a.stop_policyd()
    assert pool.wait_health(pool.health[0], 0)  # node A's check no longer answers
    for i in range(8):
        for source, rcpt in (("127.0.0.3", f"user{i}@labs.local"), ("127.0.0.3", "someone@gmail.com")):
            outcomes.append((source, rcpt, send(pool.port, source, f"s{i}@labs.local", [rcpt])))
    shown = "\n".join(f"{s} {r} {o}" for s, r, o in outcomes) + "\n" + a.postfix.maillog_tail(40)
    for _, rcpt, out in outcomes:
        if rcpt.endswith("@gmail.com"):
            assert out.stage != "queued" and out.code in range(400, 600), shown  # never relayed
        else:
            assert out.stage == "queued" or 400 <= out.code < 500, shown  # delivered below, or a 4xx
    queued = [rcpt for _, rcpt, out in outcomes if out.stage == "queued"]
    assert queued, "node B took nothing after node A was drained"
    end = time.monotonic() + 60
    while time.monotonic() < end:
        delivered = {r for sb in pool.nodes for d in sb.deliveries() for r in d.recipients}
        if set(queued) <= delivered:
            break
        time.sleep(0.2)
    assert set(queued) <= delivered, "a queued message was lost"
    a.start_policyd()
    assert pool.wait_health(pool.health[0], 200)
