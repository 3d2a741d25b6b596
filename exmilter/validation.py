"""Exchange's refusal rules for receive connectors (spec §2.3, §6).

Checks run on every connector, enabled or not, as Exchange's do. Range conflicts are
found with a sort-and-sweep per binding, so a file with 100,000 ranges validates in
O(n log n) instead of comparing every pair.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from exmilter.model import AuthMechanism, Organization, PermissionGroups, ReceiveConnector, Usage
from exmilter.values import Binding, IPRange

#: Exchange starts failing somewhere around here (spec §1.2, §6 #13).
MAX_RANGE_ENTRIES = 1200


class _Sink(Protocol):
    """What validation needs from the loader's collector (structural, to avoid an import cycle)."""

    def error(self, at: Any, key: str, message: str) -> None: ...
    def warn(self, at: Any, key: str, message: str) -> None: ...


Where = Callable[[str | None], object]


def _nowhere(key: str | None = None) -> None:
    return None


def validate(org: Organization, where: Mapping[str, Where], out: _Sink) -> None:
    """``where[name](key)`` locates a connector's property for the error message."""
    for c in org.receive_connectors:
        _check_connector(c, org, where.get(c.name, _nowhere), out)
    _check_conflicts(org.receive_connectors, where, out)


def _check_connector(c: ReceiveConnector, org: Organization, pos: Where, out: _Sink) -> None:
    at = pos("auth_mechanism")
    am = c.auth_mechanism
    key = f"{c.name}: auth_mechanism"
    if AuthMechanism.BasicAuthRequireTLS in am and not (AuthMechanism.BasicAuth in am and AuthMechanism.Tls in am):
        out.error(at, key, "BasicAuthRequireTLS needs BasicAuth and Tls")
    if AuthMechanism.ExternalAuthoritative in am:
        if am & ~(AuthMechanism.ExternalAuthoritative | AuthMechanism.Tls):
            out.error(at, key, "ExternalAuthoritative can only be combined with Tls")
        if PermissionGroups.ExchangeServers not in c.permission_groups:
            out.error(at, f"{c.name}: permission_groups", "ExternalAuthoritative needs the ExchangeServers group")
    if c.require_tls and AuthMechanism.Tls not in am:
        out.error(pos("require_tls"), f"{c.name}: require_tls", "RequireTLS needs Tls in auth_mechanism")
    if c.domain_secure_enabled:
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
    if c.extended_protection_policy != "None" and not c.require_tls:
        out.error(
            pos("extended_protection_policy"),
            f"{c.name}: extended_protection_policy",
            "ExtendedProtectionPolicy other than None needs RequireTLS",
        )
    if c.connection_inactivity_timeout > c.connection_timeout:
        out.error(
            pos("connection_inactivity_timeout"),
            f"{c.name}: connection_inactivity_timeout",
            "must not exceed connection_timeout",
        )
    if not c.bindings:
        out.error(pos(None), f"{c.name}: bindings", "a receive connector needs at least one binding")
    if not c.remote_ip_ranges:
        out.error(pos(None), f"{c.name}: remote_ip_ranges", "a receive connector needs at least one remote IP range")
    for b in c.bindings:
        if not b.is_wildcard and not _is_local(b, org):
            out.error(
                pos("bindings"),
                f"{c.name}: bindings",
                f"{b.ip} is not an address of this server (server.addresses); "
                "a client's address belongs in remote_ip_ranges",
            )
    if c.remote_ip_ranges and not any(r.version == b.version for b in c.bindings for r in c.remote_ip_ranges):
        out.warn(
            pos("remote_ip_ranges"),
            f"{c.name}: remote_ip_ranges",
            "no range has the family of any binding: the connector never matches",
        )
    if len(c.remote_ip_ranges) > MAX_RANGE_ENTRIES:
        out.warn(
            pos("remote_ip_ranges"),
            f"{c.name}: remote_ip_ranges",
            f"{len(c.remote_ip_ranges)} entries; Exchange fails above about {MAX_RANGE_ENTRIES}: use ranges or CIDR",
        )
    if c.usage is Usage.Custom and c.permission_groups == PermissionGroups.NONE and not c.permissions:
        out.warn(
            pos(None), f"{c.name}: permission_groups", "no permission group or entry: this connector accepts no mail"
        )


def _is_local(b: Binding, org: Organization) -> bool:
    ip = b.ip
    if ip.is_loopback:
        return True
    return any(ipaddress.ip_address(a) == ip for a in org.server.addresses)


def _check_conflicts(connectors: tuple[ReceiveConnector, ...], where: Mapping[str, Where], out: _Sink) -> None:
    by_binding: dict[Binding, list[tuple[IPRange, int]]] = defaultdict(list)
    roles: dict[tuple[int, int], dict[int, dict[str, str]]] = defaultdict(lambda: defaultdict(dict))
    for idx, c in enumerate(connectors):
        for b in c.bindings:
            roles[(b.version, b.port)][b.address].setdefault(c.transport_role.value, c.name)
            for r in c.remote_ip_ranges:
                if r.version == b.version:
                    by_binding[b].append((r, idx))
    reported: set[tuple[int, int]] = set()

    def report(i: int, j: int, b: Binding, r1: IPRange, r2: IPRange, what: str) -> None:
        pair = (min(i, j), max(i, j))
        if pair in reported:
            return
        reported.add(pair)
        later = connectors[max(i, j)]
        other = connectors[min(i, j)]
        out.error(
            where.get(later.name, _nowhere)("remote_ip_ranges"),
            f"{later.name}: remote_ip_ranges",
            f"{what} range {r2 if max(i, j) == j else r1} conflicts with {r1 if max(i, j) == j else r2} "
            f"of connector {other.name!r} on binding {b}",
        )

    for b, items in by_binding.items():

        def same_binding(i: int, j: int, r1: IPRange, r2: IPRange, same: bool, b: Binding = b) -> None:
            report(i, j, b, r1, r2, "identical" if same else "partially overlapping")

        _sweep(items, same_binding)
        wild = by_binding.get(b.wildcard(), []) if not b.is_wildcard else []
        if wild:
            # exact binding vs its wildcard: owners of the wildcard side are encoded as -1-index
            def through_wildcard(i: int, j: int, r1: IPRange, r2: IPRange, same: bool, b: Binding = b) -> None:
                ci, cj = (i if i >= 0 else -1 - i), (j if j >= 0 else -1 - j)
                if (i < 0) != (j < 0) and ci != cj and not same:
                    report(ci, cj, b, r1, r2, "partially overlapping")

            _sweep(items + [(r, -1 - i) for r, i in wild], through_wildcard)
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


def _sweep(items: list[tuple[IPRange, int]], conflict: Callable[[int, int, IPRange, IPRange, bool], None]) -> None:
    """Call ``conflict`` for identical or partially overlapping ranges of different owners.

    Sorting by (first asc, last desc) turns nested ranges into a stack; a range that
    starts inside an open range of the stack but ends beyond it overlaps it partially.
    Every open range is checked, since one connector's own ranges may overlap.
    """
    ordered = sorted(items, key=lambda e: (e[0].first, -e[0].last))
    stack: list[tuple[IPRange, int]] = []
    for r, owner in ordered:
        while stack and stack[-1][0].last < r.first:
            stack.pop()
        for top, top_owner in reversed(stack):
            if top.last < r.first or top_owner == owner:
                continue
            if top.first == r.first and top.last == r.last:
                conflict(top_owner, owner, top, r, True)
            elif top.last < r.last:
                conflict(top_owner, owner, top, r, False)
        stack.append((r, owner))
