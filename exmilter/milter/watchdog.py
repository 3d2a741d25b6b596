"""systemd's watchdog for the milter (``WatchdogSec=``), fed only while it answers.

Every half ``WATCHDOG_USEC`` a thread negotiates with the milter over libmilter's own
socket, as Postfix does at the start of every session: it sends ``SMFIC_OPTNEG`` and waits
for libmilter's ``SMFIC_OPTNEG`` reply, then quits. The reply needs libmilter's listener
thread to accept, a session thread to start and pymilter's Python negotiate callback to
run, so a libmilter that stopped, a socket that was removed, a wedged interpreter or
exhausted threads all stop the pings and systemd restarts the milter. The probe never
reaches the connect callback: no session, metric or log line counts it. Outside systemd,
or without ``WatchdogSec=``, nothing runs.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable

from exmilter.runtime.watchdog import Pinger

#: The milter protocol version and the actions and protocol steps Postfix offers (all of
#: them): libmilter answers any offer it can work with.
SMFI_VERSION = 6
SMFIF_ALL = 0x1FF
SMFIP_ALL = 0x1FFFFF
#: A reply packet is small; anything beyond this is not libmilter's.
MAX_REPLY = 65536


def _address(sock: str) -> tuple[int, str | tuple[str, int]]:
    """libmilter's ``unix:PATH`` / ``inet:PORT@HOST`` / ``inet6:PORT@HOST`` as a socket address."""
    kind, _, rest = sock.partition(":")
    if kind in ("unix", "local"):
        return socket.AF_UNIX, rest
    port, _, host = rest.partition("@")
    if kind in ("inet", "inet6") and port.isdigit():
        return (socket.AF_INET6 if kind == "inet6" else socket.AF_INET), (host or "127.0.0.1", int(port))
    raise ValueError(f"cannot probe a milter at {sock!r}")


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed before the reply")
        data += chunk
    return data


def packet(command: bytes, data: bytes = b"") -> bytes:
    """One milter protocol packet: its length (4 bytes), the command byte, the command's data."""
    return struct.pack("!I", len(data) + 1) + command + data


def read_packet(s: socket.socket) -> bytes:
    """The next packet libmilter sends (command byte and data); ConnectionError for anything else."""
    (length,) = struct.unpack("!I", _recv_exactly(s, 4))
    if not 0 < length <= MAX_REPLY:
        raise ConnectionError(f"reply of {length} bytes")
    return _recv_exactly(s, length)


def negotiate(sock: str, timeout: float) -> None:
    """One option negotiation with the milter at ``sock`` (libmilter's socket string);
    returns when it answered, raises OSError (or ValueError for a socket it cannot reach)."""
    family, address = _address(sock)
    with socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
        s.settimeout(timeout)
        s.connect(address)
        s.sendall(packet(b"O", struct.pack("!III", SMFI_VERSION, SMFIF_ALL, SMFIP_ALL)))
        reply = read_packet(s)
        if reply[:1] != b"O":
            raise ConnectionError(f"reply {reply[:1]!r} to the option negotiation")
        s.sendall(packet(b"Q"))


class MilterWatchdog:
    """Probes every ``interval`` seconds on its own thread; a ping only when ``alive()`` and
    ``probe()`` returned (it raises OSError or ValueError when the milter does not answer)."""

    def __init__(
        self,
        interval: float,
        where: str,
        probe: Callable[[], None],
        alive: Callable[[], bool],
        pinger: Pinger,
    ) -> None:
        self.interval = interval
        self.where = where
        self.probe = probe
        self.alive = alive
        self.pinger = pinger
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="exmilter-watchdog", daemon=True)

    def check(self) -> bool:
        """One probe and its outcome; True when systemd was pinged."""
        if not self.alive():
            self.pinger.failed(self.where, "libmilter is not running")
            return False
        try:
            self.probe()
        except (OSError, ValueError) as e:
            self.pinger.failed(self.where, str(e) or type(e).__name__)
            return False
        self.pinger.answered()
        return True

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()
