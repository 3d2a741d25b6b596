"""Located import messages: every line of input that is not imported says why."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Level(Enum):
    """``info``: understood, nothing to import (read-only, pasted output); ``warning``: not imported."""

    INFO = "info"
    WARNING = "warning"


@dataclass(frozen=True)
class Note:
    file: str
    line: int
    level: Level
    text: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.level.value}: {self.text}"


class Notes(list[Note]):
    """A message list with the two helpers every stage uses."""

    def info(self, file: str, line: int, text: str) -> None:
        self.append(Note(file, line, Level.INFO, text))

    def warn(self, file: str, line: int, text: str) -> None:
        self.append(Note(file, line, Level.WARNING, text))

    @property
    def warnings(self) -> list[Note]:
        return [n for n in self if n.level is Level.WARNING]
