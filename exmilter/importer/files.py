"""The import as a command: input files read and decoded, messages printed, the output written whole.

Everything around the sans-I/O :func:`exmilter.importer.import_exchange` that touches files
and streams; ``exmilter import-exchange`` (:mod:`exmilter.commands.import_exchange`) only
parses the command line and calls :func:`run`.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from exmilter import limits
from exmilter.importer import Result, import_exchange
from exmilter.importer.chars import printable

#: The configuration was written (warnings, if any, were printed).
EXIT_WRITTEN = 0
#: Nothing was written: unreadable input, a limit that stopped the import, ``--strict``
#: and a warning, an output that cannot be written (or, a bug, a configuration that would
#: not load). Also what argparse returns for a bad command line.
EXIT_NOT_WRITTEN = 2

_NEWLINE = re.compile(rb"\r\n|\r|\n")


class Unreadable(Exception):
    """An input file that is not text exmilter reads; the message is located."""


def _line_of(data: bytes, offset: int) -> int:
    return len(_NEWLINE.split(data[:offset]))


def decode(label: str, data: bytes) -> str:
    """UTF-8 (a BOM allowed), or UTF-16 with its BOM (what Windows PowerShell's ``>`` writes)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as e:
            raise Unreadable(f"{label}:1: error: not UTF-16 text after its byte order mark: {e.reason}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        bad = data[e.start : e.end].hex(" ").upper()
        raise Unreadable(
            f"{label}:{_line_of(data, e.start)}: error: not UTF-8 text (bytes {bad}): save it as UTF-8 or UTF-16"
        ) from None


def read_input(name: str) -> tuple[str, str]:
    """(label, text) of one FILE argument; ``-`` is stdin. Never more than the limit is read."""
    label = "<stdin>" if name == "-" else printable(name)
    max_chars, max_bytes = limits.IMPORT_MAX_INPUT_CHARS, limits.IMPORT_MAX_INPUT_BYTES
    try:
        if name == "-":
            stream = getattr(sys.stdin, "buffer", None)
            if stream is None:  # a text-only stdin (tests): already decoded
                return label, sys.stdin.read(max_chars + 1)
            data = stream.read(max_bytes)
        else:
            with open(name, "rb") as f:
                data = f.read(max_bytes)
    except OSError as e:
        raise Unreadable(f"{label}:1: error: cannot read it: {e.strerror or e}") from None
    except UnicodeDecodeError as e:  # a text stdin that is not UTF-8
        raise Unreadable(f"{label}:1: error: not UTF-8 text: {e.reason}") from None
    if len(data) >= max_bytes:
        raise Unreadable(
            f"{label}:1: error: more than {max_chars:,} characters: too large to import in one run"
        ) from None
    return label, decode(label, data)


def run(files: Sequence[str], output: str | None, server: str | None, strict: bool) -> int:
    """Import ``files`` (stdin when none) and write ``output`` (stdout when None); the exit status."""
    sources: list[tuple[str, str]] = []
    for name in files or ["-"]:
        try:
            sources.append(read_input(name))
        except Unreadable as e:
            print(e, file=sys.stderr)
            print("import-exchange: an input could not be read: nothing written", file=sys.stderr)
            return EXIT_NOT_WRITTEN
    result = import_exchange(sources, server=server, output=output or "<stdout>")
    for note in result.notes:
        print(note, file=sys.stderr)
    for finding in result.findings:
        print(finding, file=sys.stderr)
    refused = _refusal(result, strict)
    if refused:
        print(f"import-exchange: {refused}: nothing written", file=sys.stderr)
        return EXIT_NOT_WRITTEN
    if not output:
        sys.stdout.write(result.yaml)
        return EXIT_WRITTEN
    try:
        write_whole(Path(output), result.yaml)
    except OSError as e:
        print(f"{output}: cannot write it: {e.strerror or e}", file=sys.stderr)
        print("import-exchange: nothing written", file=sys.stderr)
        return EXIT_NOT_WRITTEN
    print(
        f"{output}: written ({len(result.warnings)} not imported, {len(result.findings)} warning(s) about "
        "the configuration)",
        file=sys.stderr,
    )
    return EXIT_WRITTEN


def _refusal(result: Result, strict: bool) -> str | None:
    """Why nothing may be written, or None."""
    if result.stopped is not None:
        return f"stopped at {result.stopped.file}:{result.stopped.line} by a limit"
    if result.failure:
        for p in result.failure:
            print(p, file=sys.stderr)
        return "internal error, the configuration would not load (please report it)"
    problems = len(result.warnings) + len(result.findings)
    if strict and problems:
        return f"{problems} problem(s) and --strict"
    return None


def write_whole(path: Path, text: str) -> None:
    """Write beside the target and rename: a failure never leaves half a configuration."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
