"""Text → a compact tree of values with their positions, refusing what YAML or the limits refuse.

libyaml's event stream is read into :class:`Raw` values (the text as written and its line
and column), so every problem can be reported as ``file:line:col: key: problem`` and so
Exchange values keep their own syntax (``00:05:00`` is a time span, not YAML 1.1's
sexagesimal 300). Receive connectors are handed on one at a time as they are read, so a
file of 10,000 connectors never exists as one tree.

Whatever the text, :func:`read` raises nothing but :class:`ConfigError` with located
problems: characters YAML refuses are found before libyaml reads the text, and nesting and
aliases are bounded (:mod:`exmilter.limits`), so a file cannot exhaust the stack, memory or
time of a daemon that reloads it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

import yaml

from exmilter.config.problems import ConfigError, Problem
from exmilter.limits import (
    CONFIG_MAX_ALIAS_EXPANSION,
    CONFIG_MAX_CHARACTER_PROBLEMS,
    CONFIG_MAX_DEPTH,
    CONFIG_MAX_FILE_BYTES,
)

#: libyaml's parser when PyYAML was built with it: about 10× faster on big files.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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


#: The value of ``receive_connectors`` once its items were handed on as read.
STREAMED = object()

_NULLS = frozenset(("", "~", "null", "Null", "NULL"))
_NULL_TAG = "tag:yaml.org,2002:null"


def read_file(path: str) -> str:
    """The text of ``path``, or :class:`ConfigError`: unreadable, too large, or not UTF-8 (located at the bad byte)."""
    try:
        with open(path, "rb") as f:
            data = f.read(CONFIG_MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError([Problem(path, 1, 1, "file", e.strerror or str(e))]) from None
    if len(data) > CONFIG_MAX_FILE_BYTES:
        raise ConfigError(
            [Problem(path, 1, 1, "file", f"larger than {CONFIG_MAX_FILE_BYTES >> 20} MB: not a configuration file")]
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        before = _newlines(data[: e.start].decode("utf-8"))  # all good up to the bad byte
        line, col = _offset_position(before, len(before))
        bad = data[e.start : e.end].hex(" ").upper()
        raise ConfigError([Problem(path, line, col, "file", f"not UTF-8 text: {e.reason} (bytes {bad})")]) from None


def read(text: str, file: str, on_connector: Callable[[Raw], None]) -> Raw | None:
    """The document's tree (None for an empty file); each ``receive_connectors`` item goes to ``on_connector``."""
    text = _newlines(text)
    unreadable = _characters(text, file)
    if unreadable:
        raise ConfigError(unreadable)
    try:
        return _Reader(text, on_connector).document()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (1, 1) if mark is None else _within(text, mark.line + 1, mark.column + 1)
        raise ConfigError([Problem(file, line, col, "yaml", str(e.problem or e.context))]) from None
    except yaml.reader.ReaderError as e:  # not reached: _characters() refuses first
        line, col = _offset_position(text, e.position)
        raise ConfigError([Problem(file, line, col, "yaml", f"unreadable character #x{e.character:04x}")]) from None
    except yaml.YAMLError as e:  # no position given: point at the file
        raise ConfigError([Problem(file, 1, 1, "yaml", str(e) or type(e).__name__)]) from None
    except _Refused as e:
        raise ConfigError([Problem(file, *_within(text, e.line, e.col), "yaml", e.message)]) from None


# -- characters and positions ---------------------------------------------------------------------


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
    """Every character YAML would refuse (up to :data:`CONFIG_MAX_CHARACTER_PROBLEMS`, then a count)."""
    found: list[Problem] = []
    start = 1 if text.startswith("\ufeff") else 0
    for m in _UNREADABLE.finditer(text, start):
        line, col = _offset_position(text, m.start())
        if len(found) == CONFIG_MAX_CHARACTER_PROBLEMS:
            more = sum(1 for _ in _UNREADABLE.finditer(text, m.start()))
            found.append(Problem(file, line, col, "yaml", f"{more:,} more such characters from here on"))
            break
        found.append(Problem(file, line, col, "yaml", _unreadable(m.group())))
    return found


# -- libyaml's events → Raw -----------------------------------------------------------------------


class _Refused(Exception):
    """A limit the reader enforces, at the position where the input crossed it."""

    def __init__(self, line: int, col: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.col = col
        self.message = message


class _NoPosition(yaml.YAMLError):
    """An event without a mark: PyYAML's parsers always give one, its type allows None."""


def _mark(line: int, col: int) -> yaml.Mark:
    """A 1-based position as the ``Mark`` a YAML error carries."""
    return yaml.Mark("<string>", 0, line - 1, col - 1, None, 0)


class _Reader:
    """libyaml's events → :class:`Raw` trees; one document, aliases resolved as the composer does.

    The composer's node tree carries two ``Mark`` objects per scalar (~82 MB for a 1.8 MB
    file); a :class:`Raw` carries the text and two integers, and connector items are
    handed to ``on_connector`` one by one and dropped.

    An alias shares its anchor's value (located at the alias), so nothing is copied here;
    what an alias would cost whoever walks the tree (its anchor's size, nested aliases
    included) is counted against :data:`CONFIG_MAX_ALIAS_EXPANSION`, and nesting against
    :data:`CONFIG_MAX_DEPTH`.
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
                second = event.start_mark
                raise yaml.composer.ComposerError(
                    "expected a single document in the stream",
                    None if start is None else _mark(start.line + 1, start.column + 1),
                    "but found another document",
                    None if second is None else _mark(second.line + 1, second.column + 1),
                )
            return root
        finally:
            self._loader.dispose()

    def _enter(self, at: Raw) -> None:
        """One level deeper, at ``at``'s position."""
        self._depth += 1
        if self._depth > CONFIG_MAX_DEPTH:
            raise _Refused(at.line, at.col, f"lists and mappings nested deeper than {CONFIG_MAX_DEPTH} levels")

    def _top(self, event: yaml.MappingStartEvent) -> Raw:
        """The top-level mapping; the first ``receive_connectors`` list is streamed."""
        mark = event.start_mark
        if mark is None:
            raise _NoPosition
        pairs: list[tuple[Raw, Raw]] = []
        root = Raw(YamlMap(pairs), mark.line + 1, mark.column + 1)
        self._enter(root)
        self._nodes += 1
        get, peek = self._loader.get_event, self._loader.peek_event
        first = True
        while not isinstance(peek(), yaml.MappingEndEvent):
            key = self._key(get())
            value_event = get()
            if key.value != "receive_connectors":
                pairs.append((key, self._node(value_event)))
                continue
            # only the first occurrence counts (a second one is a duplicate key), and an
            # anchored list may be aliased later: that one is kept whole
            if first and isinstance(value_event, yaml.SequenceStartEvent) and value_event.anchor is None:
                mark = value_event.start_mark
                if mark is None:
                    raise _NoPosition
                value = Raw(STREAMED, mark.line + 1, mark.column + 1)
                self._enter(value)
                self._nodes += 1
                while not isinstance(peek(), yaml.SequenceEndEvent):
                    self._on_connector(self._node(get()))
                get()
                self._depth -= 1
            else:
                value = self._node(value_event)
            first = False
            pairs.append((key, value))
        get()
        self._depth -= 1
        return root

    def _key(self, event: yaml.NodeEvent) -> Raw:
        if isinstance(event, yaml.ScalarEvent):  # a key keeps its text, even "~"; one string per key name
            mark = event.start_mark
            if mark is None:
                raise _NoPosition
            self._nodes += 1
            return Raw(sys.intern(event.value), mark.line + 1, mark.column + 1)
        return self._node(event)

    def _node(self, event: yaml.NodeEvent) -> Raw:
        """A node (scalar, sequence, mapping or alias): the parser gives nothing else where one is due."""
        mark = event.start_mark
        if mark is None:
            raise _NoPosition
        line, col = mark.line + 1, mark.column + 1
        if isinstance(event, yaml.AliasEvent):
            name = event.anchor or ""  # libyaml gives every alias a name
            try:
                raw = self._anchors[name]
            except KeyError:
                raise yaml.composer.ComposerError(None, None, "found undefined alias", _mark(line, col)) from None
            size = self._sizes[name]
            self._nodes += size
            self._expanded += size
            if self._expanded > CONFIG_MAX_ALIAS_EXPANSION:
                raise _Refused(
                    line,
                    col,
                    f"aliases expand to more than {CONFIG_MAX_ALIAS_EXPANSION:,} values (an alias bomb?); "
                    "write the values out or alias less",
                )
            return Raw(raw.value, line, col)  # the anchor's value, located where it is used
        anchor = event.anchor
        if anchor is not None and anchor in self._anchors:
            first = self._anchors[anchor]
            raise yaml.composer.ComposerError(
                "found duplicate anchor; first occurrence",
                _mark(first.line, first.col),
                "second occurrence",
                _mark(line, col),
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
