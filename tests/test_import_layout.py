"""The importer reaches other packages through their public names only (issue #11).

The configuration package is restructured on its own; the importer keeps working with
what it exports as its API (the loader, its errors and the field parsers), never with the
loader's internals (``config.Raw``, ``config._domain_name`` were used before).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMPORTER = [*sorted((ROOT / "exmilter" / "importer").rglob("*.py")), ROOT / "exmilter/commands/import_exchange.py"]
#: What the importer may use of exmilter.config: its public field API and the loader.
CONFIG_API = frozenset(
    {
        "CONNECTOR_FIELDS",
        "ConfigError",
        "EXMILTER_ONLY",  # which refusals are exmilter's, not Exchange's (issue #13)
        "Problem",
        "loads",
        "parse_connector_property",
        "parse_domain_name",
        "parse_fqdn",
    }
)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def reaches(path: Path) -> list[str]:
    """``file:line: module.name`` for each name of another exmilter package the module must not use."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules: dict[str, str] = {}  # local name -> exmilter module outside the importer
    found: list[str] = []

    def check(module: str, name: str, line: int) -> None:
        if _private(name) or (module == "exmilter.config" and name not in CONFIG_API):
            found.append(f"{path.name}:{line}: {module}.{name}")

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("exmilter"):
            module = node.module or ""
            for alias in node.names:
                if module == "exmilter":
                    modules[alias.asname or alias.name] = f"exmilter.{alias.name}"
                elif not module.startswith("exmilter.importer"):
                    check(module, alias.name, node.lineno)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("exmilter") and not alias.name.startswith("exmilter.importer"):
                    modules[alias.asname or alias.name] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            check(modules[node.value.id], node.attr, node.lineno)
    return sorted(found)


def test_the_importer_uses_only_public_names_of_other_packages() -> None:
    assert ROOT / "exmilter/importer/apply.py" in IMPORTER
    assert [hit for path in IMPORTER for hit in reaches(path)] == []


def test_the_check_finds_what_the_issue_found(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "from exmilter import config, model\nfrom exmilter.config import _domain_name, loads\n"
        "from exmilter.importer.state import _inside_the_importer\n"
        "x = config.Raw(1), config._fqdn, config.parse_fqdn, model._private\n"
    )
    assert reaches(module) == [
        "m.py:2: exmilter.config._domain_name",
        "m.py:4: exmilter.config.Raw",
        "m.py:4: exmilter.config._fqdn",
        "m.py:4: exmilter.model._private",
    ]
