"""The milter's watchdog logic (exmilter.milter.watchdog, exmilter.runtime.watchdog): a ping
after each answered probe, none while libmilter is gone or does not answer, one log line
per outage. The real milter under the watchdog: tests/test_systemd.py and
tests/test_supervision.py."""

from __future__ import annotations

import socket
import struct
import threading
from pathlib import Path

import pytest

from exmilter.logs.events import WatchdogProbeFailed
from exmilter.milter.watchdog import MilterWatchdog, negotiate
from exmilter.runtime.notify import WATCHDOG
from exmilter.runtime.watchdog import Pinger


class Probe:
    """Answers or raises as ``script`` says, one entry per call."""

    def __init__(self, script: list[BaseException | None]) -> None:
        self.script = script

    def __call__(self) -> None:
        outcome = self.script.pop(0)
        if outcome is not None:
            raise outcome


def watchdog(script: list[BaseException | None], alive: list[bool] | None = None):
    pings: list[str] = []
    logged: list[object] = []
    states = alive if alive is not None else [True] * len(script)
    dog = MilterWatchdog(
        0.01,
        "unix:/run/exmilter/milter.sock",
        Probe(script),
        lambda: states.pop(0),
        Pinger(pings.append, logged.append),
    )
    return dog, pings, logged


def test_pings_only_while_the_milter_answers_and_logs_once_per_outage():
    refused = ConnectionRefusedError(111, "Connection refused")
    dog, pings, logged = watchdog([None, refused, TimeoutError("timed out"), None, refused])
    assert [dog.check() for _ in range(5)] == [True, False, False, True, False]
    assert pings == [WATCHDOG, WATCHDOG]
    assert logged == [
        WatchdogProbeFailed("unix:/run/exmilter/milter.sock", "[Errno 111] Connection refused"),
        WatchdogProbeFailed("unix:/run/exmilter/milter.sock", "[Errno 111] Connection refused"),
    ]


def test_no_ping_when_libmilter_stopped_even_if_something_answers():
    dog, pings, logged = watchdog([None, None], alive=[False, True])
    assert [dog.check(), dog.check()] == [False, True]
    assert pings == [WATCHDOG]
    assert logged == [WatchdogProbeFailed("unix:/run/exmilter/milter.sock", "libmilter is not running")]


def fake_milter(path: Path, reply: bytes) -> tuple[threading.Thread, list[bytes]]:
    """One connection on a UNIX socket: reads the negotiation, answers ``reply``, reads the rest."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn, server:
            got.append(conn.recv(17))
            conn.sendall(reply)
            conn.settimeout(2)
            got.append(conn.recv(5))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t, got


def test_negotiate_speaks_the_milter_protocol(tmp_path):
    body = b"O" + struct.pack("!III", 6, 0x1FF, 0x1FFFFF)
    t, got = fake_milter(tmp_path / "m.sock", struct.pack("!I", len(body)) + body)
    negotiate(f"unix:{tmp_path / 'm.sock'}", 5)
    t.join(5)
    assert got == [struct.pack("!I", 13) + body, b"\0\0\0\x01Q"]  # the offer, then SMFIC_QUIT


def test_negotiate_fails_on_a_wrong_reply_or_no_socket(tmp_path):
    t, _ = fake_milter(tmp_path / "m.sock", b"\0\0\0\x01c")
    with pytest.raises(ConnectionError, match=r"reply b'c' to the option negotiation"):
        negotiate(f"unix:{tmp_path / 'm.sock'}", 5)
    t.join(5)
    with pytest.raises(FileNotFoundError):
        negotiate(f"unix:{tmp_path / 'gone.sock'}", 5)
    with pytest.raises(ValueError, match="cannot probe a milter at 'bogus:1'"):
        negotiate("bogus:1", 5)
