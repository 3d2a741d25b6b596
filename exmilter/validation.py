"""Exchange's refusal rules for receive connectors (spec §2.3, §6), and the open-relay warnings.

Checks run on every connector, enabled or not, as Exchange's do. Range conflicts are
found with a sort-and-sweep per binding in O(n log n) whatever the ranges' shape
(identical, nested, crossing), instead of comparing every pair.

What Exchange accepts silently but is an open relay (spec §6 #2, #3) is a warning of
kind :data:`~exmilter.config.OPEN_RELAY`; :func:`open_relays` gives the same findings as
typed values.
"""

from __future__ import annotations

import functools
import heapq
import ipaddress
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Protocol

from exmilter.model import (
    AuthMechanism,
    Organization,
    PermissionEntry,
    PermissionGroups,
    ReceiveConnector,
    Right,
    Usage,
)
from exmilter.permissions import (
    ANONYMOUS_LOGON,
    EXTERNALLY_SECURED_SERVERS,
    Principal,
    canonical,
    effective_rights,
    group_entries,
)
from exmilter.values import Binding, IPRange, parse_ip_range

#: Exchange starts failing somewhere around here (spec §1.2, §6 #13): a warning above it.
MAX_RANGE_ENTRIES = 1200
#: More entries than this on one connector are refused: Exchange fails at about 1,200–1,300
#: (spec §1.2), so no file that works on Exchange is refused, and none that certainly fails
#: there is accepted. It also bounds what one connector adds to every check and to lookups.
MAX_RANGE_ENTRIES_REFUSED = 1300
#: (binding, range) registrations in all: every range counts once on every binding of its
#: family (spec §2.1 step 1). Bounds the conflict checks and the lookup tables, which a
#: short file could otherwise multiply (1,000 bindings × 1,300 ranges on each connector).
MAX_REGISTRATIONS = 500_000
#: Conflicting connector pairs reported one by one; one more line says there are more.
#: n connectors with one shared range conflict pairwise: n² lines from an n-line file.
MAX_CONFLICT_REPORTS = 1000

#: ``Problem.kind`` of the open-relay warnings (spec §6 #2, #3): anonymous or externally
#: secured sessions may relay to any domain from addresses anyone can have.
OPEN_RELAY = "open relay"


class _Sink(Protocol):
    """What validation needs from the loader's collector (structural, to avoid an import cycle)."""

    def error(self, at: Any, key: str, message: str) -> None: ...
    def warn(self, at: Any, key: str, message: str, kind: str = "") -> None: ...


Where = Callable[[str | None], object]


def _nowhere(key: str | None = None) -> None:
    return None


def validate(
    org: Organization,
    where: Mapping[str, Where],
    out: _Sink,
    *,
    unknown: Mapping[str, AbstractSet[str]] | None = None,
    server_unknown: AbstractSet[str] = frozenset(),
) -> None:
    """``where[name](key)`` locates a connector's property for the error message.

    ``unknown[name]`` names the properties of a connector whose value in the file was
    bad (already reported; a default stands in): checks that read them are skipped, so
    one mistake is not reported again as another. ``server_unknown`` does the same for
    ``server`` fields (``addresses``: no binding is checked against them).
    """
    unknown = unknown or {}
    for c in org.receive_connectors:
        _check_connector(c, org, where.get(c.name, _nowhere), out, unknown.get(c.name, frozenset()), server_unknown)
    _check_conflicts(org.receive_connectors, where, out, unknown)
    _check_open_relays(org, where, out, unknown)


def _family(version: int) -> str:
    return "IPv4" if version == 4 else "IPv6"


def _check_connector(
    c: ReceiveConnector,
    org: Organization,
    pos: Where,
    out: _Sink,
    unknown: AbstractSet[str] = frozenset(),
    server_unknown: AbstractSet[str] = frozenset(),
) -> None:
    def known(*keys: str) -> bool:
        return unknown.isdisjoint(keys)

    at = pos("auth_mechanism")
    am = c.auth_mechanism
    key = f"{c.name}: auth_mechanism"
    if known("auth_mechanism"):
        if AuthMechanism.BasicAuthRequireTLS in am and not (AuthMechanism.BasicAuth in am and AuthMechanism.Tls in am):
            out.error(at, key, "BasicAuthRequireTLS needs BasicAuth and Tls")
        if AuthMechanism.ExternalAuthoritative in am:
            if am & ~(AuthMechanism.ExternalAuthoritative | AuthMechanism.Tls):
                out.error(at, key, "ExternalAuthoritative can only be combined with Tls")
            if known("permission_groups") and PermissionGroups.ExchangeServers not in c.permission_groups:
                out.error(at, f"{c.name}: permission_groups", "ExternalAuthoritative needs the ExchangeServers group")
    if known("require_tls", "auth_mechanism") and c.require_tls and AuthMechanism.Tls not in am:
        out.error(pos("require_tls"), f"{c.name}: require_tls", "RequireTLS needs Tls in auth_mechanism")
    if known("domain_secure_enabled", "auth_mechanism") and c.domain_secure_enabled:
        if AuthMechanism.Tls not in am:
            out.error(
                pos("domain_secure_enabled"),
                f"{c.name}: domain_secure_enabled",
                "DomainSecureEnabled needs Tls in auth_mechanism",
            )
        if AuthMechanism.ExternalAuthoritative in am:
            out.error(
                pos("domain_secure_enabled"),
                f"{c.name}: domain_secure_enabled",
                "DomainSecureEnabled cannot be used with ExternalAuthoritative",
            )
    epp = c.extended_protection_policy
    if known("extended_protection_policy", "require_tls") and epp != "None" and not c.require_tls:
        out.error(
            pos("extended_protection_policy"),
            f"{c.name}: extended_protection_policy",
            "ExtendedProtectionPolicy other than None needs RequireTLS",
        )
    if (
        known("connection_inactivity_timeout", "connection_timeout")
        and c.connection_inactivity_timeout > c.connection_timeout
    ):
        out.error(
            pos("connection_inactivity_timeout"),
            f"{c.name}: connection_inactivity_timeout",
            "must not exceed connection_timeout",
        )
    if known("bindings") and not c.bindings:
        out.error(pos(None), f"{c.name}: bindings", "a receive connector needs at least one binding")
    if known("remote_ip_ranges") and not c.remote_ip_ranges:
        out.error(pos(None), f"{c.name}: remote_ip_ranges", "a receive connector needs at least one remote IP range")
    if "addresses" not in server_unknown:
        for b in c.bindings:
            if not b.is_wildcard and not _is_local(b, org):
                out.error(
                    pos("bindings"),
                    f"{c.name}: bindings",
                    f"{b.ip} is not an address of this server (server.addresses); "
                    "a client's address belongs in remote_ip_ranges",
                )
    if known("bindings", "remote_ip_ranges"):
        _check_families(c, pos, out)
    if len(c.remote_ip_ranges) > MAX_RANGE_ENTRIES:
        out.warn(
            pos("remote_ip_ranges"),
            f"{c.name}: remote_ip_ranges",
            f"{len(c.remote_ip_ranges):,} entries; Exchange fails above about {MAX_RANGE_ENTRIES:,}: "
            "use ranges or CIDR",
        )
    if (
        known("usage", "permission_groups", "permissions")
        and c.usage is Usage.Custom
        and c.permission_groups == PermissionGroups.NONE
        and not c.permissions
    ):
        out.warn(
            pos(None), f"{c.name}: permission_groups", "no permission group or entry: this connector accepts no mail"
        )


def _check_families(c: ReceiveConnector, pos: Where, out: _Sink) -> None:
    """Ranges of a family no binding of the connector has are never matched (spec §2.1 step 1)."""
    bound = {b.version for b in c.bindings}
    for version in (4, 6):
        ranges = [r for r in c.remote_ip_ranges if r.version == version]
        if not ranges or version in bound or not c.bindings:
            continue
        shown = ", ".join(str(r) for r in ranges[:3]) + (f" and {len(ranges) - 3} more" if len(ranges) > 3 else "")
        family = _family(version)
        effect = (
            "the connector never matches"
            if not any(r.version in bound for r in c.remote_ip_ranges)
            else f"{'they' if len(ranges) > 1 else 'it'} never match{'' if len(ranges) > 1 else 'es'}"
        )
        out.warn(
            pos("remote_ip_ranges"),
            f"{c.name}: remote_ip_ranges",
            f"{family} range{'s' if len(ranges) > 1 else ''} {shown} but no {family} binding: {effect}",
        )


def _is_local(b: Binding, org: Organization) -> bool:
    ip = b.ip
    if ip.is_loopback:
        return True
    return any(ipaddress.ip_address(a) == ip for a in org.server.addresses)


class _Enough(Exception):
    """Raised by the reporter once :data:`MAX_CONFLICT_REPORTS` pairs were reported."""


def _check_conflicts(
    connectors: tuple[ReceiveConnector, ...],
    where: Mapping[str, Where],
    out: _Sink,
    unknown: Mapping[str, AbstractSet[str]] | None = None,
) -> None:
    """Range and role conflicts between connectors, with whatever bindings and ranges parsed."""
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
        if registrations > MAX_REGISTRATIONS:
            continue
        per_family = {4: [r for r in c.remote_ip_ranges if r.version == 4], 6: []}
        if len(per_family[4]) < len(c.remote_ip_ranges):
            per_family[6] = [r for r in c.remote_ip_ranges if r.version == 6]
        registrations += sum(len(per_family[b.version]) for b in c.bindings)
        if registrations > MAX_REGISTRATIONS:
            out.error(
                where.get(c.name, _nowhere)("bindings"),
                f"{c.name}: bindings",
                f"more than {MAX_REGISTRATIONS:,} (binding, range) pairs in all: each range counts once on "
                "every binding of its family; use fewer bindings or wider ranges (range conflicts not checked)",
            )
            continue
        for b in c.bindings:
            ranges, owners = by_binding[b]
            mine = per_family[b.version]
            ranges += mine
            owners += [idx] * len(mine)
    if registrations > MAX_REGISTRATIONS:
        by_binding.clear()
    reported: set[tuple[int, int]] = set()

    def report(i: int, j: int, b: Binding, r1: IPRange, r2: IPRange, what: str) -> None:
        pair = (min(i, j), max(i, j))
        if pair in reported:
            return
        later = connectors[max(i, j)]
        other = connectors[min(i, j)]
        at = where.get(later.name, _nowhere)("remote_ip_ranges")
        if len(reported) == MAX_CONFLICT_REPORTS:
            out.error(
                at,
                f"{later.name}: remote_ip_ranges",
                f"more than {MAX_CONFLICT_REPORTS:,} pairs of connectors have conflicting ranges; "
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

            _sweep(ranges, owners, same_binding)
            wild = by_binding.get(b.wildcard()) if not b.is_wildcard else None
            if wild and ranges:
                # exact binding vs its wildcard: only partial overlaps between the two sides
                def through_wildcard(i: int, j: int, r1: IPRange, r2: IPRange, same: bool, b: Binding = b) -> None:
                    report(i, j, b, r1, r2, "partially overlapping")

                _sweep(ranges + wild[0], owners + wild[1], through_wildcard, wild_from=len(ranges))
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
                    where.get(names[-1], _nowhere)("transport_role"),
                    f"{names[-1]}: transport_role",
                    f"binding {b} is also used by {names[0]!r} in another transport role. Receive connectors "
                    "assigned to different Transport roles on a single server must listen on unique local "
                    "IP address & port bindings",
                )


def _sweep(
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
    """:func:`_sweep` for ranges that do not simply nest.

    In sweep order an earlier range that is still open (its last ≥ this first) overlaps
    this one partially exactly when it ends first (nesting ends after). So for each owner
    only its open range that ends first matters: owners wait in a heap keyed by that end,
    and a range pops just the owners ending inside it, however many ranges are nested
    around it or repeat it. Identical ranges are neighbours in sweep order. A pair already
    met costs a heap step each time a later range meets it again: O(n log n) plus that.
    """
    two_sides = wild_from is not None
    # per side: owner → heap of (last, index) of its open ranges; heap of (its first end, owner, index)
    open_by_owner: list[dict[int, list[tuple[int, int]]]] = [{}, {}]
    heads: list[list[tuple[int, int, int]]] = [[], []]
    run: tuple[int, int] = (-1, -1)  # (first, last) of the identical ranges just seen
    run_owners: dict[int, int] = {}  # their owners → the latest such range
    push, pop = heapq.heappush, heapq.heappop
    for i in order:
        first, last, owner = firsts[i], lasts[i], owners[i]
        side = 1 if two_sides and i >= wild_from else 0  # type: ignore[operator]  # set when two_sides
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


# -- open relays (spec §6 #2, #3) --------------------------------------------------------------------

#: Address space no one outside the site can have: RFC 6890 special-purpose blocks that are
#: not globally reachable (private, shared, loopback, link-local, documentation, benchmarking,
#: multicast, reserved). Everything else counts as public.
NON_PUBLIC_RANGES: tuple[IPRange, ...] = tuple(
    sorted(
        parse_ip_range(r)
        for r in (
            "0.0.0.0/8",
            "10.0.0.0/8",
            "100.64.0.0/10",
            "127.0.0.0/8",
            "169.254.0.0/16",
            "172.16.0.0/12",
            "192.0.0.0/24",
            "192.0.2.0/24",
            "192.168.0.0/16",
            "198.18.0.0/15",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "224.0.0.0/3",  # multicast and reserved, to 255.255.255.255
            "::/8",  # unspecified, loopback, IPv4-mapped and -compatible
            "100::/64",
            "2001:db8::/32",
            "fc00::/7",
            "fe80::/10",
            "fec0::/10",
            "ff00::/8",
        )
    )
)


@dataclass(frozen=True, slots=True)
class OpenRelay:
    """A connector where sessions that proved nothing may relay to any domain, from anywhere.

    ``principal`` is who relays (``ANONYMOUS LOGON`` or ``Externally Secured Servers``);
    ``granted_by`` the property that grants it: ``permissions`` (``entry`` is then the index
    of the entry in ``ReceiveConnector.permissions``), ``auth_mechanism``
    (ExternalAuthoritative) or ``permission_groups``. Anyone can reach the connector because
    it is Default Frontend, or because of ``reach``: what its ranges cover, one phrase per
    address family ("cover every IPv4 address", "include public IPv6 addresses (…)").
    """

    connector: str
    principal: str
    granted_by: str
    entry: int | None
    default_frontend: bool
    reach: tuple[str, ...]

    def message(self) -> str:
        """What is open, to whom, and what to do: the text after ``file:line:col: warning: open relay: key:``."""
        if self.default_frontend:
            where = "on Default Frontend, the connector of every client no other connector matches"
        else:
            where = f"and remote_ip_ranges {' and '.join(self.reach)}"
        if self.granted_by == "auth_mechanism":
            return (
                "ExternalAuthoritative makes every client an Externally Secured Server, which may relay to any "
                f"domain and skips size limits and antispam, {where}: anyone can relay mail through this "
                "connector; use ExternalAuthoritative only on a connector whose remote_ip_ranges are limited to "
                "hosts you control"
            )
        undo = "remove this entry (Remove-ADPermission)" if self.granted_by == "permissions" else "remove the group"
        fix = (
            f"{undo} and grant the right on a relay connector of its own, limited to the hosts that must relay"
            if self.default_frontend
            else f"limit remote_ip_ranges to the hosts that must relay, or {undo}"
        )
        who = self.principal.rpartition("\\")[2]  # ANONYMOUS LOGON, as Exchange admins write it
        return (
            f"{who} holds ms-Exch-SMTP-Accept-Any-Recipient {where}: anyone can relay mail through this connector "
            f"to any domain without logging in; {fix}"
        )


def open_relays(org: Organization) -> list[OpenRelay]:
    """Enabled connectors on which anonymous or externally secured sessions may relay to any
    domain from anywhere: Default Frontend, or ranges (of a family the connector is bound to)
    that cover every address or include public ones. The rights are the engine's own (spec
    §1.8), so the warning and the behaviour cannot disagree.
    """
    domain = org.server.domain
    default_frontend = f"default frontend {org.server.name}".lower()
    found: list[OpenRelay] = []
    for c in org.receive_connectors:
        if not c.enabled:
            continue
        external = AuthMechanism.ExternalAuthoritative in c.auth_mechanism
        rights = _unauthenticated_rights(c.permission_groups, c.permissions, external, domain)
        if Right.SMTPAcceptAnyRecipient not in rights:
            continue
        is_default_frontend = c.name.lower() == default_frontend
        reach = () if is_default_frontend else _reach(c)
        if not (is_default_frontend or reach):
            continue
        entry = None
        if external:
            granted_by = "auth_mechanism"
        else:
            names = Principal.anonymous().names
            entry = next(
                (
                    n
                    for n, e in enumerate(c.permissions)
                    if not e.deny and Right.SMTPAcceptAnyRecipient in e.rights and canonical(e.user, domain) in names
                ),
                None,
            )
            granted_by = "permission_groups" if entry is None else "permissions"
        principal_name = EXTERNALLY_SECURED_SERVERS if external else ANONYMOUS_LOGON
        found.append(OpenRelay(c.name, principal_name, granted_by, entry, is_default_frontend, reach))
    return found


@functools.lru_cache(maxsize=256)
def _unauthenticated_rights(
    groups: PermissionGroups, entries: tuple[PermissionEntry, ...], external: bool, domain: str
) -> Right:
    """What a session holds before AUTH (the engine's ``principal``): shared by the connectors,
    and the loads, with the same permissions."""
    principal = Principal.externally_secured() if external else Principal.anonymous()
    return effective_rights(group_entries(groups, domain) + entries, principal, domain)


def _reach(c: ReceiveConnector) -> tuple[str, ...]:
    """What ``c``'s ranges open it to, per family it is bound to: every address, or public ones."""
    reach = []
    for version in sorted({b.version for b in c.bindings}):
        ranges = sorted(r for r in c.remote_ip_ranges if r.version == version)
        family = _family(version)
        if _covers_all(version, ranges):
            reach.append(f"cover every {family} address")
            continue
        public = _first_public(ranges)
        if public is not None:
            part, whole = public
            shown = str(part) if part == whole else f"{part} of {whole}"
            reach.append(f"include public {family} addresses ({shown})")
    return tuple(reach)


def _covers_all(version: int, ranges: Sequence[IPRange]) -> bool:
    """Whether sorted ``ranges`` leave no address of the family out."""
    top = (1 << (32 if version == 4 else 128)) - 1
    reached = -1
    for r in ranges:
        if r.first > reached + 1:
            return False
        reached = max(reached, r.last)
    return reached >= top


def _first_public(ranges: Sequence[IPRange]) -> tuple[IPRange, IPRange] | None:
    """The first public part of sorted ``ranges``, and the range it is part of; None if all are non-public."""
    for r in ranges:
        at = r.first
        for block in NON_PUBLIC_RANGES:
            if block.version != r.version or block.last < at:
                continue
            if block.first > at:
                break
            at = block.last + 1
            if at > r.last:
                break
        if at <= r.last:
            nxt = next(
                (b.first for b in NON_PUBLIC_RANGES if b.version == r.version and b.first > at), r.last + 1
            )
            return IPRange(r.version, at, min(r.last, nxt - 1)), r
    return None


def _check_open_relays(
    org: Organization, where: Mapping[str, Where], out: _Sink, unknown: Mapping[str, AbstractSet[str]]
) -> None:
    """One prominent warning per open relay, at the entry or property that grants it."""
    involved = {"enabled", "bindings", "remote_ip_ranges", "auth_mechanism", "permission_groups", "permissions"}
    for relay in open_relays(org):
        if not involved.isdisjoint(unknown.get(relay.connector, ())):
            continue  # a bad value there was reported; a default stands in for it
        pos = where.get(relay.connector, _nowhere)
        key = relay.granted_by
        at = pos(f"permissions[{relay.entry}]") if relay.entry is not None else pos(key)
        out.warn(at, f"{relay.connector}: {key}", relay.message(), kind=OPEN_RELAY)
