"""exmilter's own bounds on input and work, named in one place; Exchange's defaults are in defaults.py."""

from __future__ import annotations

# --- import-exchange (exmilter.importer) --------------------------------------------------
# Every pass of one import is bounded in time and memory. A limit on one line, statement or
# value refuses just that (a located warning, like any command Exchange would refuse). A
# limit on the whole input stops the import: nothing is written, since the part not read
# could have taken back what the first part granted. docs/import-exchange.md ("Limits")
# lists them for admins.

#: Characters of all input files together (a ``Get-ADPermission | Format-List`` of 100
#: connectors is about 3 MB). Whole input: the import stops.
IMPORT_MAX_INPUT_CHARS = 16_000_000
#: Bytes read of one input file: UTF-8 takes at most 4 bytes a character (and a byte order
#: mark), so a file with more holds more than :data:`IMPORT_MAX_INPUT_CHARS` characters and
#: is refused without being read whole.
IMPORT_MAX_INPUT_BYTES = 4 * IMPORT_MAX_INPUT_CHARS + 4
#: Lines of all input files together (that dump has about 60,000). Whole input: the import
#: stops.
IMPORT_MAX_LINES = 1_000_000
#: PowerShell tokens (words, strings, operators…) of all input files together; a runbook of
#: 10,000 commands has about 200,000. Reading costs about 15 µs and 150 bytes a token.
#: Whole input: the import stops.
IMPORT_MAX_TOKENS = 1_000_000
#: Characters of one line; 1,300 ``RemoteIPRanges`` on one line take under 40,000. The line
#: is not read (its statement or ``Format-List`` object is refused).
IMPORT_MAX_LINE_CHARS = 65_536
#: Brackets ``(…)``, ``@(…)``, ``{…}``, ``@{…}`` open at once; runbooks use 3 or 4. The
#: statement is refused. (``$(…)`` is kept as text, never nested into.)
IMPORT_MAX_NESTING = 32
#: Items of one value once variables are expanded (``$a = $a,$a`` doubles); Exchange refuses
#: more than about 1,200 ``RemoteIPRanges``. The value is unknown (refused where used).
IMPORT_MAX_VALUE_ITEMS = 5_000
#: Characters of one value, all its items together, once variables are expanded
#: (``"$s$s"`` doubles). The value is unknown (refused where used).
IMPORT_MAX_VALUE_CHARS = 100_000
#: Items of one multi-valued property of a connector (``RemoteIPRanges``, ``Bindings``…)
#: after ``@{Add=…}``: Exchange fails at about 1,200–1,300 range entries (spec §6 #13). The
#: command is refused, as Exchange would fail it.
IMPORT_MAX_PROPERTY_ITEMS = 1_300
#: Characters of one message; a message quotes the input (a line may be 65,536), the rest
#: is cut.
IMPORT_MAX_NOTE_CHARS = 1_000
#: Commands named in the comment above an entry of the written file; the rest are counted.
IMPORT_MAX_ORIGINS_SHOWN = 20
#: Statements and ``Format-List`` objects, counted once as they are read and once per run
#: (a script block's once per object piped into it: ``Get-ReceiveConnector | % { … }``
#: nested). Whole input: the import stops.
IMPORT_MAX_COMMANDS = 10_000
#: Commands that change the model: each is checked by loading the whole model, as
#: ``exmilter check`` would (about 3 ms each on a small model, most of it the loader). A
#: permission dump of 20 connectors is about 600. Whole input: the import stops.
IMPORT_MAX_CHECKS = 5_000
#: Characters of the configurations checked, summed over those checks (about 3 µs a
#: character): bounds many commands on a large model. Whole input: the import stops.
IMPORT_MAX_CHECKED_CHARS = 10_000_000
