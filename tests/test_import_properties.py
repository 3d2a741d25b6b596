"""Property tests of the importer's stages: random runbooks from a grammar of realistic pieces.

Whatever the text: the transcript, tokenizer, parser and evaluator end (no exception, no
hang), every note is located inside the input and fits on one printable line, values stay
within the limits, and what is written loads. The CLI-level attack (2,000 mutated
runbooks) is tests/test_import_fuzz.py.
"""

from __future__ import annotations

import re

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exmilter.config import loads
from exmilter.importer import import_exchange
from exmilter.importer.apply import Applier
from exmilter.importer.chars import REFUSED_CHARS, printable
from exmilter.importer.evaluator import Unknown
from exmilter.importer.notes import Notes
from exmilter.importer.parser import parse
from exmilter.importer.state import State
from exmilter.importer.syntax import Statement, text_of
from exmilter.importer.transcript import Dump, Line, documents, physical_lines, split
from exmilter.importer.writer import scalar
from exmilter.limits import IMPORT_MAX_VALUE_CHARS, IMPORT_MAX_VALUE_ITEMS

CMDLETS = [
    "Set-ReceiveConnector",
    "New-ReceiveConnector",
    "Get-ReceiveConnector",
    "Remove-ReceiveConnector",
    "Add-ADPermission",
    "Remove-ADPermission",
    "New-AcceptedDomain",
    "Set-AcceptedDomain",
    "Format-List",
    "fl",
    "ft",
    "%",
    "ForEach-Object",
    "where",
    "?",
    "Get-Date",
    "Set-SendConnector",
    "telnet",
]
PARAMETERS = [
    "-Identity",
    "-Name",
    "-Bindings",
    "-RemoteIPRanges",
    "-PermissionGroups",
    "-AuthMechanism",
    "-Banner",
    "-User",
    "-ExtendedRights",
    "-MaxMessageSize",
    "-Custom",
    "-Usage",
    "-TransportRole",
    "-Server",
    "-WhatIf",
    "-Confirm:$false",
    "-Deny",
    "-DomainName",
    "-DomainType",
    "-Remote",
    "-Fqdn:",
]
VALUES = [
    "0.0.0.0:25",
    "0.0.0.0:2600",
    "10.0.0.1",
    "10.0.0.0/24",
    "10.0.0.1-10.0.0.9",
    "AnonymousUsers",
    "ExchangeServers",
    "ms-Exch-SMTP-Accept-Any-Recipient",
    '"NT AUTHORITY\\ANONYMOUS LOGON"',
    "'Default Frontend EXCH01'",
    '"Default Frontend EXCH01"',
    '"Relay $x"',
    "Relay",
    "10MB",
    "FrontendTransport",
    "Custom",
    "$true",
    "$false",
    "$null",
    "$_",
    "$_.Identity",
    "$x",
    "$y",
    "$env:COMPUTERNAME",
    "@{Add='10.0.0.2'}",
    "@{Add=$x; Remove=$y}",
    "(Get-Date)",
    "$($cert.Subject)",
    '"220 $x"',
    "labs.local",
    "'it''s'",
    '"a`"b`tc"',
    "\u201csmart\u201d",
    "\u2013Custom",
    "EXCH01\\Relay",
]
SYNTAX = [
    "@(",
    "(",
    ")",
    "{",
    "}",
    "@{",
    "|",
    ";",
    ",",
    "=",
    "`",
    "#",
    "<#",
    "#>",
    '@"',
    '"@',
    "'",
    '"',
    "$",
    "+=",
    "..",
    "1..100000",
    "$x = ",
    "$y = $x,$x",
    '$x = "$x$x"',
    "$x = @($x, $x)",
]
PASTED = [
    "[PS] C:\\>",
    "PS C:\\>",
    "C:\\>",
    "Identity Bindings Enabled",
    "-------- -------- -------",
    "True",
    "EXCH01\\Relay {0.0.0.0:25} True",
    "Identity : EXCH01\\Relay",
    "RemoteIPRanges : {10.0.0.1, 10.0.0.2}",
    "Bindings       : {0.0.0.0:2600}",
    "TransportRole : FrontendTransport",
    "    10.0.0.3}",
    "Name : X",
]
ODD = [
    "\ufeff",
    "\x00",
    "\x07",
    "\x0b",
    "\x0c",
    "\x1b",
    "\x7f",
    "\x85",
    "\x9b",
    "\u2028",
    "\u2029",
    "\u200b",
    "\u202e",
    "\u00ad",
    "\ufffe",
    "\ud800",
    "\t",
    "\r",
    "\u00a0",
]
SEPARATORS = [" ", " ", " ", "", "\n", "\n", "\r\n", "\t", " `\n"]

piece = st.one_of(
    st.sampled_from(CMDLETS),
    st.sampled_from(PARAMETERS),
    st.sampled_from(VALUES),
    st.sampled_from(SYNTAX),
    st.sampled_from(PASTED),
    st.sampled_from(ODD),
    st.text(max_size=6),
    st.builds(
        lambda s, n: s * n,
        st.sampled_from(["(", "{", "@(", "$a", "x", "10.0.0.1,", '"', "C:\\", "-- "]),
        st.integers(1, 400),
    ),
)
runbook = st.lists(st.tuples(piece, st.sampled_from(SEPARATORS)), max_size=60).map(
    lambda parts: "".join(p + s for p, s in parts)
)
SETTINGS = settings(
    max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def editor_lines(text: str) -> int:
    return len(re.split(r"\r\n|\r|\n", text))


@settings(SETTINGS, max_examples=80)
@given(runbook, st.sampled_from([None, "EXCH01", "EXCH01.labs.local"]))
def test_any_runbook_imports_to_located_notes_and_a_loadable_file(text: str, server: str | None) -> None:
    result = import_exchange([("t.ps1", text)], server)
    assert result.failure == []
    for note in result.notes:
        assert note.file == "t.ps1" and 1 <= note.line <= editor_lines(text), note
        assert printable(note.text) == note.text and "\n" not in str(note)
    if result.stopped is None:
        assert [str(f.problem) for f in result.findings] == [str(w) for w in loads(result.yaml, "<output>").warnings]
    else:
        assert result.yaml == ""


@SETTINGS
@given(runbook)
def test_the_parser_locates_every_statement(text: str) -> None:
    notes = Notes()
    count = editor_lines(text)
    for document in split("t.ps1", text, notes):
        lines = [p for p in document if isinstance(p, Line)]
        for statement in parse(lines, notes):
            assert isinstance(statement, Statement)
            assert 1 <= statement.line <= count
            text_of(statement)  # every tree can be shown
        for dump in (p for p in document if isinstance(p, Dump)):
            assert all(1 <= at <= count for _, at in dump.props.values())
            if not dump.refused:
                assert not any(REFUSED_CHARS.search(v) for v, _ in dump.props.values())
    assert all(1 <= n.line <= count for n in notes)


dump_line = st.one_of(
    st.builds(
        lambda k, v: f"{k} : {v}",
        st.sampled_from(["Identity", "Bindings", "RemoteIPRanges", "Name", "PermissionGroups", "Fqdn", "X"]),
        st.text(max_size=20),
    ),
    st.builds(lambda v: "    " + v, st.text(max_size=20)),
    st.sampled_from(["", "\ufeffIdentity : EXCH01\\B", "Bindings : {0.0.0.0:2600}", "-------- ----"]),
    st.sampled_from(ODD),
)


@SETTINGS
@given(st.lists(dump_line, max_size=40), st.sampled_from(["\n", "\r\n", "\r"]))
def test_format_list_reader_ends_and_accounts_for_every_line(lines: list[str], newline: str) -> None:
    text = newline.join(lines)
    notes = Notes()
    parts = [p for d in split("fl.txt", text, notes) for p in d]
    count = editor_lines(text)
    for p in parts:
        at = p.number if isinstance(p, Line) else p.line
        assert 1 <= at <= count
    starts = [p.number if isinstance(p, Line) else p.line for p in parts] + [count]
    warned = {n.line for n in notes.warnings}
    for k, d in enumerate(parts):
        if isinstance(d, Dump) and d.refused:  # each refused object says where, inside it
            assert any(d.line <= line <= starts[k + 1] for line in warned)


@SETTINGS
@given(st.text(max_size=300))
def test_documents_split_only_at_byte_order_marks(text: str) -> None:
    notes = Notes()
    docs = documents("t.ps1", text, notes)
    firsts = [first for first, _ in docs]
    assert firsts == sorted(firsts) and firsts[0] == 1
    assert len(docs) == 1 + text[1:].count("\ufeff")
    # every mark after the first character cuts one more piece: at a line start, or inside a line
    assert sum(len(lines) for _, lines in docs) == len(physical_lines(text)) + text[1:].count("\ufeff")
    assert all("\ufeff" not in line for _, lines in docs for line in lines)


@SETTINGS
@given(
    st.lists(
        st.sampled_from(
            [
                '$a = "10.0.0.1","10.0.0.2"',
                "$a = $a,$a",
                "$b = $a,$a,$a",
                '$s = "x$a"',
                '$s = "$s$s"',
                "$b = $s,$b",
                "$a = @($b, $a)",
                "$t = @{Add=$a; Remove=$b}",
                "$a = $t,$a",
                '$s = "$b$t"',
            ]
        ),
        max_size=40,
    )
)
def test_expansion_stays_within_the_limits(lines: list[str]) -> None:
    notes = Notes()
    applier = Applier(State.fresh("EXCH01", "exch01.labs.local", True), notes)
    for statement in parse([Line("t.ps1", i + 1, text) for i, text in enumerate(lines)], notes):
        applier.statement(statement)
    for value in applier.env.values():
        if isinstance(value, list):
            assert len(value) <= IMPORT_MAX_VALUE_ITEMS
            assert sum(len(v) for v in value if isinstance(v, str)) <= IMPORT_MAX_VALUE_CHARS
        elif isinstance(value, str):
            assert len(value) <= IMPORT_MAX_VALUE_CHARS
        else:
            assert isinstance(value, dict | Unknown) or value is None


@SETTINGS
@given(st.text())
def test_written_scalars_read_back_and_messages_stay_on_one_line(text: str) -> None:
    written = scalar(text)
    assert not re.search("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]", written)
    assert yaml.load(f"k: {written}", Loader=yaml.BaseLoader)["k"] == text  # the loader reads scalars as text
    shown = printable(text)
    assert "\n" not in shown and not REFUSED_CHARS.search(shown)
