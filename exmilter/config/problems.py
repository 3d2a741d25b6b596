"""Located configuration problems, and the collector every stage of the loader reports to.

All problems are collected before anything is raised, so one bad value does not hide the
others; :class:`ConfigError` carries them all, sorted by position.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class Located(Protocol):
    """Anything with a 1-based line and column (a value as read, or a position kept for it)."""

    line: int
    col: int


#: Where a connector's property was written: ``where(key)``, or ``where(None)`` for the
#: connector itself; None when it cannot be located (the problem is then put at 1:1).
Where = Callable[[str | None], Located | None]


def nowhere(key: str | None = None) -> None:
    """The :data:`Where` of a connector nothing locates."""
    return None


@dataclass(frozen=True, order=True)
class Problem:
    """One located configuration problem; ``kind`` singles out a family (``OPEN_RELAY``: open relays)."""

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


class Sink(Protocol):
    """What the checks need from the :class:`Collector`: report an error or a warning at a position."""

    def error(self, at: Located | None, key: str, message: str) -> None: ...
    def warn(self, at: Located | None, key: str, message: str, kind: str = "") -> None: ...


class Collector:
    """The problems of one file, in the order found."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def error(self, at: Located | None, key: str, message: str, warning: bool = False, kind: str = "") -> None:
        line, col = (1, 1) if at is None else (at.line, at.col)
        self.problems.append(Problem(self.file, line, col, key, message, warning, kind))

    def warn(self, at: Located | None, key: str, message: str, kind: str = "") -> None:
        self.error(at, key, message, warning=True, kind=kind)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if not p.warning]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.warning]
