"""Helpers shared by subcommands: the config option and located-error reporting."""

from __future__ import annotations

import argparse
import sys

from exmilter.config import DEFAULT_PATH, ConfigError, Loaded, load


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", default=DEFAULT_PATH, metavar="FILE", help=f"configuration file (default: {DEFAULT_PATH})"
    )


def load_or_report(path: str) -> Loaded | None:
    """Load the file; on failure print every located problem to stderr and return None."""
    try:
        loaded = load(path)
    except ConfigError as e:
        for p in e.problems:
            print(p, file=sys.stderr)
        errors = sum(1 for p in e.problems if not p.warning)
        print(f"{path}: {errors} error(s); configuration refused", file=sys.stderr)
        return None
    for w in loaded.warnings:
        print(w, file=sys.stderr)
    return loaded
