"""Connection limits (spec §3.1, §3.10) as the rendered Postfix enforces them.

The integration configuration's "Limited (EXCH01)" connector is alone on port 2527 with
MaxInboundConnectionPerSource 1 and MaxInboundConnection 2, so its listener carries
``-o smtpd_client_connection_count_limit=1`` and maxproc 2 (docs/render-postfix.md,
"Connection limits").
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from exmilter.sandbox import Sandbox
from tests.integration.helpers import HOST, raw_session

BANNER = b"220 EXCH01 Limited Connector\r\n"


@contextmanager
def session(port: int, source: str, timeout: float = 10) -> Iterator[socket.socket]:
    """A connected client that has read its banner; QUIT on leaving."""
    s = socket.create_connection((HOST, port), timeout=timeout, source_address=(source, 0))
    try:
        assert read_line(s) == BANNER
        yield s
        s.sendall(b"QUIT\r\n")
        assert read_line(s).startswith(b"221 ")
    finally:
        s.close()


def read_line(s: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = s.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def banner_after_release(port: int, source: str, timeout: float = 10) -> bytes:
    """The first reply a new connection from ``source`` gets once anvil has seen the last one go."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.create_connection((HOST, port), timeout=10, source_address=(source, 0)) as s:
            line = read_line(s)
            if line == BANNER or time.monotonic() > deadline:
                return line
        time.sleep(0.1)


def wait_logged(sb: Sandbox, needle: str, timeout: float = 10) -> bool:
    """postlogd writes the maillog asynchronously."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in sb.postfix.maillog_text():
            return True
        time.sleep(0.1)
    return False


def test_second_connection_from_one_address_is_refused(sandbox: Sandbox) -> None:
    port = sandbox.port("*:2527")
    with session(port, "127.0.0.40"):
        refused = raw_session(port, "127.0.0.40")
        assert refused == b"421 4.7.0 exch01.labs.local Error: too many connections from 127.0.0.40\r\n"
        with session(port, "127.0.0.41"):  # the limit is per source address
            pass
    assert banner_after_release(port, "127.0.0.40") == BANNER
    logged = f"warning: Connection concurrency limit exceeded: 2 from unknown[127.0.0.40] for service {HOST}:{port}"
    assert wait_logged(sandbox, logged), sandbox.postfix.maillog_tail()


def test_clients_beyond_the_connector_total_wait_for_a_free_process(sandbox: Sandbox) -> None:
    """maxproc 2: a third client is not refused, it gets its banner once a session ends."""
    port = sandbox.port("*:2527")
    with session(port, "127.0.0.43"), ExitStack() as stack:
        first = stack.enter_context(
            socket.create_connection((HOST, port), timeout=10, source_address=("127.0.0.42", 0))
        )
        assert read_line(first) == BANNER
        third = stack.enter_context(socket.create_connection((HOST, port), timeout=2, source_address=("127.0.0.44", 0)))
        with pytest.raises(TimeoutError):
            third.recv(1)  # both smtpd processes are busy: no banner, no refusal either
        first.sendall(b"QUIT\r\n")
        assert read_line(first).startswith(b"221 ")
        third.settimeout(10)
        assert read_line(third) == BANNER
        third.sendall(b"QUIT\r\n")
        assert read_line(third).startswith(b"221 ")
