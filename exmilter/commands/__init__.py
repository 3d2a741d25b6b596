"""Subcommands of the exmilter CLI, one module each."""
