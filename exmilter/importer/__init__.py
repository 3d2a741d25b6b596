"""Import Exchange Management Shell runbooks and ``Format-List`` dumps as exmilter configuration.

The pipeline is sans-I/O: :func:`import_exchange` takes ``(name, text)`` pairs and returns
the YAML text plus located notes. Stages: :mod:`.transcript` (prompts, pasted output,
object dumps) → :mod:`.pwsh` (tokens, statements) → :mod:`.apply` (a fresh Exchange 2019
server, one command at a time) → :mod:`.writer`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from exmilter.importer.apply import Applier
from exmilter.importer.notes import Level, Note, Notes
from exmilter.importer.pwsh import BlockX, Call, Lit, Statement, parse
from exmilter.importer.state import ASSUMED_DOMAIN, Domain, State
from exmilter.importer.transcript import Dump, Line, split
from exmilter.importer.writer import render

__all__ = ["Level", "Note", "Result", "import_exchange"]

_SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}")
_RC_CMDLETS = frozenset({"new-receiveconnector", "set-receiveconnector", "remove-receiveconnector",
                         "get-receiveconnector"})


@dataclass(frozen=True)
class Result:
    yaml: str
    notes: list[Note]
    server: str

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
                elif (call.name.lower() in _RC_CMDLETS and (a.name is None or a.name.lower() == "identity")
                      and "\\" in a.value.text):
                    name = a.value.text.split("\\", 1)[0]
    return name, fqdn


def import_exchange(sources: Sequence[tuple[str, str]], server: str | None = None) -> Result:
    """Apply every source, in order, to a fresh Exchange 2019 server; return YAML and notes."""
    notes = Notes()
    items: list[Statement | Dump] = []
    for file, text in sources:
        pending: list[Line] = []
        for part in split(file, text, notes):
            if isinstance(part, Line):
                pending.append(part)
                continue
            items += parse(pending, notes)
            pending = []
            items.append(part)
        items += parse(pending, notes)
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
        notes.warn(first, 1, f"the input is for server {found}, --server says {name}: commands for {found} "
                   "are not imported")
    if not _SERVER_NAME.fullmatch(name):
        notes.warn(first, 1, f"{name!r} is not a server name: using EXCH01")
        name = "EXCH01"
    if fqdn is None:
        notes.warn(first, 1, f"the server's FQDN is not in the input: server.fqdn is a placeholder "
                   f"({name.lower()}.invalid); pass --server {name}.your.domain")
    state = State.fresh(name, (fqdn or f"{name}.invalid").lower(), fqdn is not None)
    if fqdn and fqdn.count(".") >= 2:
        forest = fqdn.lower().split(".", 1)[1]
        state.domains.append(Domain({"name": forest, "domain_name": forest, "domain_type": "Authoritative"},
                                    [ASSUMED_DOMAIN]))
        notes.info(first, 1, f"accepted domain {forest} assumed: Exchange setup creates one for the forest's "
                   "domain (a Get-AcceptedDomain | Format-List dump or Remove-AcceptedDomain overrides it)")
    applier = Applier(state, notes)
    for item in items:
        if isinstance(item, Dump):
            applier.dump(item)
        else:
            applier.statement(item)
    order = {file: i for i, (file, _) in enumerate(sources)}
    ordered = sorted(notes, key=lambda n: (order.get(n.file, -1), n.line))
    header = [
        f"exmilter configuration imported from Exchange ({', '.join(f for f, _ in sources) or '<stdin>'})",
        "by exmilter import-exchange. Check it with: exmilter check -c THIS_FILE",
    ]
    warnings = [n for n in ordered if n.level is Level.WARNING]
    if warnings:
        header += ["", "Not imported (see each line):"] + [f"  {n}" for n in warnings]
    header.append("")
    return Result(render(applier.state, header), ordered, name)
