"""systemd's service notifications (``Type=notify``): readiness, reloads, stopping, watchdog.

Plain sockets, no reactor, safe from any thread: both daemons use it. Outside systemd
(no ``NOTIFY_SOCKET``) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from exmilter.logs.events import EventSink, NotifyFailed

READY = "READY=1"
RELOADING = "RELOADING=1"
STOPPING = "STOPPING=1"
#: The watchdog keep-alive (``WatchdogSec=``): sent at least every :func:`watchdog_interval`.
WATCHDOG = "WATCHDOG=1"


def sd_notify(message: str, environ: Mapping[str, str] = os.environ, log: EventSink | None = None) -> bool:
    """Send ``message`` to systemd; True when it was sent. A socket that does not take it is
    reported to ``log`` (:class:`~exmilter.logs.events.NotifyFailed`), never raised."""
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    target = "\0" + address[1:] if address.startswith("@") else address  # "@": the abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(target)
            s.sendall(message.encode())
    except OSError as e:
        if log is not None:
            log(NotifyFailed(address, str(e)))
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] = os.environ, pid: int | None = None) -> float | None:
    """Seconds between two :data:`WATCHDOG` pings when systemd watches this process (half of
    ``WATCHDOG_USEC``, as sd_watchdog_enabled(3) advises), else None."""
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None  # meant for another process (a parent that started us)
    return int(usec) / 2e6
