"""Apply parsed commands, in order, to a model of one freshly installed Exchange 2019 server.

The :class:`Applier` runs statements (assignments, pipelines, ``ForEach-Object`` blocks),
hands each command that changes the model to its handler (:data:`.cmdlets.HANDLERS`) and
each ``Format-List`` object to :mod:`.dumps`. Each change is checked the way Exchange
checks it: the model is written out and loaded with :func:`exmilter.config.loads` (the
loader ``exmilter check`` runs), and a command that introduces a problem is refused at its
own line, leaving the model as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from exmilter import config
from exmilter.config import EXMILTER_ONLY, ConfigError
from exmilter.importer import writer
from exmilter.importer.budget import Budget, Stopped
from exmilter.importer.cmdlets import HANDLERS, cmdlet_kind
from exmilter.importer.cmdlets.command import Command, Elsewhere, find_connector, piped
from exmilter.importer.dumps import import_dump
from exmilter.importer.evaluator import MISSING, Args, Evaluator, Obj, Refused, Unknown
from exmilter.importer.notes import Notes
from exmilter.importer.parameters import COMMON, FOREACH, WHERE, exchange_words, parameter_names
from exmilter.importer.state import State
from exmilter.importer.syntax import BlockX, Call, Raw, Statement, text_of
from exmilter.importer.transcript import Dump

T = TypeVar("T")

#: Parameters a handler's argument may abbreviate, by its positional parameter.
_NAMES = {first: parameter_names(first, handlers=True) for first in ("name", "identity")}
_QUERY_NAMES = parameter_names("identity")


class Applier:
    """One import's run: the model, the variables, and the checks of every change."""

    def __init__(self, state: State, notes: Notes, budget: Budget | None = None) -> None:
        self.state = state
        self.notes = notes
        self.budget = budget or Budget()
        self.evaluator = Evaluator(state.server)
        self.context: str | None = None  # identity of the last Get-ReceiveConnector, for Format-List output
        self._last: tuple[str, set[str]] = ("", set())  # the last model checked and its problems
        self.baseline = self._problems("", 0, counted=False)

    @property
    def env(self) -> dict[str, Any]:
        """The variables the input set so far."""
        return self.evaluator.env

    # -- checking ------------------------------------------------------------------------

    def _problems(self, file: str, line: int, counted: bool = True) -> set[str]:
        """What the loader refuses in the model now; ``counted`` against the budget's checks."""
        if counted:
            self.budget.check(file, line)
        text = writer.render(self.state, comments=False)
        if counted:
            self.budget.checked(len(text), file, line)
        if text == self._last[0]:  # nothing changed since the last check (a command repeated)
            return self._last[1]
        try:
            config.loads(text, "<import>")
        except ConfigError as e:
            found = {exchange_words(f"{p.key}: {p.message}") for p in e.problems if not p.warning}
        else:
            found = set()
        self._last = (text, found)
        return found

    def attempt(self, file: str, line: int, what: str, where: str, action: Callable[[Command], T]) -> T | None:
        """Run ``action`` on the model as one command; undo it and report when Exchange would refuse it."""
        before = self.state.copy()
        try:
            result = action(Command(self.state, self.notes, file, line, where))
        except Refused as e:
            self.state = before
            self.notes.warn(file, line, f"{what}: {e}; not imported")
            return None
        except Stopped:
            raise
        except Exception as e:  # last resort: a bug of the importer's must not lose the other commands
            self.state = before
            self.notes.warn(
                file, line, f"{what}: internal error ({type(e).__name__}: {e}); not imported, please report it"
            )
            return None
        new = self._problems(file, line) - self.baseline
        if new:
            self.state = before
            # Problems that are exmilter's, not Exchange's (exmilter.config.auth.EXMILTER_ONLY), say so.
            who = (
                "exmilter cannot take this"
                if any(m in p for p in new for m in EXMILTER_ONLY)
                else "Exchange refuses this"
            )
            self.notes.warn(file, line, f"{what}: {who}: {'; '.join(sorted(new))}; not imported")
            return None
        for ip, bound_at in self.state.addresses.items():
            if ip not in before.addresses:
                self.notes.info(
                    file,
                    line,
                    f"{ip} is bound here, so it is one of this server's addresses: "
                    f"added to server.addresses ({bound_at})",
                )
        return result

    # -- Format-List objects -------------------------------------------------------------

    def dump(self, d: Dump) -> None:
        self.budget.command(d.file, d.line)
        import_dump(self, d)

    # -- statements ----------------------------------------------------------------------

    def statement(self, st: Statement, bound: Obj | None = None) -> None:
        """Run one statement; ``bound`` is ``$_`` inside a script block."""
        self.budget.command(st.file, st.line)
        if st.broken:
            return
        if not self._has_effect(st):
            self._without_effect(st, bound)
            return
        objs = self._source(st, bound)
        if objs is None:
            return
        for stage in st.stages[1:]:
            if not isinstance(stage, Call):
                self.notes.warn(st.file, st.line, f"'{text_of(stage)}' in a pipeline is not understood: not imported")
                return
            low = stage.name.lower()
            if low in FOREACH:
                block = next((a.value for a in stage.args if isinstance(a.value, BlockX)), None)
                if block is None:
                    self.notes.warn(st.file, st.line, f"{stage.name} without a script block: not imported")
                    return
                for o in objs:
                    for sub in block.body:
                        self.statement(sub, bound=o)
                objs = []
            elif low in WHERE:
                self.notes.warn(
                    st.file,
                    st.line,
                    "a Where-Object filter cannot be evaluated offline: the rest of "
                    "this pipeline is not imported; name the objects instead",
                )
                return
            elif cmdlet_kind(stage.name) == "read":
                continue
            else:
                results: list[Obj] = []
                for o in objs:
                    results += self._call(stage, st, o, bound) or []
                if not objs:
                    self.notes.warn(st.file, st.line, f"{stage.name}: nothing was piped to it: not imported")
                objs = results
        if st.assign:
            self.env[st.assign] = objs

    def _has_effect(self, st: Statement) -> bool:
        for s in st.stages:
            if isinstance(s, Call):
                if cmdlet_kind(s.name) != "read":
                    return True
                if s.name.lower() in FOREACH:
                    blocks = [a.value for a in s.args if isinstance(a.value, BlockX)]
                    if any(self._has_effect(b) for blk in blocks for b in blk.body):
                        return True
        return False

    def _without_effect(self, st: Statement, bound: Obj | None) -> None:
        """An assignment, a read-only pipeline, or what is not a command."""
        calls = [s for s in st.stages if isinstance(s, Call)]
        if st.assign:
            value = self._capture(st, bound)
            self.env[st.assign] = value
            if isinstance(value, Unknown) and value.limit and not value.root:  # where it was crossed
                self.notes.warn(st.file, st.line, f"${st.assign}: {value.why}: it holds no value from here on")
        elif calls:
            names = " | ".join(c.name for c in calls)
            self.notes.info(st.file, st.line, f"{names}: read-only, nothing to import")
            if calls[0].name.lower() == "get-receiveconnector":
                ident = self.evaluator.arg_value(calls[0], "identity", 0, bound)
                self.context = ident if isinstance(ident, str) else None
        elif not isinstance(st.stages[0], Raw) or st.stages[0].text.strip():
            self.notes.warn(st.file, st.line, f"'{text_of(st)}' is not a command: not imported")

    def _capture(self, st: Statement, bound: Obj | None) -> Any:
        """``$x = …`` without side effects: a literal, the connectors of a query, or unknown."""
        first = st.stages[0]
        if isinstance(first, Call):
            if first.name.lower() == "get-receiveconnector" and len(st.stages) == 1:
                return self._query(first, st, bound) or []
            return Unknown(f"the result of {first.name} at line {st.line}, known only on the server")
        return self.evaluator.evaluate(first, bound)

    def _source(self, st: Statement, bound: Obj | None) -> list[Obj] | None:
        """The objects the first stage of a pipeline passes on; None (reported) when they are not known."""
        first = st.stages[0]
        if isinstance(first, Call):
            low = first.name.lower()
            if low == "get-receiveconnector" and len(st.stages) > 1:
                return self._query(first, st, bound)
            if low == "get-accepteddomain" and len(st.stages) > 1:
                return self._domains(first, st, bound)
            return self._call(first, st, None, bound) or []
        value = self.evaluator.evaluate(first, bound)
        if isinstance(value, list) and all(isinstance(v, Obj) for v in value):
            return value
        self.notes.warn(
            st.file,
            st.line,
            f"{text_of(first)} does not hold receive connectors known offline "
            f"({value.why if isinstance(value, Unknown) else 'a value'}): the pipeline is not imported",
        )
        return None

    def _selection(self, call: Call, st: Statement, bound: Obj | None, *keys: str) -> Args | None:
        """The arguments of a ``Get-`` cmdlet; None (reported) unless each of ``keys`` given is one name known offline.

        Exchange fails the cmdlet otherwise, so it selects nothing (never everything).
        """
        try:
            args = self.evaluator.bind(call, ("identity",), _QUERY_NAMES, None, bound)
        except Refused as e:
            self.notes.warn(st.file, call.line, f"{call.name}: {e}: nothing selected")
            return None
        for key in keys:
            given = args.get(key)
            why = "" if given is None else _not_a_name(given.value)
            if why:
                self.notes.warn(st.file, call.line, f"{call.name} -{key.capitalize()}: {why}: nothing selected")
                return None
        return args

    def _domains(self, call: Call, st: Statement, bound: Obj | None) -> list[Obj] | None:
        """The accepted domains ``Get-AcceptedDomain`` selects; None (reported) when it names none."""
        args = self._selection(call, st, bound, "identity")
        if args is None:
            return None
        if "identity" not in args:
            return [Obj("domain", str(d.spec["name"])) for d in self.state.domains]
        ident = str(args["identity"].value)
        d = self.state.domain(ident)
        if d is None:
            self.notes.warn(st.file, st.line, f"no accepted domain '{ident}': the pipeline is not imported")
            return None
        return [Obj("domain", str(d.spec["name"]))]

    def _query(self, call: Call, st: Statement, bound: Obj | None) -> list[Obj] | None:
        """The connectors ``Get-ReceiveConnector`` selects; None (reported) when it names none."""
        args = self._selection(call, st, bound, "identity", "server")
        if args is None:
            return None
        server = args.pop("server", None)
        if server is not None and str(server.value).lower() != self.state.server.lower():
            self.notes.warn(
                st.file,
                call.line,
                f"Get-ReceiveConnector -Server {server.value}: exmilter stands in "
                f"for {self.state.server} only; nothing selected",
            )
            return None
        ident = args.pop("identity", None)
        if ident is None:
            return [piped(self.state, c) for c in self.state.connectors]
        try:
            return [piped(self.state, find_connector(self.state, ident.value))]
        except Elsewhere as e:
            self.notes.warn(st.file, call.line, f"{e}: not imported")
        except Refused as e:
            self.notes.warn(st.file, call.line, str(e))
        return None

    def _call(self, call: Call, st: Statement, obj: Obj | None, bound: Obj | None) -> list[Obj] | None:
        """Hand one command to its handler; ``obj`` is what was piped into it."""
        kind = cmdlet_kind(call.name)
        if kind == "read":
            self.notes.info(st.file, call.line, f"{call.name}: read-only, nothing to import")
            return []
        if kind == "other":
            self.notes.warn(
                st.file,
                call.line,
                f"{call.name} is not imported: exmilter models receive connectors, "
                "their permissions, accepted domains and send connectors only",
            )
            return []
        first = "name" if call.name.lower().startswith("new-") else "identity"
        try:
            args = self.evaluator.bind(call, (first,), _NAMES[first], obj, bound)
        except Refused as e:
            self.notes.warn(st.file, call.line, f"{call.name}: {e}; not imported")
            return None
        if "whatif" in args:
            self.notes.info(st.file, call.line, f"{call.name} -WhatIf changes nothing: skipped")
            return []
        for key in [k for k in args if k in COMMON]:
            del args[key]
        handler = HANDLERS[call.name.lower()]
        where = f"{call.name} at {st.file}:{call.line}"
        return self.attempt(st.file, call.line, call.name, where, lambda cmd: handler(cmd, args))


def _not_a_name(value: Any) -> str:
    """Why ``value`` does not name one object, or ``""`` when it does."""
    if value is MISSING:
        return "no value given"
    if isinstance(value, Unknown):
        return value.why
    if value is None:
        return "$null is not a name"
    if isinstance(value, list | dict):
        return "a list or table, not one name"
    return ""
