"""Open relays: what Exchange accepts silently, and relays for anyone (spec §6 #2, #3).

A warning of kind :data:`OPEN_RELAY` at the entry or property that grants the right;
:func:`open_relays` gives the same findings as typed values. The rights are the engine's
own (spec §1.8), so the warning and the behaviour cannot disagree.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from exmilter.config.problems import Sink, Where, nowhere
from exmilter.model import AuthMechanism, Organization, PermissionEntry, PermissionGroups, ReceiveConnector, Right
from exmilter.permissions import (
    ANONYMOUS_LOGON,
    EXTERNALLY_SECURED_SERVERS,
    Principal,
    canonical,
    effective_rights,
    group_entries,
)
from exmilter.values import IPRange, parse_ip_range

#: ``Problem.kind`` of the open-relay warnings (spec §6 #2, #3): anonymous or externally
#: secured sessions may relay to any domain from addresses anyone can have.
OPEN_RELAY = "open relay"


def family_name(version: int) -> str:
    """``IPv4`` or ``IPv6``, as messages name an address family."""
    return "IPv4" if version == 4 else "IPv6"


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
        family = family_name(version)
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
            nxt = next((b.first for b in NON_PUBLIC_RANGES if b.version == r.version and b.first > at), r.last + 1)
            return IPRange(r.version, at, min(r.last, nxt - 1)), r
    return None


def check_open_relays(
    org: Organization, where: Mapping[str, Where], out: Sink, unknown: Mapping[str, AbstractSet[str]]
) -> None:
    """One prominent warning per open relay, at the entry or property that grants it."""
    involved = {"enabled", "bindings", "remote_ip_ranges", "auth_mechanism", "permission_groups", "permissions"}
    for relay in open_relays(org):
        if not involved.isdisjoint(unknown.get(relay.connector, ())):
            continue  # a bad value there was reported; a default stands in for it
        pos = where.get(relay.connector, nowhere)
        key = relay.granted_by
        at = pos(f"permissions[{relay.entry}]") if relay.entry is not None else pos(key)
        out.warn(at, f"{relay.connector}: {key}", relay.message(), kind=OPEN_RELAY)
