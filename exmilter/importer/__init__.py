"""Import Exchange Management Shell runbooks and ``Format-List`` dumps as exmilter configuration.

The pipeline is sans-I/O: :func:`import_exchange` takes ``(name, text)`` pairs and returns
the YAML text plus located notes. Stages: :mod:`.transcript` (prompts, pasted output,
object dumps) → :mod:`.lexer` and :mod:`.parser` (tokens, statements of :mod:`.syntax`) →
:mod:`.apply` (a fresh Exchange 2019 server, one command at a time: values by
:mod:`.evaluator`, changes by :mod:`.cmdlets` and :mod:`.dumps`) → :mod:`.writer`, and the
written file is loaded once more for the loader's warnings (:class:`Finding`: open
relays…). Every stage is bounded (:mod:`exmilter.limits`, the whole input by
:mod:`.budget`); :mod:`.chars` sorts the characters no stage may pass on. :mod:`.files` is
the command around it: files in, messages and a file out.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from exmilter import config
from exmilter.config import ConfigError, Problem
from exmilter.importer.apply import Applier
from exmilter.importer.budget import Budget, Stopped
from exmilter.importer.chars import printable
from exmilter.importer.notes import Level, Note, Notes
from exmilter.importer.parser import parse
from exmilter.importer.state import ASSUMED_DOMAIN, Domain, State
from exmilter.importer.syntax import BlockX, Call, Lit, Statement
from exmilter.importer.transcript import Dump, Line, split
from exmilter.importer.writer import render_lines
from exmilter.model import AcceptedDomainType

__all__ = ["Finding", "Level", "Note", "Result", "import_exchange"]

_SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}")
_RC_CMDLETS = frozenset(
    {"new-receiveconnector", "set-receiveconnector", "remove-receiveconnector", "get-receiveconnector"}
)
#: Origins that name no command of the input.
_NOT_A_COMMAND = frozenset({"created by Exchange setup", ASSUMED_DOMAIN})


@dataclass(frozen=True)
class Finding:
    """A warning the loader gives about the written file (an open relay…), with the commands behind its line."""

    problem: Problem
    origins: tuple[str, ...] = ()

    def __str__(self) -> str:
        return printable(str(self.problem) + (f" (from {'; '.join(self.origins)})" if self.origins else ""))


@dataclass(frozen=True)
class Result:
    """What an import gives: the YAML (empty when nothing may be written) and everything to report.

    ``stopped``: a limit on the whole input ended the import (the note says where).
    ``failure``: the written configuration does not load, a bug of the importer's.
    """

    yaml: str
    notes: list[Note]
    server: str
    findings: list[Finding] = field(default_factory=list)
    stopped: Note | None = None
    failure: list[Problem] = field(default_factory=list)

    @property
    def warnings(self) -> list[Note]:
        return [n for n in self.notes if n.level is Level.WARNING]


def _calls(statements: Iterable[Statement]) -> Iterable[Call]:
    for st in statements:
        for stage in st.stages:
            if isinstance(stage, Call):
                yield stage
                for a in stage.args:
                    if isinstance(a.value, BlockX):
                        yield from _calls(a.value.body)


def _server_in_input(items: Sequence[Statement | Dump]) -> tuple[str | None, str | None]:
    """The first server the input names (``-Server``, ``SERVER\\Name``, a dump's Server) and its FQDN."""
    name: str | None = None
    fqdn: str | None = None
    for item in items:
        if isinstance(item, Dump):
            ident = item.get("Identity") or ""
            srv = item.get("Server") or (ident.rpartition("\\")[0] if "\\" in ident else None)
            if srv and name is None:
                name = srv.strip()
            conn = (item.get("Name") or "").lower()
            if item.get("Fqdn") and srv and conn == f"default frontend {srv}".lower() and fqdn is None:
                fqdn = item.get("Fqdn")
            continue
        for call in _calls([item]):
            for a in call.args:
                if name is not None:
                    break
                if not isinstance(a.value, Lit):
                    continue
                if a.name and a.name.lower() == "server" and call.name.lower() != "send-mailmessage":
                    name = a.value.text
                elif (
                    call.name.lower() in _RC_CMDLETS
                    and (a.name is None or a.name.lower() == "identity")
                    and "\\" in a.value.text
                ):
                    name = a.value.text.split("\\", 1)[0]
    return name, fqdn


def import_exchange(sources: Sequence[tuple[str, str]], server: str | None = None, output: str = "<output>") -> Result:
    """Apply every source, in order, to a fresh Exchange 2019 server; return YAML and notes.

    ``output`` names the written file in the loader's warnings (:attr:`Result.findings`).
    """
    notes = Notes()
    sources = [(printable(file), text) for file, text in sources]
    budget = Budget()
    try:
        items = _read(sources, notes, budget)
        applier = _apply(items, sources, server, notes, budget)
    except Stopped as e:
        notes.warn(e.file, e.line, e.message)
        stop = notes[-1]
        return Result("", _ordered(notes, sources), server or "", stopped=stop)
    ordered = _ordered(notes, sources)
    return _written(applier.state, ordered, sources, output)


def _read(sources: Sequence[tuple[str, str]], notes: Notes, budget: Budget) -> list[Statement | Dump]:
    """Statements and object dumps of every source, in order, within the whole-input limits."""
    items: list[Statement | Dump] = []
    for file, text in sources:
        budget.file(file, text)
        for document in split(file, text, notes, budget):
            pending: list[Line] = []
            for part in document:
                if isinstance(part, Line):
                    pending.append(part)
                    continue
                items += parse(pending, notes, budget)
                pending = []
                items.append(part)
            items += parse(pending, notes, budget)
    return items


def _valid_fqdn(text: str) -> bool:
    try:
        config.parse_fqdn(text)
    except ValueError:
        return False
    return True


def _apply(
    items: list[Statement | Dump], sources: Sequence[tuple[str, str]], server: str | None, notes: Notes, budget: Budget
) -> Applier:
    found, found_fqdn = _server_in_input(items)
    first = sources[0][0] if sources else "<stdin>"
    name, fqdn = (server or found or "").partition(".")[0], None
    if server and "." in server:
        fqdn = server
    elif found_fqdn and (not server or server.lower() == (found or "").lower()):
        fqdn = found_fqdn
    if not name:
        name = "EXCH01"
        notes.warn(first, 1, "the input names no server: using EXCH01 (pass --server NAME or NAME.dns.domain)")
    elif server and found and found.lower() != name.lower():
        notes.warn(
            first, 1, f"the input is for server {found}, --server says {name}: commands for {found} are not imported"
        )
    if not _SERVER_NAME.fullmatch(name):
        notes.warn(first, 1, f"{name!r} is not a server name: using EXCH01")
        name = "EXCH01"
    if fqdn is not None and not _valid_fqdn(fqdn):
        notes.warn(first, 1, f"{fqdn!r} is not an FQDN: not used for server.fqdn")
        fqdn = None
    if fqdn is None:
        notes.warn(
            first,
            1,
            f"the server's FQDN is not in the input: server.fqdn is a placeholder "
            f"({name.lower()}.invalid); pass --server {name}.your.domain",
        )
    state = State.fresh(name, (fqdn or f"{name}.invalid").lower(), fqdn is not None)
    if fqdn and fqdn.count(".") >= 2:
        forest = fqdn.lower().split(".", 1)[1]
        authoritative = AcceptedDomainType.Authoritative.value
        state.domains.append(
            Domain({"name": forest, "domain_name": forest, "domain_type": authoritative}, [ASSUMED_DOMAIN])
        )
        notes.info(
            first,
            1,
            f"accepted domain {forest} assumed: Exchange setup creates one for the forest's "
            "domain (a Get-AcceptedDomain | Format-List dump or Remove-AcceptedDomain overrides it)",
        )
    applier = Applier(state, notes, budget)
    for item in items:
        if isinstance(item, Dump):
            applier.dump(item)
        else:
            applier.statement(item)
    return applier


def _ordered(notes: Notes, sources: Sequence[tuple[str, str]]) -> list[Note]:
    order = {file: i for i, (file, _) in enumerate(sources)}
    return sorted(notes, key=lambda n: (order.get(n.file, -1), n.line))


def _written(state: State, notes: list[Note], sources: Sequence[tuple[str, str]], output: str) -> Result:
    """The file: a header (what was not imported, what the loader warns about), then the model.

    The loader reads the model first, so its warnings can be listed in the header; they
    are then shifted by the header's length, which each takes one line of.
    """
    body, origins = render_lines(state)
    text = "\n".join(body) + "\n"
    try:
        loaded = config.loads(text, output)
    except ConfigError as e:  # never the admin's input: every command was checked
        return Result("", notes, state.server, failure=e.problems)
    header = [
        f"exmilter configuration imported from Exchange ({', '.join(f for f, _ in sources) or '<stdin>'})",
        "by exmilter import-exchange. Check it with: exmilter check -c THIS_FILE",
    ]
    warnings = [n for n in notes if n.level is Level.WARNING]
    if warnings:
        header += ["", "Not imported (see each line):"] + [f"  {n}" for n in warnings]
    if loaded.warnings:
        header += ["", "Warnings about this configuration (exmilter check gives them too):"]
        header += [""] * len(loaded.warnings)  # filled in below, once the header's length is known
    header.append("")
    shift = len(header)
    findings = []
    for w in loaded.warnings:
        at = w.line - 1
        behind = origins[at] if 0 <= at < len(origins) else ()
        moved = dataclasses.replace(w, line=w.line + shift)
        findings.append(Finding(moved, tuple(o for o in dict.fromkeys(behind) if o not in _NOT_A_COMMAND)))
    if findings:
        first = len(header) - 1 - len(findings)
        for i, f in enumerate(findings):
            p = f.problem
            header[first + i] = f"  line {p.line}: " + str(f).removeprefix(printable(f"{p.file}:{p.line}:{p.col}: "))
    yaml = "\n".join([f"# {printable(h)}" if h else "#" for h in header] + body) + "\n"
    return Result(yaml, notes, state.server, findings)
