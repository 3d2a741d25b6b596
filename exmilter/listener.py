"""How a Postfix listener names the Exchange binding it stands for.

The renderer writes one ``policy_context`` (and ``milter_macro_daemon_name``) per smtpd
service; the policy daemon and the milter read it back. It survives a proxy and the
sandbox's port moves, where ``server_address``/``server_port`` do not (postfix-notes §4).

Forms: ``10.1.1.1:25`` / ``[2001:db8::1]:25`` for an exact local address, ``*:25`` for
a wildcard listener (the client's family picks ``0.0.0.0:25`` or ``[::]:25``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from exmilter.values import parse_ip

_CONTEXT_RE = re.compile(r"^(?:\*|\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<v4>[0-9.]+)):(?P<port>\d{1,5})$")


@dataclass(frozen=True, slots=True)
class Listener:
    address: str | None  # None: wildcard (any local address of the port)
    port: int

    @property
    def context(self) -> str:
        if self.address is None:
            return f"*:{self.port}"
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Listener:
        """Raise ValueError for anything that is not a listener context."""
        m = _CONTEXT_RE.match(text.strip())
        if not m:
            raise ValueError(f"{text!r} is not a listener context (forms: *:25, 10.1.1.1:25, [::1]:25)")
        port = int(m["port"])
        if not 1 <= port <= 65535:
            raise ValueError(f"{text!r}: port must be 1-65535")
        addr = m["v6"] or m["v4"]
        return cls(str(parse_ip(addr)) if addr else None, port)

    def __str__(self) -> str:
        return self.context
