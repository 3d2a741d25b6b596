"""A sans-I/O tokenizer for the PowerShell subset Exchange runbooks use.

Covered: ``-Param`` and ``-Param:``, single and double quotes (with backtick escapes and
``$var`` expansion), “smart” quotes and dashes as PowerShell accepts them, ``$var`` and
``$(…)``, comments (``#`` and ``<# … #>``), backtick line continuations. A statement
holding a character YAML cannot carry (:data:`.chars.REFUSED_CHARS`) gets an ``ERR``
token, so the parser refuses it. One pass over each line; every line is at most
:data:`exmilter.limits.IMPORT_MAX_LINE_CHARS` long and all tokens together are bounded by
the :class:`~.budget.Budget`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from exmilter.importer.budget import Budget
from exmilter.importer.chars import REFUSED_CHARS, char_name, refused_char
from exmilter.importer.notes import Notes
from exmilter.importer.syntax import Lit, Raw, Tmpl, Var
from exmilter.importer.transcript import Line

_SMART = str.maketrans(
    {
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u2013": "-",
        "\u2014": "-",
        "\u2015": "-",
    }
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "a": "\a", "b": "\b", "f": "\f", "v": "\v", "e": "\x1b"}
#: Characters that are a token of their own (``@(`` and ``@{`` too).
OPS = "|;,(){}="


@dataclass(frozen=True, slots=True)
class Tok:
    kind: str  # WORD STR VAR PARAM OP NL ERR
    value: object
    line: int
    space: bool  # whitespace before the token
    colon: bool = False  # -Param:value


_PARAM = re.compile(r"-([A-Za-z_][A-Za-z0-9_]*)(:?)")
_VARIABLE = re.compile(r"\$([A-Za-z_?][\w:?]*)((?:\.[A-Za-z_]\w*)*)")
_IN_STRING_VARIABLE = re.compile(r"\$([A-Za-z_][\w:]*)")
#: Vertical tab and form feed are whitespace between tokens, as in PowerShell; in a token
#: or a string they are refused like the other controls.
_BLANK_CONTROLS = "\x0b\x0c"
_REFUSED_SET = REFUSED_CHARS.pattern[1:-1]
#: A run of characters a bare word takes as they are (a word is scanned run by run).
_WORD_RUN = re.compile(f"[^\\s\"'`|;,(){{}}={_REFUSED_SET}]+")
#: A run of characters a quoted string takes as they are, per quote.
_STRING_RUN = {'"': re.compile(f'[^"`${_REFUSED_SET}]+'), "'": re.compile(f"[^'{_REFUSED_SET}]+")}


class _Lexer:
    """Tokens of consecutive lines; one pass over each line (no slice of the rest per token)."""

    def __init__(self, lines: list[Line], notes: Notes, budget: Budget) -> None:
        self.lines = lines
        self.notes = notes
        self.budget = budget
        self.toks: list[Tok] = []

    def run(self) -> list[Tok]:
        left = self.budget.tokens_left()
        comment_at: Line | None = None  # where an open <# … #> comment started
        for ln in self.lines:
            if ln.unreadable:  # too long to read (noted): its statement is refused
                self.toks.append(Tok("ERR", None, ln.number, True))
                self.toks.append(Tok("NL", None, ln.number, True))
                continue
            text = ln.text.translate(_SMART)
            i, space = 0, True
            if comment_at is not None:
                end = text.find("#>")
                if end < 0:
                    continue
                comment_at, i = None, end + 2
            last = len(text.rstrip())  # a backtick at or after last - 1 continues the line
            continued = False
            while i < len(text):
                ch = text[i]
                if REFUSED_CHARS.match(ch) and ch not in _BLANK_CONTROLS:
                    self.refused(ln, i)
                    i, space = i + 1, False
                    continue
                if ch.isspace():
                    i, space = i + 1, True
                    continue
                if ch == "`" and i + 1 >= last:
                    continued = True
                    break
                if text.startswith("<#", i):
                    end = text.find("#>", i + 2)
                    if end < 0:
                        comment_at = ln
                        break
                    i, space = end + 2, True
                    continue
                if ch == "#":
                    break
                i = self.token(ln, text, i, space)
                space = False
            if not continued:
                self.toks.append(Tok("NL", None, ln.number, True))
            if len(self.toks) > left:
                raise self.budget.too_many_tokens(ln.file, ln.number)
        self.budget.tokens += len(self.toks)
        if comment_at is not None:
            self.notes.warn(
                comment_at.file,
                comment_at.number,
                "<# comment not closed by #> before the end of the "
                "file: everything after it is a comment, not imported",
            )
        return self.toks

    def add(self, kind: str, value: object, ln: Line, space: bool, colon: bool = False) -> None:
        self.toks.append(Tok(kind, value, ln.number, space, colon))

    def refused(self, ln: Line, i: int) -> None:
        """A control character where PowerShell would read it: the statement is not imported."""
        self.notes.warn(
            ln.file,
            ln.number,
            f"{char_name(ln.text[i])} at column {ln.col + i}: a control character "
            "in a command, which is not imported (delete the character)",
        )
        self.add("ERR", None, ln, False)

    def token(self, ln: Line, text: str, i: int, space: bool) -> int:
        ch = text[i]
        if ch == "@" and text[i + 1 : i + 2] in ("(", "{"):
            self.add("OP", "@" + text[i + 1], ln, space)
            return i + 2
        if ch in OPS:
            self.add("OP", ch, ln, space)
            return i + 1
        if ch == "-" and (m := _PARAM.match(text, i)):
            self.add("PARAM", m.group(1), ln, space, colon=bool(m.group(2)))
            return m.end()
        if ch == "$":
            return self.variable(ln, text, i, space)
        return self.word(ln, text, i, space)

    def variable(self, ln: Line, text: str, i: int, space: bool) -> int:
        if text.startswith("$(", i):
            end = _balanced(text, i + 1)
            bad = refused_char(text, i, end)
            if bad >= 0:
                self.refused(ln, bad)
                return end
            self.add("VAR", Raw(text[i:end]), ln, space)
            return end
        m = _VARIABLE.match(text, i)
        if not m:
            return self.word(ln, text, i, space)
        members = tuple(p for p in m.group(2).split(".") if p)
        self.add("VAR", Var(m.group(1).lower(), members), ln, space)
        return m.end()

    def word(self, ln: Line, text: str, i: int, space: bool) -> int:
        """A bare word, quoted string, or both glued (PowerShell concatenates them)."""
        parts: list[str | Var | Raw] = []
        quoted = False
        while i < len(text) and not text[i].isspace() and text[i] not in OPS:
            if m := _WORD_RUN.match(text, i):
                parts.append(m.group())
                i = m.end()
                continue
            ch = text[i]
            if REFUSED_CHARS.match(ch):
                break  # run() reports it (VT and FF end the word, as whitespace)
            if ch in "\"'":
                quoted = True
                i = self.string(ln, text, i, parts)
                if i < 0:
                    self.add("ERR", None, ln, space)
                    return len(text)
            elif ch == "`" and i + 1 < len(text):
                if REFUSED_CHARS.match(text[i + 1]):
                    self.refused(ln, i + 1)
                    return i + 2
                parts.append(text[i + 1])
                i += 2
            else:
                parts.append(ch)
                i += 1
        value = _join(parts)
        self.add("STR" if quoted else "WORD", value, ln, space)
        return i

    def string(self, ln: Line, text: str, i: int, parts: list[str | Var | Raw]) -> int:
        """The string at ``text[i]``; -1 (noted) when it is unterminated or holds a control character."""
        quote = text[i]
        i += 1
        bad = -1
        run = _STRING_RUN[quote]
        while i < len(text):
            if m := run.match(text, i):
                parts.append(m.group())
                i = m.end()
                continue
            ch = text[i]
            if ch == quote:
                if text[i + 1 : i + 2] == quote:  # '' or "" inside the string
                    parts.append(quote)
                    i += 2
                    continue
                if bad >= 0:
                    self.notes.warn(
                        ln.file,
                        ln.number,
                        f"{char_name(text[bad])} at column {ln.col + bad}: a control "
                        "character in a string, which is not imported (delete the character)",
                    )
                    return -1
                return i + 1
            if REFUSED_CHARS.match(ch) and bad < 0:
                bad = i
            if quote == '"' and ch == "`" and i + 1 < len(text):
                if REFUSED_CHARS.match(text[i + 1]) and bad < 0:
                    bad = i + 1
                parts.append(_ESCAPES.get(text[i + 1], text[i + 1]))
                i += 2
            elif quote == '"' and ch == "$" and text.startswith("$(", i):
                end = _balanced(text, i + 1)
                if bad < 0 and (at := refused_char(text, i, end)) >= 0:
                    bad = at
                parts.append(Raw(text[i:end]))
                i = end
            elif quote == '"' and ch == "$" and (m := _IN_STRING_VARIABLE.match(text, i)):
                parts.append(Var(m.group(1).lower()))
                i = m.end()
            else:
                parts.append(ch)
                i += 1
        self.notes.warn(ln.file, ln.number, f"unterminated {quote}-quoted string: the command is not imported")
        return -1


def _balanced(text: str, i: int) -> int:
    """Index after the parenthesis that closes the one at ``i``."""
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "(":
            depth += 1
        elif text[j] == ")":
            depth -= 1
            if depth == 0:
                return j + 1
    return len(text)


def _join(parts: list[str | Var | Raw]) -> Lit | Tmpl:
    """Characters and variables of a word as one literal or template (runs joined once: linear)."""
    merged: list[str | Var | Raw] = []
    run: list[str] = []
    for p in parts:
        if isinstance(p, str):
            run.append(p)
            continue
        if run:
            merged.append("".join(run))
            run = []
        merged.append(p)
    if run:
        merged.append("".join(run))
    if all(isinstance(p, str) for p in merged):
        return Lit("".join(p for p in merged if isinstance(p, str)))
    return Tmpl(tuple(merged))


def tokenize(lines: list[Line], notes: Notes, budget: Budget) -> list[Tok]:
    """Tokens of consecutive source lines of one file, each line ended by an ``NL`` token."""
    return _Lexer(lines, notes, budget).run()
