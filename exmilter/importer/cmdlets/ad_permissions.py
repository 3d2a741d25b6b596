"""``Add-`` and ``Remove-ADPermission``: extended rights of principals on a receive connector.

Principals are named as :mod:`exmilter.permissions` names them (``NT AUTHORITY\\ANONYMOUS
LOGON`` in any accepted spelling), rights as :func:`exmilter.model.parse_right` reads them.
Removing a right a permission group grants writes the group out as entries, minus that right.
"""

from __future__ import annotations

from exmilter.importer.cmdlets.command import Command, find_connector, leftovers, piped, switch_arg, text_arg
from exmilter.importer.evaluator import MISSING, Args, Obj, Refused, Unknown, flat
from exmilter.importer.parameters import NO_FLAGS
from exmilter.importer.state import Ace, Connector, UserGrant
from exmilter.model import RIGHT_DISPLAY, AuthMechanism, PermissionGroups, Right, parse_right
from exmilter.permissions import canonical, group_entries, well_known


def _rights_arg(args: Args) -> Right:
    if "extendedrights" not in args:
        raise Refused(
            f"-ExtendedRights is required (receive connector rights such as {RIGHT_DISPLAY[Right.SMTPSubmit]})"
        )
    value = args.pop("extendedrights").value
    if value is MISSING:
        raise Refused("-ExtendedRights needs a value")
    if isinstance(value, Unknown):
        raise Refused(f"-ExtendedRights: {value.why}")
    rights = Right.NONE
    for item in flat(value):
        for part in str(item).split(","):
            if part.strip():
                try:
                    rights |= parse_right(part)
                except ValueError as e:
                    raise Refused(f"-ExtendedRights: {e}") from None
    if not rights:
        raise Refused("-ExtendedRights needs at least one right")
    return rights


def _ace_args(cmd: Command, args: Args) -> tuple[str, Right, bool]:
    user = text_arg(args, "user", required=True)
    user = well_known(user) or user
    rights = _rights_arg(args)
    deny = switch_arg(args, "deny")
    if "accessrights" in args:
        value, line, _ = args.pop("accessrights")
        if value is MISSING:
            raise Refused("-AccessRights needs a value")
        if isinstance(value, Unknown):
            cmd.notes.warn(
                cmd.file,
                line,
                f"-AccessRights: {value.why}; only extended rights matter to receive connectors; not imported",
            )
        elif str(value).lower() != "extendedright":
            cmd.notes.warn(
                cmd.file,
                line,
                f"-AccessRights {value}: only extended rights matter to receive connectors; not imported",
            )
    return user, rights, deny


def add_ad_permission(cmd: Command, args: Args) -> list[Obj]:
    ident = text_arg(args, "identity", required=True)
    user, rights, deny = _ace_args(cmd, args)
    leftovers(cmd, args)
    try:
        c = find_connector(cmd.state, ident)
    except Refused:
        if rights == Right.SendAs:
            return _send_as(cmd, user, ident, deny)  # Send-As on a mailbox or user, not on a connector
        raise Refused(f"permission for unknown receive connector '{ident}' on {cmd.state.server}") from None
    for a in c.aces:
        if a.user.lower() == user.lower() and a.deny == deny and a.group is None:
            a.rights |= rights
            a.origins.append(cmd.where)
            break
    else:
        c.aces.append(Ace(user, rights, deny, origins=[cmd.where]))
    c.origins.append(cmd.where)
    return [piped(cmd.state, c)]


def _send_as(cmd: Command, user: str, ident: str, deny: bool = False, remove: bool = False) -> list[Obj]:
    """Send-As on a mailbox for a login: ``users[login].send_as``.

    The login is the account name without its domain (``CONTOSO\\svc`` logs in as ``svc``),
    so both spellings are one user. A ``-Deny`` or a ``Remove-ADPermission`` takes the address
    away (deny wins; exmilter's users have no deny list).
    """
    login = user.rpartition("\\")[2].strip()
    grant = cmd.state.users.setdefault(login.lower(), UserGrant(login, []))
    grant.origins.append(cmd.where)
    if "@" in ident:
        address = ident.lower()
        if deny or remove:
            grant.send_as[:] = [a for a in grant.send_as if a != address]
        elif address not in grant.send_as:
            grant.send_as.append(address)
    elif not (deny or remove):
        grant.origins.append(f"send_as needs the e-mail address of {ident}")
        cmd.notes.warn(
            cmd.file,
            cmd.line,
            f"{RIGHT_DISPLAY[Right.SendAs]} on '{ident}' for {user}: '{ident}' is a "
            f"directory object whose e-mail address is not in the input; add it to users[{login}].send_as",
        )
    return []


def remove_ad_permission(cmd: Command, args: Args) -> list[Obj]:
    ident = text_arg(args, "identity", required=True)
    user, rights, deny = _ace_args(cmd, args)
    leftovers(cmd, args)
    try:
        c = find_connector(cmd.state, ident)
    except Refused:
        if rights == Right.SendAs:
            return _send_as(cmd, user, ident, deny, remove=True)
        raise
    removed = Right.NONE
    for a in list(c.aces):
        if a.user.lower() == user.lower() and a.deny == deny:
            removed |= a.rights & rights
            a.rights &= ~rights
            if not a.rights:
                c.aces.remove(a)
    if not deny:
        removed |= _take_from_groups(cmd, c, user, rights)
    if not removed:
        raise Refused(f"{user} holds none of these rights explicitly on '{c.name}'")
    c.origins.append(cmd.where)
    return [piped(cmd.state, c)]


def _take_from_groups(cmd: Command, c: Connector, user: str, rights: Right) -> Right:
    """Removing a group's right: write the group out as entries, minus that right."""
    removed = Right.NONE
    groups = [g for g in c.current("permission_groups") or [] if g != NO_FLAGS]
    fqdn = cmd.state.fqdn  # the NetBIOS domain as the loader derives it (state has no server.domain)
    domain = fqdn.split(".")[1].upper() if fqdn.count(".") else "EXCHANGE"
    servers, external = PermissionGroups.ExchangeServers.name, AuthMechanism.ExternalAuthoritative.name
    for g in list(groups):
        entries = group_entries(PermissionGroups[g], domain)
        key = canonical(user, domain)
        hit = [e for e in entries if canonical(e.user, domain) == key and e.rights & rights and not e.deny]
        if not hit:
            continue
        if g == servers and external in (c.current("auth_mechanism") or []):
            raise Refused(f"{external} needs the {servers} group whole")
        groups.remove(g)
        for e in entries:
            left = e.rights & ~rights if e in hit else e.rights
            removed |= e.rights & rights if e in hit else Right.NONE
            if left:
                c.aces.append(Ace(e.user, left, e.deny, group=g, origins=[f"permission group {g}", cmd.where]))
    if removed:
        c.spec["permission_groups"] = groups or [NO_FLAGS]
    return removed
