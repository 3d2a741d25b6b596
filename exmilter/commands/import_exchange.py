"""``exmilter import-exchange``: Exchange Management Shell runbooks and dumps → exmilter YAML."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from exmilter.config import ConfigError, loads
from exmilter.importer import import_exchange


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-exchange",
        help="convert Exchange Management Shell commands and Format-List output to a configuration",
        description="Apply New-/Set-/Remove-ReceiveConnector, Add-/Remove-ADPermission and *-AcceptedDomain "
        "commands (and Get-ReceiveConnector | Format-List output) to a freshly installed Exchange 2019 "
        "server, and write the result as an exmilter configuration. Whatever is not imported is reported "
        "as FILE:LINE.",
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
    p.add_argument("--strict", action="store_true", help="anything not imported is an error (exit 2, nothing written)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    sources: list[tuple[str, str]] = []
    for name in args.files or ["-"]:
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            print(f"{name}: {getattr(e, 'strerror', None) or e}", file=sys.stderr)
            return 1
        sources.append(("<stdin>" if name == "-" else name, text))
    result = import_exchange(sources, server=args.server)
    for note in result.notes:
        print(note, file=sys.stderr)
    if args.strict and result.warnings:
        print(f"import-exchange: {len(result.warnings)} problem(s) and --strict: nothing written", file=sys.stderr)
        return 2
    try:
        loads(result.yaml, args.output or "<output>")
    except ConfigError as e:  # a bug in the importer, never the admin's input
        print(f"import-exchange: internal error, the written configuration does not load:\n{e}", file=sys.stderr)
        return 1
    if args.output:
        Path(args.output).write_text(result.yaml, encoding="utf-8")
        print(f"{args.output}: written ({len(result.warnings)} warning(s))", file=sys.stderr)
    else:
        sys.stdout.write(result.yaml)
    return 0
