"""Permission groups → principals → extended rights, and Windows ACL evaluation (spec §1.6, §1.8)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from exmilter.model import PermissionEntry, PermissionGroups, ReceiveConnector, Right, Server, User

ANONYMOUS_LOGON = "NT AUTHORITY\\ANONYMOUS LOGON"
AUTHENTICATED_USERS = "NT AUTHORITY\\Authenticated Users"
EDGE_TRANSPORT_SERVERS = "MS Exchange\\Edge Transport Servers"
HUB_TRANSPORT_SERVERS = "MS Exchange\\Hub Transport Servers"
EXTERNALLY_SECURED_SERVERS = "MS Exchange\\Externally Secured Servers"
PARTNER_SERVERS = "MS Exchange\\Partner Servers"
EVERYONE = "Everyone"

#: Principals whose names do not depend on the server's domain, with the forms Exchange
#: accepts and displays for them: the full ``AUTHORITY\\name``, the bare name, and (for
#: the Windows ones) the well-known SID. The one source of truth for the engine and the
#: importer.
_WELL_KNOWN_FORMS: dict[str, tuple[str, ...]] = {
    ANONYMOUS_LOGON: ("ANONYMOUS LOGON", "S-1-5-7"),
    AUTHENTICATED_USERS: ("Authenticated Users", "S-1-5-11"),
    EVERYONE: ("S-1-1-0",),
    EDGE_TRANSPORT_SERVERS: ("Edge Transport Servers",),
    HUB_TRANSPORT_SERVERS: ("Hub Transport Servers",),
    EXTERNALLY_SECURED_SERVERS: ("Externally Secured Servers",),
    PARTNER_SERVERS: ("Partner Servers",),
}
WELL_KNOWN: dict[str, str] = {
    form.lower(): name for name, forms in _WELL_KNOWN_FORMS.items() for form in (name, *forms)
}


def well_known(principal: str) -> str | None:
    """The display name of a well-known principal in any accepted spelling, else None."""
    return WELL_KNOWN.get(" ".join(principal.split()).lower())


def exchange_servers(domain: str) -> str:
    return f"{domain}\\Exchange Servers"


def exchange_legacy_interop(domain: str) -> str:
    return f"{domain}\\ExchangeLegacyInterop"


_X_VERBS = (
    Right.SMTPAcceptXShadow
    | Right.SMTPAcceptXProxyFrom
    | Right.SMTPAcceptXSessionParams
    | Right.SMTPAcceptXMessageContextADRecipientCache
    | Right.SMTPAcceptXMessageContextExtendedProperties
    | Right.SMTPAcceptXMessageContextFastIndex
    | Right.SMTPAcceptXAttr
    | Right.SMTPAcceptXSysProbe
)

ANONYMOUS_RIGHTS = (
    Right.SMTPSubmit
    | Right.SMTPAcceptAnySender
    | Right.SMTPAcceptAuthoritativeDomainSender
    | Right.AcceptRoutingHeaders
)
EXCHANGE_USERS_RIGHTS = (
    Right.SMTPSubmit | Right.SMTPAcceptAnyRecipient | Right.BypassAntiSpam | Right.AcceptRoutingHeaders
)
EXCHANGE_SERVERS_RIGHTS = (
    Right.SMTPSubmit
    | Right.SMTPAcceptAnyRecipient
    | Right.SMTPAcceptAuthenticationFlag
    | Right.SMTPAcceptAnySender
    | Right.SMTPAcceptAuthoritativeDomainSender
    | Right.BypassAntiSpam
    | Right.BypassMessageSizeLimit
    | Right.SMTPAcceptEXCH50
    | Right.AcceptRoutingHeaders
    | Right.AcceptForestHeaders
    | Right.AcceptOrganizationHeaders
    | _X_VERBS
)
EXTERNALLY_SECURED_RIGHTS = EXCHANGE_SERVERS_RIGHTS & ~(
    Right.AcceptForestHeaders | Right.AcceptOrganizationHeaders | _X_VERBS
)
PARTNER_RIGHTS = Right.SMTPSubmit | Right.AcceptRoutingHeaders


def group_entries(groups: PermissionGroups, domain: str) -> tuple[PermissionEntry, ...]:
    """The access-control entries a connector's PermissionGroups imply."""
    out: list[PermissionEntry] = []
    if PermissionGroups.AnonymousUsers in groups:
        out.append(PermissionEntry(ANONYMOUS_LOGON, ANONYMOUS_RIGHTS))
    if PermissionGroups.ExchangeUsers in groups:
        out.append(PermissionEntry(AUTHENTICATED_USERS, EXCHANGE_USERS_RIGHTS))
    if PermissionGroups.ExchangeServers in groups:
        for principal in (exchange_servers(domain), EDGE_TRANSPORT_SERVERS, HUB_TRANSPORT_SERVERS):
            out.append(PermissionEntry(principal, EXCHANGE_SERVERS_RIGHTS))
        out.append(PermissionEntry(EXTERNALLY_SECURED_SERVERS, EXTERNALLY_SECURED_RIGHTS))
    if PermissionGroups.ExchangeLegacyServers in groups:
        legacy = exchange_legacy_interop(domain)
        out.append(PermissionEntry(legacy, EXTERNALLY_SECURED_RIGHTS))
        out.append(PermissionEntry(legacy, Right.AcceptForestHeaders | Right.AcceptOrganizationHeaders, deny=True))
    if PermissionGroups.Partners in groups:
        out.append(PermissionEntry(PARTNER_SERVERS, PARTNER_RIGHTS))
    return tuple(out)


def access_list(connector: ReceiveConnector, domain: str) -> tuple[PermissionEntry, ...]:
    """Group-implied entries followed by the hand-added ones."""
    return group_entries(connector.permission_groups, domain) + connector.permissions


@dataclass(frozen=True)
class Principal:
    """Who a session is: the identity Exchange evaluates plus every group it belongs to."""

    name: str
    names: frozenset[str]  # lower-cased identity and group names
    authenticated: bool

    @classmethod
    def anonymous(cls) -> Principal:
        return cls(ANONYMOUS_LOGON, frozenset({ANONYMOUS_LOGON.lower()}), authenticated=False)

    @classmethod
    def externally_secured(cls) -> Principal:
        return cls(EXTERNALLY_SECURED_SERVERS, frozenset({EXTERNALLY_SECURED_SERVERS.lower()}), True)

    @classmethod
    def user(cls, login: str, server: Server, directory: Iterable[User] = ()) -> Principal:
        """An AUTH login: ``Authenticated Users``, ``Everyone``, and, when the login is a
        ``users:`` entry, that user and its groups (spec §1.8).

        The login is only ever compared with ``users:`` names: a login spelled like a group
        or a well-known principal (``Exchange Servers``, ``ANONYMOUS LOGON``) is not that
        principal and gets none of its rights. ``Everyone`` holds every authenticated
        identity on Windows, so its entries (a Deny above all) bind authenticated users;
        anonymous sessions stay outside it (spec §1.8).
        """
        names = {AUTHENTICATED_USERS.lower(), EVERYONE.lower()}
        bare = login.rpartition("\\")[2].lower()
        groups = group_principals(server.domain)
        for u in directory:
            if u.name.rpartition("\\")[2].lower() == bare:
                identity = canonical(u.name, server.domain)
                if identity not in groups:
                    names.add(identity)
                names.update(canonical(g, server.domain) for g in u.member_of)
        return cls(login, frozenset(names), authenticated=True)


def group_principals(domain: str) -> frozenset[str]:
    """Comparison keys of every principal that is not a person: the well-known ones and the
    domain groups the permission groups grant to. A ``users:`` login is never one of them."""
    return frozenset(
        {n.lower() for n in _WELL_KNOWN_FORMS}
        | {
            exchange_servers(domain).lower(),
            exchange_legacy_interop(domain).lower(),
        }
    )


def is_group_principal_name(name: str) -> bool:
    """Whether ``name`` spells a well-known or permission-group principal in any domain
    (``Exchange Servers``, ``LABS\\ExchangeLegacyInterop``, ``S-1-5-7``): not a login."""
    bare = " ".join(name.rpartition("\\")[2].split()).lower()
    return (
        well_known(name) is not None
        or well_known(bare) is not None
        or bare
        in (
            "exchange servers",
            "exchangelegacyinterop",
        )
    )


def canonical(principal: str, domain: str) -> str:
    """The lower-cased comparison key of a principal.

    A well-known principal (``ANONYMOUS LOGON``, ``Authenticated Users``, ``Partner
    Servers``…) maps to its full name whatever the spelling; any other bare name is taken
    to be in the server's domain (``Exchange Servers`` → ``<domain>\\exchange servers``).
    """
    known = well_known(principal)
    if known is not None:
        return known.lower()
    name = principal.strip()
    return (name if "\\" in name else f"{domain}\\{name}").lower()


def effective_rights(entries: Iterable[PermissionEntry], principal: Principal, domain: str) -> Right:
    """Allow entries for the principal or its groups, minus any Deny: deny always wins."""
    allow = Right.NONE
    deny = Right.NONE
    for entry in entries:
        if canonical(entry.user, domain) not in principal.names:
            continue
        if entry.deny:
            deny |= entry.rights
        else:
            allow |= entry.rights
    return allow & ~deny
