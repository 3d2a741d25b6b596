"""The command being applied, and the argument helpers every cmdlet handler shares."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exmilter.importer.evaluator import MISSING, Args, Obj, Refused, Unknown
from exmilter.importer.notes import Notes
from exmilter.importer.parameters import COMMON, INERT
from exmilter.importer.state import Connector, State


@dataclass
class Command:
    """The command being applied: the model it changes, where its messages go, and where it is."""

    state: State
    notes: Notes
    file: str
    line: int
    where: str  # as origins name it: "Set-ReceiveConnector at runbook.ps1:3"


Handler = Callable[[Command, Args], list[Obj]]


# --- arguments ----------------------------------------------------------------------------


def text_arg(args: Args, key: str, required: bool = False) -> str:
    """The one text value of ``-key`` (popped), ``""`` when absent."""
    if key not in args:
        if required:
            raise Refused(f"-{key.capitalize()} is required")
        return ""
    value = args.pop(key).value
    if value is MISSING or value is None or isinstance(value, list | dict):
        raise Refused(f"-{key.capitalize()} needs one value")
    if isinstance(value, Unknown):
        raise Refused(f"-{key.capitalize()}: {value.why}")
    return str(value).strip()


_TRUE, _FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})


def switch_arg(args: Args, key: str) -> bool:
    """``-Key``, ``-Key:$true`` or ``-Key:$false`` (popped), False when absent.

    A value that is not ``$true``/``$false``/``1``/``0`` refuses the command, as Exchange
    does; one not known offline too: a ``-Deny`` taken for an allow would grant what it denies.
    """
    if key not in args:
        return False
    value, _, written = args.pop(key)
    if value is MISSING:
        return True
    if isinstance(value, Unknown):
        raise Refused(f"-{written}: {value.why}")
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise Refused(f"-{written} {value}: not $true or $false")


def leftovers(cmd: Command, args: Args) -> None:
    """Report the arguments no handler read: inert ones as info, unknown ones as warnings."""
    for pname, (_, line, written) in args.items():
        if pname in INERT:
            cmd.notes.info(cmd.file, line, f"-{written} has no effect on SMTP sessions through Postfix: not imported")
        elif pname not in COMMON:
            cmd.notes.warn(cmd.file, line, f"-{written} is not a parameter exmilter understands here: not imported")
    args.clear()


class Elsewhere(Refused):
    """The object is on another server than the one exmilter stands in for."""


def find_connector(state: State, ident: Any) -> Connector:
    """The connector ``SERVER\\Name`` or ``Name`` names; :class:`Refused` says why there is none."""
    text = str(ident).strip()
    server, _, name = text.rpartition("\\")
    if server and server.lower() != state.server.lower():
        raise Elsewhere(f"'{text}' is on server {server}; exmilter stands in for {state.server}")
    c = state.connector(name)
    if c is None:
        raise Refused(
            f"no receive connector '{text}' on {state.server}: it is not created in the input (made in "
            "the admin center?) or its creation was refused above"
        )
    return c


def piped(state: State, c: Connector) -> Obj:
    """The connector as an object passed down the pipeline."""
    return Obj("connector", c.name, state.server)
