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
from exmilter.logs.journal import ERR, WARNING, journal_attached, prefixed

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
    journal = journal_attached()  # under systemd (ExecReload=): errors as errors in the journal

    def report(line: object, priority: int) -> None:
        print(prefixed(str(line), priority, journal), file=sys.stderr)

    try:
        loaded = load(path)
    except ConfigError as e:
        for p in e.problems:
            report(p, WARNING if p.warning else ERR)
        errors = sum(1 for p in e.problems if not p.warning)
        report(f"{path}: {errors} error(s); configuration refused", ERR)
        return None
    relays = [w for w in loaded.warnings if w.kind == OPEN_RELAY]
    for w in loaded.warnings:
        if w.kind != OPEN_RELAY:
            report(w, WARNING)
    for w in relays:
        report(w, WARNING)
    if relays:
        report(
            f"{path}: OPEN RELAY: {len(relays)} connector(s) above relay mail to any domain for clients that "
            "did not log in; Exchange accepts this and so does exmilter (check --strict refuses it)",
            WARNING,
        )
    if strict and loaded.warnings:
        report(f"{path}: {len(loaded.warnings)} warning(s) and --strict; configuration refused", ERR)
        return None
    return loaded
