"""Loopback ports for the sandbox: where each listener moves, and whether a port serves yet."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from exmilter.deployment import ListenerPlan

#: Everything the sandbox runs listens here.
HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A port nothing listens on right now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def port_free(port: int, host: str = HOST) -> bool:
    """Whether ``host:port`` can be bound."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def wait_port(port: int, timeout: float, host: str = HOST, alive: Callable[[], bool] | None = None) -> bool:
    """True once ``host:port`` accepts; False on timeout or when ``alive()`` turns False."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            return False
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return True
        time.sleep(0.05)
    return False


def move_listeners(plans: list[ListenerPlan], offset: int, host: str = HOST) -> list[ListenerPlan]:
    """Each listener to ``host:port+offset``; a later listener that collides gets a free port."""
    used: set[int] = set()
    out = []
    for p in plans:
        port = p.listener.port + offset
        if port in used or not 0 < port < 65536:
            port = free_port(host)
            while port in used:
                port = free_port(host)
        used.add(port)
        out.append(p.moved(host, port))
    return out
