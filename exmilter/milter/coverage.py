"""The milter's side of the coverage registration (exmilter.coverage): one datagram each.

Sending never blocks and never fails a session: a policy daemon that is down, restarting or
slow to read loses the datagram and then judges the session itself (stricter wrapped texts,
never more open). Safe from any libmilter thread (one ``sendto`` per call on a shared socket).
"""

from __future__ import annotations

import socket

from exmilter.coverage import RESET, SessionKey, encode


class CoverageSender:
    """Datagrams to the policy daemon's coverage socket at ``path`` (None: send nothing)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.failures = 0  # sends the policy daemon did not take (counted, never raised)
        self._sock: socket.socket | None = None
        if path:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    def _send(self, data: bytes) -> bool:
        if self._sock is None or self.path is None:
            return False
        try:
            self._sock.sendto(data, self.path)
        except OSError:
            self.failures += 1
            return False
        return True

    def register(self, key: SessionKey) -> bool:
        return self._send(encode(True, key))

    def withdraw(self, key: SessionKey) -> bool:
        return self._send(encode(False, key))

    def reset(self) -> bool:
        """A new milter process: nothing an earlier one registered is still covered."""
        return self._send(RESET)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
