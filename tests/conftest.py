"""Shared fixtures: build configurations from YAML text, engines with a fake clock."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from exmilter.config import loads
from exmilter.engine import Engine
from exmilter.model import Organization

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "conf" / "exmilter.yaml"

SERVER = """\
server:
  name: EXCH01
  fqdn: exch01.labs.local
  domain: LABS
  addresses: [10.1.1.1, 10.0.0.5, "2001:db8::25"]
"""


def org_from(yaml_text: str, *, server: str = SERVER) -> Organization:
    """A configuration from an indented YAML snippet, with the standard server block."""
    return loads(server + textwrap.dedent(yaml_text)).organization


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def engine_from(yaml_text: str, clock: FakeClock | None = None) -> Engine:
    return Engine(org_from(yaml_text), clock=clock or FakeClock())


#: Where a daemon with the default ``logs:`` writes: a test must give its own directory.
SYSTEM_LOG_DIR = Path("/var/log/exmilter")


@pytest.fixture(scope="session", autouse=True)
def system_logs_untouched():
    """No test writes the machine's own log directory (every daemon a test starts gets a
    private ``logs:``); checked when the session ends, if the directory was absent at start."""
    absent = not SYSTEM_LOG_DIR.exists()
    yield
    if absent and SYSTEM_LOG_DIR.exists():
        pytest.fail(f"a test wrote {SYSTEM_LOG_DIR}: give its daemon a private logs: section")


@pytest.fixture(scope="session")
def deb(tmp_path_factory) -> Path:
    """The Debian package, built once per run (scripts/build-deb.sh: lintian clean)."""
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "build-deb.sh"), str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # built, and lintian has no error or warning
    (built,) = out.glob("exmilter_*_all.deb")
    return built
