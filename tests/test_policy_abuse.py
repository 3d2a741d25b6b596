"""The policy daemon's bounds against the kernel: one real daemon, hostile clients on 127.0.0.1.

A client that writes requests and never reads the answers, one that pipelines a flood and
reads, a slow drip, and more connections than the cap (docs/policyd.md, "Limits"). The
same logic without sockets, byte by byte: tests/test_policy_limits.py.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SERVER
from tests.policy_fixtures import CONNECTORS, RELAY_554, answer, private_logs, rcpt_wire

ROOT = Path(__file__).resolve().parent.parent

MAX_CONNECTIONS = 4
REQUEST_TIMEOUT = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Daemon:
    proc: subprocess.Popen
    port: int
    unix: str
    metrics_port: int
    log: Path

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def metric(self, name: str, **labels: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        raise AssertionError(f"no sample {name} {labels}")

    def tcp(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def unix_socket(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(self.unix)
        return s

    def settled(self) -> None:
        """Wait until the daemon has seen every earlier connection close."""
        wait_for(lambda: self.metric("exmilter_policy_connections") == 0, "connections from an earlier test")

    def logged(self) -> str:
        return self.log.read_text(errors="replace")


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"still waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("abuse")
    cfg = tmp / "exmilter.yaml"
    cfg.write_text(
        SERVER
        + CONNECTORS
        + f"policyd:\n  max_connections: {MAX_CONNECTIONS}\n  request_timeout: {REQUEST_TIMEOUT}\n"
        + private_logs(tmp)
    )
    port, metrics_port, unix = free_port(), free_port(), str(tmp / "policy.sock")
    log = tmp / "policyd.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exmilter.cli",
                "policyd",
                "-c",
                str(cfg),
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                "--listen",
                f"unix:{unix}:mode=600",
                "--metrics",
                f"tcp:{metrics_port}:interface=127.0.0.1",
            ],
            cwd=ROOT,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    d = Daemon(proc, port, unix, metrics_port, log)
    try:
        wait_for(lambda: "ready: configuration generation 1" in d.logged() or proc.poll() is not None, "the daemon")
        assert proc.poll() is None, d.logged()
        yield d
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ask(s: socket.socket, instance: str, client: str = "203.0.113.9") -> tuple[bytes, float]:
    """One request, as Postfix sends it; the answer and how long it took."""
    t0 = time.perf_counter()
    s.sendall(rcpt_wire(client, instance=instance))
    got = b""
    while not got.endswith(b"\n\n"):
        chunk = s.recv(4096)
        assert chunk, "the daemon closed a well-behaved connection"
        got += chunk
    return got, time.perf_counter() - t0


def closed_within(s: socket.socket, seconds: float) -> bool:
    """True when the peer closes (EOF or reset) within ``seconds``."""
    s.setblocking(False)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ready, _, _ = select.select([s], [], [], max(0.0, end - time.monotonic()))
        if ready:
            try:
                if s.recv(65536) == b"":
                    return True
            except (ConnectionResetError, BrokenPipeError):
                return True
            except BlockingIOError:
                pass
    return False


EMPTY_REQUESTS = b"\n" * (4 << 20)  # 4 Mi requests of one byte, each answered "action=DUNNO" (14 bytes)


def test_a_client_that_never_reads_cannot_grow_the_daemon(daemon):
    """Over the unix socket Postfix uses: the daemon stops reading once its answers to that
    client pile up, so the client's writes block; another client is answered throughout."""
    daemon.settled()
    pauses = daemon.metric("exmilter_policy_read_pauses_total", reason="unsent_answers")
    rss0 = daemon.rss_kb()
    with daemon.unix_socket() as other, daemon.unix_socket() as hog:
        hog.setblocking(False)
        sent, stuck_since, waits, n = 0, None, [], 0
        last_ask = 0.0
        while sent < len(EMPTY_REQUESTS):
            _, writable, _ = select.select([], [hog], [], 0.05)
            if writable:
                try:
                    sent += hog.send(EMPTY_REQUESTS[sent : sent + 65536])
                    stuck_since = None
                except BlockingIOError:
                    pass
            elif stuck_since is None:
                stuck_since = time.monotonic()
            elif time.monotonic() - stuck_since > 1.5:
                break  # the daemon no longer reads from this client
            if time.monotonic() - last_ask > 0.02:
                got, took = ask(other, f"o{n}")
                assert got == answer(RELAY_554)
                waits.append(took)
                n += 1
                last_ask = time.monotonic()
        grown_mb = (daemon.rss_kb() - rss0) / 1024
        for i in range(5):  # still answered while the non-reading client is held
            got, took = ask(other, f"after{i}")
            assert got == answer(RELAY_554)
            waits.append(took)
    assert sent < len(EMPTY_REQUESTS) // 4, f"the daemon read {sent} bytes from a client that never reads"
    assert grown_mb < 10, f"RSS grew by {grown_mb:.1f} MB"
    assert max(waits) < 1.0, f"another client waited {max(waits) * 1000:.0f} ms"
    assert daemon.metric("exmilter_policy_read_pauses_total", reason="unsent_answers") == pauses + 1
    assert "the client is not reading its answers (over 64 KiB unsent): reading paused until it does" in daemon.logged()


def test_a_pipelined_flood_does_not_delay_other_clients(daemon):
    """A client pipelining a million requests (and reading the answers) gets
    MAX_REQUESTS_PER_TURN answers per reactor turn; a Postfix-like client is answered in between."""
    daemon.settled()
    flood_data = EMPTY_REQUESTS[: 1 << 20]
    expected = len(flood_data) * len(answer("DUNNO"))
    with daemon.tcp() as other, daemon.tcp() as flood:
        flood.setblocking(False)
        sent = received = 0
        waits: list[float] = []
        last_ask = 0.0
        deadline = time.monotonic() + 30
        while received < expected and time.monotonic() < deadline:
            readable, writable, _ = select.select([flood], [flood] if sent < len(flood_data) else [], [], 0.005)
            if readable:
                received += len(flood.recv(1 << 20))
            if writable:
                with contextlib.suppress(BlockingIOError):
                    sent += flood.send(flood_data[sent : sent + 65536])
            if sent and received < expected * 0.9 and time.monotonic() - last_ask > 0.005:
                waits.append(ask(other, f"p{len(waits)}")[1])
                last_ask = time.monotonic()
    assert received == expected, "every pipelined request is answered"
    assert len(waits) >= 10
    assert statistics.median(waits) < 0.02, f"median wait {statistics.median(waits) * 1000:.0f} ms during the flood"


def test_a_slow_drip_is_closed_at_the_request_deadline(daemon):
    daemon.settled()
    before = daemon.metric("exmilter_policy_timeouts_total", kind="request")
    with daemon.tcp() as s:
        assert ask(s, "whole")[0] == answer(RELAY_554)  # a whole request: no deadline
        data = rcpt_wire(instance="drip")
        start = time.monotonic()
        closed = False
        for i in range(len(data)):  # one byte every 0.25 s: would take over a minute
            try:
                s.send(data[i : i + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if closed_within(s, 0.25):
                closed = True
                break
            if time.monotonic() - start > REQUEST_TIMEOUT + 3:
                break
        took = time.monotonic() - start
    assert closed, "a slow drip was still open after the request deadline"
    assert REQUEST_TIMEOUT - 0.5 < took < REQUEST_TIMEOUT + 2, took
    assert daemon.metric("exmilter_policy_timeouts_total", kind="request") == before + 1
    assert f"request incomplete after {REQUEST_TIMEOUT}s" in daemon.logged()


def test_connections_above_the_cap_are_closed_at_once(daemon):
    daemon.settled()
    before = daemon.metric("exmilter_policy_refused_connections_total")
    conns = [daemon.tcp() for _ in range(MAX_CONNECTIONS)]
    try:
        for i, c in enumerate(conns):
            assert ask(c, f"cap{i}")[0] == answer(RELAY_554)
        with daemon.tcp() as extra:  # the kernel accepts it; the daemon closes it unanswered
            assert closed_within(extra, 5.0), "the connection over the cap was kept open"
        assert daemon.metric("exmilter_policy_refused_connections_total") == before + 1
        assert daemon.metric("exmilter_policy_max_connections") == MAX_CONNECTIONS
        conns.pop().close()
        wait_for(lambda: daemon.metric("exmilter_policy_connections") == MAX_CONNECTIONS - 1, "the close")
        conns.append(daemon.tcp())
        assert ask(conns[-1], "again")[0] == answer(RELAY_554)  # room again
    finally:
        for c in conns:
            c.close()
    assert f"refused 1 policy connection(s): {MAX_CONNECTIONS} open, the limit is {MAX_CONNECTIONS}" in daemon.logged()
    assert os.path.exists(daemon.unix)
