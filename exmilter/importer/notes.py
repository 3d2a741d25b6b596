"""Located import messages: every line of input that is not imported says why."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from exmilter import limits
from exmilter.importer.chars import printable


def _shown(text: str) -> str:
    text = printable(text)
    most = limits.IMPORT_MAX_NOTE_CHARS
    return text if len(text) <= most else text[:most] + " …"


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
    """A message list with the two helpers every stage uses.

    Messages quote the input; they are kept on one line of printable characters (control
    and invisible characters escaped), since they are printed and copied into the YAML.
    """

    def info(self, file: str, line: int, text: str) -> None:
        self.append(Note(printable(file), line, Level.INFO, _shown(text)))

    def warn(self, file: str, line: int, text: str) -> None:
        self.append(Note(printable(file), line, Level.WARNING, _shown(text)))

    @property
    def warnings(self) -> list[Note]:
        return [n for n in self if n.level is Level.WARNING]
