"""Separate PowerShell source from what was pasted around it.

Runbooks are copied from consoles and web pages: prompts (``[PS] C:\\>``), the echoed
output table of a cmdlet (which a web page may glue onto the command itself:
``-PermissionGroups AnonymousUsersIdentity Bindings Enabled-------- …``) and
``Format-List`` property blocks. This pass keeps the tokenizer a plain PowerShell
tokenizer and turns property blocks into :class:`Dump` objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from exmilter.importer.notes import Notes


@dataclass(frozen=True)
class Line:
    """One segment of PowerShell source; a physical line may hold several (one per prompt)."""

    file: str
    number: int
    text: str


@dataclass
class Dump:
    """One ``Format-List`` object: property → (value, line). Keys keep the dump's spelling."""

    file: str
    line: int
    props: dict[str, tuple[str, int]] = field(default_factory=dict)

    def get(self, name: str) -> str | None:
        for key, (value, _) in self.props.items():
            if key.lower() == name.lower():
                return value
        return None


_PROMPT = re.compile(r"(?:\[PS\]\s*|PS\s+)?[A-Za-z]:\\[^>\"'\s]*>")
_DASHES = re.compile(r"-{2,}(?:[ \t]+-{2,})*")
_DASH_LINE = re.compile(r"^\s*-{2,}(?:\s+-{2,})*\s*$")
_PROPERTY = re.compile(r"^([A-Za-z][A-Za-z0-9]*)\s*:(?:\s+(.*?))?\s*$")
_CMDLET = re.compile(r"^\s*(?:[A-Za-z]+-[A-Za-z]+|\$)")
#: Programs run from the shell whose arguments are not PowerShell (a telnet transcript).
EXTERNAL_PROGRAMS = frozenset({"telnet", "ping", "nslookup", "tracert", "ipconfig", "openssl", "swaks", "nc", "curl"})


def _outside_quotes(text: str, pos: int) -> bool:
    quote = ""
    for ch in text[:pos]:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
    return not quote


def _split_prompts(text: str) -> list[str]:
    """``[PS] C:\\>cmd1 [PS] C:\\>cmd2`` (one pasted line) → ``["cmd1 ", "cmd2"]``."""
    parts: list[str] = []
    start = 0
    for m in _PROMPT.finditer(text):
        if (m.start() == 0 or text[m.start() - 1].isspace()) and _outside_quotes(text, m.start()):
            parts.append(text[start:m.start()])
            start = m.end()
    parts.append(text[start:])
    return parts


def _header_start(text: str, dashes: re.Match[str]) -> int | None:
    """Where the column header of a dash row starts: each dash group is as long as its header."""
    widths = [len(g) for g in dashes.group().split()]
    end = len(text[:dashes.start()].rstrip())
    for i, width in enumerate(reversed(widths)):
        word = text[end - width:end]
        if len(word) != width or not word.isalpha():
            return None
        end -= width
        if i < len(widths) - 1:
            before = text[:end]
            if not before or not before[-1].isspace():
                return None
            end = len(before.rstrip())
    return end


def _strip_output(text: str) -> tuple[str, str | None]:
    """Cut a pasted output table (header + dash row + rows) off the end of a command."""
    for m in _DASHES.finditer(text):
        if not _outside_quotes(text, m.start()):
            continue
        start = _header_start(text, m)
        if start is not None:
            return text[:start], text[start:m.start()].split()[0]
    return text, None


def split(file: str, text: str, notes: Notes) -> list[Line | Dump]:
    """PowerShell source segments and object dumps, in input order."""
    lines = text.splitlines()
    out: list[Line | Dump] = []
    i = 0
    while i < len(lines):
        number, raw = i + 1, lines[i].replace("\ufeff", "")
        # A table whose header and dash row are lines of their own (console transcripts).
        if i + 1 < len(lines) and _DASH_LINE.match(lines[i + 1]) and raw.strip():
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
            dump, i = _dump(file, lines, i)
            out.append(dump)
            continue
        for segment in _split_prompts(raw):
            words = segment.split(None, 1)
            if words and words[0].lower() in EXTERNAL_PROGRAMS:
                notes.info(file, number, f"{words[0]} is not an Exchange cmdlet: its session transcript is skipped")
                continue
            command, table = _strip_output(segment)
            if table is not None:
                notes.info(file, number, f"pasted output ({table} … table) skipped")
            out.append(Line(file, number, command))
        i += 1
    return out


def _dump(file: str, lines: list[str], i: int) -> tuple[Dump, int]:
    """Collect ``Name : value`` lines and their wrapped continuations up to a blank line."""
    dump = Dump(file, i + 1)
    last: str | None = None
    while i < len(lines) and lines[i].strip():
        line = lines[i]
        m = _PROPERTY.match(line)
        if m and not line[0].isspace():
            last = m.group(1)
            dump.props[last] = ((m.group(2) or ""), i + 1)
        elif last is not None and line[0].isspace():
            value, at = dump.props[last]
            dump.props[last] = (value + line.strip(), at)
        else:
            break
        i += 1
    return dump, i
