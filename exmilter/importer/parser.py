"""A sans-I/O parser for the PowerShell subset Exchange runbooks use.

Covered: commands with ``-Param value``, ``-Param:value`` and switches; comma lists;
``@(…)``, ``@{Add=…; Remove=…}``; script blocks ``{…}``; pipelines; ``$var = …``. A line
that starts with ``-Param`` continues the command above it: web pages wrap long commands
that way. Anything else is kept as :class:`~.syntax.Raw` text, so it can be reported, never
guessed. Recursive descent, one level per bracket, at most
:data:`exmilter.limits.IMPORT_MAX_NESTING` deep.
"""

from __future__ import annotations

import re

from exmilter import limits
from exmilter.importer.budget import Budget
from exmilter.importer.lexer import Tok, tokenize
from exmilter.importer.notes import Notes
from exmilter.importer.parameters import SWITCHES
from exmilter.importer.syntax import Arg, BlockX, Call, Expr, ListX, Lit, Raw, Statement, TableX, Tmpl, Var, text_of
from exmilter.importer.transcript import Line


class _Parser:
    """Recursive descent, one level per bracket: :data:`~exmilter.limits.IMPORT_MAX_NESTING` bounds the depth."""

    def __init__(self, toks: list[Tok], file: str, notes: Notes) -> None:
        self.toks = toks
        self.max_nesting = limits.IMPORT_MAX_NESTING
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
            rest.append(text_of(self.value(closer) if not self.at_op(",", "=", ")", "}") else self.skip()))
        return Raw(text_of(value) + " " + " ".join(rest)) if rest else value

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
                    self.notes.info(
                        self.file,
                        n.line,
                        f"line {n.line} continues the {name} command of line {line} "
                        "(wrapped without a backtick, as web pages do)",
                    )
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
                if t.colon or (
                    pname.lower() not in SWITCHES
                    and not self.ends_stage(closer)
                    and (n := self.peek()) is not None
                    and n.kind != "PARAM"
                ):
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
        if self.depth >= self.max_nesting:
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
        return Raw("(" + "; ".join(text_of(s) for s in inner) + ")")

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
        self.notes.warn(
            self.file,
            opener.line,
            f"more than {self.max_nesting} brackets open at once: the command is not imported{rest}",
        )

    def table(self, line: int) -> TableX:
        items: list[tuple[str, Expr]] = []
        while (t := self.peek()) is not None and not self.at_op("}"):
            if t.kind == "NL" or self.at_op(";"):
                self.i += 1
                continue
            key = text_of(self.primary("}"))
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
            more.append(text_of(self.primary(None, glue=False)))
        return Raw(text_of(value) + "".join(more)) if more else value

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


def parse(lines: list[Line], notes: Notes, budget: Budget | None = None) -> list[Statement]:
    """Statements of consecutive source lines of one file (``budget``: what the whole input may still use)."""
    if not lines:
        return []
    budget = budget or Budget()
    statements = _Parser(tokenize(lines, notes, budget), lines[0].file, notes).statements(None)
    for st in statements:
        budget.item(st.file, st.line)
    return statements
