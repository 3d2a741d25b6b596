"""Load the YAML configuration into an :class:`~exmilter.model.Organization`.

The loader walks PyYAML's node tree rather than its Python objects, so every problem can
be reported as ``file:line:col: key: problem`` and so Exchange values keep their own
syntax (``00:05:00`` is a time span, not YAML 1.1's sexagesimal 300). All problems are
collected before anything is raised. Exchange's own refusals (spec §2.3) are enforced in
:mod:`exmilter.validation`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from exmilter import defaults
from exmilter.model import (
    AcceptedDomain,
    AcceptedDomainType,
    AuthMechanism,
    Organization,
    PermissionEntry,
    PermissionGroups,
    PolicydSettings,
    ReceiveConnector,
    Right,
    Server,
    TransportRole,
    Usage,
    User,
    parse_right,
)
from exmilter.values import (
    Binding,
    IPRange,
    parse_binding,
    parse_bool,
    parse_byte_size,
    parse_ip,
    parse_ip_range,
    parse_timespan,
    parse_unlimited_int,
)

DEFAULT_PATH = "/etc/exmilter/exmilter.yaml"

#: libyaml's parser when PyYAML was built with it: about 10× faster on big files.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, order=True)
class Problem:
    """One located configuration problem."""

    file: str
    line: int
    col: int
    key: str
    message: str
    warning: bool = False

    def __str__(self) -> str:
        kind = "warning: " if self.warning else ""
        return f"{self.file}:{self.line}:{self.col}: {kind}{self.key}: {self.message}"


class ConfigError(Exception):
    """Raised with every problem found; ``problems`` are sorted by position."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass
class Raw:
    """A value as written, with its position: a scalar string, None, or a list of Raw."""

    value: Any
    line: int
    col: int
    node: yaml.Node | None = None


class Collector:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def error(self, at: Raw | yaml.Node | yaml.Mark | None, key: str, message: str, warning: bool = False) -> None:
        line, col = _position(at)
        self.problems.append(Problem(self.file, line, col, key, message, warning))

    def warn(self, at: Raw | yaml.Node | yaml.Mark | None, key: str, message: str) -> None:
        self.error(at, key, message, warning=True)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if not p.warning]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.warning]


def _position(at: Raw | yaml.Node | yaml.Mark | None) -> tuple[int, int]:
    if at is None:
        return 1, 1
    if isinstance(at, Raw):
        return at.line, at.col
    mark = at.start_mark if isinstance(at, yaml.Node) else at
    return mark.line + 1, mark.column + 1


def _raw(node: yaml.Node) -> Raw:
    line, col = _position(node)
    if isinstance(node, yaml.ScalarNode):
        if node.tag == "tag:yaml.org,2002:null" or (
            node.style is None and node.value in ("", "~", "null", "Null", "NULL")
        ):
            return Raw(None, line, col, node)
        return Raw(node.value, line, col, node)
    if isinstance(node, yaml.SequenceNode):
        return Raw([_raw(n) for n in node.value], line, col, node)
    return Raw(node, line, col, node)  # a mapping: handled by the caller


def _python_raw(value: Any, at: Raw) -> Raw:
    """Defaults are written in the file's syntax; place them where they were switched on."""
    if isinstance(value, list):
        return Raw([_python_raw(v, at) for v in value], at.line, at.col)
    return Raw(None if value is None else str(value), at.line, at.col)


def _mapping(node: yaml.Node, where: str, out: Collector) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    """Mapping node → {key: (key_node, value_node)}; reports non-mappings and duplicate keys."""
    if not isinstance(node, yaml.MappingNode):
        out.error(node, where, "expected a mapping of key: value")
        return {}
    items: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for k, v in node.value:
        key = str(k.value) if isinstance(k, yaml.ScalarNode) else "?"
        if key in items:
            out.error(k, key, "duplicate key")
            continue
        items[key] = (k, v)
    return items


# --------------------------------------------------------------------------------------
# value parsers: Raw -> typed value, raising ValueError with a readable message
# --------------------------------------------------------------------------------------


def _scalar(raw: Raw) -> str:
    if isinstance(raw.value, list | yaml.Node):
        raise ValueError("expected a single value")
    if raw.value is None:
        raise ValueError("a value is required")
    return str(raw.value)


def _items(raw: Raw) -> list[Raw]:
    """A list or Exchange's comma-separated form (``Tls, BasicAuth``)."""
    if isinstance(raw.value, list):
        out: list[Raw] = []
        for item in raw.value:
            out.extend(_items(item))
        return out
    if raw.value is None:
        return []
    if isinstance(raw.value, yaml.Node):
        raise ValueError("expected a list")
    text = str(raw.value).strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    return [Raw(part.strip(), raw.line, raw.col) for part in text.split(",") if part.strip()]


def _int_range(lo: int, hi: int) -> Callable[[Raw], int]:
    def parse(raw: Raw) -> int:
        s = _scalar(raw).replace(",", "")
        if not re.fullmatch(r"-?\d+", s.strip()):
            raise ValueError(f"{raw.value!r} is not an integer")
        n = int(s)
        if not lo <= n <= hi:
            raise ValueError(f"{n} is out of range {lo}-{hi}")
        return n

    return parse


def _unlimited_range(lo: int, hi: int) -> Callable[[Raw], int | None]:
    def parse(raw: Raw) -> int | None:
        n = parse_unlimited_int(_scalar(raw))
        if n is not None and not lo <= n <= hi:
            raise ValueError(f"{n} is out of range {lo}-{hi} (or unlimited)")
        return n

    return parse


def _size_range(lo: int, hi: int) -> Callable[[Raw], int]:
    def parse(raw: Raw) -> int:
        s = _scalar(raw)
        if s.strip().lower() == "unlimited":
            raise ValueError("connector byte sizes do not accept 'unlimited'")
        n = parse_byte_size(s)
        if not lo <= n <= hi:
            raise ValueError(f"{n} bytes is out of range {lo:,}-{hi:,}")
        return n

    return parse


def _span_range(lo_s: int, hi_s: int) -> Callable[[Raw], Any]:
    def parse(raw: Raw) -> Any:
        span = parse_timespan(_scalar(raw))
        if not lo_s <= span.total_seconds() <= hi_s:
            raise ValueError(f"{_scalar(raw)} is out of range")
        return span

    return parse


def _choice(*names: str) -> Callable[[Raw], str]:
    lookup = {n.lower(): n for n in names}

    def parse(raw: Raw) -> str:
        s = _scalar(raw).strip()
        try:
            return lookup[s.lower()]
        except KeyError:
            raise ValueError(f"{s!r} is not one of {', '.join(names)}") from None

    return parse


def _bool(raw: Raw) -> bool:
    return parse_bool(_scalar(raw))


def _text(raw: Raw) -> str:
    return _scalar(raw)


def _optional_text(raw: Raw) -> str | None:
    return None if raw.value is None else _scalar(raw)


def _fqdn(raw: Raw) -> str:
    s = _scalar(raw).strip().rstrip(".")
    if not re.fullmatch(r"(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63})*", s):
        raise ValueError(f"{s!r} is not a valid FQDN")
    return s


def _banner(raw: Raw) -> str:
    text = _scalar(raw)
    lines = text.splitlines() or [""]
    if not re.match(r"^220(?: |$)", lines[0]):
        raise ValueError("a banner must be a 220 reply, e.g. '220 Server EXCH01 SMTP Relay Connector'")
    if len(lines) > 50:
        raise ValueError("a banner has at most 50 lines")
    if any(len(line) > 2000 for line in lines):
        raise ValueError("banner lines are at most 2000 characters")
    return text


def _flag_list(kind: type[Any], names: dict[str, Any], what: str) -> Callable[[Raw], Any]:
    def parse(raw: Raw) -> Any:
        items = _items(raw)
        value = kind.NONE
        seen_none = False
        for item in items:
            key = _scalar(item).strip().lower()
            if key == "none":
                seen_none = True
                continue
            try:
                value |= names[key]
            except KeyError:
                raise ValueError(
                    f"{item.value!r} is not a {what}; valid: None, {', '.join(names_display(names))}"
                ) from None
        if seen_none and value:
            raise ValueError("None cannot be combined with other values")
        return value

    return parse


def names_display(names: dict[str, Any]) -> list[str]:
    return [v.name for v in dict.fromkeys(names.values())]


_AUTH_NAMES = {m.name.lower(): m for m in AuthMechanism if m.name and m is not AuthMechanism.NONE}
_GROUP_NAMES = {m.name.lower(): m for m in PermissionGroups if m.name and m is not PermissionGroups.NONE}
_parse_auth = _flag_list(AuthMechanism, _AUTH_NAMES, "AuthMechanism value")
_parse_groups = _flag_list(PermissionGroups, _GROUP_NAMES, "permission group")


def _bindings(raw: Raw) -> tuple[Binding, ...]:
    return tuple(parse_binding(_scalar(i)) for i in _items(raw))


def _ranges(raw: Raw) -> tuple[IPRange, ...]:
    return tuple(parse_ip_range(_scalar(i)) for i in _items(raw))


def _strings(raw: Raw) -> tuple[str, ...]:
    return tuple(_scalar(i).strip() for i in _items(raw))


#: Connector keys → (model field, parser). Keys are Exchange parameter names in snake_case.
CONNECTOR_FIELDS: dict[str, Callable[[Raw], Any]] = {
    "enabled": _bool,
    "fqdn": _fqdn,
    "banner": _banner,
    "require_tls": _bool,
    "require_ehlo_domain": _bool,
    "domain_secure_enabled": _bool,
    "default_domain": _optional_text,
    "max_message_size": _size_range(65536, 2147483647),
    "max_header_size": _size_range(1, 2147483647),
    "max_recipients_per_message": _int_range(1, 512000),
    "max_hop_count": _int_range(1, 500),
    "max_local_hop_count": _int_range(0, 50),
    "message_rate_limit": _unlimited_range(1, 2147483647),
    "message_rate_source": _choice("None", "IPAddress", "User", "All"),
    "max_inbound_connection": _unlimited_range(1, 2147483647),
    "max_inbound_connection_per_source": _unlimited_range(1, 10000),
    "max_inbound_connection_percentage_per_source": _int_range(1, 100),
    "connection_timeout": _span_range(1, 86400),
    "connection_inactivity_timeout": _span_range(1, 86400),
    "tarpit_interval": _span_range(0, 600),
    "auth_tarpit_interval": _span_range(0, 600),
    "max_logon_failures": _int_range(0, 10),
    "max_protocol_errors": _unlimited_range(0, 2147483647),
    "protocol_logging_level": _choice("None", "Verbose"),
    "size_enabled": _choice("Enabled", "Disabled", "EnabledWithoutValue"),
    "enhanced_status_codes_enabled": _bool,
    "pipelining_enabled": _bool,
    "delivery_status_notification_enabled": _bool,
    "eight_bit_mime_enabled": _bool,
    "chunking_enabled": _bool,
    "binary_mime_enabled": _bool,
    "smtp_utf8_enabled": _bool,
    "long_addresses_enabled": _bool,
    "orar_enabled": _bool,
    "suppress_xanonymous_tls": _bool,
    "bare_linefeed_rejection_enabled": _bool,
    "reject_reserved_top_level_recipient_domains": _bool,
    "reject_reserved_second_level_recipient_domains": _bool,
    "reject_single_label_recipient_domains": _bool,
    "tls_certificate_name": _optional_text,
    "tls_domain_capabilities": _strings,
    "extended_protection_policy": _choice("None", "Allow", "Require"),
    "enable_auth_gssapi": _bool,
    "comment": _text,
    "bindings": _bindings,
    "remote_ip_ranges": _ranges,
    "auth_mechanism": _parse_auth,
    "permission_groups": _parse_groups,
    "transport_role": lambda r: TransportRole(_choice("FrontendTransport", "HubTransport")(r)),
    "usage": lambda r: Usage(_choice(*(u.value for u in Usage))(r)),
}
CONNECTOR_KEYS = frozenset(CONNECTOR_FIELDS) | {"name", "permissions"}


@dataclass(frozen=True)
class Positions:
    """Where a connector and each of its properties were written, for located errors."""

    at: Raw
    keys: dict[str, Raw]

    def __call__(self, key: str | None = None) -> Raw:
        return self.keys.get(key, self.at) if key else self.at


@dataclass
class Loaded:
    """The result of a successful load: the organisation plus non-fatal warnings."""

    organization: Organization
    warnings: list[Problem] = field(default_factory=list)


def load(path: str | Path) -> Loaded:
    """Read and validate ``path``; raise :class:`ConfigError` listing every problem."""
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([Problem(path, 1, 1, "file", e.strerror or str(e))]) from None
    except UnicodeDecodeError as e:
        raise ConfigError([Problem(path, 1, 1, "file", f"not UTF-8 text: {e.reason}")]) from None
    return loads(text, path)


def loads(text: str, file: str = "<string>") -> Loaded:
    out = Collector(file)
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        out.error(mark, "yaml", str(e.problem or e.context))
        raise ConfigError(out.problems) from None
    if root is None:
        out.error(None, "file", "the file is empty")
        raise ConfigError(out.problems)
    org = _Builder(out).organization(root, file)
    if out.errors or org is None:
        raise ConfigError(out.problems)
    return Loaded(org, sorted(out.warnings))


TOP_KEYS = ("server", "default_connectors", "accepted_domains", "receive_connectors", "users", "policyd")


class _Builder:
    def __init__(self, out: Collector) -> None:
        self.out = out

    def parse(self, raw: Raw, key: str, parser: Callable[[Raw], Any]) -> Any:
        try:
            return parser(raw)
        except ValueError as e:
            self.out.error(raw, key, str(e))
            return _FAILED

    def organization(self, root: yaml.Node, file: str) -> Organization | None:
        top = _mapping(root, "file", self.out)
        for key, (knode, _) in top.items():
            if key not in TOP_KEYS:
                self.out.error(knode, key, f"unknown key; expected one of {', '.join(TOP_KEYS)}")
        if "server" not in top:
            self.out.error(root, "server", "required: name and fqdn of the server exmilter replaces")
            return None
        server = self.server(top["server"][1])
        if server is None:
            return None
        domains = self.accepted_domains(top["accepted_domains"][1]) if "accepted_domains" in top else ()
        if not domains:
            self.out.warn(
                top.get("accepted_domains", (root,))[0],
                "accepted_domains",
                "no accepted domain: every recipient needs relay rights",
            )
        with_defaults = False
        if "default_connectors" in top:
            knode, vnode = top["default_connectors"]
            with_defaults = bool(self.parse(_raw(vnode), "default_connectors", _bool) is True)
        connectors = self.connectors(
            top.get("receive_connectors"),
            server,
            with_defaults,
            _raw(top["default_connectors"][0]) if with_defaults else None,
        )
        users = self.users(top["users"][1]) if "users" in top else ()
        policyd = self.policyd(top["policyd"][1]) if "policyd" in top else PolicydSettings()
        org = Organization(server, tuple(domains), tuple(c for c, _ in connectors), tuple(users), policyd, file)
        from exmilter.validation import validate  # late: validation imports this module's types

        validate(org, {c.name: where for c, where in connectors}, self.out)
        return org

    # -- sections ---------------------------------------------------------------------

    def server(self, node: yaml.Node) -> Server | None:
        m = _mapping(node, "server", self.out)
        values: dict[str, str] = {}
        addresses: tuple[str, ...] = ()
        for key, (knode, vnode) in m.items():
            if key not in ("name", "fqdn", "domain", "addresses"):
                self.out.error(knode, f"server.{key}", "unknown key; expected name, fqdn, domain, addresses")
                continue
            if key == "addresses":
                addrs = self.parse(
                    _raw(vnode), "server.addresses", lambda r: tuple(str(parse_ip(_scalar(i))) for i in _items(r))
                )
                if addrs is not _FAILED:
                    addresses = addrs
                continue
            parser = _fqdn if key == "fqdn" else _text
            v = self.parse(_raw(vnode), f"server.{key}", parser)
            if v is not _FAILED:
                values[key] = v.strip()
        for req in ("name", "fqdn"):
            if req not in m:
                self.out.error(node, f"server.{req}", "required")
        if "name" not in values or "fqdn" not in values:
            return None
        if "\\" in values["name"] or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}", values["name"]):
            self.out.error(m["name"][1], "server.name", f"{values['name']!r} is not a server (NetBIOS) name")
        domain = values.get("domain") or (
            values["fqdn"].split(".")[1].upper() if values["fqdn"].count(".") else "EXCHANGE"
        )
        return Server(values["name"], values["fqdn"], domain, addresses)

    def accepted_domains(self, node: yaml.Node) -> list[AcceptedDomain]:
        raw = _raw(node)
        if not isinstance(raw.value, list):
            self.out.error(node, "accepted_domains", "expected a list")
            return []
        result: list[AcceptedDomain] = []
        seen: dict[str, Raw] = {}
        for item in raw.value:
            if isinstance(item.value, str):  # shorthand: "- contoso.com" = Authoritative
                fields = {"domain_name": (item, item)}
            else:
                fields = {
                    k: (_raw(kn), _raw(vn)) for k, (kn, vn) in _mapping(item.node, "accepted_domains", self.out).items()
                }
            values: dict[str, Any] = {}
            for key, (kraw, vraw) in fields.items():
                parser = {
                    "name": _text,
                    "domain_name": _domain_name,
                    "domain_type": lambda r: AcceptedDomainType(_choice(*(t.value for t in AcceptedDomainType))(r)),
                    "match_sub_domains": _bool,
                    "address_book_enabled": _bool,
                }.get(key)
                if parser is None:
                    self.out.error(
                        kraw,
                        f"accepted_domains.{key}",
                        "unknown key; expected name, domain_name, domain_type, match_sub_domains, address_book_enabled",
                    )
                    continue
                v = self.parse(vraw, f"accepted_domains.{key}", parser)
                if v is not _FAILED:
                    values[key] = v
            if "domain_name" not in fields:
                self.out.error(item, "accepted_domains.domain_name", "required")
                continue
            if "domain_name" not in values:
                continue
            dn = values["domain_name"]
            if dn in seen:
                self.out.error(
                    fields["domain_name"][1],
                    "accepted_domains.domain_name",
                    f"{dn} is already an accepted domain (line {seen[dn].line})",
                )
                continue
            seen[dn] = fields["domain_name"][1]
            dtype = values.get("domain_type", AcceptedDomainType.Authoritative)
            result.append(
                AcceptedDomain(
                    name=values.get("name", dn),
                    domain_name=dn,
                    domain_type=dtype,
                    match_sub_domains=values.get("match_sub_domains", False),
                    address_book_enabled=values.get("address_book_enabled", dtype is AcceptedDomainType.Authoritative),
                )
            )
        return result

    def connectors(
        self, entry: tuple[yaml.Node, yaml.Node] | None, server: Server, with_defaults: bool, defaults_at: Raw | None
    ) -> list[tuple[ReceiveConnector, Positions]]:
        """Merge defaults, usage defaults and the file; return connectors with their positions."""
        specs: dict[str, dict[str, Raw]] = {}
        where: dict[str, Raw] = {}
        order: list[str] = []
        if with_defaults and defaults_at is not None:
            for d in defaults.default_connectors(server.name):
                key = d["name"].lower()
                specs[key] = {k: _python_raw(v, defaults_at) for k, v in d.items()}
                where[key] = defaults_at
                order.append(key)
        if entry is not None:
            seq = _raw(entry[1])
            if seq.value is None:
                seq.value = []
            if not isinstance(seq.value, list):
                self.out.error(entry[1], "receive_connectors", "expected a list of connectors")
                seq.value = []
            seen_in_file: set[str] = set()
            for item in seq.value:
                m = _mapping(item.node, "receive_connectors", self.out) if item.node is not None else {}
                if not m:
                    continue
                if "name" not in m:
                    self.out.error(item, "receive_connectors.name", "required")
                    continue
                name_raw = _raw(m["name"][1])
                name = self.parse(name_raw, "name", _text)
                if name is _FAILED:
                    continue
                name = name.strip()
                if "\\" in name:  # accept an identity "SERVER\Name"
                    srv, _, name = name.rpartition("\\")
                    if srv.lower() != server.name.lower():
                        self.out.error(name_raw, "name", f"identity is on server {srv}, not {server.name}")
                key = name.lower()
                if key in seen_in_file:
                    self.out.error(name_raw, "name", f"a connector named {name!r} is already defined on {server.name}")
                    continue
                seen_in_file.add(key)
                spec = dict(specs.get(key, {}))
                for k, (knode, vnode) in m.items():
                    if k not in CONNECTOR_KEYS:
                        self.out.error(knode, f"{name}: {k}", "unknown receive connector property")
                        continue
                    spec[k] = _raw(vnode)
                spec["name"] = Raw(name, name_raw.line, name_raw.col)
                if key not in specs:
                    order.append(key)
                    where[key] = Raw(None, item.line, item.col)
                specs[key] = spec
        built = []
        for key in order:
            c = self.connector(specs[key], server, where[key])
            if c is not None:
                built.append((c, Positions(where[key], specs[key])))
        return built

    def connector(self, spec: dict[str, Raw], server: Server, at: Raw) -> ReceiveConnector | None:
        name = str(spec["name"].value)
        usage = Usage.Custom
        if "usage" in spec:
            u = self.parse(spec["usage"], "usage", CONNECTOR_FIELDS["usage"])
            if u is _FAILED:
                return None
            usage = u
        elif "transport_role" not in spec and "bindings" not in spec:
            pass
        base = {k: _python_raw(v, spec.get("usage", at)) for k, v in defaults.USAGE_DEFAULTS[usage.value].items()}
        merged = base | spec
        for req in defaults.USAGE_REQUIRED[usage.value]:
            if req not in spec:
                self.out.error(at, f"{name}: {req}", f"required for usage {usage.value}")
        values: dict[str, Any] = {"fqdn": server.fqdn}
        ok = True
        for key, raw in merged.items():
            if key in ("name", "permissions", "usage"):
                continue
            v = self.parse(raw, f"{name}: {key}", CONNECTOR_FIELDS[key])
            if v is _FAILED:
                ok = False
            else:
                values[key] = v
        permissions = self.permissions(spec["permissions"]) if "permissions" in spec else ()
        if permissions is None:
            ok = False
        if not ok:
            return None
        role = values.pop("transport_role", TransportRole.HubTransport)
        values.setdefault("bindings", ())
        values.setdefault("remote_ip_ranges", ())
        values.setdefault("auth_mechanism", AuthMechanism.Tls)
        values.setdefault("permission_groups", PermissionGroups.NONE)
        if values["permission_groups"] & PermissionGroups.Custom:
            self.out.error(
                merged["permission_groups"],
                "permission_groups",
                "Custom cannot be set; it is reported once a permission entry is added by hand",
            )
            return None
        return ReceiveConnector(
            name=name,
            server=server.name,
            transport_role=role,
            usage=usage,
            permissions=tuple(permissions or ()),
            **values,
        )

    def permissions(self, raw: Raw) -> list[PermissionEntry] | None:
        if not isinstance(raw.value, list):
            self.out.error(raw, "permissions", "expected a list of {user, extended_rights, deny}")
            return None
        entries: list[PermissionEntry] = []
        ok = True
        for item in raw.value:
            m = _mapping(item.node, "permissions", self.out) if item.node is not None else {}
            if not m:
                ok = False
                continue
            user: str | None = None
            rights = Right.NONE
            deny = False
            for key, (knode, vnode) in m.items():
                vraw = _raw(vnode)
                if key == "user":
                    u = self.parse(vraw, "permissions.user", _text)
                    user = None if u is _FAILED else u.strip()
                elif key == "extended_rights":
                    r = self.parse(
                        vraw,
                        "permissions.extended_rights",
                        lambda r: _or_rights(parse_right(_scalar(i)) for i in _items(r)),
                    )
                    if r is _FAILED:
                        ok = False
                    else:
                        rights = r
                elif key == "deny":
                    d = self.parse(vraw, "permissions.deny", _bool)
                    deny = bool(d is True)
                else:
                    self.out.error(knode, f"permissions.{key}", "unknown key; expected user, extended_rights, deny")
                    ok = False
            if user is None:
                self.out.error(item, "permissions.user", "required: the principal, e.g. NT AUTHORITY\\ANONYMOUS LOGON")
                ok = False
                continue
            if not rights:
                self.out.error(item, "permissions.extended_rights", "required: at least one extended right")
                ok = False
                continue
            entries.append(PermissionEntry(user, rights, deny))
        return entries if ok else None

    def users(self, node: yaml.Node) -> list[User]:
        raw = _raw(node)
        if not isinstance(raw.value, list):
            self.out.error(node, "users", "expected a list")
            return []
        result = []
        for item in raw.value:
            m = _mapping(item.node, "users", self.out) if item.node is not None else {}
            values: dict[str, Any] = {}
            for key, (knode, vnode) in m.items():
                if key not in ("name", "addresses", "member_of", "send_as"):
                    self.out.error(knode, f"users.{key}", "unknown key; expected name, addresses, member_of, send_as")
                    continue
                v = self.parse(_raw(vnode), f"users.{key}", _text if key == "name" else _strings)
                if v is not _FAILED:
                    values[key] = v
            if "name" not in values:
                if m:
                    self.out.error(item, "users.name", "required: the SASL login name")
                continue
            result.append(
                User(
                    values["name"].strip(),
                    tuple(a.lower() for a in values.get("addresses", ())),
                    values.get("member_of", ()),
                    tuple(a.lower() for a in values.get("send_as", ())),
                )
            )
        return result

    def policyd(self, node: yaml.Node) -> PolicydSettings:
        m = _mapping(node, "policyd", self.out)
        values: dict[str, Any] = {}
        parsers: dict[str, Callable[[Raw], Any]] = {
            "listen": _strings,
            "metrics": _optional_text,
            "max_line_length": _int_range(64, 1 << 20),
            "max_attributes": _int_range(8, 4096),
        }
        for key, (knode, vnode) in m.items():
            if key not in parsers:
                self.out.error(knode, f"policyd.{key}", f"unknown key; expected {', '.join(parsers)}")
                continue
            v = self.parse(_raw(vnode), f"policyd.{key}", parsers[key])
            if v is not _FAILED:
                values[key] = v
        return dataclasses.replace(PolicydSettings(), **values)


_FAILED = object()


def _or_rights(rights: Any) -> Right:
    total = Right.NONE
    for r in rights:
        total |= r
    return total


def _domain_name(raw: Raw) -> str:
    s = _scalar(raw).strip().rstrip(".").lower()
    if len(s) > 256:
        raise ValueError("an accepted domain name is at most 256 characters")
    body = s[2:] if s.startswith("*.") else s
    if "*" in body:
        raise ValueError(f"{s!r}: a wildcard is only valid as the leading '*.'")
    if not re.fullmatch(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*", body):
        raise ValueError(f"{s!r} is not a domain name")
    try:
        ipaddress.ip_address(body)
    except ValueError:
        return s
    raise ValueError(f"{s!r} is an IP address, not a domain name")
