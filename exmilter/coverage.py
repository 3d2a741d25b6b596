"""The sessions the milter judges, as the milter tells the policy daemon (docs/milter.md).

One datagram per event on a local unix datagram socket: ``+ CONTEXT CLIENT PORT`` when the
milter opens a session that selected a connector (before Postfix sends the banner),
``- CONTEXT CLIENT PORT`` when it closes, ``*`` when a milter process starts (it has no
session yet: whatever an earlier one registered and could not withdraw is void). The
policy daemon answers ``DUNNO``/``OK`` without deciding only for registered sessions, so
a missing or dead milter degrades to the policy-only behaviour, never to an open relay.

Pure: the format, both ways. The sender is exmilter.milter.coverage, the receiver
exmilter.policy.coverage.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The longest datagram either side writes or reads: a context, an IPv6 address, a port.
MAX_DATAGRAM = 256
RESET = b"*"


@dataclass(frozen=True, slots=True)
class SessionKey:
    """What a policy request and a milter connection both know of one SMTP session."""

    context: str  # the listener context (policy_context = {daemon_name})
    client: str  # client_address = {client_addr}
    port: str  # client_port = {client_port}, as Postfix writes it


@dataclass(frozen=True, slots=True)
class Notice:
    """One datagram: a session registered (``added``) or withdrawn, or ``key`` None: reset."""

    added: bool
    key: SessionKey | None


def encode(added: bool, key: SessionKey) -> bytes:
    return f"{'+' if added else '-'} {key.context} {key.client} {key.port}".encode("ascii", "replace")


def decode(datagram: bytes) -> Notice | None:
    """The notice in ``datagram``, or None when it is not one (ignored: fail closed, the
    policy daemon then judges the session itself)."""
    if datagram.strip() == RESET:
        return Notice(False, None)
    if len(datagram) > MAX_DATAGRAM:
        return None
    parts = datagram.decode("ascii", "replace").split()
    if len(parts) != 4 or parts[0] not in ("+", "-") or not parts[3].isdigit():
        return None
    return Notice(parts[0] == "+", SessionKey(parts[1], parts[2], parts[3]))


class CoveredSessions:
    """The registered sessions: bounded, each expiring ``ttl`` seconds after registration
    (longer than any session may last), oldest dropped first when full. Pure; one thread."""

    def __init__(self, max_sessions: int, ttl: float) -> None:
        self.max_sessions = max_sessions
        self.ttl = ttl
        self._at: dict[SessionKey, float] = {}  # insertion order = registration order

    def apply(self, notice: Notice, now: float) -> None:
        if notice.key is None:
            self._at.clear()
        elif notice.added:
            self._at.pop(notice.key, None)
            self._at[notice.key] = now
            while len(self._at) > self.max_sessions:
                del self._at[next(iter(self._at))]
        else:
            self._at.pop(notice.key, None)

    def covers(self, key: SessionKey, now: float) -> bool:
        at = self._at.get(key)
        if at is None:
            return False
        if now - at >= self.ttl:
            del self._at[key]
            return False
        return True

    def __len__(self) -> int:
        return len(self._at)
