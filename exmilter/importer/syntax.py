"""The syntax tree of the PowerShell subset Exchange runbooks use, and its source-like text.

The lexer makes the leaves (:class:`Lit`, :class:`Var`, :class:`Raw`, :class:`Tmpl`), the
parser the rest; the evaluator gives them values. What is not evaluated offline stays
:class:`Raw` text, so it can be reported, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass


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


def text_of(e: object) -> str:
    """Source-like text of a node, for messages and for :class:`Raw`."""
    if isinstance(e, Lit):
        return e.text
    if isinstance(e, Var):
        return "$" + ".".join((e.name, *e.members))
    if isinstance(e, Raw):
        return e.text
    if isinstance(e, Tmpl):
        return '"' + "".join(p if isinstance(p, str) else text_of(p) for p in e.parts) + '"'
    if isinstance(e, ListX):
        return ",".join(text_of(x) for x in e.items)
    if isinstance(e, TableX):
        return "@{" + "; ".join(f"{k}={text_of(v)}" for k, v in e.items) + "}"
    if isinstance(e, BlockX):
        return "{" + "; ".join(text_of(s) for s in e.body) + "}"
    if isinstance(e, Call):
        return " ".join(
            [e.name] + [(f"-{a.name} " if a.name else "") + (text_of(a.value) if a.value else "") for a in e.args]
        ).strip()
    if isinstance(e, Statement):
        return (f"${e.assign} = " if e.assign else "") + " | ".join(text_of(s) for s in e.stages)
    return str(e)
