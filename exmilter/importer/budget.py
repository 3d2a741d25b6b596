"""What is left of the whole-input limits of one import; :class:`Stopped` when one is reached.

One object counts every whole-input limit of :mod:`exmilter.limits` (its import-exchange
section) for the stages that spend it: reading (characters, lines, tokens, statements),
running (commands) and checking (loader runs, characters loaded). The limits are read
when the budget is made, so one import sees one set of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exmilter import limits

_TOO_LARGE = "the input is too large to import in one run"


class Stopped(Exception):
    """A limit on the whole input was reached at ``file:line``: the import ends, nothing is written."""

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}")
        self.file = file
        self.line = line
        self.message = message


@dataclass
class Budget:
    """The whole-input limits and what has been spent of each."""

    max_chars: int = field(default_factory=lambda: limits.IMPORT_MAX_INPUT_CHARS)
    max_lines: int = field(default_factory=lambda: limits.IMPORT_MAX_LINES)
    max_tokens: int = field(default_factory=lambda: limits.IMPORT_MAX_TOKENS)
    max_commands: int = field(default_factory=lambda: limits.IMPORT_MAX_COMMANDS)
    max_checks: int = field(default_factory=lambda: limits.IMPORT_MAX_CHECKS)
    max_checked_chars: int = field(default_factory=lambda: limits.IMPORT_MAX_CHECKED_CHARS)
    chars: int = 0  # characters of the files read
    lines: int = 0  # lines of the files read
    tokens: int = 0  # PowerShell tokens read
    items: int = 0  # statements and Format-List objects read
    commands: int = 0  # statements and objects run
    checks: int = 0  # commands checked by loading the model
    checked_chars: int = 0  # characters of configuration loaded by those checks

    def file(self, name: str, text: str) -> None:
        """One more input file; sizes are checked before its text is split, so no limit is passed in memory first."""
        self.chars += len(text)
        if self.chars > self.max_chars:
            line = text.count("\n", 0, len(text) - (self.chars - self.max_chars)) + 1
            raise Stopped(name, line, f"more than {self.max_chars:,} characters of input in all: {_TOO_LARGE}")
        in_file = text.count("\n") + text.count("\r") - text.count("\r\n")
        self.lines += in_file
        if self.lines > self.max_lines:
            line = self.max_lines - (self.lines - in_file) + 1
            raise Stopped(name, line, f"more than {self.max_lines:,} lines of input in all: {_TOO_LARGE}")

    def tokens_left(self) -> int:
        return self.max_tokens - self.tokens

    def too_many_tokens(self, file: str, line: int) -> Stopped:
        return Stopped(file, line, f"more than {self.max_tokens:,} PowerShell tokens in all: {_TOO_LARGE}")

    def item(self, file: str, line: int) -> None:
        """One more statement or object read: each runs at least once, so they are counted before all are held."""
        self.items += 1
        if self.items > self.max_commands:
            raise Stopped(
                file, line, f"more than {self.max_commands:,} statements and Format-List objects: {_TOO_LARGE}"
            )

    def command(self, file: str, line: int) -> None:
        """One more statement or object run."""
        self.commands += 1
        if self.commands > self.max_commands:
            raise Stopped(
                file,
                line,
                f"more than {self.max_commands:,} commands run (a script block counts once "
                f"per object piped into it): {_TOO_LARGE}",
            )

    def check(self, file: str, line: int) -> None:
        """One more command checked by loading the whole model."""
        self.checks += 1
        if self.checks > self.max_checks:
            raise Stopped(
                file,
                line,
                f"more than {self.max_checks:,} commands that change the model (each is "
                f"checked on the whole model): {_TOO_LARGE}",
            )

    def checked(self, chars: int, file: str, line: int) -> None:
        """``chars`` more characters of configuration loaded by a check."""
        self.checked_chars += chars
        if self.checked_chars > self.max_checked_chars:
            raise Stopped(
                file,
                line,
                f"checking the commands up to here took more than {self.max_checked_chars:,} "
                "characters of configuration (each command that changes something is checked on the "
                f"whole model): {_TOO_LARGE}",
            )
