"""A sans-I/O tokenizer and parser for the PowerShell subset Exchange runbooks use.

Covered: commands with ``-Param value``, ``-Param:value`` and switches; single and
double quotes (with backtick escapes and ``$var`` expansion), “smart” quotes and dashes
as PowerShell accepts them; comma lists; ``@(…)``, ``@{Add=…; Remove=…}``; script blocks
``{…}``; pipelines; ``$var = …``; comments; backtick line continuations. A line that
starts with ``-Param`` continues the command above it: web pages wrap long commands that
way. Anything else is kept as :class:`Raw` text, so it can be reported, never guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from exmilter.importer.chars import REFUSED_CHARS, char_name, refused_char
from exmilter.importer.limits import MAX_NESTING, Budget, Stopped
from exmilter.importer.notes import Notes
from exmilter.importer.transcript import Line

_SMART = str.maketrans(
    {"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2018": "'", "\u2019": "'", "\u201a": "'",
     "\u2013": "-", "\u2014": "-", "\u2015": "-"}
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "a": "\a", "b": "\b", "f": "\f", "v": "\v", "e": "\x1b"}
_OPS = "|;,(){}="
#: Switch parameters of the cmdlets we read: they never take the next token as a value.
_SWITCH_NAMES = "custom internet internal client partner confirm whatif deny force makedefault autosize a wrap debug"
SWITCHES = frozenset(_SWITCH_NAMES.split())


# --- syntax tree ------------------------------------------------------------------------


@dataclass(frozen=True)
class Lit:
    text: str


@dataclass(frozen=True)
class Var:
    name: str  # lower-case, without "$"
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class Raw:
    """An expression that is not evaluated offline: ``(Get-Date)``, ``$($cert.Issuer)``."""

    text: str


@dataclass(frozen=True)
class Tmpl:
    """A double-quoted string with ``$var`` or ``$(…)`` parts."""

    parts: tuple[str | Var | Raw, ...]


@dataclass(frozen=True)
class ListX:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class TableX:
    items: tuple[tuple[str, Expr], ...]


@dataclass(frozen=True)
class BlockX:
    body: tuple[Statement, ...]


Expr = Lit | Var | Raw | Tmpl | ListX | TableX | BlockX


@dataclass(frozen=True)
class Arg:
    name: str | None  # None: positional
    value: Expr | None  # None: a switch (or a parameter whose value is missing)
    line: int


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Arg, ...]
    line: int


@dataclass(frozen=True)
class Statement:
    file: str
    line: int
    stages: tuple[Call | Expr, ...]
    assign: str | None = None
    broken: bool = False


# --- tokenizer --------------------------------------------------------------------------


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
_STRING_RUN = {'"': re.compile(f"[^\"`${_REFUSED_SET}]+"), "'": re.compile(f"[^'{_REFUSED_SET}]+")}


class _Lexer:
    """Tokens of consecutive lines; one pass over each line (no slice of the rest per token)."""

    def __init__(self, lines: list[Line], notes: Notes, budget: Budget) -> None:
        self.lines = lines
        self.notes = notes
        self.budget = budget
        self.toks: list[Tok] = []

    def run(self) -> list[Tok]:
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
            if len(self.toks) > self.budget.tokens:
                raise Stopped(ln.file, ln.number, f"more than {self.budget.max_tokens:,} PowerShell tokens in all: "
                              "the input is too large to import in one run")
        self.budget.tokens -= len(self.toks)
        if comment_at is not None:
            self.notes.warn(comment_at.file, comment_at.number, "<# comment not closed by #> before the end of the "
                            "file: everything after it is a comment, not imported")
        return self.toks

    def add(self, kind: str, value: object, ln: Line, space: bool, colon: bool = False) -> None:
        self.toks.append(Tok(kind, value, ln.number, space, colon))

    def refused(self, ln: Line, i: int) -> None:
        """A control character where PowerShell would read it: the statement is not imported."""
        self.notes.warn(ln.file, ln.number, f"{char_name(ln.text[i])} at column {ln.col + i}: a control character "
                        "in a command, which is not imported (delete the character)")
        self.add("ERR", None, ln, False)

    def token(self, ln: Line, text: str, i: int, space: bool) -> int:
        ch = text[i]
        if ch == "@" and text[i + 1:i + 2] in ("(", "{"):
            self.add("OP", "@" + text[i + 1], ln, space)
            return i + 2
        if ch in _OPS:
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
        while i < len(text) and not text[i].isspace() and text[i] not in _OPS:
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
                if text[i + 1:i + 2] == quote:  # '' or "" inside the string
                    parts.append(quote)
                    i += 2
                    continue
                if bad >= 0:
                    self.notes.warn(ln.file, ln.number, f"{char_name(text[bad])} at column {ln.col + bad}: a control "
                                    "character in a string, which is not imported (delete the character)")
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


# --- parser -----------------------------------------------------------------------------


class _Parser:
    """Recursive descent, one level per bracket: :data:`MAX_NESTING` bounds the depth."""

    def __init__(self, toks: list[Tok], file: str, notes: Notes) -> None:
        self.toks = toks
        self.i = 0
        self.file = file
        self.notes = notes
        self.broken = False
        self.depth = 0  # brackets open
        self.unclosed_noted = False  # the end of the input was reached with brackets open, and said so

    def peek(self, k: int = 0) -> Tok | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def at_op(self, *ops: str) -> bool:
        t = self.peek()
        return t is not None and t.kind == "OP" and t.value in ops

    def statements(self, closer: str | None) -> list[Statement]:
        out: list[Statement] = []
        while (t := self.peek()) is not None:
            if t.kind == "NL" or self.at_op(";"):
                self.i += 1
            elif closer and self.at_op(closer):
                return out
            elif self.at_op(")", "}"):
                self.notes.warn(self.file, t.line, f"unmatched {t.value!r}: skipped")
                self.i += 1
            else:
                out.append(self.statement(closer))
        return out

    def statement(self, closer: str | None) -> Statement:
        first = self.peek()
        assert first is not None
        outer = self.broken and self.depth > 0  # a statement in a script block breaks the one around it
        self.broken = False
        assign = None
        nxt = self.peek(1)
        if first.kind == "VAR" and isinstance(first.value, Var) and nxt and nxt.kind == "OP" and nxt.value == "=":
            assign = first.value.name
            self.i += 2
        stages = [self.stage(closer)]
        while self.at_op("|"):
            self.i += 1
            while (t := self.peek()) is not None and t.kind == "NL":
                self.i += 1
            stages.append(self.stage(closer))
        st = Statement(self.file, first.line, tuple(stages), assign, self.broken)
        self.broken = self.broken or outer
        return st

    def ends_stage(self, closer: str | None) -> bool:
        t = self.peek()
        if t is None or t.kind == "NL" or self.at_op("|", ";"):
            return True
        return bool(closer) and self.at_op(closer or "")

    def stage(self, closer: str | None) -> Call | Expr:
        t = self.peek()
        if t is not None and t.kind == "WORD" and isinstance(t.value, Lit) and re.match(r"[A-Za-z%?]", t.value.text):
            self.i += 1
            return self.call(t.value.text, t.line, closer)
        value = self.value(closer)
        rest: list[str] = []
        while not self.ends_stage(closer):  # operators and operands we do not evaluate
            rest.append(_text(self.value(closer) if not self.at_op(",", "=", ")", "}") else self.skip()))
        return Raw(_text(value) + " " + " ".join(rest)) if rest else value

    def skip(self) -> Lit:
        t = self.peek()
        self.i += 1
        return Lit(str(t.value) if t else "")

    def call(self, name: str, line: int, closer: str | None) -> Call:
        args: list[Arg] = []
        wrapped = False
        while True:
            t = self.peek()
            if t is not None and t.kind == "NL" and (n := self.peek(1)) is not None and n.kind == "PARAM":
                if not wrapped:
                    self.notes.info(self.file, n.line, f"line {n.line} continues the {name} command of line {line} "
                                    "(wrapped without a backtick, as web pages do)")
                wrapped = True
                self.i += 1
                continue
            if self.ends_stage(closer):
                return Call(name, tuple(args), line)
            t = self.peek()
            assert t is not None
            if t.kind == "PARAM":
                self.i += 1
                pname = str(t.value)
                if t.colon or (pname.lower() not in SWITCHES and not self.ends_stage(closer)
                               and (n := self.peek()) is not None and n.kind != "PARAM"):
                    args.append(Arg(pname, None if self.ends_stage(closer) else self.value(closer), t.line))
                else:
                    args.append(Arg(pname, None, t.line))
            elif self.at_op(")", "}", "="):
                args.append(Arg(None, self.skip(), t.line))
            else:
                args.append(Arg(None, self.value(closer), t.line))

    def value(self, closer: str | None) -> Expr:
        items = [self.primary(closer)]
        while self.at_op(","):
            self.i += 1
            while (t := self.peek()) is not None and t.kind == "NL":
                self.i += 1
            items.append(self.primary(closer))
        return items[0] if len(items) == 1 else ListX(tuple(items))

    def primary(self, closer: str | None, glue: bool = True) -> Expr:
        t = self.peek()
        if t is None or t.kind == "NL":
            return Raw("")
        self.i += 1
        if t.kind == "ERR":
            self.broken = True
            return Raw("")
        if t.kind in ("WORD", "STR", "VAR"):
            value = t.value
            assert isinstance(value, Lit | Tmpl | Var | Raw)  # what the lexer stores for these kinds
            if isinstance(value, Var) and value.name in ("true", "false"):
                value = Lit(value.name)
            elif isinstance(value, Var) and value.name == "null":
                value = Var("null")
            return self.glued(value) if glue else value
        if t.kind == "PARAM":  # -Param:-value or an operator such as -eq inside a script block
            return Lit("-" + str(t.value))
        if t.value not in ("(", "@(", "{", "@{"):
            return Lit(str(t.value))
        if self.depth >= MAX_NESTING:
            self.too_deep(t)
            return Raw("")
        self.depth += 1
        try:
            nested = self.nested(t)
        finally:
            self.depth -= 1
        return self.glued(nested) if glue and t.value in ("(", "@(") else nested

    def nested(self, t: Tok) -> Expr:
        """What follows an opening bracket, up to its closer."""
        if t.value == "@{":
            return self.table(t.line)
        if t.value == "{":
            body = self.statements("}")
            self.expect("}", t.line)
            return BlockX(tuple(body))
        inner = self.statements(")")
        self.expect(")", t.line)
        simple = len(inner) == 1 and len(inner[0].stages) == 1 and not inner[0].assign
        stage = inner[0].stages[0] if simple else None
        if isinstance(stage, Lit | ListX | Var | Tmpl):
            return stage
        return Raw("(" + "; ".join(_text(s) for s in inner) + ")")

    def too_deep(self, opener: Tok) -> None:
        """Skip, without recursing, to the bracket that closes ``opener``; the statement is refused."""
        self.broken = True
        depth = 1
        while depth and (t := self.peek()) is not None:
            self.i += 1
            if t.kind == "OP" and t.value in ("(", "@(", "{", "@{"):
                depth += 1
            elif t.kind == "OP" and t.value in (")", "}"):
                depth -= 1
        rest = "" if depth == 0 else " (never closed: the rest of the file with it)"
        self.unclosed_noted = self.unclosed_noted or depth > 0
        self.notes.warn(self.file, opener.line, f"more than {MAX_NESTING} brackets open at once: the command is not "
                        f"imported{rest}")

    def table(self, line: int) -> TableX:
        items: list[tuple[str, Expr]] = []
        while (t := self.peek()) is not None and not self.at_op("}"):
            if t.kind == "NL" or self.at_op(";"):
                self.i += 1
                continue
            key = _text(self.primary("}"))
            if not self.at_op("="):
                self.notes.warn(self.file, t.line, f"expected '=' after {key!r} in @{{…}}")
                self.broken = True
                break
            self.i += 1
            items.append((key, self.value("}")))
        self.expect("}", line)
        return TableX(tuple(items))

    def glued(self, value: Expr) -> Expr:
        """``(Get-Date).AddMinutes(-10)``: member access glued to a value makes it an expression.

        A loop, not recursion: ``$a$a$a…`` glues thousands of tokens.
        """
        more: list[str] = []
        while (t := self.peek()) is not None and not (
            t.space or t.kind in ("NL", "PARAM") or (t.kind == "OP" and t.value != "(")
        ):
            more.append(_text(self.primary(None, glue=False)))
        return Raw(_text(value) + "".join(more)) if more else value

    def expect(self, op: str, line: int) -> None:
        if self.at_op(op):
            self.i += 1
            return
        self.broken = True
        if self.peek() is None:  # brackets left open at the end: said once, not once per bracket
            if self.unclosed_noted:
                return
            self.unclosed_noted = True
        self.notes.warn(self.file, line, f"missing {op!r}: the command is not imported")


def _text(e: object) -> str:
    """Source-like text of a node, for messages and for :class:`Raw`."""
    if isinstance(e, Lit):
        return e.text
    if isinstance(e, Var):
        return "$" + ".".join((e.name, *e.members))
    if isinstance(e, Raw):
        return e.text
    if isinstance(e, Tmpl):
        return '"' + "".join(p if isinstance(p, str) else _text(p) for p in e.parts) + '"'
    if isinstance(e, ListX):
        return ",".join(_text(x) for x in e.items)
    if isinstance(e, TableX):
        return "@{" + "; ".join(f"{k}={_text(v)}" for k, v in e.items) + "}"
    if isinstance(e, BlockX):
        return "{" + "; ".join(_text(s) for s in e.body) + "}"
    if isinstance(e, Call):
        return " ".join([e.name] + [(f"-{a.name} " if a.name else "") + (_text(a.value) if a.value else "")
                                    for a in e.args]).strip()
    if isinstance(e, Statement):
        return (f"${e.assign} = " if e.assign else "") + " | ".join(_text(s) for s in e.stages)
    return str(e)


text_of = _text


def parse(lines: list[Line], notes: Notes, budget: Budget | None = None) -> list[Statement]:
    """Statements of consecutive source lines of one file (``budget``: what the whole input may still use)."""
    if not lines:
        return []
    budget = budget or Budget()
    statements = _Parser(_Lexer(lines, notes, budget).run(), lines[0].file, notes).statements(None)
    for st in statements:
        budget.item(st.file, st.line)
    return statements
