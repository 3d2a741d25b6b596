"""``New-``, ``Set-`` and ``Remove-ReceiveConnector``, and one property stored as the loader reads it.

:func:`store` is shared with :mod:`..dumps`: a ``Format-List`` object's property and a
``-Param value`` are judged alike, by :func:`exmilter.config.parse_connector_property`.
"""

from __future__ import annotations

from typing import Any

from exmilter import config, limits
from exmilter.importer.cmdlets.command import Command, find_connector, leftovers, piped, switch_arg, text_arg
from exmilter.importer.evaluator import MISSING, Args, Obj, Refused, Unknown, flat
from exmilter.importer.parameters import DECISIVE_KEYS, LIST_KEYS, OPTIONAL_KEYS, RC_KEYS, TEXT_KEYS, USAGES, flag_names
from exmilter.importer.state import NO_USAGE, Connector
from exmilter.model import PermissionGroups, TransportRole, Usage
from exmilter.values import parse_binding, parse_ip_range


def _server_arg(cmd: Command, args: Args) -> None:
    if "server" in args:
        server = text_arg(args, "server")
        if server.lower() != cmd.state.server.lower():
            raise Refused(f"-Server {server}: exmilter stands in for {cmd.state.server} only")


def new_receive_connector(cmd: Command, args: Args) -> list[Obj]:
    name = text_arg(args, "name", required=True)
    _server_arg(cmd, args)
    if "\\" in name:
        raise Refused(f"-Name '{name}': a connector name cannot contain '\\'")
    if cmd.state.connector(name) is not None:
        raise Refused(f"a receive connector named '{name}' already exists on {cmd.state.server}")
    usages = [u for u in USAGES if switch_arg(args, u.lower())]
    if "usage" in args:
        usages.append(text_arg(args, "usage"))
    if len(usages) > 1:
        raise Refused(f"more than one usage type ({', '.join(usages)})")
    usage = usages[0] if usages else NO_USAGE
    canon = {u.lower(): u for u in USAGES}.get(usage.lower())
    if canon is None:
        raise Refused(f"-Usage {usage}: not one of {', '.join(USAGES)}")
    c = Connector({"name": name, "usage": canon}, [cmd.where])
    cmd.state.connectors.append(c)
    properties(cmd, c, args)
    return [piped(cmd.state, c)]


def set_receive_connector(cmd: Command, args: Args) -> list[Obj]:
    c = find_connector(cmd.state, text_arg(args, "identity", required=True))
    if "name" in args:
        new = text_arg(args, "name")
        other = cmd.state.connector(new)
        if other is not None and other is not c:
            raise Refused(f"a receive connector named '{new}' already exists")
        c.spec["name"] = new
    properties(cmd, c, args)
    c.origins.append(cmd.where)
    return [piped(cmd.state, c)]


def remove_receive_connector(cmd: Command, args: Args) -> list[Obj]:
    c = find_connector(cmd.state, text_arg(args, "identity", required=True))
    leftovers(cmd, args)
    cmd.state.connectors.remove(c)
    return []


def properties(cmd: Command, c: Connector, args: Args) -> None:
    """Check and store ``-Param value`` pairs on ``c``; a bad value refuses the command."""
    for pname, (value, line, written) in list(args.items()):
        key = RC_KEYS.get(pname)
        if key is None:
            continue
        del args[pname]
        if isinstance(value, Unknown):
            if key in DECISIVE_KEYS:
                raise Refused(
                    f"-{written}: {value.why}, and without it the connector would keep "
                    f"{'its default' if key != 'remote_ip_ranges' else 'every address'}"
                )
            cmd.notes.warn(cmd.file, line, f"-{written}: {value.why}; this parameter is not imported")
            continue
        if value is MISSING:
            raise Refused(f"-{written} needs a value")
        store(cmd, c, key, value, written)
        if key == "tls_certificate_name" and value is not None:
            cmd.notes.info(
                cmd.file,
                line,
                f"-{written}: the certificate is in the Windows store; kept as tls_certificate_name for reference. "
                "Postfix reads PEM files: give them as tls.certificate_file/key_file, or this connector's "
                "tls_certificate_file/tls_key_file (docs/authentication.md)",
            )
    leftovers(cmd, args)


def store(cmd: Command, c: Connector, key: str, value: Any, written: str) -> None:
    """Set one property of ``c`` (``@{Add=…; Remove=…}`` on a list), as the loader would read it."""
    c.key_origins.setdefault(key, []).append(cmd.where)
    if isinstance(value, dict):
        if key not in LIST_KEYS or not set(value) <= {"add", "remove"}:
            raise Refused(f"-{written}: only multi-valued properties take @{{Add=…; Remove=…}}")
        current = list(c.current(key) or [])
        for item in flat(value.get("add")):
            if not any(_same(key, item, x) for x in current):
                current.append(item)
        for item in flat(value.get("remove")):
            current = [x for x in current if not _same(key, item, x)]
        value = current
    if value is None:
        if key in OPTIONAL_KEYS:
            c.spec.pop(key, None)
            return
        if key not in LIST_KEYS and key != "comment":
            raise Refused(f"-{written} cannot be $null")
        value = [] if key in LIST_KEYS else ""
    if isinstance(value, Obj):
        value = str(value)
    if key in LIST_KEYS:
        items = _list_items(value, written)
        text: str | list[str] = items
    elif isinstance(value, list):
        raise Refused(f"-{written} takes one value, not a list")
    else:
        text = str(value)
    try:
        parsed = config.parse_connector_property(key, text)
    except ValueError as e:
        shown = ", ".join(items) if key in LIST_KEYS else str(value)
        raise Refused(f"-{written} {shown}: {e}") from None
    if key == "permission_groups":
        if parsed & PermissionGroups.Custom:
            raise Refused(
                f"-PermissionGroups {PermissionGroups.Custom.name} cannot be set: Exchange shows it once "
                "an entry is added"
            )
        c.aces = [a for a in c.aces if a.group is None]
        items = flag_names(parsed)
    elif key == "auth_mechanism":
        items = flag_names(parsed)
    elif key == "bindings":
        for b in parsed:
            if not b.is_wildcard and not b.ip.is_loopback:
                cmd.state.addresses.setdefault(str(b.ip), f"-Bindings {b}")
    if key in LIST_KEYS:
        c.spec[key] = items
    elif isinstance(parsed, bool):
        c.spec[key] = parsed
    elif isinstance(parsed, str) and key not in TEXT_KEYS:
        c.spec[key] = parsed  # the canonical spelling of a choice
    elif isinstance(parsed, TransportRole | Usage):
        c.spec[key] = parsed.value
    else:
        c.spec[key] = str(value).strip() if key not in ("banner", "comment") else str(value)


def _list_items(value: Any, written: str) -> list[str]:
    """The entries of a multi-valued property (``a,b`` is two), within what Exchange takes."""
    most = limits.IMPORT_MAX_PROPERTY_ITEMS
    texts = [str(v) for v in flat(value)]
    if sum(v.count(",") for v in texts) > 4 * most:  # before a dump's list is split
        raise Refused(
            f"-{written}: more than {4 * most:,} entries; Exchange fails above about 1,200 (the importer "
            f"takes at most {most:,}): use ranges or CIDR"
        )
    items = [s.strip() for v in texts for s in v.split(",") if s.strip()]
    if len(items) > most:
        raise Refused(
            f"-{written}: {len(items):,} entries; Exchange fails above about 1,200 (the importer takes at "
            f"most {most:,}): use ranges or CIDR"
        )
    return items


def _same(key: str, a: Any, b: Any) -> bool:
    """Whether two items of a multi-valued property are the same value (Remove=…)."""
    try:
        if key == "remote_ip_ranges":
            ra, rb = parse_ip_range(str(a)), parse_ip_range(str(b))
            return (ra.version, ra.first, ra.last) == (rb.version, rb.first, rb.last)
        if key == "bindings":
            return parse_binding(str(a)) == parse_binding(str(b))
    except ValueError:
        pass
    return str(a).strip().lower() == str(b).strip().lower()
