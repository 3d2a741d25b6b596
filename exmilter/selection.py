"""Receive-connector selection (spec §2.1) in O(log n) per lookup.

For every binding the remote ranges of the connectors registered there are flattened,
once at load time, into sorted elementary segments, each labelled with the most
specific (smallest) range covering it. A lookup is then one binary search per binding
consulted (the exact binding and its wildcard), whatever the number of ranges.
"""

from __future__ import annotations

import heapq
import itertools
from array import array
from bisect import bisect_right
from collections.abc import Iterator, MutableSequence, Sequence
from dataclasses import dataclass

from exmilter.model import ReceiveConnector
from exmilter.values import Binding, IPAddress, IPRange, parse_ip, unmapped


@dataclass(frozen=True, slots=True)
class Match:
    """Why a connector was chosen: the binding it was found under and its best range."""

    connector: ReceiveConnector
    range: IPRange
    binding: Binding


class IntervalIndex:
    """Point → smallest covering range, for the fixed set of ranges registered on one binding.

    Elementary segments are kept as their start points (an ``array`` of 64-bit integers for
    IPv4, a list for IPv6) with the winning range and connector of each segment; the
    :class:`Match` is built on lookup. A tie in size goes to the range registered first.
    """

    __slots__ = ("_owners", "_ranges", "_starts", "binding")

    def __init__(self, binding: Binding, ranges: Sequence[IPRange], owners: Sequence[ReceiveConnector]) -> None:
        self.binding = binding
        n = len(ranges)
        by_first: Sequence[int] = range(n)  # files usually list ranges in order: no sort, no index list
        if any(a.first > b.first for a, b in itertools.pairwise(ranges)):
            by_first = sorted(by_first, key=lambda i: ranges[i].first)  # stable: registration order on ties
        starts: MutableSequence[int] = array("Q") if binding.version == 4 else []
        win_ranges: list[IPRange | None] = []
        win_owners: list[ReceiveConnector | None] = []
        by_size: list[tuple[int, int]] = []  # (size, registration order) of the ranges open here
        ends: list[int] = []  # last + 1 of the ranges open here
        a = 0
        while a < n or ends:
            point = ranges[by_first[a]].first if a < n else ends[0]
            if ends and ends[0] < point:
                point = ends[0]
            while a < n and ranges[by_first[a]].first == point:
                i = by_first[a]
                heapq.heappush(by_size, (ranges[i].size, i))
                heapq.heappush(ends, ranges[i].last + 1)
                a += 1
            while ends and ends[0] == point:
                heapq.heappop(ends)
            while by_size and ranges[by_size[0][1]].last < point:
                heapq.heappop(by_size)
            best = by_size[0][1] if by_size else -1
            r, c = (ranges[best], owners[best]) if best >= 0 else (None, None)
            if win_ranges and win_ranges[-1] is r and win_owners[-1] is c:
                continue
            starts.append(point)
            win_ranges.append(r)
            win_owners.append(c)
        self._starts = starts
        self._ranges = win_ranges
        self._owners = win_owners

    def lookup(self, point: int) -> Match | None:
        i = bisect_right(self._starts, point) - 1
        if i < 0:
            return None
        owner = self._owners[i]
        if owner is None:
            return None
        return Match(owner, self._ranges[i], self.binding)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self._starts)


def normalise(ip: str | IPAddress) -> IPAddress:
    """Parse and fold ``::ffff:a.b.c.d`` to IPv4 (spec §2.1 step 5)."""
    return parse_ip(ip) if isinstance(ip, str) else unmapped(ip)


class ConnectorTable:
    """All enabled connectors, registered per binding with that binding's family of ranges."""

    def __init__(self, connectors: Sequence[ReceiveConnector]) -> None:
        self._connectors = tuple(connectors)
        per_binding: dict[Binding, tuple[list[IPRange], list[ReceiveConnector]]] = {}
        for c, b, r in _registered(self._connectors):
            ranges, owners = per_binding.setdefault(b, ([], []))
            ranges.append(r)
            owners.append(c)
        self.bindings = tuple(sorted(per_binding))
        self._index = {b: IntervalIndex(b, ranges, owners) for b, (ranges, owners) in per_binding.items()}
        self._items: dict[Binding, list[Match]] | None = None  # for candidates(), built on first use

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
        items = self._registrations()
        out: list[Match] = []
        for key in keys:
            best: dict[str, Match] = {}
            for m in items.get(key, ()):
                if remote in m.range:
                    cur = best.get(m.connector.name)
                    if cur is None or m.range.size < cur.range.size:
                        best[m.connector.name] = m
            out.extend(sorted(best.values(), key=lambda m: m.range.size))
        return out

    def _registrations(self) -> dict[Binding, list[Match]]:
        """One Match per registered (range, binding): only ``explain`` needs them, so the daemon never builds them."""
        if self._items is None:
            items: dict[Binding, list[Match]] = {}
            for c, b, r in _registered(self._connectors):
                items.setdefault(b, []).append(Match(c, r, b))
            self._items = items
        return self._items


def _registered(connectors: Sequence[ReceiveConnector]) -> Iterator[tuple[ReceiveConnector, Binding, IPRange]]:
    """Every (connector, binding, range) the table registers: enabled connectors, each range
    under each binding of its family, in configuration order (which breaks ties)."""
    for c in connectors:
        if c.enabled:
            for b in c.bindings:
                for r in c.remote_ip_ranges:
                    if r.version == b.version:
                        yield c, b, r
