"""``exmilter import-exchange``: Exchange Management Shell runbooks and dumps → exmilter YAML."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from pathlib import Path

from exmilter.importer import Result, import_exchange
from exmilter.importer.chars import printable
from exmilter.importer.limits import MAX_INPUT_CHARS

#: The configuration was written (warnings, if any, were printed).
EXIT_WRITTEN = 0
#: Nothing was written: unreadable input, a limit that stopped the import, ``--strict``
#: and a warning, an output that cannot be written (or, a bug, a configuration that would
#: not load). Also what argparse returns for a bad command line.
EXIT_NOT_WRITTEN = 2

_NEWLINE = re.compile(rb"\r\n|\r|\n")
#: Bytes read per file: any file with more holds more than MAX_INPUT_CHARS characters.
_MAX_BYTES = 4 * MAX_INPUT_CHARS + 4

EPILOG = f"""\
exit status:
  {EXIT_WRITTEN}  the configuration was written (warnings, if any, on stderr and in its header)
  {EXIT_NOT_WRITTEN}  nothing written: an input file could not be read (missing, not UTF-8/UTF-16
     text, over {MAX_INPUT_CHARS:,} characters), a limit stopped the import, --strict and
     a warning, or the output file could not be written

Every message is located: FILE:LINE: for the input, OUT:LINE:COL: for the written file."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-exchange",
        help="convert Exchange Management Shell commands and Format-List output to a configuration",
        description="Apply New-/Set-/Remove-ReceiveConnector, Add-/Remove-ADPermission and *-AcceptedDomain "
        "commands (and Get-ReceiveConnector | Format-List output) to a freshly installed Exchange 2019 "
        "server, and write the result as an exmilter configuration. Whatever is not imported is reported "
        "as FILE:LINE; what exmilter check warns about in the result (an open relay…) is reported at its "
        "line in the output, with the commands behind it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "files", nargs="*", metavar="FILE", help="runbooks or transcripts, applied in order (default: stdin)"
    )
    p.add_argument("-o", "--output", metavar="OUT.yaml", help="write the configuration here (default: stdout)")
    p.add_argument(
        "--server",
        metavar="NAME",
        help="the Exchange server, when the input does not name it; NAME.dns.domain also sets its FQDN",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="anything not imported, and any warning about the result, is an error (exit 2, nothing written)",
    )
    p.set_defaults(func=run)


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
        bad = data[e.start:e.end].hex(" ").upper()
        raise Unreadable(f"{label}:{_line_of(data, e.start)}: error: not UTF-8 text (bytes {bad}): save it as "
                         "UTF-8 or UTF-16") from None


def read_input(name: str) -> tuple[str, str]:
    """(label, text) of one FILE argument; ``-`` is stdin."""
    label = "<stdin>" if name == "-" else printable(name)
    try:
        if name == "-":
            stream = getattr(sys.stdin, "buffer", None)
            if stream is None:  # a text-only stdin (tests): already decoded
                return label, sys.stdin.read(MAX_INPUT_CHARS + 1)
            data = stream.read(_MAX_BYTES)
        else:
            with open(name, "rb") as f:
                data = f.read(_MAX_BYTES)
    except OSError as e:
        raise Unreadable(f"{label}:1: error: cannot read it: {e.strerror or e}") from None
    except UnicodeDecodeError as e:  # a text stdin that is not UTF-8
        raise Unreadable(f"{label}:1: error: not UTF-8 text: {e.reason}") from None
    if len(data) >= _MAX_BYTES:
        raise Unreadable(f"{label}:1: error: more than {MAX_INPUT_CHARS:,} characters: too large to import in one "
                         "run") from None
    return label, decode(label, data)


def run(args: argparse.Namespace) -> int:
    sources: list[tuple[str, str]] = []
    for name in args.files or ["-"]:
        try:
            sources.append(read_input(name))
        except Unreadable as e:
            print(e, file=sys.stderr)
            print("import-exchange: an input could not be read: nothing written", file=sys.stderr)
            return EXIT_NOT_WRITTEN
    result = import_exchange(sources, server=args.server, output=args.output or "<stdout>")
    for note in result.notes:
        print(note, file=sys.stderr)
    for finding in result.findings:
        print(finding, file=sys.stderr)
    refused = _refusal(result, args.strict)
    if refused:
        print(f"import-exchange: {refused}: nothing written", file=sys.stderr)
        return EXIT_NOT_WRITTEN
    if not args.output:
        sys.stdout.write(result.yaml)
        return EXIT_WRITTEN
    try:
        _write(Path(args.output), result.yaml)
    except OSError as e:
        print(f"{args.output}: cannot write it: {e.strerror or e}", file=sys.stderr)
        print("import-exchange: nothing written", file=sys.stderr)
        return EXIT_NOT_WRITTEN
    print(f"{args.output}: written ({len(result.warnings)} not imported, {len(result.findings)} warning(s) about "
          "the configuration)", file=sys.stderr)
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


def _write(path: Path, text: str) -> None:
    """Write beside the target and rename: a failure never leaves half a configuration."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
