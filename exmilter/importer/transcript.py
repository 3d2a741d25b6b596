"""Separate PowerShell source from what was pasted around it.

Runbooks are copied from consoles and web pages: prompts (``[PS] C:\\>``), the echoed
output table of a cmdlet (which a web page may glue onto the command itself:
``-PermissionGroups AnonymousUsersIdentity Bindings Enabled-------- …``) and
``Format-List`` property blocks. This pass keeps the tokenizer a plain PowerShell
tokenizer and turns property blocks into :class:`Dump` objects.

It is also where characters are sorted (docs/import-exchange.md, "Control characters"):
CR, LF and CR LF end lines; a byte order mark at the start of a line starts another
file; invisible format characters (Unicode Cf: zero-width spaces, bidi controls, soft
hyphens, a byte order mark inside a line) are removed with a note; characters YAML
cannot carry (:data:`.chars.REFUSED_CHARS`) are left for the tokenizer, which refuses the
statement they are in, and refuse the ``Format-List`` object they are in here. Every
pass is linear in the length of a line, and lines are at most
:data:`exmilter.limits.IMPORT_MAX_LINE_CHARS` long.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from exmilter import limits
from exmilter.importer.budget import Budget
from exmilter.importer.chars import char_name, is_format_char, refused_char
from exmilter.importer.notes import Notes

_NEWLINE = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class Line:
    """One segment of PowerShell source; a physical line may hold several (one per prompt)."""

    file: str
    number: int
    text: str
    col: int = 1  # column of text[0] in the line (after a prompt)
    unreadable: bool = False  # longer than IMPORT_MAX_LINE_CHARS: its statement is refused


@dataclass
class Dump:
    """One ``Format-List`` object: property → (value, line). Keys keep the dump's spelling."""

    file: str
    line: int
    props: dict[str, tuple[str, int]] = field(default_factory=dict)
    refused: bool = False  # a line of it could not be read (noted): nothing of it is imported

    def get(self, name: str) -> str | None:
        for key, (value, _) in self.props.items():
            if key.lower() == name.lower():
                return value
        return None


#: A console prompt; a Windows path is at most 260 characters, which also keeps the search
#: linear on a line of ``C:\C:\C:\…``.
_PROMPT = re.compile(r"(?:\[PS\]\s{0,8}|PS\s{1,8})?[A-Za-z]:\\[^>\"'\s]{0,260}>")
_DASHES = re.compile(r"-{2,}(?:[ \t]+-{2,})*")
_DASH_LINE = re.compile(r"^\s*-{2,}(?:\s+-{2,})*\s*$")
_PROPERTY = re.compile(r"^([A-Za-z][A-Za-z0-9]*)\s*:(?:\s+(.*))?$")
_CMDLET = re.compile(r"^\s*(?:[A-Za-z]+-[A-Za-z]+|\$)")
#: Programs run from the shell whose arguments are not PowerShell (a telnet transcript).
EXTERNAL_PROGRAMS = frozenset({"telnet", "ping", "nslookup", "tracert", "ipconfig", "openssl", "swaks", "nc", "curl"})


class _Quotes:
    """Whether positions of one line are outside quotes, asked in increasing order: one pass."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.quote = ""

    def outside(self, pos: int) -> bool:
        if pos < self.pos:
            self.pos, self.quote = 0, ""
        text, quote = self.text, self.quote
        for ch in text[self.pos : pos]:
            if quote:
                if ch == quote:
                    quote = ""
            elif ch in "\"'":
                quote = ch
        self.pos, self.quote = pos, quote
        return not quote


def _split_prompts(text: str) -> list[tuple[int, str]]:
    """``[PS] C:\\>cmd1 [PS] C:\\>cmd2`` (one pasted line) → ``[(0, "cmd1 "), (14, "cmd2")]`` (offsets)."""
    parts: list[tuple[int, str]] = []
    start = 0
    quotes = _Quotes(text)
    for m in _PROMPT.finditer(text):
        if (m.start() == 0 or text[m.start() - 1].isspace()) and quotes.outside(m.start()):
            parts.append((start, text[start : m.start()]))
            start = m.end()
    parts.append((start, text[start:]))
    return parts


def _header_start(text: str, dashes: re.Match[str]) -> int | None:
    """Where the column header of a dash row starts: each dash group is as long as its header.

    Index arithmetic only: a line may hold thousands of dash groups.
    """
    widths = [len(g) for g in dashes.group().split()]
    end = _end_of_text(text, dashes.start())
    for i, width in enumerate(reversed(widths)):
        if end < width or not text[end - width : end].isalpha():
            return None
        end -= width
        if i < len(widths) - 1:
            if not end or not text[end - 1].isspace():
                return None
            end = _end_of_text(text, end)
    return end


def _end_of_text(text: str, end: int) -> int:
    """``len(text[:end].rstrip())`` without the copy."""
    while end and text[end - 1].isspace():
        end -= 1
    return end


def _strip_output(text: str) -> tuple[str, str | None]:
    """Cut a pasted output table (header + dash row + rows) off the end of a command."""
    quotes = _Quotes(text)
    for m in _DASHES.finditer(text):
        if not quotes.outside(m.start()):
            continue
        start = _header_start(text, m)
        if start is not None:
            return text[:start], text[start : m.start()].split()[0]
    return text, None


def physical_lines(text: str) -> list[str]:
    """Lines as editors and PowerShell count them: CR LF, LF or CR ends one, nothing else does.

    (``str.splitlines`` also breaks at form feeds, NEL and U+2028, which would shift every
    FILE:LINE after them.)
    """
    lines = _NEWLINE.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def documents(file: str, text: str, notes: Notes) -> list[tuple[int, list[str]]]:
    """The files ``text`` holds, as (number of their first line, lines).

    A byte order mark starts a file: at the very start it is dropped; anywhere else it is
    where ``cat a.txt b.txt`` joined two files (at the start of a line, or inside the
    last line of a file without a final newline), so nothing open before it (a command, a
    string, a comment, a ``Format-List`` object) continues past it.
    """
    lines = physical_lines(text)
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    if "\ufeff" not in text[1:]:
        return [(1, lines)]
    out: list[tuple[int, list[str]]] = []
    first, current = 1, []
    for number, line in enumerate(lines, 1):
        col = 0
        while (at := line.find("\ufeff")) >= 0:
            current.append(line[:at])
            out.append((first, current))
            notes.info(
                file,
                number,
                f"byte order mark (U+FEFF) at column {col + at + 1}: another file starts "
                "here (files joined with cat), so nothing open before it continues into it",
            )
            first, current = number, []
            line, col = line[at + 1 :], col + at + 1
        current.append(line)
    out.append((first, current))
    return out


def _clean(file: str, number: int, line: str, notes: Notes) -> str | None:
    """The line without invisible format characters (noted); None when it is too long to read."""
    most = limits.IMPORT_MAX_LINE_CHARS
    if len(line) > most:
        notes.warn(
            file,
            number,
            f"line of {len(line):,} characters, longer than the {most:,} read: "
            "its command or Format-List object is not imported",
        )
        return None
    if line.isascii():
        return line
    kept: list[str] = []
    removed: list[str] = []
    for col, ch in enumerate(line, 1):
        if is_format_char(ch):
            if len(removed) < 3:
                removed.append(f"{char_name(ch)} at column {col}")
            elif len(removed) == 3:
                removed.append("…")
        else:
            kept.append(ch)
    if removed:
        notes.info(file, number, f"invisible formatting character removed: {', '.join(removed)}")
        return "".join(kept)
    return line


def split(file: str, text: str, notes: Notes, budget: Budget | None = None) -> list[list[Line | Dump]]:
    """Per file :func:`documents` finds, its PowerShell source segments and object dumps, in order."""
    budget = budget or Budget()
    return [_split(file, first, lines, notes, budget) for first, lines in documents(file, text, notes)]


def _split(file: str, first: int, raw_lines: list[str], notes: Notes, budget: Budget) -> list[Line | Dump]:
    cleaned = [_clean(file, first + i, line, notes) for i, line in enumerate(raw_lines)]
    lines = [line if line is not None else "" for line in cleaned]
    out: list[Line | Dump] = []
    i = 0
    while i < len(lines):
        number, raw = first + i, lines[i]
        if cleaned[i] is None:
            out.append(Line(file, number, "", unreadable=True))
            i += 1
            continue
        # A table whose header and dash row are lines of their own (console transcripts).
        if i + 1 < len(lines) and raw.strip() and _DASH_LINE.match(lines[i + 1]):
            widths = [len(g) for g in lines[i + 1].split()]
            words = raw.split()
            same = len(words) == len(widths)
            if same and all(w.isalpha() and len(w) == n for w, n in zip(words, widths, strict=True)):
                j = i + 2
                while j < len(lines) and lines[j].strip() and not _PROMPT.match(lines[j].lstrip()):
                    if _CMDLET.match(lines[j]):
                        break
                    j += 1
                notes.info(file, number, f"pasted output ({raw.split()[0]} … table) skipped")
                i = j
                continue
        if _PROPERTY.match(raw) and not _PROMPT.match(raw):
            budget.item(file, number)
            dump, i = _dump(file, first, lines, cleaned, i, notes)
            out.append(dump)
            continue
        for offset, segment in _split_prompts(raw):
            words = segment.split(None, 1)
            if words and words[0].lower() in EXTERNAL_PROGRAMS:
                notes.info(file, number, f"{words[0]} is not an Exchange cmdlet: its session transcript is skipped")
                continue
            command, table = _strip_output(segment)
            if table is not None:
                notes.info(file, number, f"pasted output ({table} … table) skipped")
            out.append(Line(file, number, command, col=offset + 1))
        i += 1
    return out


def _dump(file: str, first: int, lines: list[str], cleaned: list[str | None], i: int, notes: Notes) -> tuple[Dump, int]:
    """Collect ``Name : value`` lines and their wrapped continuations up to a blank line.

    The first line is a property line (the caller matched it), so at least one line is
    always consumed. A line that cannot be read refuses the whole object: a connector
    without the ``RemoteIPRanges`` it was listed with would take every address.
    """
    dump = Dump(file, first + i)
    parts: dict[str, list[str]] = {}
    last: str | None = None
    while i < len(lines) and (cleaned[i] is None or lines[i].strip()):
        line, number = lines[i], first + i
        m = _PROPERTY.match(line)
        if cleaned[i] is None:
            dump.refused = True
        elif m and not line[0].isspace():
            last = m.group(1)
            parts[last] = [(m.group(2) or "").strip()]
            dump.props[last] = ("", number)
        elif last is not None and line[0].isspace():
            parts[last].append(line.strip())
        else:
            break
        if (col := refused_char(line)) >= 0:
            notes.warn(
                file,
                number,
                f"{char_name(line[col])} at column {col + 1}: a control character in a "
                "Format-List object, which is not imported",
            )
            dump.refused = True
        i += 1
    for key, values in parts.items():
        dump.props[key] = ("".join(values), dump.props[key][1])
    return dump, i
