"""The architecture's promises, checked: what each part of exmilter may import (docs/design.md).

The pure engine (every module directly in ``exmilter/`` but the command-line entry point) runs
on the standard library alone: the sandbox's delivery agent even runs parts of it under the
system Python as an unprivileged user. A fresh interpreter proves the import graph at run time;
the static table below states the rule for every package, so a new import that breaks a layer
fails here with the file and line.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "exmilter"

#: Top-level modules that are not the pure engine.
ENTRY_POINTS = {"cli", "__main__"}
#: What the engine may import besides the standard library and itself: UTS-46 IDNA (domains.py).
ENGINE_EXTRAS = {"idna"}
#: Third-party imports each package may make (beyond the engine and the standard library).
ALLOWED: dict[str, set[str]] = {
    "config": {"yaml"},
    "policy": {"twisted", "prometheus_client", "zope"},
    "milter": {"Milter", "milter", "prometheus_client"},
    "runtime": {"twisted", "prometheus_client", "zope"},
    "logs": {"twisted", "zope"},
    "postfix": set(),
    "sandbox": set(),
    "importer": set(),
    "commands": {"twisted"},
}
#: exmilter packages each package may import (the engine is always allowed).
LAYERS: dict[str, set[str]] = {
    "config": set(),
    "policy": {"config", "runtime", "logs", "postfix"},
    "milter": {"config", "runtime", "logs"},
    "runtime": {"config", "logs"},
    "logs": set(),
    "postfix": set(),
    "sandbox": {"config", "postfix"},
    "importer": {"config"},
    "commands": set(ALLOWED),
}
#: Third-party packages the engine must never pull in, directly or not.
HEAVY = ("twisted", "yaml", "prometheus_client", "Milter", "milter")


def engine_modules() -> list[str]:
    return sorted(
        f"exmilter.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem not in ENTRY_POINTS and p.stem != "__init__"
    )


def test_the_engine_imports_no_third_party_package_at_run_time() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for name in {engine_modules()!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    assert [m for m in loaded if m.split(".")[0] in HEAVY] == []
    assert {m.split(".")[0] for m in loaded if m.startswith("exmilter.") and m.count(".") > 1} == set()


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """Every module imported by ``path`` (module ``module``), with its line; relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            name = node.module or ""
            if node.level:
                name = importlib.util.resolve_name("." * node.level + name, package)
            out.append((node.lineno, name))
    return out


def _part(path: Path) -> str:
    """``engine`` for a module directly in exmilter/, else the package under exmilter/ it belongs to."""
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else "engine"


def _stdlib(name: str) -> bool:
    return name.split(".")[0] in sys.stdlib_module_names


def _violations() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        if module in ("exmilter", *(f"exmilter.{e}" for e in ENTRY_POINTS)):
            continue
        part = _part(path)
        for line, name in _imports(path, module):
            top = name.split(".")[0]
            where = f"{path.relative_to(ROOT)}:{line}: {name}"
            if _stdlib(name) or top == "__future__":
                continue
            if top == "exmilter":
                sub = name.split(".")[1] if "." in name else ""
                target = sub if (PACKAGE / sub).is_dir() and sub else "engine"
                if target in ("engine", part):
                    continue
                if part == "engine" or target not in LAYERS.get(part, set()):
                    found.append(f"{where} ({part} may not import {target})")
            elif part == "engine":
                if top not in ENGINE_EXTRAS:
                    found.append(f"{where} (the engine uses the standard library only)")
            elif top not in ALLOWED.get(part, set()):
                found.append(f"{where} ({part} may not import {top})")
    return found


def test_every_package_keeps_to_its_layer() -> None:
    assert _violations() == []


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_the_rule_table_names_only_existing_parts(part: str) -> None:
    """A rule for a package that does not exist is a rule nobody checks."""
    assert (PACKAGE / part).is_dir(), f"exmilter/{part}/ does not exist"
