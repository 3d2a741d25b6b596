"""Principals named in permission entries that nothing in the configuration is (issue #13).

An ``Add-ADPermission -User`` for a name that is neither a well-known principal, nor one
the permission groups grant to, nor a ``users:`` login, nor a group a user is a member of,
matches no session: a misspelt principal silently voids the entry, a Deny above all. The
file still loads (Exchange would have refused the unknown name outright); ``check``
reports each such name where the connector's ``permissions`` are written.
"""

from __future__ import annotations

from collections.abc import Mapping

from exmilter.config.problems import Sink, Where, nowhere
from exmilter.model import Organization
from exmilter.permissions import canonical, group_principals

#: The problem kind, for callers that tell warnings apart.
UNKNOWN_PRINCIPAL = "unknown-principal"


def known_principals(org: Organization) -> frozenset[str]:
    """Comparison keys of every principal a session of this configuration can hold."""
    domain = org.server.domain
    names = set(group_principals(domain))
    for u in org.users:
        names.add(canonical(u.name, domain))
        names.update(canonical(g, domain) for g in u.member_of)
    return frozenset(names)


def check_principals(org: Organization, where: Mapping[str, Where], out: Sink) -> None:
    """Warn once per connector and unknown principal, at the connector's ``permissions``."""
    known = known_principals(org)
    domain = org.server.domain
    for c in org.receive_connectors:
        seen: set[str] = set()
        for entry in c.permissions:
            key = canonical(entry.user, domain)
            if key in known or key in seen:
                continue
            seen.add(key)
            effect = "its Deny removes nothing" if entry.deny else "its rights go to nobody"
            out.warn(
                where.get(c.name, nowhere)("permissions"),
                f"{c.name}: permissions",
                f"{entry.user!r} is not a known principal (a well-known one, a permission group's, a users: "
                f"login or a group in a user's member_of): no session ever holds it, so {effect}",
                UNKNOWN_PRINCIPAL,
            )
