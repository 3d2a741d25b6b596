"""``exmilter import-exchange``: Exchange Management Shell runbooks and dumps → exmilter YAML."""

from __future__ import annotations

import argparse

from exmilter import limits
from exmilter.importer import files
from exmilter.importer.files import EXIT_NOT_WRITTEN, EXIT_WRITTEN

EPILOG = f"""\
exit status:
  {EXIT_WRITTEN}  the configuration was written (warnings, if any, on stderr and in its header)
  {EXIT_NOT_WRITTEN}  nothing written: an input file could not be read (missing, not UTF-8/UTF-16
     text, over {limits.IMPORT_MAX_INPUT_CHARS:,} characters), a limit stopped the import, --strict and
     a warning, or the output file could not be written

Every message is located: FILE:LINE: for the input, OUT:LINE:COL: for the written file."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-exchange",
        help="convert Exchange Management Shell commands and Format-List output to a configuration",
        description="Apply New-/Set-/Remove-ReceiveConnector, Add-/Remove-ADPermission, *-AcceptedDomain and "
        "*-SendConnector commands (and Get-ReceiveConnector/Get-SendConnector | Format-List output; credentials "
        "are never imported, a credentials-file reference is written instead) to a freshly installed Exchange 2019 "
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


def run(args: argparse.Namespace) -> int:
    return files.run(args.files, args.output, args.server, args.strict)
