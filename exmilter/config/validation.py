"""Exchange's refusal rules for receive connectors (spec §2.3, §6), then the conflicts and open relays.

Checks run on every connector, enabled or not, as Exchange's do. Each connector's own
rules are here; conflicts between connectors are in :mod:`exmilter.config.conflicts`,
the open-relay warnings in :mod:`exmilter.config.relays`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from collections.abc import Set as AbstractSet

from exmilter.config.auth import check_authentication
from exmilter.config.conflicts import check_conflicts
from exmilter.config.principals import check_principals
from exmilter.config.problems import Sink, Where, nowhere
from exmilter.config.relays import check_open_relays, family_name
from exmilter.model import AuthMechanism, Organization, PermissionGroups, ReceiveConnector, Usage
from exmilter.values import Binding

#: Exchange's own limit, not exmilter's: a connector with more ``remote_ip_ranges`` entries
#: than about this fails there (spec §1.2, §6 #13), so above it the file is warned about;
#: exmilter refuses above ``exmilter.limits.CONFIG_MAX_RANGE_ENTRIES_REFUSED``.
MAX_RANGE_ENTRIES = 1200


def validate(
    org: Organization,
    where: Mapping[str, Where],
    out: Sink,
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
        _check_connector(c, org, where.get(c.name, nowhere), out, unknown.get(c.name, frozenset()), server_unknown)
    check_conflicts(org.receive_connectors, where, out, unknown)
    check_open_relays(org, where, out, unknown)
    check_principals(org, where, out)
    check_authentication(org, where, out)


def _check_connector(
    c: ReceiveConnector,
    org: Organization,
    pos: Where,
    out: Sink,
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


def _check_families(c: ReceiveConnector, pos: Where, out: Sink) -> None:
    """Ranges of a family no binding of the connector has are never matched (spec §2.1 step 1)."""
    bound = {b.version for b in c.bindings}
    for version in (4, 6):
        ranges = [r for r in c.remote_ip_ranges if r.version == version]
        if not ranges or version in bound or not c.bindings:
            continue
        shown = ", ".join(str(r) for r in ranges[:3]) + (f" and {len(ranges) - 3} more" if len(ranges) > 3 else "")
        family = family_name(version)
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
