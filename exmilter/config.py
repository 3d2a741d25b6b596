"""Load the YAML configuration into an :class:`~exmilter.model.Organization`.

The loader reads libyaml's event stream into a compact tree of :class:`Raw` values (the
text as written and its line and column), so every problem can be reported as
``file:line:col: key: problem`` and so Exchange values keep their own syntax
(``00:05:00`` is a time span, not YAML 1.1's sexagesimal 300). Receive connectors are
parsed one at a time as they are read, so a file of 10,000 connectors never exists as
one tree. All problems are collected before anything is raised, and a bad value does
not stop the other checks: a connector whose ``max_message_size`` is wrong still takes
part in the conflict checks. Exchange's own refusals (spec §2.3) are enforced in
:mod:`exmilter.validation`.

Whatever the input, :func:`load` and :func:`loads` raise nothing but :class:`ConfigError`
with located problems: characters YAML refuses are found before libyaml reads the text,
and nesting, aliases and list lengths are bounded (the ``MAX_*`` limits below), so a
file cannot exhaust the stack, memory or time of a daemon that reloads it.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import re
import sys
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from exmilter import defaults
from exmilter.domains import to_ascii
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
from exmilter.validation import MAX_RANGE_ENTRIES, MAX_RANGE_ENTRIES_REFUSED, validate
from exmilter.validation import OPEN_RELAY as OPEN_RELAY  # the kind of Problem callers single out
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

# -- limits: what a file may ask of the loader (docs/configuration.md, "Limits") -------------

#: Bytes read from a file; a 10,000-connector file is under 4 MB.
MAX_FILE_BYTES = 64 << 20
#: Nesting of lists and mappings; a configuration needs 6 levels. Deeper input is refused
#: before the tree is built (the reader recurses once per level).
MAX_DEPTH = 64
#: Nodes that aliases may add to the document when expanded (``*a`` counts every node of
#: ``&a``, nested aliases included). Bounds "billion laughs" before any list is flattened.
MAX_ALIAS_EXPANSION = 250_000
#: Items of one list value once nested lists, aliases and the comma form are flattened.
MAX_LIST_ITEMS = 10_000
#: Characters YAML cannot read that are reported one by one; the rest are counted.
MAX_CHARACTER_PROBLEMS = 20

#: libyaml's parser when PyYAML was built with it: about 10× faster on big files.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, order=True)
class Problem:
    """One located configuration problem; ``kind`` singles out a family (:data:`OPEN_RELAY`: open relays)."""

    file: str
    line: int
    col: int
    key: str
    message: str
    warning: bool = False
    kind: str = ""

    def __str__(self) -> str:
        label = ("warning: " if self.warning else "") + (f"{self.kind}: " if self.kind else "")
        return f"{self.file}:{self.line}:{self.col}: {label}{self.key}: {self.message}"


class ConfigError(Exception):
    """Raised with every problem found; ``problems`` are sorted by position."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class Raw:
    """A value as written, with its position: a scalar string, None, a list of Raw, or a :class:`YamlMap`."""

    __slots__ = ("col", "line", "value")

    def __init__(self, value: Any, line: int, col: int) -> None:
        self.value = value
        self.line = line
        self.col = col

    def __repr__(self) -> str:
        return f"Raw({self.value!r}, {self.line}, {self.col})"


class YamlMap:
    """A YAML mapping in the compact tree: (key, value) pairs in file order; keys hold their text."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[Raw, Raw]]) -> None:
        self.pairs = pairs


#: The value of ``receive_connectors`` once its items were handed to the builder as read.
_STREAMED = object()


class Collector:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def error(self, at: Raw | yaml.Mark | None, key: str, message: str, warning: bool = False, kind: str = "") -> None:
        line, col = _position(at)
        self.problems.append(Problem(self.file, line, col, key, message, warning, kind))

    def warn(self, at: Raw | yaml.Mark | None, key: str, message: str, kind: str = "") -> None:
        self.error(at, key, message, warning=True, kind=kind)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if not p.warning]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.warning]


def _position(at: Raw | yaml.Mark | None) -> tuple[int, int]:
    if at is None:
        return 1, 1
    if isinstance(at, Raw):
        return at.line, at.col
    return at.line + 1, at.column + 1


def _at(raw: Raw) -> Raw:
    """A position-only copy, so keeping where a value was does not keep the value's tree."""
    return Raw(None, raw.line, raw.col)


def _pack(raw: Raw) -> int:
    """A position as one integer, for the positions kept per connector until validation."""
    return raw.line << 32 | raw.col


def _unpack(pos: int) -> Raw:
    return Raw(None, pos >> 32, pos & 0xFFFFFFFF)


_NULLS = frozenset(("", "~", "null", "Null", "NULL"))
_NULL_TAG = "tag:yaml.org,2002:null"


class _Refused(Exception):
    """A limit the reader enforces, at the position where the input crossed it."""

    def __init__(self, line: int, col: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.col = col
        self.message = message


class _Reader:
    """libyaml's events → :class:`Raw` trees; one document, aliases resolved as the composer does.

    The composer's node tree carries two ``Mark`` objects per scalar (~82 MB for a 1.8 MB
    file); a :class:`Raw` carries the text and two integers, and connector items are
    handed to ``on_connector`` one by one and dropped.

    An alias shares its anchor's value (located at the alias), so nothing is copied here;
    what an alias would cost whoever walks the tree (its anchor's size, nested aliases
    included) is counted against :data:`MAX_ALIAS_EXPANSION`, and nesting against
    :data:`MAX_DEPTH`.
    """

    def __init__(self, text: str, on_connector: Callable[[Raw], None]) -> None:
        self._loader = _LOADER(text)
        self._anchors: dict[str, Raw] = {}
        self._sizes: dict[str, int] = {}  # anchor → nodes of its value once expanded
        self._nodes = 0  # nodes read so far, aliases counted expanded
        self._expanded = 0  # of which added by aliases
        self._depth = 0
        self._on_connector = on_connector

    def document(self) -> Raw | None:
        try:
            get = self._loader.get_event
            get()  # StreamStart
            event = get()
            if isinstance(event, yaml.StreamEndEvent):
                return None
            start = event.start_mark  # DocumentStart
            event = get()
            if isinstance(event, yaml.MappingStartEvent) and event.anchor is None:
                root = self._top(event)
            else:
                root = self._node(event)
            get()  # DocumentEnd
            event = get()
            if not isinstance(event, yaml.StreamEndEvent):
                raise yaml.composer.ComposerError(
                    "expected a single document in the stream", start, "but found another document", event.start_mark
                )
            return root
        finally:
            self._loader.dispose()

    def _enter(self, at: Raw) -> None:
        """One level deeper, at ``at``'s position."""
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(at.line, at.col, f"lists and mappings nested deeper than {MAX_DEPTH} levels")

    def _top(self, event: yaml.MappingStartEvent) -> Raw:
        """The top-level mapping; the first ``receive_connectors`` list is streamed."""
        pairs: list[tuple[Raw, Raw]] = []
        root = Raw(YamlMap(pairs), event.start_mark.line + 1, event.start_mark.column + 1)
        self._enter(root)
        self._nodes += 1
        get, peek = self._loader.get_event, self._loader.peek_event
        first = True
        while not isinstance(peek(), yaml.MappingEndEvent):
            key = self._key(get())
            event = get()
            if key.value != "receive_connectors":
                pairs.append((key, self._node(event)))
                continue
            # only the first occurrence counts (a second one is a duplicate key), and an
            # anchored list may be aliased later: that one is kept whole
            if first and isinstance(event, yaml.SequenceStartEvent) and event.anchor is None:
                value = Raw(_STREAMED, event.start_mark.line + 1, event.start_mark.column + 1)
                self._enter(value)
                self._nodes += 1
                while not isinstance(peek(), yaml.SequenceEndEvent):
                    self._on_connector(self._node(get()))
                get()
                self._depth -= 1
            else:
                value = self._node(event)
            first = False
            pairs.append((key, value))
        get()
        self._depth -= 1
        return root

    def _key(self, event: yaml.Event) -> Raw:
        if isinstance(event, yaml.ScalarEvent):  # a key keeps its text, even "~"; one string per key name
            self._nodes += 1
            return Raw(sys.intern(event.value), event.start_mark.line + 1, event.start_mark.column + 1)
        return self._node(event)

    def _node(self, event: yaml.Event) -> Raw:
        mark = event.start_mark
        line, col = mark.line + 1, mark.column + 1
        if isinstance(event, yaml.AliasEvent):
            name = event.anchor or ""  # libyaml gives every alias a name
            try:
                raw = self._anchors[name]
            except KeyError:
                raise yaml.composer.ComposerError(None, None, "found undefined alias", mark) from None
            size = self._sizes[name]
            self._nodes += size
            self._expanded += size
            if self._expanded > MAX_ALIAS_EXPANSION:
                raise _Refused(
                    line,
                    col,
                    f"aliases expand to more than {MAX_ALIAS_EXPANSION:,} values (an alias bomb?); "
                    "write the values out or alias less",
                )
            return Raw(raw.value, line, col)  # the anchor's value, located where it is used
        anchor = event.anchor
        if anchor is not None and anchor in self._anchors:
            first = self._anchors[anchor]
            raise yaml.composer.ComposerError(
                "found duplicate anchor; first occurrence",
                yaml.Mark("<string>", 0, first.line - 1, first.col - 1, None, None),
                "second occurrence",
                mark,
            )
        before = self._nodes
        self._nodes += 1
        if isinstance(event, yaml.ScalarEvent):
            null = event.tag == _NULL_TAG or (event.tag is None and event.implicit[0] and event.value in _NULLS)
            raw = Raw(None if null else event.value, line, col)
        elif isinstance(event, yaml.SequenceStartEvent):
            raw = Raw(None, line, col)
            self._enter(raw)
            items: list[Raw] = []
            get, peek = self._loader.get_event, self._loader.peek_event
            while not isinstance(peek(), yaml.SequenceEndEvent):
                items.append(self._node(get()))
            get()
            self._depth -= 1
            raw.value = items
        else:  # MappingStartEvent
            raw = Raw(None, line, col)
            self._enter(raw)
            pairs: list[tuple[Raw, Raw]] = []
            get, peek = self._loader.get_event, self._loader.peek_event
            while not isinstance(peek(), yaml.MappingEndEvent):
                key = self._key(get())
                pairs.append((key, self._node(get())))
            get()
            self._depth -= 1
            raw.value = YamlMap(pairs)
        if anchor is not None:  # after the children: an alias of its own ancestor is undefined
            self._anchors[anchor] = raw
            self._sizes[anchor] = self._nodes - before
        return raw


def _python_raw(value: Any, at: Raw) -> Raw:
    """Defaults are written in the file's syntax; place them where they were switched on."""
    if isinstance(value, list):
        return Raw([_python_raw(v, at) for v in value], at.line, at.col)
    return Raw(None if value is None else str(value), at.line, at.col)


def _mapping(raw: Raw, where: str, out: Collector) -> dict[str, tuple[Raw, Raw]]:
    """Mapping → {key: (key, value)}; reports non-mappings and duplicate keys."""
    if not isinstance(raw.value, YamlMap):
        out.error(raw, where, "expected a mapping of key: value")
        return {}
    items: dict[str, tuple[Raw, Raw]] = {}
    for k, v in raw.value.pairs:
        key = str(k.value) if isinstance(k.value, str) else "?"
        if key in items:
            out.error(k, key, "duplicate key")
            continue
        items[key] = (k, v)
    return items


# --------------------------------------------------------------------------------------
# value parsers: Raw -> typed value, raising ValueError with a readable message
# --------------------------------------------------------------------------------------


def _scalar(raw: Raw) -> str:
    if isinstance(raw.value, list | YamlMap):
        raise ValueError("expected a single value")
    if raw.value is None:
        raise ValueError("a value is required")
    return str(raw.value)


class _TooMany(ValueError):
    """A list value longer than its limit (:data:`MAX_LIST_ITEMS`)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit:,} items (nested lists and aliases counted as spelt out)")
        self.limit = limit


def _items(raw: Raw, limit: int = MAX_LIST_ITEMS) -> list[Raw]:
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
            raise _TooMany(limit)
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
            raise _TooMany(limit)
        out.extend(Raw(part, node.line, node.col) for part in parts if part)
    return out


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


def _auto_or(parse: Callable[[Raw], int]) -> Callable[[Raw], int | None]:
    """``auto`` (None: computed by the program) or what ``parse`` accepts."""

    def parse_auto(raw: Raw) -> int | None:
        if _scalar(raw).strip().lower() == "auto":
            return None
        try:
            return parse(raw)
        except ValueError as e:
            raise ValueError(f"{e} (or auto)") from None

    return parse_auto


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


_TRANSPORT_ROLE = _choice(*(r.value for r in TransportRole))
_USAGE = _choice(*(u.value for u in Usage))

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
    "transport_role": lambda r: TransportRole(_TRANSPORT_ROLE(r)),
    "usage": lambda r: Usage(_USAGE(r)),
}
CONNECTOR_KEYS = frozenset(CONNECTOR_FIELDS) | {"name", "permissions"}


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


@dataclass(slots=True)
class _Entry:
    """One ``receive_connectors`` entry as read: values parsed, not yet merged with defaults.

    ``values`` are the parsed values of the first keys in ``where.keys``, in order (the
    keys after them, ``permissions[n]``, only locate entries). A value that could not be
    parsed is ``_FAILED``, and ``failed`` names it (also a list of which only some items
    parsed: the rest still takes part in the checks).
    """

    name: str
    name_at: int
    server: str | None  # SERVER of an identity written as SERVER\Name
    values: tuple[Any, ...]
    where: Positions
    failed: frozenset[str]


@dataclass
class Loaded:
    """The result of a successful load: the organisation plus non-fatal warnings."""

    organization: Organization
    warnings: list[Problem] = field(default_factory=list)

    @property
    def open_relays(self) -> list[Problem]:
        """The warnings of kind :data:`OPEN_RELAY`: Exchange accepts these, and they relay for anyone."""
        return [w for w in self.warnings if w.kind == OPEN_RELAY]


def load(path: str | Path) -> Loaded:
    """Read and validate ``path``; raise :class:`ConfigError` listing every problem, and nothing else."""
    path = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError([Problem(path, 1, 1, "file", e.strerror or str(e))]) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(
            [Problem(path, 1, 1, "file", f"larger than {MAX_FILE_BYTES >> 20} MB: not a configuration file")]
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        before = _newlines(data[: e.start].decode("utf-8"))  # all good up to the bad byte
        line, col = _offset_position(before, len(before))
        bad = data[e.start : e.end].hex(" ").upper()
        raise ConfigError([Problem(path, line, col, "file", f"not UTF-8 text: {e.reason} (bytes {bad})")]) from None
    return loads(text, path)


def _newlines(text: str) -> str:
    """CR LF and CR as LF, as a file opened in text mode reads (and as libyaml counts lines)."""
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def _offset_position(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column (in characters) of ``text[offset]``; a leading BOM takes no column."""
    line = text.count("\n", 0, offset) + 1
    col = offset - text.rfind("\n", 0, offset)
    if line == 1 and text.startswith("\ufeff"):
        col -= 1
    return line, max(col, 1)


def _within(text: str, line: int, col: int) -> tuple[int, int]:
    """A libyaml mark, or the end of the text where libyaml points past it (at the end of
    input it counts a line break the text may not have, sometimes two)."""
    if line <= text.count("\n") + 1:
        return line, col
    return _offset_position(text, len(text))


#: What YAML refuses to read (C0 and C1 controls but tab and newlines, surrogates, U+FFFE/U+FFFF),
#: what it reads as a line break where editors do not (NEL, U+2028, U+2029), and a byte order
#: mark anywhere but at the very start (two files joined with ``cat``).
_UNREADABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufeff\ufffe\uffff\u2028\u2029]")
_CONTROL_NAMES = {0x00: "NUL", 0x09: "TAB", 0x1B: "ESC", 0x7F: "DEL", 0x85: "NEL"}


def _unreadable(ch: str) -> str:
    """Why one character of :data:`_UNREADABLE` cannot stay, and what to do."""
    cp = ord(ch)
    code = f"U+{cp:04X}"
    if cp == 0xFEFF:
        return f"byte order mark {code} after the start of the file (files joined with cat?): delete it"
    if 0xD800 <= cp <= 0xDFFF:
        return f"lone surrogate {code} (text decoded with the wrong codec?): not a character, delete it"
    if cp in (0x85, 0x2028, 0x2029):
        name = {0x85: "control character U+0085 (NEL)", 0x2028: "LINE SEPARATOR U+2028"}.get(
            cp, "PARAGRAPH SEPARATOR U+2029"
        )
        return f"{name}: YAML reads it as a line break where editors do not; write a plain newline"
    if cp in (0xFFFE, 0xFFFF):
        return f"noncharacter {code}: not allowed in YAML; delete it"
    name = f" ({_CONTROL_NAMES[cp]})" if cp in _CONTROL_NAMES else ""
    return f"control character {code}{name}: not allowed in YAML, not even in a comment; delete it"


def _characters(text: str, file: str) -> list[Problem]:
    """Every character YAML would refuse (up to :data:`MAX_CHARACTER_PROBLEMS`, then a count)."""
    found: list[Problem] = []
    start = 1 if text.startswith("\ufeff") else 0
    for m in _UNREADABLE.finditer(text, start):
        line, col = _offset_position(text, m.start())
        if len(found) == MAX_CHARACTER_PROBLEMS:
            more = sum(1 for _ in _UNREADABLE.finditer(text, m.start()))
            found.append(Problem(file, line, col, "yaml", f"{more:,} more such characters from here on"))
            break
        found.append(Problem(file, line, col, "yaml", _unreadable(m.group())))
    return found


def loads(text: str, file: str = "<string>") -> Loaded:
    """Load a configuration from text; raise :class:`ConfigError`, and nothing else, on any input."""
    try:
        return _loads(text, file)
    except ConfigError:
        raise
    except Exception as e:  # a bug of exmilter's, not the admin's: still refuse the file, never crash a reload
        message = f"internal error while reading this file ({type(e).__name__}: {e}); please report it"
        raise ConfigError([Problem(file, 1, 1, "internal", message)]) from e


def _loads(text: str, file: str) -> Loaded:
    text = _newlines(text)
    unreadable = _characters(text, file)
    if unreadable:
        raise ConfigError(unreadable)
    out = Collector(file)
    builder = _Builder(out)
    try:
        root = _Reader(text, builder.connector_entry).document()
    except yaml.MarkedYAMLError as e:
        line, col = _within(text, *_position(e.problem_mark or e.context_mark))
        raise ConfigError([Problem(file, line, col, "yaml", str(e.problem or e.context))]) from None
    except yaml.reader.ReaderError as e:  # not reached: _characters() refuses first
        line, col = _offset_position(text, e.position)
        raise ConfigError([Problem(file, line, col, "yaml", f"unreadable character #x{e.character:04x}")]) from None
    except yaml.YAMLError as e:  # no position given: point at the file
        raise ConfigError([Problem(file, 1, 1, "yaml", str(e) or type(e).__name__)]) from None
    except _Refused as e:
        raise ConfigError([Problem(file, *_within(text, e.line, e.col), "yaml", e.message)]) from None
    if root is None:
        out.error(None, "file", "the file is empty")
        raise ConfigError(out.problems)
    org = builder.organization(root, file)
    if out.errors:
        raise ConfigError(out.problems)
    return Loaded(org, sorted(out.warnings))


TOP_KEYS = ("server", "default_connectors", "accepted_domains", "receive_connectors", "users", "policyd")

#: The server name used for the remaining checks when ``server.name`` is missing or unusable.
UNKNOWN_SERVER = "<server>"

#: List-valued connector keys whose items are parsed (and reported) one by one.
_EACH: dict[str, Callable[[str], Any]] = {"bindings": parse_binding, "remote_ip_ranges": parse_ip_range}
#: A bound on the items of a list and how its refusal reads, given how many there are.
_Most = tuple[int, Callable[[str], str]]
#: Keys of :data:`_EACH` with a bound of their own.
_MOST: dict[str, _Most] = {
    "remote_ip_ranges": (
        MAX_RANGE_ENTRIES_REFUSED,
        lambda n: (
            f"{n} entries; Exchange fails above about {MAX_RANGE_ENTRIES:,} and exmilter refuses more than "
            f"{MAX_RANGE_ENTRIES_REFUSED:,}: use ranges or CIDR (10.0.0.0/24, 10.0.0.1-10.0.0.99)"
        ),
    ),
}

_NOTHING_FAILED: frozenset[str] = frozenset()


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
    builder = _Builder(Collector("<defaults>"))
    nowhere = Raw(None, 1, 1)
    out = []
    for d in defaults.default_connectors(server):
        values = {k: builder._value(d["name"], k, _python_raw(v, nowhere)) for k, v in d.items() if k != "name"}
        out.append((d["name"], MappingProxyType(values)))
    if builder.out.problems:  # the defaults are Exchange's own and always parse
        raise AssertionError(builder.out.problems)
    return tuple(out)


class _Builder:
    def __init__(self, out: Collector) -> None:
        self.out = out
        self.entries: list[_Entry] = []
        self._names: set[str] = set()
        self._duplicates: list[tuple[Raw, str]] = []
        self._keysets: dict[tuple[str, ...], tuple[str, ...]] = {}

    def parse(self, raw: Raw, key: str, parser: Callable[[Raw], Any]) -> Any:
        try:
            return parser(raw)
        except ValueError as e:
            self.out.error(raw, key, str(e))
            return _FAILED

    def parse_each(
        self, raw: Raw, key: str, parser: Callable[[str], Any], most: _Most | None = None
    ) -> tuple[tuple[Any, ...], bool]:
        """Every item of a list value: the good ones, and whether all were good (each bad one is reported).

        More items than ``most`` allows refuse the whole list before any item is parsed.
        """
        try:
            items = _items(raw)
        except _TooMany as e:
            self.out.error(raw, key, str(e) if most is None else most[1](f"more than {e.limit:,}"))
            return (), False
        except ValueError as e:
            self.out.error(raw, key, str(e))
            return (), False
        if most is not None and len(items) > most[0]:
            self.out.error(raw, key, most[1](f"{len(items):,}"))
            return (), False
        good = []
        ok = True
        for item in items:
            try:
                good.append(parser(_scalar(item)))
            except ValueError as e:
                self.out.error(raw, key, str(e))
                ok = False
        return tuple(good), ok

    def organization(self, root: Raw, file: str) -> Organization:
        top = _mapping(root, "file", self.out)
        for key, (kraw, _) in top.items():
            if key not in TOP_KEYS:
                self.out.error(kraw, key, f"unknown key; expected one of {', '.join(TOP_KEYS)}")
        server, server_unknown = self.server(top.get("server"), root)
        domains = self.accepted_domains(top["accepted_domains"][1]) if "accepted_domains" in top else ()
        if not domains:
            self.out.warn(
                top.get("accepted_domains", (root,))[0],
                "accepted_domains",
                "no accepted domain: every recipient needs relay rights",
            )
        defaults_at = None
        if "default_connectors" in top:
            kraw, vraw = top["default_connectors"]
            if self.parse(vraw, "default_connectors", _bool) is True:
                defaults_at = _at(kraw)
        connectors = self.connectors(top.get("receive_connectors"), server, "name" not in server_unknown, defaults_at)
        users = self.users(top["users"][1]) if "users" in top else ()
        policyd = self.policyd(top["policyd"][1]) if "policyd" in top else PolicydSettings()
        org = Organization(server, tuple(domains), tuple(c for c, _, _ in connectors), tuple(users), policyd, file)
        validate(
            org,
            {c.name: where for c, where, _ in connectors},
            self.out,
            unknown={c.name: failed for c, _, failed in connectors if failed},
            server_unknown=server_unknown,
        )
        return org

    # -- sections ---------------------------------------------------------------------

    def server(self, entry: tuple[Raw, Raw] | None, root: Raw) -> tuple[Server, frozenset[str]]:
        """The server, and which of its fields are unknown (missing or bad): checks that need them are skipped."""
        if entry is None:
            self.out.error(root, "server", "required: name and fqdn of the server exmilter replaces")
            return Server(UNKNOWN_SERVER, "", "EXCHANGE"), frozenset(("name", "fqdn", "domain", "addresses"))
        raw = entry[1]
        m = _mapping(raw, "server", self.out)
        values: dict[str, str] = {}
        addresses: tuple[str, ...] = ()
        unknown: set[str] = set()
        for key, (kraw, vraw) in m.items():
            if key not in ("name", "fqdn", "domain", "addresses"):
                self.out.error(kraw, f"server.{key}", "unknown key; expected name, fqdn, domain, addresses")
                continue
            if key == "addresses":
                addrs = self.parse(
                    vraw, "server.addresses", lambda r: tuple(str(parse_ip(_scalar(i))) for i in _items(r))
                )
                if addrs is _FAILED:
                    unknown.add("addresses")
                else:
                    addresses = addrs
                continue
            parser = _fqdn if key == "fqdn" else _text
            v = self.parse(vraw, f"server.{key}", parser)
            if v is _FAILED:
                unknown.add(key)
            else:
                values[key] = v.strip()
        for req in ("name", "fqdn"):
            if req not in m:
                self.out.error(raw, f"server.{req}", "required")
            if req not in values:
                unknown.add(req)
        name = values.get("name", UNKNOWN_SERVER)
        if "name" in values and ("\\" in name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}", name)):
            self.out.error(m["name"][1], "server.name", f"{name!r} is not a server (NetBIOS) name")
        fqdn = values.get("fqdn", "")
        domain = values.get("domain") or (fqdn.split(".")[1].upper() if fqdn.count(".") else "EXCHANGE")
        return Server(name, fqdn, domain, addresses), frozenset(unknown)

    def accepted_domains(self, raw: Raw) -> list[AcceptedDomain]:
        if not isinstance(raw.value, list):
            self.out.error(raw, "accepted_domains", "expected a list")
            return []
        result: list[AcceptedDomain] = []
        seen: dict[str, Raw] = {}
        for item in raw.value:
            if isinstance(item.value, str):  # shorthand: "- contoso.com" = Authoritative
                fields = {"domain_name": (item, item)}
            else:
                fields = _mapping(item, "accepted_domains", self.out)
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

    def connector_entry(self, item: Raw) -> None:
        """Read one ``receive_connectors`` entry as soon as it is parsed; its tree is dropped after."""
        m = _mapping(item, "receive_connectors", self.out)
        if not m:
            if isinstance(item.value, YamlMap):  # {}: a mapping without keys
                self.out.error(item, "receive_connectors.name", "required")
            return
        if "name" not in m:
            self.out.error(item, "receive_connectors.name", "required")
            return
        name_raw = m["name"][1]
        name = self.parse(name_raw, "name", _text)
        if name is _FAILED:
            return
        name = name.strip()
        server = None
        if "\\" in name:  # accept an identity "SERVER\Name"
            server, _, name = name.rpartition("\\")
        key = name.lower()
        if key in self._names:
            self._duplicates.append((_at(name_raw), name))  # reported once the server name is known
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
                self.out.error(kraw, f"{name}: {k}", "unknown receive connector property")
                continue
            value = self._value(name, k, vraw)
            if value is _FAILED or isinstance(value, _Partial):
                failed.add(k)
                value = value.items if isinstance(value, _Partial) else value
            keys.append(k)
            values.append(value)
            packed.append(_pack(vraw))
            if k == "permissions" and value is not _FAILED:  # each entry located, for warnings about one
                entries = [(f"permissions[{n}]", _pack(entry)) for n, entry in enumerate(vraw.value)]
        for k, pos in entries:  # after the keys with values: values[i] is the value of keys[i]
            keys.append(k)
            packed.append(pos)
        names = self._keysets.setdefault(tuple(keys), tuple(keys))
        where = Positions(_pack(item), names, packed)
        failed_keys = frozenset(failed) if failed else _NOTHING_FAILED
        self.entries.append(_Entry(name, _pack(name_raw), server, tuple(values), where, failed_keys))

    def _value(self, name: str, key: str, raw: Raw) -> Any:
        """One connector property: the parsed value, ``_FAILED``, or a ``_Partial`` list."""
        if key == "permissions":
            entries = self.permissions(raw)
            return _FAILED if entries is None else tuple(entries)
        if key == "usage":
            return self.parse(raw, "usage", CONNECTOR_FIELDS["usage"])
        if key in _EACH:
            items, ok = self.parse_each(raw, f"{name}: {key}", _EACH[key], _MOST.get(key))
            return items if ok else _Partial(items)
        return self.parse(raw, f"{name}: {key}", CONNECTOR_FIELDS[key])

    def connectors(
        self, entry: tuple[Raw, Raw] | None, server: Server, server_known: bool, defaults_at: Raw | None
    ) -> list[tuple[ReceiveConnector, Positions, frozenset[str]]]:
        """Merge defaults, usage defaults and the file; return connectors with their positions and failed keys."""
        if entry is not None and entry[1].value is not _STREAMED:  # not a plain list: read it here
            seq = entry[1]
            if isinstance(seq.value, list):
                for item in seq.value:
                    self.connector_entry(item)
            elif seq.value is not None:
                self.out.error(seq, "receive_connectors", "expected a list of connectors")
        on = server.name if server_known else "this server"
        for at, name in self._duplicates:
            self.out.error(at, "name", f"a connector named {name!r} is already defined on {on}")
        # name → (name, default values, positions, failed keys, the file's entry if any)
        specs: dict[str, tuple[str, Mapping[str, Any], Positions, frozenset[str], _Entry | None]] = {}
        if defaults_at is not None:
            here = Positions(_pack(defaults_at))
            for name, values in _default_connectors(server.name):
                specs[name.lower()] = (name, values, here, _NOTHING_FAILED, None)
        entries, self.entries = self.entries, []
        for e in entries:
            if e.server is not None and server_known and e.server.lower() != server.name.lower():
                self.out.error(_unpack(e.name_at), "name", f"identity is on server {e.server}, not {server.name}")
            key = e.name.lower()
            if key in specs:  # Set-ReceiveConnector on a default connector: only the keys given change
                _, values, here, _, _ = specs[key]
                where = Positions(here.at, e.where.keys, e.where.packed)  # the rest stays located at the defaults
                specs[key] = (e.name, values, where, e.failed, e)
            else:
                specs[key] = (e.name, {}, e.where, e.failed, e)
        del entries
        built = []
        for name, values, where, failed, entry in specs.values():
            if entry is not None:
                values = {**values, **dict(zip(entry.where.keys[: len(entry.values)], entry.values, strict=True))}
            c, failed = self.connector(name, values, where, failed, server)
            built.append((c, where, failed))
        return built

    def usage_defaults(self, usage: Usage) -> Mapping[str, Any]:
        return _usage_defaults(usage)

    def connector(
        self, name: str, spec: Mapping[str, Any], where: Positions, failed: frozenset[str], server: Server
    ) -> tuple[ReceiveConnector, frozenset[str]]:
        """The connector, with defaults standing in for failed values; ``failed`` grows by what is unknown."""
        unknown = set(failed)
        usage = spec.get("usage", Usage.Custom)
        values: dict[str, Any] = {"fqdn": server.fqdn}
        if usage is _FAILED:  # whatever the usage would have set is unknown too
            usage = Usage.Custom
            unknown |= {k for d in defaults.USAGE_DEFAULTS.values() for k in d if k not in spec}
        else:
            values |= self.usage_defaults(usage)
            for req in defaults.USAGE_REQUIRED[usage.value]:
                if req not in spec:
                    self.out.error(where(), f"{name}: {req}", f"required for usage {usage.value}")
        for key, value in spec.items():
            if key not in ("permissions", "usage") and value is not _FAILED:
                values[key] = value
        permissions = spec.get("permissions", ())
        role = values.pop("transport_role", TransportRole.HubTransport)
        values.setdefault("bindings", ())
        values.setdefault("remote_ip_ranges", ())
        values.setdefault("auth_mechanism", AuthMechanism.Tls)
        values.setdefault("permission_groups", PermissionGroups.NONE)
        if values["permission_groups"] & PermissionGroups.Custom:
            self.out.error(
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
            permissions=() if permissions is _FAILED else permissions,
            **values,
        )
        return connector, frozenset(unknown) if unknown else _NOTHING_FAILED

    def permissions(self, raw: Raw) -> list[PermissionEntry] | None:
        if not isinstance(raw.value, list):
            self.out.error(raw, "permissions", "expected a list of {user, extended_rights, deny}")
            return None
        entries: list[PermissionEntry] = []
        ok = True
        for item in raw.value:
            m = _mapping(item, "permissions", self.out)
            if not m:
                ok = False
                continue
            user: str | None = None
            rights = Right.NONE
            deny = False
            for key, (kraw, vraw) in m.items():
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
                    self.out.error(kraw, f"permissions.{key}", "unknown key; expected user, extended_rights, deny")
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

    def users(self, raw: Raw) -> list[User]:
        if not isinstance(raw.value, list):
            self.out.error(raw, "users", "expected a list")
            return []
        result = []
        for item in raw.value:
            m = _mapping(item, "users", self.out)
            values: dict[str, Any] = {}
            for key, (kraw, vraw) in m.items():
                if key not in ("name", "addresses", "member_of", "send_as"):
                    self.out.error(kraw, f"users.{key}", "unknown key; expected name, addresses, member_of, send_as")
                    continue
                v = self.parse(vraw, f"users.{key}", _text if key == "name" else _strings)
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

    def policyd(self, raw: Raw) -> PolicydSettings:
        m = _mapping(raw, "policyd", self.out)
        values: dict[str, Any] = {}
        parsers: dict[str, Callable[[Raw], Any]] = {
            "listen": _strings,
            "metrics": _optional_text,
            "max_line_length": _int_range(64, 1 << 20),
            "max_attributes": _int_range(8, 4096),
            "max_connections": _auto_or(_int_range(1, 10_000_000)),
            "request_timeout": _int_range(1, 3600),
            "idle_timeout": _int_range(10, 86400),
        }
        for key, (kraw, vraw) in m.items():
            if key not in parsers:
                self.out.error(kraw, f"policyd.{key}", f"unknown key; expected {', '.join(parsers)}")
                continue
            v = self.parse(vraw, f"policyd.{key}", parsers[key])
            if v is not _FAILED:
                values[key] = v
        return dataclasses.replace(PolicydSettings(), **values)


_FAILED = object()


class _Partial:
    """A list value of which only ``items`` parsed (every bad item was reported)."""

    __slots__ = ("items",)

    def __init__(self, items: tuple[Any, ...]) -> None:
        self.items = items


def _or_rights(rights: Any) -> Right:
    total = Right.NONE
    for r in rights:
        total |= r
    return total


def _domain_name(raw: Raw) -> str:
    s = _scalar(raw).strip().rstrip(".")
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
    return _fqdn(Raw(text, 1, 1))


def parse_domain_name(text: str) -> str:
    """An accepted domain's DomainName (exact or ``*.`` wildcard) as the loader stores it."""
    return _domain_name(Raw(text, 1, 1))
