"""Range and role conflicts between receive connectors (spec §2.3, §6 #8, #15, #16).

Checks run on every connector, enabled or not, as Exchange's do. Range conflicts are
found with a sort-and-sweep per binding in O(n log n) whatever the ranges' shape
(identical, nested, crossing), instead of comparing every pair; the work and the reports
are bounded (:data:`~exmilter.limits.CONFIG_MAX_REGISTRATIONS`,
:data:`~exmilter.limits.CONFIG_MAX_CONFLICT_REPORTS`).
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet

from exmilter.config.problems import Sink, Where, nowhere
from exmilter.limits import CONFIG_MAX_CONFLICT_REPORTS, CONFIG_MAX_REGISTRATIONS
from exmilter.model import ReceiveConnector
from exmilter.values import Binding, IPRange


class _Enough(Exception):
    """Raised by the reporter once :data:`CONFIG_MAX_CONFLICT_REPORTS` pairs were reported."""


def check_conflicts(
    connectors: tuple[ReceiveConnector, ...],
    where: Mapping[str, Where],
    out: Sink,
    unknown: Mapping[str, AbstractSet[str]] | None = None,
) -> None:
    """Range and role conflicts between connectors, with whatever bindings and ranges parsed.

    ``where[name]`` locates a connector's properties; ``unknown[name]`` names those whose
    value in the file was bad (a ``transport_role`` that did not parse is in no role conflict).
    """
    unknown = unknown or {}
    # per binding: its ranges and, in a parallel list, the index of each range's connector
    by_binding: dict[Binding, tuple[list[IPRange], list[int]]] = defaultdict(lambda: ([], []))
    roles: dict[tuple[int, int], dict[int, dict[str, str]]] = defaultdict(lambda: defaultdict(dict))
    registrations = 0
    for idx, c in enumerate(connectors):
        role_known = "transport_role" not in unknown.get(c.name, ())
        for b in c.bindings:
            if role_known:
                roles[(b.version, b.port)][b.address].setdefault(c.transport_role.value, c.name)
        if registrations > CONFIG_MAX_REGISTRATIONS:
            continue
        per_family = {4: [r for r in c.remote_ip_ranges if r.version == 4], 6: []}
        if len(per_family[4]) < len(c.remote_ip_ranges):
            per_family[6] = [r for r in c.remote_ip_ranges if r.version == 6]
        registrations += sum(len(per_family[b.version]) for b in c.bindings)
        if registrations > CONFIG_MAX_REGISTRATIONS:
            out.error(
                where.get(c.name, nowhere)("bindings"),
                f"{c.name}: bindings",
                f"more than {CONFIG_MAX_REGISTRATIONS:,} (binding, range) pairs in all: each range counts once on "
                "every binding of its family; use fewer bindings or wider ranges (range conflicts not checked)",
            )
            continue
        for b in c.bindings:
            ranges, owners = by_binding[b]
            mine = per_family[b.version]
            ranges += mine
            owners += [idx] * len(mine)
    if registrations > CONFIG_MAX_REGISTRATIONS:
        by_binding.clear()
    reported: set[tuple[int, int]] = set()

    def report(i: int, j: int, b: Binding, r1: IPRange, r2: IPRange, what: str) -> None:
        pair = (min(i, j), max(i, j))
        if pair in reported:
            return
        later = connectors[max(i, j)]
        other = connectors[min(i, j)]
        at = where.get(later.name, nowhere)("remote_ip_ranges")
        if len(reported) == CONFIG_MAX_CONFLICT_REPORTS:
            out.error(
                at,
                f"{later.name}: remote_ip_ranges",
                f"more than {CONFIG_MAX_CONFLICT_REPORTS:,} pairs of connectors have conflicting ranges; "
                "only the first are reported",
            )
            raise _Enough
        reported.add(pair)
        out.error(
            at,
            f"{later.name}: remote_ip_ranges",
            f"{what} range {r2 if max(i, j) == j else r1} conflicts with {r1 if max(i, j) == j else r2} "
            f"of connector {other.name!r} on binding {b}",
        )

    try:
        for b, (ranges, owners) in list(by_binding.items()):

            def same_binding(i: int, j: int, r1: IPRange, r2: IPRange, same: bool, b: Binding = b) -> None:
                report(i, j, b, r1, r2, "identical" if same else "partially overlapping")

            sweep(ranges, owners, same_binding)
            wild = by_binding.get(b.wildcard()) if not b.is_wildcard else None
            if wild and ranges:
                # exact binding vs its wildcard: only partial overlaps between the two sides
                def through_wildcard(i: int, j: int, r1: IPRange, r2: IPRange, same: bool, b: Binding = b) -> None:
                    report(i, j, b, r1, r2, "partially overlapping")

                sweep(ranges + wild[0], owners + wild[1], through_wildcard, wild_from=len(ranges))
    except _Enough:
        pass
    for (version, port), per_addr in roles.items():
        wildcard_roles = per_addr.get(0, {})
        for addr, rmap in per_addr.items():
            combined = dict(rmap)
            if addr != 0:
                for role, name in wildcard_roles.items():
                    combined.setdefault(role, name)
            if len(combined) > 1:
                names = sorted(combined.values())
                b = Binding(version, addr, port)
                out.error(
                    where.get(names[-1], nowhere)("transport_role"),
                    f"{names[-1]}: transport_role",
                    f"binding {b} is also used by {names[0]!r} in another transport role. Receive connectors "
                    "assigned to different Transport roles on a single server must listen on unique local "
                    "IP address & port bindings",
                )


def sweep(
    ranges: list[IPRange],
    owners: list[int],
    conflict: Callable[[int, int, IPRange, IPRange, bool], None],
    wild_from: int | None = None,
) -> None:
    """Call ``conflict(earlier owner, owner, earlier range, range, identical)`` once for each
    range and each other owner with an identical or partially overlapping range.

    ``owners[i]`` owns ``ranges[i]``. With ``wild_from``, ranges from that index on are the
    wildcard binding's: only partial overlaps between a range of each side, of different
    connectors, count (spec §2.3). Ranges are taken in (first ascending, last descending)
    order. A valid binding's ranges nest or are disjoint, which one stack of nested ranges
    checks in linear time; any other overlap (even within one connector) hands the whole
    binding to :func:`_sweep_overlaps`, which is O(n log n) whatever the shape.
    """
    n = len(ranges)
    if n < 2:
        return
    firsts = [r.first for r in ranges]
    lasts = [r.last for r in ranges]
    order: Sequence[int] = range(n)  # files usually list ranges in order: no sort, no index list
    if any(a > b or (a == b and x < y) for a, b, x, y in zip(firsts, firsts[1:], lasts, lasts[1:], strict=False)):
        order = sorted(order, key=lasts.__getitem__, reverse=True)
        order.sort(key=firsts.__getitem__)
    stack: list[int] = []  # ends of open ranges, each nested in the one below
    for i in order:
        first, last = firsts[i], lasts[i]
        while stack and stack[-1] < first:
            stack.pop()
        if stack and stack[-1] <= last:  # ends inside the top (partial) or with it (identical, same first)
            _sweep_overlaps(firsts, lasts, order, ranges, owners, conflict, wild_from)
            return
        stack.append(last)


def _sweep_overlaps(
    firsts: list[int],
    lasts: list[int],
    order: Sequence[int],
    ranges: list[IPRange],
    owners: list[int],
    conflict: Callable[[int, int, IPRange, IPRange, bool], None],
    wild_from: int | None,
) -> None:
    """:func:`sweep` for ranges that do not simply nest.

    In sweep order an earlier range that is still open (its last ≥ this first) overlaps
    this one partially exactly when it ends first (nesting ends after). So for each owner
    only its open range that ends first matters: owners wait in a heap keyed by that end,
    and a range pops just the owners ending inside it, however many ranges are nested
    around it or repeat it. Identical ranges are neighbours in sweep order. A pair already
    met costs a heap step each time a later range meets it again: O(n log n) plus that.
    """
    two_sides = wild_from is not None
    wild = len(ranges) if wild_from is None else wild_from  # ranges from here on are the wildcard's
    # per side: owner → heap of (last, index) of its open ranges; heap of (its first end, owner, index)
    open_by_owner: list[dict[int, list[tuple[int, int]]]] = [{}, {}]
    heads: list[list[tuple[int, int, int]]] = [[], []]
    run: tuple[int, int] = (-1, -1)  # (first, last) of the identical ranges just seen
    run_owners: dict[int, int] = {}  # their owners → the latest such range
    push, pop = heapq.heappush, heapq.heappop
    for i in order:
        first, last, owner = firsts[i], lasts[i], owners[i]
        side = 1 if i >= wild else 0
        if not two_sides:
            if run != (first, last):
                run, run_owners = (first, last), {}
            elif owner not in run_owners:  # else every owner of the run met this one already
                for other, j in run_owners.items():
                    conflict(other, owner, ranges[j], ranges[i], True)
            run_owners[owner] = i
        there = 1 - side if two_sides else side
        heap, owned = heads[there], open_by_owner[there]
        met: list[tuple[int, int, int]] = []
        while heap and heap[0][0] < last:
            head = pop(heap)
            end, other, j = head
            ends = owned.get(other)
            if not ends or ends[0] != (end, j):  # stale: the owner's first end changed since
                continue
            if end < first:  # closed before this range starts, and so are the owner's others ending earlier
                while ends and ends[0][0] < first:
                    pop(ends)
                if ends:
                    push(heap, (ends[0][0], other, ends[0][1]))
                else:
                    del owned[other]
                continue
            met.append(head)
        for head in met:
            push(heap, head)
            if head[1] != owner:
                conflict(head[1], owner, ranges[head[2]], ranges[i], False)
        ends = open_by_owner[side].get(owner)
        if ends is None:
            ends = open_by_owner[side][owner] = []
        push(ends, (last, i))
        if ends[0][1] == i:
            push(heads[side], (last, owner, i))
