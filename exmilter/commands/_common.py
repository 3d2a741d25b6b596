"""Helpers shared by subcommands: the config option and located-error reporting.

Exit statuses of the commands that load the file (docs/commands.md): 0 loaded, 2 refused
(every problem printed as ``FILE:LINE:COL: KEY: problem``, then one summary line).
:func:`~exmilter.config.load` raises nothing but :class:`~exmilter.config.ConfigError`,
whatever the file holds, so no input ends in a traceback.
"""

from __future__ import annotations

import argparse
import sys

from exmilter.config import DEFAULT_PATH, OPEN_RELAY, ConfigError, Loaded, load

#: Exit status of a command whose configuration (or command line) is refused.
EXIT_REFUSED = 2


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", default=DEFAULT_PATH, metavar="FILE", help=f"configuration file (default: {DEFAULT_PATH})"
    )


def load_or_report(path: str, *, strict: bool = False) -> Loaded | None:
    """Load the file, printing every located problem to stderr; None when it is refused.

    Warnings are printed too, the open-relay ones last and followed by a line saying what
    they mean, so they are not lost among the others. With ``strict`` any warning refuses
    the file (``check --strict``).
    """
    try:
        loaded = load(path)
    except ConfigError as e:
        for p in e.problems:
            print(p, file=sys.stderr)
        errors = sum(1 for p in e.problems if not p.warning)
        print(f"{path}: {errors} error(s); configuration refused", file=sys.stderr)
        return None
    relays = [w for w in loaded.warnings if w.kind == OPEN_RELAY]
    for w in loaded.warnings:
        if w.kind != OPEN_RELAY:
            print(w, file=sys.stderr)
    for w in relays:
        print(w, file=sys.stderr)
    if relays:
        print(
            f"{path}: OPEN RELAY: {len(relays)} connector(s) above relay mail to any domain for clients that "
            "did not log in; Exchange accepts this and so does exmilter (check --strict refuses it)",
            file=sys.stderr,
        )
    if strict and loaded.warnings:
        print(f"{path}: {len(loaded.warnings)} warning(s) and --strict; configuration refused", file=sys.stderr)
        return None
    return loaded
