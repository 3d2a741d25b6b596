"""``exmilter diff A B``: two configurations (or two imported Exchange servers) compared connector by connector."""

from __future__ import annotations

import argparse
import sys

from exmilter.commands._common import EXIT_REFUSED
from exmilter.config import ConfigError, loads
from exmilter.importer import import_exchange
from exmilter.importer.files import Unreadable, read_input
from exmilter.model import Organization
from exmilter.pooldiff import compare

#: Exit status when the two differ (as diff(1)); 0 when they are the same for a pool.
EXIT_DIFFERENT = 1
#: File names read as exmilter configurations; anything else is an Exchange runbook or transcript.
CONFIG_SUFFIXES = (".yaml", ".yml")

EPILOG = f"""\
exit status:
  0  the two are the same pool: every receive connector and accepted domain matches
  {EXIT_DIFFERENT}  differences (one line each, on stdout)
  {EXIT_REFUSED}  a file could not be read, imported or loaded (located problems on stderr)

Per node by design, never a difference: the server's name (connectors pair by name with it
taken out: "Default Frontend EXA" ~ "Default Frontend EXB"), a connector FQDN that is its
server's own, and an exact binding on one of the server's own addresses."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diff",
        help="compare two configurations or two Exchange runbooks connector by connector",
        description="Compare two servers of a pool in Exchange's terms: receive connectors that exist on one "
        "only, and per connector the Bindings, RemoteIPRanges, ADPermission entries and every other "
        "Set-ReceiveConnector parameter that differs; accepted domains too. A FILE ending in .yaml/.yml is an "
        "exmilter configuration; any other FILE is an Exchange Management Shell runbook or Format-List "
        "transcript, imported as import-exchange does.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("a", metavar="A", help="the first configuration or runbook")
    p.add_argument("b", metavar="B", help="the second configuration or runbook")
    p.set_defaults(func=run)


def organization(path: str) -> Organization | None:
    """The configuration at ``path`` (imported first when it is a runbook); None, reported, when it cannot be."""
    try:
        name, text = read_input(path)
    except Unreadable as e:
        print(e, file=sys.stderr)
        return None
    if not path.endswith(CONFIG_SUFFIXES):
        result = import_exchange([(name, text)], output=f"{path} (imported)")
        if result.stopped is not None or result.failure or not result.yaml:
            for note in result.notes:
                print(note, file=sys.stderr)
            print(f"{path}: the runbook could not be imported", file=sys.stderr)
            return None
        text = result.yaml
        name = f"{path} (imported)"
    try:
        return loads(text, name).organization
    except ConfigError as e:
        for p in e.problems:
            print(p, file=sys.stderr)
        print(f"{path}: configuration refused", file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    a = organization(args.a)
    b = organization(args.b)
    if a is None or b is None:
        return EXIT_REFUSED
    differences = compare(a, b)
    for d in differences:
        print(d)
    print(
        f"A = {args.a} ({a.server.name}), B = {args.b} ({b.server.name}): "
        + (f"{len(differences)} difference(s)" if differences else "the same receive connectors and domains"),
        file=sys.stderr,
    )
    return EXIT_DIFFERENT if differences else 0
