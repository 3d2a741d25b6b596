"""Sandbox.reload never raises: any file that does not load is reported and the rules stay.

These run the reload path of a sandbox that is not started (no Postfix, no daemon), so
they need no root; tests/integration/test_sandbox_command.py sends SIGHUP to a real
``exmilter sandbox`` with the same files.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

import exmilter.sandbox.stack as sandbox_module
from exmilter.sandbox import Sandbox, SandboxError, describe_load_failure

GOOD = Path(__file__).resolve().parent / "data" / "integration.yaml"
NOT_RELOADED = "{}: not reloaded; the sandbox and the policy daemon keep the rules they have"


def _replace_with_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _nested_mapping(depth: int) -> str:
    return "extra:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, depth))


#: The line a text appended to the good file starts on, and the line after it.
END = len(GOOD.read_text().splitlines()) + 2
AFTER = END + 1

#: Every way a file can be broken, and what the message's first line must be ({file}: the
#: path): always the located form ``file:line:col: key: problem``.
BREAKAGES: list[tuple[str, Callable[[Path], object], str]] = [
    ("yaml syntax", lambda f: f.write_text(f.read_text() + "\nreceive_connectors: [unbalanced\n"),
     rf"{{file}}:{AFTER}:1: yaml: did not find expected ',' or ']'$"),
    ("unknown key", lambda f: f.write_text(f.read_text() + "\nno_such_key: 1\n"),
     rf"{{file}}:{END}:1: no_such_key: unknown key; expected one of "),
    ("vanished", lambda f: f.unlink(), r"{file}:1:1: file: No such file or directory$"),
    ("a directory", lambda f: _replace_with_directory(f), r"{file}:1:1: file: Is a directory$"),
    ("not UTF-8", lambda f: f.write_bytes(f.read_bytes() + b"\n# \xff\n"),
     rf"{{file}}:{END}:3: file: not UTF-8 text: invalid start byte \(bytes FF\)$"),
    ("empty", lambda f: f.write_text(""), r"{file}:1:1: file: the file is empty$"),
    ("deep flow nesting", lambda f: f.write_text(f.read_text() + "\nx: " + "[" * 100000 + "]" * 100000 + "\n"),
     rf"{{file}}:{END}:\d+: yaml: exceeded maximum nesting depth$"),
    ("NUL in a comment", lambda f: f.write_text("# a \0 in a comment\n" + f.read_text()),
     r"{file}:1:5: yaml: control character U\+0000 \(NUL\): not allowed in YAML, not even in a comment; delete it$"),
    ("DEL", lambda f: f.write_text(f.read_text() + "\n# \x7f\n"),
     rf"{{file}}:{END}:3: yaml: control character U\+007F \(DEL\): not allowed in YAML, not even in a comment; "
     "delete it$"),
    ("deep block nesting", lambda f: f.write_text(f.read_text() + "\n" + _nested_mapping(3000)),
     r"{file}:\d+:\d+: yaml: lists and mappings nested deeper than 64 levels$"),
]  # fmt: skip


def first_line_pattern(template: str, path: Path) -> str:
    return template.format(file=re.escape(str(path)))


@pytest.fixture
def sb(tmp_path: Path) -> Sandbox:
    config = tmp_path / "exmilter.yaml"
    shutil.copyfile(GOOD, config)
    (tmp_path / "state").mkdir()
    messages: list[str] = []
    return Sandbox(config, tmp_path / "state", report=messages.append)


@pytest.mark.parametrize(("name", "breaking", "first_line"), BREAKAGES, ids=[b[0] for b in BREAKAGES])
def test_reload_reports_a_broken_file_and_keeps_the_rules(
    sb: Sandbox, name: str, breaking: Callable[[Path], object], first_line: str
) -> None:
    assert sb.reload() is True
    rules = sb.org
    selection = sb.selection_path.read_text()
    breaking(sb.config)
    assert sb.reload() is False
    assert sb.org is rules  # the old rules
    assert sb.selection_path.read_text() == selection
    message = sb.messages[-1]
    first, *_, last = message.splitlines()
    assert re.match(first_line_pattern(first_line, sb.config), first), message
    assert last == NOT_RELOADED.format(sb.config)
    # A later good file reloads.
    if sb.config.is_dir():
        sb.config.rmdir()
    shutil.copyfile(GOOD, sb.config)
    assert sb.reload() is True
    assert sb.messages[-1] == f"{sb.config} reloaded (the policy daemon re-reads it)"


@pytest.mark.parametrize("error", [RuntimeError("boom\n  at the end"), MemoryError(), KeyError("x")])
def test_reload_survives_whatever_the_loader_raises(
    sb: Sandbox, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """A loader bug is reported on one line like a bad file, never a traceback that stops the stack."""

    def broken(path: object) -> None:
        raise error

    monkeypatch.setattr(sandbox_module, "load", broken)
    assert sb.reload() is False
    text = " ".join(str(error).split()) or "no details"
    assert sb.messages[-1].splitlines() == [
        f"{sb.config}: cannot be loaded: {type(error).__name__}: {text}",
        NOT_RELOADED.format(sb.config),
    ]


def test_start_refuses_a_file_that_does_not_load_with_the_same_message(
    sb: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox_module.os, "geteuid", lambda: 0)
    sb.config.write_text(sb.config.read_text() + "\nno_such_key: 1\n")
    with pytest.raises(SandboxError, match=re.escape(f"{sb.config}:{END}:1: no_such_key: unknown key")):
        sb.start()
    sb.config.write_text("# a \0 in a comment\n" + sb.config.read_text())
    with pytest.raises(SandboxError) as info:
        sb.start()
    assert str(info.value) == describe_load_failure(sb.config, _load_error(sb.config))


def _load_error(path: Path) -> Exception:
    try:
        sandbox_module.load(path)
    except Exception as e:
        return e
    raise AssertionError(f"{path} loads")
