"""One sandbox (private Postfix + policy daemon + delivery) for the whole integration session."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from exmilter.sandbox import Sandbox
from tests.integration.helpers import free_offset, reload_and_wait
from tests.integration.relay_harness import default_domain_config

CONFIG = Path(__file__).resolve().parent.parent / "data" / "integration.yaml"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def config_path() -> Iterator[Path]:
    """A private copy of tests/data/integration.yaml that reload tests may rewrite."""
    base = Path(tempfile.mkdtemp(prefix="exmilter-it-", dir="/tmp"))
    base.chmod(0o755)  # Postfix and the delivery user must reach the state directory
    path = base / "exmilter.yaml"
    shutil.copyfile(CONFIG, path)
    yield path
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def sandbox(config_path: Path) -> Iterator[Sandbox]:
    sb = Sandbox(config_path, config_path.parent / "state", free_offset(config_path))
    with sb:
        yield sb


@pytest.fixture(scope="session")
def default_domain_sandbox(config_path: Path) -> Iterator[Sandbox]:
    """A second sandbox, started once when a test asks for it: integration.yaml with a
    DefaultDomain on every connector (relay harness, smuggling with bare-LF rejection)."""
    base = config_path.parent / "default-domain"
    base.mkdir(exist_ok=True)
    base.chmod(0o755)
    path = base / "exmilter.yaml"
    default_domain_config(CONFIG, path)
    with Sandbox(path, base / "state", free_offset(path)) as sb:
        yield sb


@pytest.fixture
def good_config(sandbox: Sandbox, config_path: Path) -> Iterator[Path]:
    """Restores the original file (and reloads) after a test that rewrites it."""
    yield config_path
    shutil.copyfile(CONFIG, config_path)
    assert reload_and_wait(sandbox)
