"""The ``receive_connectors`` section: entries parsed as they are read, then merged with the defaults.

An entry is parsed as soon as the reader hands it over and its tree is dropped
(:class:`ConnectorEntries`), so 10,000 connectors never exist as one tree; what is kept
per connector is its values and, packed, where each was written. :func:`build` then merges
Exchange's layers as ``New-ReceiveConnector`` and ``Set-ReceiveConnector`` do: the
connectors setup creates (``default_connectors: true``), the usage's defaults, the file.

A value that could not be parsed is reported once and left out (its default stands in);
its key is returned as *failed* so that validation skips the checks that read it, and a
connector with a bad ``max_message_size`` still takes part in the conflict checks.
"""

from __future__ import annotations

import functools
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

from exmilter import defaults
from exmilter.config import fields
from exmilter.config.fields import CONNECTOR_FIELDS, CONNECTOR_KEYS, FAILED, Most
from exmilter.config.problems import Collector
from exmilter.config.reader import STREAMED, Raw, YamlMap
from exmilter.config.validation import MAX_RANGE_ENTRIES
from exmilter.limits import CONFIG_MAX_RANGE_ENTRIES_REFUSED
from exmilter.model import (
    AuthMechanism,
    PermissionEntry,
    PermissionGroups,
    ReceiveConnector,
    Right,
    Server,
    TransportRole,
    Usage,
)
from exmilter.values import parse_binding, parse_ip_range

#: List-valued connector keys whose items are parsed (and reported) one by one.
_EACH: dict[str, Callable[[str], Any]] = {"bindings": parse_binding, "remote_ip_ranges": parse_ip_range}
#: Keys of :data:`_EACH` with a bound of their own.
_MOST: dict[str, Most] = {
    "remote_ip_ranges": (
        CONFIG_MAX_RANGE_ENTRIES_REFUSED,
        lambda n: (
            f"{n} entries; Exchange fails above about {MAX_RANGE_ENTRIES:,} and exmilter refuses more than "
            f"{CONFIG_MAX_RANGE_ENTRIES_REFUSED:,}: use ranges or CIDR (10.0.0.0/24, 10.0.0.1-10.0.0.99)"
        ),
    ),
}

_NOTHING_FAILED: frozenset[str] = frozenset()


def _pack(raw: Raw) -> int:
    """A position as one integer, for the positions kept per connector until validation."""
    return raw.line << 32 | raw.col


def _unpack(pos: int) -> Raw:
    return Raw(None, pos >> 32, pos & 0xFFFFFFFF)


@dataclass(frozen=True, slots=True)
class Positions:
    """Where a connector and each of its properties were written, for located errors.

    Kept for every connector until validation, so compact: the key names are one tuple
    shared by all connectors written with the same keys, the positions packed in an array.
    A key not written is located at the connector.
    """

    at: int
    keys: tuple[str, ...] = ()
    packed: array[int] = field(default_factory=lambda: array("Q"))

    def __call__(self, key: str | None = None) -> Raw:
        if key in self.keys:
            return _unpack(self.packed[self.keys.index(key)])
        return _unpack(self.at)


class Built(NamedTuple):
    """A connector as built, where its properties were written, and which of them were bad in the file."""

    connector: ReceiveConnector
    where: Positions
    failed: frozenset[str]


class _Partial:
    """A list value of which only ``items`` parsed (every bad item was reported)."""

    __slots__ = ("items",)

    def __init__(self, items: tuple[Any, ...]) -> None:
        self.items = items


@dataclass(slots=True)
class _Entry:
    """One ``receive_connectors`` entry as read: values parsed, not yet merged with defaults.

    ``values`` are the parsed values of the first keys in ``where.keys``, in order (the
    keys after them, ``permissions[n]``, only locate entries). A value that could not be
    parsed is ``FAILED``, and ``failed`` names it (also a list of which only some items
    parsed: the rest still takes part in the checks).
    """

    name: str
    name_at: int
    server: str | None  # SERVER of an identity written as SERVER\Name
    values: tuple[Any, ...]
    where: Positions
    failed: frozenset[str]


class ConnectorEntries:
    """The reader's ``on_connector``: each entry parsed as it is read, problems reported to ``out``."""

    def __init__(self, out: Collector) -> None:
        self.out = out
        self.entries: list[_Entry] = []
        self._names: set[str] = set()
        self._duplicates: list[tuple[Raw, str]] = []  # reported once the server's name is known
        self._keysets: dict[tuple[str, ...], tuple[str, ...]] = {}

    def __call__(self, item: Raw) -> None:
        out = self.out
        m = fields.mapping(item, "receive_connectors", out)
        if not m:
            if isinstance(item.value, YamlMap):  # {}: a mapping without keys
                out.error(item, "receive_connectors.name", "required")
            return
        if "name" not in m:
            out.error(item, "receive_connectors.name", "required")
            return
        name_raw = m["name"][1]
        name = fields.parse_or_report(name_raw, "name", fields.scalar, out)
        if name is FAILED:
            return
        name = name.strip()
        server = None
        if "\\" in name:  # accept an identity "SERVER\Name"
            server, _, name = name.rpartition("\\")
        key = name.lower()
        if key in self._names:
            self._duplicates.append((Raw(None, name_raw.line, name_raw.col), name))
            return
        self._names.add(key)
        keys: list[str] = []
        values: list[Any] = []
        packed = array("Q")
        failed: set[str] = set()
        entries: list[tuple[str, int]] = []
        for k, (kraw, vraw) in m.items():
            if k == "name":
                continue
            if k not in CONNECTOR_KEYS:
                out.error(kraw, f"{name}: {k}", "unknown receive connector property")
                continue
            value = _value(name, k, vraw, out)
            if value is FAILED or isinstance(value, _Partial):
                failed.add(k)
                value = value.items if isinstance(value, _Partial) else value
            keys.append(k)
            values.append(value)
            packed.append(_pack(vraw))
            if k == "permissions" and value is not FAILED:  # each entry located, for warnings about one
                entries = [(f"permissions[{n}]", _pack(entry)) for n, entry in enumerate(vraw.value)]
        for k, pos in entries:  # after the keys with values: values[i] is the value of keys[i]
            keys.append(k)
            packed.append(pos)
        names = self._keysets.setdefault(tuple(keys), tuple(keys))
        where = Positions(_pack(item), names, packed)
        failed_keys = frozenset(failed) if failed else _NOTHING_FAILED
        self.entries.append(_Entry(name, _pack(name_raw), server, tuple(values), where, failed_keys))

    def report_duplicates(self, server: str) -> None:
        """Names given twice: ``server`` is the server's name, or how to call it when it is unknown."""
        for at, name in self._duplicates:
            self.out.error(at, "name", f"a connector named {name!r} is already defined on {server}")


def _value(name: str, key: str, raw: Raw, out: Collector) -> Any:
    """One connector property: the parsed value, ``FAILED``, or a ``_Partial`` list."""
    if key == "permissions":
        entries = _permissions(raw, out)
        return FAILED if entries is None else tuple(entries)
    if key == "usage":
        return fields.parse_or_report(raw, "usage", CONNECTOR_FIELDS["usage"], out)
    if key in _EACH:
        found, ok = fields.parse_each_or_report(raw, f"{name}: {key}", _EACH[key], out, _MOST.get(key))
        return found if ok else _Partial(found)
    return fields.parse_or_report(raw, f"{name}: {key}", CONNECTOR_FIELDS[key], out)


def _permissions(raw: Raw, out: Collector) -> list[PermissionEntry] | None:
    """``permissions``: Add-ADPermission entries; None if any was bad (each is reported)."""
    if not isinstance(raw.value, list):
        out.error(raw, "permissions", "expected a list of {user, extended_rights, deny}")
        return None
    entries: list[PermissionEntry] = []
    ok = True
    for item in raw.value:
        m = fields.mapping(item, "permissions", out)
        if not m:
            ok = False
            continue
        user: str | None = None
        rights = Right.NONE
        deny = False
        for key, (kraw, vraw) in m.items():
            if key == "user":
                u = fields.parse_or_report(vraw, "permissions.user", fields.scalar, out)
                user = None if u is FAILED else u.strip()
            elif key == "extended_rights":
                r = fields.parse_or_report(vraw, "permissions.extended_rights", fields.extended_rights, out)
                if r is FAILED:
                    ok = False
                else:
                    rights = r
            elif key == "deny":
                d = fields.parse_or_report(vraw, "permissions.deny", fields.boolean, out)
                deny = bool(d is True)
            else:
                out.error(kraw, f"permissions.{key}", "unknown key; expected user, extended_rights, deny")
                ok = False
        if user is None:
            out.error(item, "permissions.user", "required: the principal, e.g. NT AUTHORITY\\ANONYMOUS LOGON")
            ok = False
            continue
        if not rights:
            out.error(item, "permissions.extended_rights", "required: at least one extended right")
            ok = False
            continue
        entries.append(PermissionEntry(user, rights, deny))
    return entries if ok else None


def build(
    read: ConnectorEntries,
    section: tuple[Raw, Raw] | None,
    server: Server,
    server_known: bool,
    defaults_at: Raw | None,
    out: Collector,
) -> list[Built]:
    """Merge defaults, usage defaults and the file's entries (``read``, plus ``section`` if it was not streamed)."""
    if section is not None and section[1].value is not STREAMED:  # not a plain list: read it here
        seq = section[1]
        if isinstance(seq.value, list):
            for item in seq.value:
                read(item)
        elif seq.value is not None:
            out.error(seq, "receive_connectors", "expected a list of connectors")
    read.report_duplicates(server.name if server_known else "this server")
    # name → (name, default values, positions, failed keys, the file's entry if any)
    specs: dict[str, tuple[str, Mapping[str, Any], Positions, frozenset[str], _Entry | None]] = {}
    if defaults_at is not None:
        here = Positions(_pack(defaults_at))
        for name, values in _default_connectors(server.name):
            specs[name.lower()] = (name, values, here, _NOTHING_FAILED, None)
    entries, read.entries = read.entries, []
    for e in entries:
        if e.server is not None and server_known and e.server.lower() != server.name.lower():
            out.error(_unpack(e.name_at), "name", f"identity is on server {e.server}, not {server.name}")
        key = e.name.lower()
        if key in specs:  # Set-ReceiveConnector on a default connector: only the keys given change
            _, values, here, _, _ = specs[key]
            where = Positions(here.at, e.where.keys, e.where.packed)  # the rest stays located at the defaults
            specs[key] = (e.name, values, where, e.failed, e)
        else:
            specs[key] = (e.name, {}, e.where, e.failed, e)
    del entries
    built = []
    for name, values, where, failed, written in specs.values():
        if written is not None:
            values = {**values, **dict(zip(written.where.keys[: len(written.values)], written.values, strict=True))}
        built.append(_connector(name, values, where, failed, server, out))
    return built


def _connector(
    name: str, spec: Mapping[str, Any], where: Positions, failed: frozenset[str], server: Server, out: Collector
) -> Built:
    """The connector, with defaults standing in for failed values; ``failed`` grows by what is unknown."""
    unknown = set(failed)
    usage = spec.get("usage", Usage.Custom)
    values: dict[str, Any] = {"fqdn": server.fqdn}
    if usage is FAILED:  # whatever the usage would have set is unknown too
        usage = Usage.Custom
        unknown |= {k for d in defaults.USAGE_DEFAULTS.values() for k in d if k not in spec}
    else:
        values |= _usage_defaults(usage)
        for req in defaults.USAGE_REQUIRED[usage.value]:
            if req not in spec:
                out.error(where(), f"{name}: {req}", f"required for usage {usage.value}")
    for key, value in spec.items():
        if key not in ("permissions", "usage") and value is not FAILED:
            values[key] = value
    permissions = spec.get("permissions", ())
    role = values.pop("transport_role", TransportRole.HubTransport)
    values.setdefault("bindings", ())
    values.setdefault("remote_ip_ranges", ())
    values.setdefault("auth_mechanism", AuthMechanism.Tls)
    values.setdefault("permission_groups", PermissionGroups.NONE)
    if values["permission_groups"] & PermissionGroups.Custom:
        out.error(
            where("permission_groups"),
            "permission_groups",
            "Custom cannot be set; it is reported once a permission entry is added by hand",
        )
        values["permission_groups"] &= ~PermissionGroups.Custom
        unknown.add("permission_groups")
    connector = ReceiveConnector(
        name=name,
        server=server.name,
        transport_role=role,
        usage=usage,
        permissions=() if permissions is FAILED else permissions,
        **values,
    )
    return Built(connector, where, frozenset(unknown) if unknown else _NOTHING_FAILED)


def _python_raw(value: Any, at: Raw) -> Raw:
    """Defaults are written in the file's syntax; place them where they were switched on."""
    if isinstance(value, list):
        return Raw([_python_raw(v, at) for v in value], at.line, at.col)
    return Raw(None if value is None else str(value), at.line, at.col)


@functools.cache
def _usage_defaults(usage: Usage) -> Mapping[str, Any]:
    """``New-ReceiveConnector -Usage`` defaults, parsed once per process and shared (the values are immutable)."""
    nowhere = Raw(None, 1, 1)
    return MappingProxyType(
        {k: CONNECTOR_FIELDS[k](_python_raw(v, nowhere)) for k, v in defaults.USAGE_DEFAULTS[usage.value].items()}
    )


@functools.lru_cache(maxsize=16)
def _default_connectors(server: str) -> tuple[tuple[str, Mapping[str, Any]], ...]:
    """The parsed values of the connectors setup creates on ``server``, shared by every load naming it.

    They are a third of loading a small file with ``default_connectors: true`` (a reload,
    every command of import-exchange), and depend on nothing else.
    """
    out = Collector("<defaults>")
    nowhere = Raw(None, 1, 1)
    found = []
    for d in defaults.default_connectors(server):
        values = {k: _value(d["name"], k, _python_raw(v, nowhere), out) for k, v in d.items() if k != "name"}
        found.append((d["name"], MappingProxyType(values)))
    if out.problems:  # the defaults are Exchange's own and always parse
        raise AssertionError(out.problems)
    return tuple(found)
