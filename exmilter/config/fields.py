"""Field parsers: one value as written (:class:`Raw`) → its typed value, or ValueError saying why.

Exchange's syntax is kept (``Tls, BasicAuth``, ``36MB``, ``00:05:00``, ``$true``); the
messages are what the admin reads after ``file:line:col: key:``. The functions at the end
are the public field API: the importer judges values read off runbooks and dumps with them,
exactly as the loader judges the file it writes.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any, Final

from exmilter.config.problems import Collector
from exmilter.config.reader import Raw, YamlMap
from exmilter.domains import to_ascii
from exmilter.limits import CONFIG_MAX_LIST_ITEMS
from exmilter.model import AuthMechanism, PermissionGroups, Right, TransportRole, Usage, parse_right
from exmilter.values import (
    Binding,
    IPRange,
    parse_binding,
    parse_bool,
    parse_byte_size,
    parse_ip_range,
    parse_timespan,
    parse_unlimited_int,
)

#: What :func:`parse_or_report` returns for a value it reported: the caller leaves the value out.
FAILED: Final = object()


def parse_or_report(raw: Raw, key: str, parser: Callable[[Raw], Any], out: Collector) -> Any:
    """``parser(raw)``, or :data:`FAILED` once its ValueError is reported at ``raw`` under ``key``."""
    try:
        return parser(raw)
    except ValueError as e:
        out.error(raw, key, str(e))
        return FAILED


#: A bound on the items of a list value, and how its refusal reads given how many there are.
Most = tuple[int, Callable[[str], str]]


def parse_each_or_report(
    raw: Raw, key: str, parser: Callable[[str], Any], out: Collector, most: Most | None = None
) -> tuple[tuple[Any, ...], bool]:
    """Every item of a list value: the good ones, and whether all were good (each bad one is reported).

    More items than ``most`` allows refuse the whole list before any item is parsed.
    """
    try:
        found = list_items(raw)
    except _TooManyItems as e:
        out.error(raw, key, str(e) if most is None else most[1](f"more than {e.limit:,}"))
        return (), False
    except ValueError as e:
        out.error(raw, key, str(e))
        return (), False
    if most is not None and len(found) > most[0]:
        out.error(raw, key, most[1](f"{len(found):,}"))
        return (), False
    good = []
    ok = True
    for item in found:
        try:
            good.append(parser(scalar(item)))
        except ValueError as e:
            out.error(raw, key, str(e))
            ok = False
    return tuple(good), ok


def mapping(raw: Raw, where: str, out: Collector) -> dict[str, tuple[Raw, Raw]]:
    """Mapping → {key: (key, value)}; reports non-mappings and duplicate keys."""
    if not isinstance(raw.value, YamlMap):
        out.error(raw, where, "expected a mapping of key: value")
        return {}
    found: dict[str, tuple[Raw, Raw]] = {}
    for k, v in raw.value.pairs:
        key = str(k.value) if isinstance(k.value, str) else "?"
        if key in found:
            out.error(k, key, "duplicate key")
            continue
        found[key] = (k, v)
    return found


def scalar(raw: Raw) -> str:
    """A single value's text (a string as written, whatever it looks like)."""
    if isinstance(raw.value, list | YamlMap):
        raise ValueError("expected a single value")
    if raw.value is None:
        raise ValueError("a value is required")
    return str(raw.value)


class _TooManyItems(ValueError):
    """A list value longer than its limit (:data:`CONFIG_MAX_LIST_ITEMS`)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit:,} items (nested lists and aliases counted as spelt out)")
        self.limit = limit


def list_items(raw: Raw, limit: int = CONFIG_MAX_LIST_ITEMS) -> list[Raw]:
    """A list or Exchange's comma-separated form (``Tls, BasicAuth``), nested lists flattened.

    Every node walked counts against ``limit`` (nested lists too, so aliases of empty lists
    cannot multiply unseen): an alias shares its anchor's tree, and a tree of aliases of
    aliases is as long to walk as the list it spells out.
    """
    out: list[Raw] = []
    walked = 0
    stack = [raw]
    while stack:
        node = stack.pop()
        walked += 1
        if walked > limit:
            raise _TooManyItems(limit)
        value = node.value
        if isinstance(value, list):
            stack.extend(reversed(value))
            continue
        if value is None:
            continue
        if isinstance(value, YamlMap):
            raise ValueError("expected a list")
        text = str(value).strip()
        if text.startswith("{") and text.endswith("}"):
            text = text[1:-1]
        if "," not in text:
            if text:
                out.append(node if text == value else Raw(text, node.line, node.col))
            continue
        parts = [part.strip() for part in text.split(",")]
        walked += len(parts) - 1
        if walked > limit:
            raise _TooManyItems(limit)
        out.extend(Raw(part, node.line, node.col) for part in parts if part)
    return out


def int_range(lo: int, hi: int) -> Callable[[Raw], int]:
    def parse(raw: Raw) -> int:
        s = scalar(raw).replace(",", "")
        if not re.fullmatch(r"-?\d+", s.strip()):
            raise ValueError(f"{raw.value!r} is not an integer")
        n = int(s)
        if not lo <= n <= hi:
            raise ValueError(f"{n} is out of range {lo}-{hi}")
        return n

    return parse


def auto_or(parse: Callable[[Raw], int]) -> Callable[[Raw], int | None]:
    """``auto`` (None: computed by the program) or what ``parse`` accepts."""

    def parse_auto(raw: Raw) -> int | None:
        if scalar(raw).strip().lower() == "auto":
            return None
        try:
            return parse(raw)
        except ValueError as e:
            raise ValueError(f"{e} (or auto)") from None

    return parse_auto


def _unlimited_range(lo: int, hi: int) -> Callable[[Raw], int | None]:
    def parse(raw: Raw) -> int | None:
        n = parse_unlimited_int(scalar(raw))
        if n is not None and not lo <= n <= hi:
            raise ValueError(f"{n} is out of range {lo}-{hi} (or unlimited)")
        return n

    return parse


def _size_range(lo: int, hi: int) -> Callable[[Raw], int]:
    def parse(raw: Raw) -> int:
        s = scalar(raw)
        if s.strip().lower() == "unlimited":
            raise ValueError("connector byte sizes do not accept 'unlimited'")
        n = parse_byte_size(s)
        if not lo <= n <= hi:
            raise ValueError(f"{n} bytes is out of range {lo:,}-{hi:,}")
        return n

    return parse


def _span_range(lo_s: int, hi_s: int) -> Callable[[Raw], timedelta]:
    def parse(raw: Raw) -> timedelta:
        span = parse_timespan(scalar(raw))
        if not lo_s <= span.total_seconds() <= hi_s:
            raise ValueError(f"{scalar(raw)} is out of range")
        return span

    return parse


def choice(*names: str) -> Callable[[Raw], str]:
    lookup = {n.lower(): n for n in names}

    def parse(raw: Raw) -> str:
        s = scalar(raw).strip()
        try:
            return lookup[s.lower()]
        except KeyError:
            raise ValueError(f"{s!r} is not one of {', '.join(names)}") from None

    return parse


def boolean(raw: Raw) -> bool:
    return parse_bool(scalar(raw))


def optional_text(raw: Raw) -> str | None:
    return None if raw.value is None else scalar(raw)


def pem_path(raw: Raw) -> str | None:
    """An absolute file path (Postfix reads it as root at start-up), or empty for none."""
    text = optional_text(raw)
    if text is None or not text.strip():
        return None
    path = text.strip()
    if not path.startswith("/"):
        raise ValueError(f"{path!r}: give an absolute path")
    if any(ch in path for ch in ", \t{}$"):
        raise ValueError(f"{path!r}: Postfix cannot read a path with blanks, commas, braces or '$'")
    return path


def fqdn(raw: Raw) -> str:
    s = scalar(raw).strip().rstrip(".")
    if not re.fullmatch(r"(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63})*", s):
        raise ValueError(f"{s!r} is not a valid FQDN")
    return s


def _banner(raw: Raw) -> str:
    text = scalar(raw)
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
        value = kind.NONE
        seen_none = False
        for item in list_items(raw):
            key = scalar(item).strip().lower()
            if key == "none":
                seen_none = True
                continue
            try:
                value |= names[key]
            except KeyError:
                raise ValueError(
                    f"{item.value!r} is not a {what}; valid: None, {', '.join(_names_display(names))}"
                ) from None
        if seen_none and value:
            raise ValueError("None cannot be combined with other values")
        return value

    return parse


def _names_display(names: dict[str, Any]) -> list[str]:
    return [v.name for v in dict.fromkeys(names.values())]


_AUTH_NAMES = {m.name.lower(): m for m in AuthMechanism if m.name and m is not AuthMechanism.NONE}
_GROUP_NAMES = {m.name.lower(): m for m in PermissionGroups if m.name and m is not PermissionGroups.NONE}
_parse_auth = _flag_list(AuthMechanism, _AUTH_NAMES, "AuthMechanism value")
_parse_groups = _flag_list(PermissionGroups, _GROUP_NAMES, "permission group")


def _bindings(raw: Raw) -> tuple[Binding, ...]:
    return tuple(parse_binding(scalar(i)) for i in list_items(raw))


def _ranges(raw: Raw) -> tuple[IPRange, ...]:
    return tuple(parse_ip_range(scalar(i)) for i in list_items(raw))


def strings(raw: Raw) -> tuple[str, ...]:
    return tuple(scalar(i).strip() for i in list_items(raw))


_TRANSPORT_ROLE = choice(*(r.value for r in TransportRole))
_USAGE = choice(*(u.value for u in Usage))

#: Connector keys → (model field, parser). Keys are Exchange parameter names in snake_case.
CONNECTOR_FIELDS: dict[str, Callable[[Raw], Any]] = {
    "enabled": boolean,
    "fqdn": fqdn,
    "banner": _banner,
    "require_tls": boolean,
    "require_ehlo_domain": boolean,
    "domain_secure_enabled": boolean,
    "default_domain": optional_text,
    "max_message_size": _size_range(65536, 2147483647),
    "max_header_size": _size_range(1, 2147483647),
    "max_recipients_per_message": int_range(1, 512000),
    "max_hop_count": int_range(1, 500),
    "max_local_hop_count": int_range(0, 50),
    "message_rate_limit": _unlimited_range(1, 2147483647),
    "message_rate_source": choice("None", "IPAddress", "User", "All"),
    "max_inbound_connection": _unlimited_range(1, 2147483647),
    "max_inbound_connection_per_source": _unlimited_range(1, 10000),
    "max_inbound_connection_percentage_per_source": int_range(1, 100),
    "connection_timeout": _span_range(1, 86400),
    "connection_inactivity_timeout": _span_range(1, 86400),
    "tarpit_interval": _span_range(0, 600),
    "auth_tarpit_interval": _span_range(0, 600),
    "max_logon_failures": int_range(0, 10),
    "max_protocol_errors": _unlimited_range(0, 2147483647),
    "protocol_logging_level": choice("None", "Verbose"),
    "size_enabled": choice("Enabled", "Disabled", "EnabledWithoutValue"),
    "enhanced_status_codes_enabled": boolean,
    "pipelining_enabled": boolean,
    "delivery_status_notification_enabled": boolean,
    "eight_bit_mime_enabled": boolean,
    "chunking_enabled": boolean,
    "binary_mime_enabled": boolean,
    "smtp_utf8_enabled": boolean,
    "long_addresses_enabled": boolean,
    "orar_enabled": boolean,
    "suppress_xanonymous_tls": boolean,
    "bare_linefeed_rejection_enabled": boolean,
    "reject_reserved_top_level_recipient_domains": boolean,
    "reject_reserved_second_level_recipient_domains": boolean,
    "reject_single_label_recipient_domains": boolean,
    "tls_certificate_name": optional_text,
    "tls_certificate_file": pem_path,
    "tls_key_file": pem_path,
    "tls_domain_capabilities": strings,
    "extended_protection_policy": choice("None", "Allow", "Require"),
    "enable_auth_gssapi": boolean,
    "comment": scalar,
    "bindings": _bindings,
    "remote_ip_ranges": _ranges,
    "auth_mechanism": _parse_auth,
    "permission_groups": _parse_groups,
    "transport_role": lambda r: TransportRole(_TRANSPORT_ROLE(r)),
    "usage": lambda r: Usage(_USAGE(r)),
}
CONNECTOR_KEYS = frozenset(CONNECTOR_FIELDS) | {"name", "permissions"}


def _or_rights(rights: Iterable[Right]) -> Right:
    total = Right.NONE
    for r in rights:
        total |= r
    return total


def domain_name(raw: Raw) -> str:
    s = scalar(raw).strip().rstrip(".")
    # An internationalised name is kept in the ASCII form Postfix routes to (no lower() first:
    # UTS #46 maps case itself, and "ẞ" is not "ß").
    s = ("*." if s.startswith("*.") else "") + to_ascii(s.removeprefix("*.")) if not s.isascii() else s.lower()
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


def extended_rights(raw: Raw) -> Right:
    """A permission entry's ``extended_rights``: one right or a list, combined."""
    return _or_rights(parse_right(scalar(i)) for i in list_items(raw))


# --------------------------------------------------------------------------------------
# the public field API: one value as Exchange writes it, parsed as the loader parses it
# (the importer reads values off runbooks and dumps and must judge them the same way)
# --------------------------------------------------------------------------------------


def parse_connector_property(key: str, value: str | Sequence[str]) -> Any:
    """A receive-connector property (snake_case key) from its text, or a list of texts.

    Raises :class:`KeyError` for a key that is not a connector property and
    :class:`ValueError` (the loader's message) for a value the loader would refuse.
    """
    parser = CONNECTOR_FIELDS[key]
    if isinstance(value, str):
        return parser(Raw(value, 1, 1))
    return parser(Raw([Raw(str(v), 1, 1) for v in value], 1, 1))


def parse_fqdn(text: str) -> str:
    """A server or connector FQDN as ``server.fqdn``/``fqdn`` accept it; ValueError otherwise."""
    return fqdn(Raw(text, 1, 1))


def parse_domain_name(text: str) -> str:
    """An accepted domain's DomainName (exact or ``*.`` wildcard) as the loader stores it."""
    return domain_name(Raw(text, 1, 1))
