"""The ``exmilter`` command: one entry point, one module per subcommand.

Each module in :data:`COMMANDS` has ``register(subparsers)``, which adds its subparser
and sets ``func(args) -> int`` (the exit status).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from exmilter import __version__

COMMANDS = (
    "exmilter.commands.check",
    "exmilter.commands.diff",
    "exmilter.commands.explain",
    "exmilter.commands.follow_maillog",
    "exmilter.commands.import_exchange",
    "exmilter.commands.milter",
    "exmilter.commands.policyd",
    "exmilter.commands.render_postfix",
    "exmilter.commands.replay",
    "exmilter.commands.sandbox",
    "exmilter.commands.track",
    "exmilter.commands.verify_postfix",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exmilter",
        description="Exchange receive-connector semantics for Postfix.",
    )
    parser.add_argument("--version", action="version", version=f"exmilter {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
