"""``Format-List`` objects as the same model changes the cmdlets make.

A ``Get-ReceiveConnector | Format-List`` object sets the connector's properties (creating
it if the input has not), a ``Get-AcceptedDomain`` object the accepted domain, a
``Get-ADPermission`` entry is an ``Add-ADPermission``. Values go through the cmdlet
handlers' own checks (:func:`.receive_connectors.store`, :func:`.accepted_domains.domain_properties`), so a
dump and a runbook are judged alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from exmilter.importer.cmdlets.accepted_domains import domain_name, domain_properties
from exmilter.importer.cmdlets.ad_permissions import add_ad_permission
from exmilter.importer.cmdlets.command import Command
from exmilter.importer.cmdlets.receive_connectors import store
from exmilter.importer.cmdlets.send_connectors import dump_properties, is_send_connector_dump
from exmilter.importer.evaluator import Args, Param, Refused
from exmilter.importer.notes import Notes
from exmilter.importer.parameters import DUMP_INERT, LIST_KEYS, NO_FLAGS, OPTIONAL_KEYS, RC_KEYS
from exmilter.importer.state import ASSUMED_DOMAIN, NO_USAGE, Connector, Domain, SendSpec, State
from exmilter.importer.transcript import Dump
from exmilter.model import PermissionGroups

#: Properties only a receive connector's dump has.
_CONNECTOR_PROPERTIES = frozenset({"bindings", "remoteipranges", "authmechanism", "permissiongroups", "transportrole"})
_CUSTOM = PermissionGroups.Custom.name.lower()


class Session(Protocol):
    """What importing a dump needs of the applier: the model, the messages, and checked changes."""

    state: State
    notes: Notes
    context: str | None  # the identity the last Get-ReceiveConnector named: its Format-List output follows

    def attempt(self, file: str, line: int, what: str, where: str, action: Callable[[Command], object]) -> object:
        """Apply ``action`` as one command; undo it and report when Exchange would refuse it."""
        ...


def import_dump(session: Session, d: Dump) -> None:
    """Apply one ``Format-List`` object (already counted; a refused one was noted where it was read)."""
    if d.refused:
        return
    keys = {k.lower() for k in d.props}
    oc = (d.get("ObjectClass") or "").lower()
    if is_send_connector_dump(oc, keys):
        _send_connector(session, d)
    elif "msexchsmtpreceiveconnector" in oc or keys & _CONNECTOR_PROPERTIES:
        _connector(session, d)
    elif "msexchaccepteddomain" in oc or "domaintype" in keys or "domainname" in keys:
        _domain(session, d)
    elif {"user", "extendedrights"} <= keys:
        _permission(session, d)
    else:
        session.notes.warn(
            d.file,
            d.line,
            "a property list that is neither a receive connector, an accepted "
            "domain nor a permission entry: not imported",
        )


def _identity(session: Session, d: Dump) -> str | None:
    ident = d.get("Identity") or d.get("Id")
    if not ident and d.get("Name"):
        ident = f"{d.get('Server') or session.state.server}\\{d.get('Name')}"
    return ident or session.context


def _connector(session: Session, d: Dump) -> None:
    ident = _identity(session, d)
    if not ident:
        session.notes.warn(
            d.file,
            d.line,
            "receive connector properties without Identity or Name (add Identity to the Format-List): not imported",
        )
        return
    inert = sorted(k for k in d.props if k.lower() in DUMP_INERT)
    unknown = [k for k in d.props if k.lower() not in DUMP_INERT and k.lower() not in RC_KEYS]

    def apply(cmd: Command) -> None:
        server, _, name = ident.rpartition("\\")
        if server and server.lower() != cmd.state.server.lower():
            raise Refused(f"'{ident}' is on server {server}; exmilter stands in for {cmd.state.server}")
        c = cmd.state.connector(name)
        if c is None:
            c = Connector({"name": name, "usage": NO_USAGE}, [cmd.where])
            cmd.state.connectors.append(c)
        else:
            c.origins.append(cmd.where)
        for prop, (value, line) in d.props.items():
            key = RC_KEYS.get(prop.lower())
            if key is None:
                continue
            text = value.strip()
            if text.startswith("{") and text.endswith("}"):
                text = text[1:-1]
            if key == "permission_groups" and _CUSTOM in text.lower():
                text = ", ".join(g for g in text.split(",") if g.strip().lower() != _CUSTOM) or NO_FLAGS
            if not text and key not in LIST_KEYS and key != "comment":
                if key in OPTIONAL_KEYS:
                    c.spec.pop(key, None)
                continue
            try:
                store(cmd, c, key, text, prop)
            except Refused as e:
                raise Refused(f"line {line}: {e}") from None

    where = f"Format-List output at {d.file}:{d.line}"
    session.attempt(d.file, d.line, f"receive connector {ident}", where, apply)
    if inert:
        session.notes.info(
            d.file,
            d.line,
            f"{len(inert)} properties without an effect on SMTP sessions not imported "
            f"({', '.join(inert[:6])}{', …' if len(inert) > 6 else ''})",
        )
    for k in unknown:
        session.notes.warn(
            d.file, d.props[k][1], f"{k} is not a receive connector property exmilter knows: not imported"
        )


def _send_connector(session: Session, d: Dump) -> None:
    name = (d.get("Name") or d.get("Identity") or "").strip()
    if not name:
        session.notes.warn(d.file, d.line, "send connector properties without Name or Identity: not imported")
        return

    def apply(cmd: Command) -> None:
        c = cmd.state.send_connector(name)
        if c is None:
            c = SendSpec({"name": name}, [cmd.where])
            cmd.state.send_connectors.append(c)
        else:
            c.origins.append(cmd.where)
        dump_properties(cmd, c, d.props, d.file)

    where = f"Format-List output at {d.file}:{d.line}"
    session.attempt(d.file, d.line, f"send connector {name}", where, apply)


def _domain(session: Session, d: Dump) -> None:
    dn = d.get("DomainName")
    if not dn:
        session.notes.warn(d.file, d.line, "accepted domain properties without DomainName: not imported")
        return
    props: Args = {"domainname": Param(dn, d.line, "DomainName")}
    for prop, (value, line) in d.props.items():
        low = prop.lower()
        if low in ("domaintype", "matchsubdomains", "addressbookenabled"):
            props[low] = Param(value.strip(), line, prop)
        elif low not in DUMP_INERT and low != "domainname":
            session.notes.warn(d.file, line, f"{prop} is not an accepted domain property exmilter knows: not imported")

    def apply(cmd: Command) -> None:
        existing = cmd.state.domain(dn.strip().lower())
        if existing is None:
            existing = Domain({"name": (d.get("Name") or dn).strip(), "domain_name": domain_name(dn)}, [])
            cmd.state.domains.append(existing)
        existing.origins[:] = [o for o in existing.origins if o != ASSUMED_DOMAIN] + [cmd.where]
        domain_properties(cmd, existing, props)

    session.attempt(d.file, d.line, f"accepted domain {dn}", f"Format-List output at {d.file}:{d.line}", apply)


def _permission(session: Session, d: Dump) -> None:
    if (d.get("IsInherited") or "").lower() == "true":
        session.notes.info(d.file, d.line, "inherited permission entry: not part of the connector, skipped")
        return
    ident = _identity(session, d)
    rights = (d.get("ExtendedRights") or "").strip("{} ")
    if not rights:
        session.notes.info(d.file, d.line, "permission entry without extended rights: nothing for SMTP, skipped")
        return
    args: Args = {
        "identity": Param(ident, d.line, "Identity"),
        "user": Param(d.get("User"), d.line, "User"),
        "extendedrights": Param(rights, d.line, "ExtendedRights"),
    }
    if (d.get("Deny") or "").lower() == "true":
        args["deny"] = Param("true", d.line, "Deny")
    where = f"Get-ADPermission output at {d.file}:{d.line}"
    session.attempt(d.file, d.line, f"permission entry on {ident}", where, lambda cmd: add_ad_permission(cmd, args))
