"""Parsers for Exchange's own value syntax (spec §1.1).

Each parser takes the text an admin would type in the Exchange Management Shell and
returns a typed value, or raises :class:`ValueError` with a message that reads well
after ``file:line:col: key:``.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache

__all__ = [
    "UNLIMITED",
    "Binding",
    "IPRange",
    "parse_binding",
    "parse_bool",
    "parse_byte_size",
    "parse_ip",
    "parse_ip_range",
    "parse_timespan",
    "parse_unlimited_int",
]

#: Marker for "unlimited" in unlimited-capable integer properties.
UNLIMITED: None = None

_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
_SIZE_RE = re.compile(
    r"^\s*(?P<num>[\d,.]+)\s*(?P<unit>[KMGT]?B)?\s*(?:\((?P<bytes>[\d,.]+)\s*bytes\))?\s*$",
    re.IGNORECASE,
)


def parse_byte_size(text: str | int) -> int:
    """``36MB``, ``36 MB``, ``37748736`` or Exchange's display form ``36 MB (37,748,736 bytes)``."""
    if isinstance(text, bool):
        raise ValueError("expected a byte size such as 36MB")
    if isinstance(text, int):
        if text < 0:
            raise ValueError("a byte size cannot be negative")
        return text
    m = _SIZE_RE.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a byte size (forms: 37748736, 36MB, 36 MB)")
    if m.group("bytes"):
        return int(m.group("bytes").replace(",", "").replace(".", ""))
    unit = (m.group("unit") or "B").upper()
    num = m.group("num").replace(",", "")
    try:
        value = float(num) * _UNITS[unit] if "." in num else int(num) * _UNITS[unit]
    except ValueError:
        raise ValueError(f"{text!r} is not a byte size") from None
    if value in (float("inf"), float("-inf")) or value != value:  # a decimal too long for a float
        raise ValueError(f"{str(text)[:40]!r}... is not a byte size exmilter can hold")
    if value != int(value):
        raise ValueError(f"{text!r} is not a whole number of bytes")
    return int(value)


def parse_unlimited_int(text: str | int) -> int | None:
    """An integer or ``unlimited`` (any case); ``None`` stands for unlimited."""
    if isinstance(text, bool):
        raise ValueError("expected an integer or 'unlimited'")
    if isinstance(text, int):
        return text
    s = str(text).strip()
    if s.lower() == "unlimited":
        return UNLIMITED
    if re.fullmatch(r"-?\d+", s):
        return int(s)
    raise ValueError(f"{text!r} is neither an integer nor 'unlimited'")


_TIMESPAN_RE = re.compile(r"^(?:(?P<d>\d+)\.)?(?P<h>\d{1,2}):(?P<m>\d{2}):(?P<s>\d{2})$")


def parse_timespan(text: str) -> timedelta:
    """``[d.]hh:mm:ss`` as Exchange writes time spans: ``00:05:00``, ``1.00:00:00``."""
    m = _TIMESPAN_RE.match(str(text).strip())
    if not m:
        raise ValueError(f"{text!r} is not a time span (form [d.]hh:mm:ss, e.g. 00:05:00)")
    h, mi, s = int(m["h"]), int(m["m"]), int(m["s"])
    if h > 23 or mi > 59 or s > 59:
        raise ValueError(f"{text!r} is not a time span: hours < 24, minutes and seconds < 60")
    return timedelta(days=int(m["d"] or 0), hours=h, minutes=mi, seconds=s)


def parse_bool(text: str | bool) -> bool:
    """``$true``/``$false``, ``true``/``false`` and YAML booleans."""
    if isinstance(text, bool):
        return text
    s = str(text).strip().lower().lstrip("$")
    if s in ("true", "yes", "1"):
        return True
    if s in ("false", "no", "0"):
        return False
    raise ValueError(f"{text!r} is not a boolean ($true or $false)")


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def unmapped(addr: IPAddress) -> IPAddress:
    """``::ffff:a.b.c.d`` as the IPv4 address it carries (spec §2.1 step 5); others unchanged."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def parse_ip(text: str) -> IPAddress:
    """One address; an IPv6 zone index (``%11``) is accepted and ignored (spec §7 #21).

    ``::ffff:a.b.c.d`` is returned as the IPv4 address, as Exchange never mixes families
    and a dual-stack socket shows IPv4 peers that way (spec §2.1 step 5).
    """
    s = str(text).strip()
    if s.startswith("[") and s.endswith("]"):
        s = s[1:-1]
    if "%" in s:
        s = s.split("%", 1)[0]
    try:
        addr = ipaddress.ip_address(s)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None
    return unmapped(addr)


@dataclass(frozen=True, order=True, slots=True)
class IPRange:
    """An inclusive range of addresses of one family, stored as exact integers.

    ``str()`` writes the range back in Exchange's syntax: one address, a CIDR block when
    the range is one, else ``first-last``. ``text`` keeps what the file said only where
    that differs (``192.168.1.1/24``, ``10.0.0.0-10.0.0.255``, a netmask or a zone index),
    so the common forms cost no string per range. Equality ignores ``text``.
    """

    version: int
    first: int
    last: int
    text: str = field(default="", compare=False)

    @property
    def size(self) -> int:
        """Specificity as Exchange measures it: ``upper - lower + 1`` (spec §2.1 step 2)."""
        return self.last - self.first + 1

    def __contains__(self, addr: object) -> bool:
        if isinstance(addr, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return addr.version == self.version and self.first <= int(addr) <= self.last
        return False

    def __str__(self) -> str:
        return self.text or _canonical(self.version, self.first, self.last)


def _address_text(version: int, n: int) -> str:
    if version == 4:
        return socket.inet_ntop(socket.AF_INET, n.to_bytes(4, "big"))
    return socket.inet_ntop(socket.AF_INET6, n.to_bytes(16, "big"))


def _cidr_prefix(version: int, first: int, last: int) -> int | None:
    """The prefix length if ``first``-``last`` is exactly one CIDR block, else None."""
    size = last - first + 1
    if size & (size - 1) or first & (size - 1):
        return None
    return (32 if version == 4 else 128) - (size.bit_length() - 1)


def _canonical(version: int, first: int, last: int) -> str:
    """How :class:`IPRange` writes a range whose source text was not kept."""
    lo = _address_text(version, first)
    if first == last:
        return lo
    prefix = _cidr_prefix(version, first, last)
    if prefix is not None:
        return f"{lo}/{prefix}"
    return f"{lo}-{_address_text(version, last)}"


def _number(text: str) -> tuple[int, int, bool]:
    """One end of a range as (version, integer, canonical), without IPv4-mapped folding.

    ``canonical`` is True when ``text`` is exactly how :func:`_address_text` writes the
    address back (no blanks, no zone index, IPv6 in its shortest lower-case form).
    ``inet_pton`` does the work: configurations with 100,000 ranges load several times
    faster than through :mod:`ipaddress`, which is kept for netmask and CIDR arithmetic.
    """
    s = text.strip()
    if "%" in s:
        s = s.split("%", 1)[0]
    try:
        # inet_pton accepts only the dotted quad without leading zeros: always canonical
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, s), "big"), len(s) == len(text)
    except OSError:
        pass
    try:
        if ":" in s:
            packed = socket.inet_pton(socket.AF_INET6, s)
            canonical = len(s) == len(text) and socket.inet_ntop(socket.AF_INET6, packed) == s
            return 6, int.from_bytes(packed, "big"), canonical
    except OSError:
        pass
    raise ValueError(f"{text.strip()!r} is not an IP address")


def parse_ip_range(text: str) -> IPRange:
    """Every RemoteIPRanges form: single, ``a-b``, CIDR (host bits masked), ``ip(netmask)``."""
    s = str(text).strip()
    if not s:
        raise ValueError("empty IP range")
    if s.endswith(")"):
        m = re.fullmatch(r"(.+)\((.+)\)", s)
        if not m:
            raise ValueError(f"{s!r} is not an IP range")
        (v, addr, _), (mv, mask, _) = _number(m.group(1)), _number(m.group(2))
        if v != mv:
            raise ValueError(f"{s!r}: address and netmask are of different families")
        bits = 32 if v == 4 else 128
        inverted = ~mask & ((1 << bits) - 1)
        if inverted & (inverted + 1):
            raise ValueError(f"{s!r}: {m.group(2).strip()!r} is not a netmask")
        return IPRange(v, addr & mask, (addr & mask) | inverted, s)
    if "/" in s:
        addr_text, _, prefix = s.partition("/")
        v, addr, canonical = _number(addr_text)
        bits = 32 if v == 4 else 128
        if not prefix.isdigit() or int(prefix) > bits:
            raise ValueError(f"{s!r}: prefix length must be 0-{bits}")
        host = (1 << (bits - int(prefix))) - 1
        first = addr & ~host
        # kept as written unless str() gives it back: no host bits, no leading zero, not a /32
        canonical = canonical and first == addr and host != 0 and prefix == str(int(prefix))
        return IPRange(v, first, first | host, "" if canonical else s)
    if "-" in s:
        lo_text, _, hi_text = s.partition("-")
        (v, lo, lo_ok), (hv, hi, hi_ok) = _number(lo_text), _number(hi_text)
        if v != hv:
            raise ValueError(f"{s!r}: both ends of a range must be of one family")
        if lo > hi:
            raise ValueError(f"{s!r}: the first address is greater than the last")
        canonical = lo_ok and hi_ok and lo != hi and _cidr_prefix(v, lo, hi) is None
        return IPRange(v, lo, hi, "" if canonical else s)
    v, addr, canonical = _number(s)
    return IPRange(v, addr, addr, "" if canonical else s)


@dataclass(frozen=True, order=True, slots=True)
class Binding:
    """A local endpoint a receive connector listens on: ``IPv4:port`` or ``[IPv6]:port``."""

    version: int
    address: int
    port: int

    @property
    def ip(self) -> IPAddress:
        return ipaddress.IPv4Address(self.address) if self.version == 4 else ipaddress.IPv6Address(self.address)

    @property
    def is_wildcard(self) -> bool:
        return self.address == 0

    def wildcard(self) -> Binding:
        return Binding(self.version, 0, self.port)

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}" if self.version == 4 else f"[{self.ip}]:{self.port}"


def parse_binding(text: str) -> Binding:
    """``0.0.0.0:25``, ``10.1.1.1:25``, ``[::]:25``, ``[2001:db8::1]:25``.

    Bindings are few and repeated on many connectors: equal texts share one object.
    """
    return _parse_binding(str(text))


@lru_cache(maxsize=1024)
def _parse_binding(text: str) -> Binding:
    s = text.strip()
    m = re.fullmatch(r"\[(?P<v6>[^\]]+)\]:(?P<port>\d+)|(?P<v4>[\d.]+):(?P<port4>\d+)", s)
    if not m:
        raise ValueError(f"{text!r} is not a binding (forms: 0.0.0.0:25, 10.1.1.1:25, [::]:25)")
    addr_text = m.group("v6") or m.group("v4")
    port = int(m.group("port") or m.group("port4"))
    try:
        addr = ipaddress.ip_address(addr_text.split("%", 1)[0])
    except ValueError:
        raise ValueError(f"{text!r}: {addr_text!r} is not an IP address") from None
    if m.group("v6") and addr.version != 6:
        raise ValueError(f"{text!r}: brackets are for IPv6 addresses")
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: port must be 1-65535")
    if addr.is_multicast:
        raise ValueError(f"{text!r}: a binding cannot be a multicast address")
    if addr.version == 4 and addr == ipaddress.IPv4Address("255.255.255.255"):
        raise ValueError(f"{text!r}: a binding cannot be a broadcast address")
    return Binding(addr.version, int(addr), port)
