"""What one import may ask of exmilter: every pass is bounded in time and memory.

A limit on one line, statement or value refuses just that (a located warning, like any
command Exchange would refuse). A limit on the whole input stops the import: nothing is
written, since the part not read could have taken back what the first part granted.
docs/import-exchange.md ("Limits") lists them for admins.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Characters of all input files together (a ``Get-ADPermission | Format-List`` of 100
#: connectors is about 3 MB). Whole input: the import stops.
MAX_INPUT_CHARS = 16_000_000
#: Lines of all input files together (that dump has about 60,000). Whole input: the
#: import stops.
MAX_LINES = 1_000_000
#: PowerShell tokens (words, strings, operators…) of all input files together; a runbook
#: of 10,000 commands has about 200,000. Reading costs about 15 µs and 150 bytes a token.
#: Whole input: the import stops.
MAX_TOKENS = 1_000_000
#: Characters of one line; 1,300 ``RemoteIPRanges`` on one line take under 40,000. The
#: line is not read (its statement or ``Format-List`` object is refused).
MAX_LINE_CHARS = 65_536
#: Brackets ``(…)``, ``@(…)``, ``{…}``, ``@{…}`` open at once; runbooks use 3 or 4. The
#: statement is refused. (``$(…)`` is kept as text, never nested into.)
MAX_NESTING = 32
#: Items of one value once variables are expanded (``$a = $a,$a`` doubles); Exchange
#: refuses more than about 1,200 ``RemoteIPRanges``. The value is unknown (refused where used).
MAX_VALUE_ITEMS = 5_000
#: Items of one multi-valued property of a connector (``RemoteIPRanges``, ``Bindings``…)
#: after ``@{Add=…}``: Exchange fails at about 1,200–1,300 range entries (spec §6 #13). The
#: command is refused, as Exchange would fail it.
MAX_PROPERTY_ITEMS = 1_300
#: Characters of one value, all its items together, once variables are expanded
#: (``"$s$s"`` doubles).
MAX_VALUE_CHARS = 100_000
#: Characters of one message; a message quotes the input (a line may be 65,536), the rest
#: is cut.
MAX_NOTE_CHARS = 1_000
#: Statements and ``Format-List`` objects run, a script block's counted once per object
#: piped into it (``Get-ReceiveConnector | % { … }`` nested). Whole input: the import stops.
MAX_COMMANDS = 10_000
#: Commands that change the model: each is checked by loading the whole model, as
#: ``exmilter check`` would (about 3 ms each on a small model, most of it the loader).
#: A permission dump of 20 connectors is about 600. Whole input: the import stops.
MAX_CHECKS = 5_000
#: Characters of the configurations checked, summed over those checks (about 3 µs a
#: character): bounds many commands on a large model. Whole input: the import stops.
MAX_CHECKED_CHARS = 10_000_000


class Stopped(Exception):
    """A limit on the whole input was reached at ``file:line``: the import ends, nothing is written."""

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}")
        self.file = file
        self.line = line
        self.message = message


@dataclass
class Budget:
    """What is left of the whole-input limits while one import reads its files.

    Statements and objects are counted as they are read: each runs at least once, so
    more than :data:`MAX_COMMANDS` stops the import before they are all held in memory.
    """

    max_tokens: int = field(default_factory=lambda: MAX_TOKENS)
    tokens: int = -1  # left; starts at max_tokens
    max_items: int = field(default_factory=lambda: MAX_COMMANDS)
    items: int = 0  # statements and Format-List objects read

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.max_tokens

    def item(self, file: str, line: int) -> None:
        self.items += 1
        if self.items > self.max_items:
            raise Stopped(file, line, f"more than {self.max_items:,} statements and Format-List objects: the input "
                          "is too large to import in one run")
