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


@dataclass(frozen=True)
class Tok:
    kind: str  # WORD STR VAR PARAM OP NL ERR
    value: object
    line: int
    space: bool  # whitespace before the token
    colon: bool = False  # -Param:value


class _Lexer:
    def __init__(self, lines: list[Line], notes: Notes) -> None:
        self.lines = lines
        self.notes = notes
        self.toks: list[Tok] = []

    def run(self) -> list[Tok]:
        in_block_comment = False
        for ln in self.lines:
            text = ln.text.translate(_SMART)
            i, space = 0, True
            if in_block_comment:
                end = text.find("#>")
                if end < 0:
                    continue
                in_block_comment, i = False, end + 2
            continued = False
            while i < len(text):
                ch = text[i]
                if ch.isspace():
                    i, space = i + 1, True
                    continue
                if ch == "`" and not text[i + 1:].strip():
                    continued = True
                    break
                if text.startswith("<#", i):
                    end = text.find("#>", i + 2)
                    if end < 0:
                        in_block_comment = True
                        break
                    i, space = end + 2, True
                    continue
                if ch == "#":
                    break
                i = self.token(ln, text, i, space)
                space = False
            if not continued:
                self.toks.append(Tok("NL", None, ln.number, True))
        return self.toks

    def add(self, kind: str, value: object, ln: Line, space: bool, colon: bool = False) -> None:
        self.toks.append(Tok(kind, value, ln.number, space, colon))

    def token(self, ln: Line, text: str, i: int, space: bool) -> int:
        ch = text[i]
        if ch == "@" and text[i + 1:i + 2] in ("(", "{"):
            self.add("OP", "@" + text[i + 1], ln, space)
            return i + 2
        if ch in _OPS:
            self.add("OP", ch, ln, space)
            return i + 1
        if ch == "-" and re.match(r"-[A-Za-z_]", text[i:i + 2]):
            m = re.match(r"-([A-Za-z_][A-Za-z0-9_]*)(:?)", text[i:])
            assert m is not None
            self.add("PARAM", m.group(1), ln, space, colon=bool(m.group(2)))
            return i + m.end()
        if ch == "$":
            return self.variable(ln, text, i, space)
        return self.word(ln, text, i, space)

    def variable(self, ln: Line, text: str, i: int, space: bool) -> int:
        if text.startswith("$(", i):
            end = _balanced(text, i + 1)
            self.add("VAR", Raw(text[i:end]), ln, space)
            return end
        m = re.match(r"\$([A-Za-z_?][\w:?]*)((?:\.[A-Za-z_]\w*)*)", text[i:])
        if not m:
            return self.word(ln, text, i, space)
        members = tuple(p for p in m.group(2).split(".") if p)
        self.add("VAR", Var(m.group(1).lower(), members), ln, space)
        return i + m.end()

    def word(self, ln: Line, text: str, i: int, space: bool) -> int:
        """A bare word, quoted string, or both glued (PowerShell concatenates them)."""
        parts: list[str | Var | Raw] = []
        quoted = False
        while i < len(text) and not text[i].isspace() and text[i] not in _OPS:
            ch = text[i]
            if ch in "\"'":
                quoted = True
                i = self.string(ln, text, i, parts)
                if i < 0:
                    self.add("ERR", None, ln, space)
                    return len(text)
            elif ch == "`" and i + 1 < len(text):
                parts.append(text[i + 1])
                i += 2
            else:
                parts.append(ch)
                i += 1
        value = _join(parts)
        self.add("STR" if quoted else "WORD", value, ln, space)
        return i

    def string(self, ln: Line, text: str, i: int, parts: list[str | Var | Raw]) -> int:
        quote = text[i]
        i += 1
        while i < len(text):
            ch = text[i]
            if ch == quote:
                if text[i + 1:i + 2] == quote:  # '' or "" inside the string
                    parts.append(quote)
                    i += 2
                    continue
                return i + 1
            if quote == '"' and ch == "`" and i + 1 < len(text):
                parts.append(_ESCAPES.get(text[i + 1], text[i + 1]))
                i += 2
            elif quote == '"' and ch == "$" and text.startswith("$(", i):
                end = _balanced(text, i + 1)
                parts.append(Raw(text[i:end]))
                i = end
            elif quote == '"' and ch == "$" and (m := re.match(r"\$([A-Za-z_][\w:]*)", text[i:])):
                parts.append(Var(m.group(1).lower()))
                i += m.end()
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
    merged: list[str | Var | Raw] = []
    for p in parts:
        if isinstance(p, str) and merged and isinstance(merged[-1], str):
            merged[-1] += p
        else:
            merged.append(p)
    if all(isinstance(p, str) for p in merged):
        return Lit("".join(p for p in merged if isinstance(p, str)))
    return Tmpl(tuple(merged))


# --- parser -----------------------------------------------------------------------------


class _Parser:
    def __init__(self, toks: list[Tok], file: str, notes: Notes) -> None:
        self.toks = toks
        self.i = 0
        self.file = file
        self.notes = notes
        self.broken = False

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
        return Statement(self.file, first.line, tuple(stages), assign, self.broken)

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

    def primary(self, closer: str | None) -> Expr:
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
            return self.glued(value)
        if t.kind == "PARAM":  # -Param:-value or an operator such as -eq inside a script block
            return Lit("-" + str(t.value))
        if t.value in ("(", "@("):
            inner = self.statements(")")
            self.expect(")", t.line)
            simple = len(inner) == 1 and len(inner[0].stages) == 1 and not inner[0].assign
            stage = inner[0].stages[0] if simple else None
            if isinstance(stage, Lit | ListX | Var | Tmpl):
                return self.glued(stage)
            return self.glued(Raw("(" + "; ".join(_text(s) for s in inner) + ")"))
        if t.value == "@{":
            return self.table(t.line)
        if t.value == "{":
            body = self.statements("}")
            self.expect("}", t.line)
            return BlockX(tuple(body))
        return Lit(str(t.value))

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
        """``(Get-Date).AddMinutes(-10)``: member access glued to a value makes it an expression."""
        t = self.peek()
        if t is None or t.space or t.kind in ("NL", "PARAM") or (t.kind == "OP" and t.value != "("):
            return value
        more = self.primary(None)
        return Raw(_text(value) + _text(more))

    def expect(self, op: str, line: int) -> None:
        if self.at_op(op):
            self.i += 1
        else:
            self.notes.warn(self.file, line, f"missing {op!r}: the command is not imported")
            self.broken = True


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


def parse(lines: list[Line], notes: Notes) -> list[Statement]:
    """Statements of consecutive source lines of one file."""
    if not lines:
        return []
    toks = _Lexer(lines, notes).run()
    return _Parser(toks, lines[0].file, notes).statements(None)
