"""Values of PowerShell expressions as far as they are known offline, and arguments bound to parameters.

A value is text, a flat list, a table (``@{Add=…}``), an object flowing through a pipeline
(:class:`Obj`), ``None`` (``$null``), or :class:`Unknown`: what PowerShell computes at run
time (``$cert.Subject``, ``(Get-Date)``) is never guessed, and a value past the importer's
limits is unknown too, so it refuses whatever uses it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, NamedTuple

from exmilter import limits
from exmilter.importer.syntax import Arg, Call, Expr, ListX, Lit, Raw, TableX, Tmpl, Var, text_of


class Refused(Exception):
    """The command is not applied; the message says why."""


@dataclass(frozen=True)
class Unknown:
    """A value PowerShell computes at run time (``$cert.Subject``): not knowable offline.

    Also a value past the importer's limits on values (``limit``).
    """

    why: str
    limit: bool = False
    root: str = ""  # the first reason, when a variable passes it on ($b = $a): kept short

    def held_by(self, name: str) -> Unknown:
        root = self.root or self.why
        return Unknown(f"${name} holds {root}", self.limit, root)


@dataclass(frozen=True)
class Obj:
    """A connector or accepted domain flowing through a pipeline."""

    kind: str
    name: str
    server: str = ""

    def __str__(self) -> str:
        return f"{self.server}\\{self.name}" if self.server else self.name


#: The value of a parameter given without one (a switch, or ``-Param`` at the end).
MISSING: Any = object()


class Param(NamedTuple):
    """One bound argument: its value, its line, and the parameter name as the admin wrote it."""

    value: Any
    line: int
    written: str


#: Arguments of one command by lower-case full parameter name; handlers pop what they read.
Args = dict[str, Param]


class Evaluator:
    """The variables a runbook set so far, and the values of expressions with them."""

    def __init__(self, server: str) -> None:
        self.env: dict[str, Any] = {"env:computername": server}

    def evaluate(self, e: Expr | None, bound: Obj | None) -> Any:
        """The value of ``e``; ``bound`` is ``$_`` inside a script block.

        Values are bounded (:data:`~exmilter.limits.IMPORT_MAX_VALUE_ITEMS`, and
        :data:`~exmilter.limits.IMPORT_MAX_VALUE_CHARS` for all their text): ``$a = $a,$a``
        and ``"$s$s"`` double at each line, and a value past a limit is unknown.
        """
        value = self._evaluate(e, bound)
        return bounded(value) if isinstance(value, list | dict | str) else value

    def _evaluate(self, e: Expr | None, bound: Obj | None) -> Any:
        if e is None:
            return MISSING
        if isinstance(e, Lit):
            return e.text
        if isinstance(e, Var):
            return self._variable(e, bound)
        if isinstance(e, Tmpl):
            return self._template(e, bound)
        if isinstance(e, ListX):
            return self._list(e, bound)
        if isinstance(e, TableX):
            return {k.lower(): self.evaluate(v, bound) for k, v in e.items}
        if isinstance(e, Raw):
            return Unknown(f"{e.text}, computed by PowerShell at run time")
        return Unknown("a script block is not a value")

    def _variable(self, e: Var, bound: Obj | None) -> Any:
        if e.name == "null":
            return None
        if e.name == "_" and bound is not None:
            if not e.members or e.members[0].lower() in ("identity", "id"):
                return str(bound)
            if e.members[0].lower() == "name":
                return bound.name
            return Unknown(f"$_.{'.'.join(e.members)} is a property read at run time")
        if e.name in self.env and not e.members:
            held = self.env[e.name]
            return held.held_by(e.name) if isinstance(held, Unknown) else held
        return Unknown(f"${e.name}{''.join('.' + m for m in e.members)} is not set by the input")

    def _template(self, e: Tmpl, bound: Obj | None) -> Any:
        parts = [p if isinstance(p, str) else self.evaluate(p, bound) for p in e.parts]
        bad = next((p for p in parts if isinstance(p, Unknown)), None)
        if bad is not None:
            return bad
        if any(isinstance(p, dict) for p in parts):
            return Unknown("a hashtable inside a string is not a value exmilter reads")
        max_chars = limits.IMPORT_MAX_VALUE_CHARS
        out: list[str] = []
        size = 0
        for p in parts:  # joined piece by piece: a template may name a large variable many times
            for piece in [" ".join(map(str, p))] if isinstance(p, list) else [str(p)]:
                size += len(piece)
                if size > max_chars:
                    return _too_large(f"text of more than {max_chars:,} characters")
                out.append(piece)
        return "".join(out)

    def _list(self, e: ListX, bound: Obj | None) -> Any:
        max_items = limits.IMPORT_MAX_VALUE_ITEMS
        items: list[Any] = []
        for x in e.items:
            v = self.evaluate(x, bound)
            if isinstance(v, Unknown):
                return v
            if isinstance(v, dict) or (isinstance(v, list) and any(isinstance(i, dict) for i in v)):
                return Unknown("a list of hashtables is not a value exmilter reads")
            items += v if isinstance(v, list) else [v]
            if len(items) > max_items:
                return _too_large(f"more than {max_items:,} items")
        return items

    def bind(
        self, call: Call, positional: tuple[str, ...], names: Collection[str], piped: Obj | None, bound: Obj | None
    ) -> Args:
        """Arguments by lower-case full parameter name; ``names``: the parameters a prefix may abbreviate.

        ``piped``, an object piped into the command, is its ``-Identity`` unless one is given.
        """
        out: Args = {}
        pos = list(positional)
        for a in call.args:
            if a.name is None:
                if not pos:
                    raise Refused(f"unexpected positional argument '{text_of(a.value)}'")
                key = pos.pop(0)
            else:
                key = _parameter(a, names)
            out[key] = Param(self.evaluate(a.value, bound), a.line, a.name or key)
        if piped is not None and "identity" not in out:
            out["identity"] = Param(str(piped), call.line, "Identity")
        return out

    def arg_value(self, call: Call, name: str, position: int, bound: Obj | None) -> Any:
        """The value of ``-name``, else of the positional argument at ``position``, else None."""
        positional = [a for a in call.args if a.name is None]
        for a in call.args:
            if a.name and a.name.lower() == name:
                return self.evaluate(a.value, bound)
        return self.evaluate(positional[position].value, bound) if len(positional) > position else None


def _parameter(a: Arg, names: Collection[str]) -> str:
    """The full name of ``-a``: itself, or the one parameter it is a prefix of (PowerShell's abbreviations)."""
    low = (a.name or "").lower()
    if low in names:
        return low
    matches = {n for n in names if n.startswith(low)}
    if len(matches) == 1:
        return matches.pop()
    return low  # unknown: reported by the handler that receives it


def _too_large(what: str) -> Unknown:
    return Unknown(f"{what} once variables are expanded (the importer's limit)", limit=True)


def bounded(value: list[Any] | dict[str, Any] | str) -> Any:
    """``value``, or :class:`Unknown` when its items or all its text together pass the limits."""
    max_items, max_chars = limits.IMPORT_MAX_VALUE_ITEMS, limits.IMPORT_MAX_VALUE_CHARS
    items = chars = 0
    stack: list[Any] = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            chars += len(v)
        elif isinstance(v, list):
            items += len(v)
            stack += v
        elif isinstance(v, dict):
            items += len(v)
            stack += v.values()
        else:
            chars += 1
        if items > max_items:
            return _too_large(f"more than {max_items:,} items")
        if chars > max_chars:
            return _too_large(f"more than {max_chars:,} characters in all")
    return value


def flat(value: Any) -> list[Any]:
    """A value as a flat list: ``None`` is empty, a nested list its items in order."""
    if value is None:
        return []
    if isinstance(value, list):
        return [x for v in value for x in flat(v)]
    return [value]
