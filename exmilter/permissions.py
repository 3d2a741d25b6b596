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
        """An AUTH login: the user, ``Authenticated Users`` and the user's groups (spec §1.8)."""
        names = {canonical(login, server.domain), AUTHENTICATED_USERS.lower()}
        bare = login.rpartition("\\")[2].lower()
        for u in directory:
            if u.name.rpartition("\\")[2].lower() == bare:
                names.update(canonical(g, server.domain) for g in u.member_of)
        return cls(login, frozenset(names), authenticated=True)


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
