"""Receive-connector selection (spec §2.1) in O(log n) per lookup.

For every binding the remote ranges of the connectors registered there are flattened,
once at load time, into sorted elementary segments, each labelled with the most
specific (smallest) range covering it. A lookup is then one binary search per binding
consulted (the exact binding and its wildcard), whatever the number of ranges.
"""

from __future__ import annotations

import heapq
import ipaddress
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from exmilter.model import ReceiveConnector
from exmilter.values import Binding, IPRange, parse_ip

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Match:
    """Why a connector was chosen: the binding it was found under and its best range."""

    connector: ReceiveConnector
    range: IPRange
    binding: Binding


class IntervalIndex:
    """Point → smallest covering interval, for a fixed set of intervals."""

    __slots__ = ("_starts", "_winners")

    def __init__(self, items: Iterable[tuple[IPRange, Match]]) -> None:
        entries = sorted(
            ((r.first, r.last, r.size, order, m) for order, (r, m) in enumerate(items)),
            key=lambda e: (e[0], e[3]),
        )
        bounds = sorted({e[0] for e in entries} | {e[1] + 1 for e in entries})
        starts: list[int] = []
        winners: list[Match | None] = []
        heap: list[tuple[int, int, int, Match]] = []
        i = 0
        for b in bounds:
            while i < len(entries) and entries[i][0] == b:
                _, last, size, order, m = entries[i]
                heapq.heappush(heap, (size, order, last, m))
                i += 1
            while heap and heap[0][2] < b:
                heapq.heappop(heap)
            best = heap[0][3] if heap else None
            if winners and winners[-1] is best:
                continue
            starts.append(b)
            winners.append(best)
        self._starts = starts
        self._winners = winners

    def lookup(self, point: int) -> Match | None:
        i = bisect_right(self._starts, point) - 1
        return self._winners[i] if i >= 0 else None

    def __len__(self) -> int:
        return len(self._starts)


def normalise(ip: str | IPAddress) -> IPAddress:
    """Parse and fold ``::ffff:a.b.c.d`` to IPv4 (spec §2.1 step 5)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return ip
    return parse_ip(ip)


class ConnectorTable:
    """All enabled connectors, registered per binding with that binding's family of ranges."""

    def __init__(self, connectors: Sequence[ReceiveConnector]) -> None:
        per_binding: dict[Binding, list[tuple[IPRange, Match]]] = {}
        for c in connectors:
            if not c.enabled:
                continue
            for b in c.bindings:
                for r in c.remote_ip_ranges:
                    if r.version == b.version:
                        per_binding.setdefault(b, []).append((r, Match(c, r, b)))
        self.bindings = tuple(sorted(per_binding))
        self._items = per_binding
        self._index = {b: IntervalIndex(items) for b, items in per_binding.items()}

    def select(self, local_ip: str | IPAddress | None, local_port: int, remote_ip: str | IPAddress) -> Match | None:
        """The connector Exchange would pick, or None (→ ``421 4.3.2 Service not available``).

        ``local_ip`` None means the local address is unknown (behind a proxy): only the
        wildcard binding of the port is consulted.
        """
        remote = normalise(remote_ip)
        point = int(remote)
        wildcard = self._index.get(Binding(remote.version, 0, local_port))
        wild = wildcard.lookup(point) if wildcard is not None else None
        if local_ip is None:
            return wild
        local = normalise(local_ip)
        if local.version != remote.version or int(local) == 0:
            return wild
        exact_index = self._index.get(Binding(local.version, int(local), local_port))
        exact = exact_index.lookup(point) if exact_index is not None else None
        if exact is None:
            return wild
        if wild is not None and wild.range.size < exact.range.size:
            return wild
        return exact

    def candidates(self, local_ip: str | IPAddress | None, local_port: int, remote_ip: str | IPAddress) -> list[Match]:
        """Every connector that could take this client, best range each; for ``explain``."""
        remote = normalise(remote_ip)
        local = normalise(local_ip) if local_ip is not None else None
        keys = [Binding(remote.version, 0, local_port)]
        if local is not None and local.version == remote.version and int(local) != 0:
            keys.insert(0, Binding(local.version, int(local), local_port))
        out: list[Match] = []
        for key in keys:
            best: dict[str, Match] = {}
            for r, m in self._items.get(key, ()):
                if remote in r:
                    cur = best.get(m.connector.name)
                    if cur is None or m.range.size < cur.range.size:
                        best[m.connector.name] = m
            out.extend(sorted(best.values(), key=lambda m: m.range.size))
        return out
