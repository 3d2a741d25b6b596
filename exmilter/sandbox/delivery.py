"""The sandbox's side of final delivery: installing the agent and wiring it into Postfix.

The agent (:mod:`exmilter.sandbox.deliver`) runs under the system ``python3`` as
:data:`DELIVERY_USER`, who may not be able to read the source tree or the virtualenv, so
it is copied into ``STATE/bin/`` with the pure modules connector selection needs. The
sandbox writes the connector list it selects from (``STATE/selection.json``) on start and
on every reload, and every transport of the private Postfix is the agent's pipe(8) service.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
from pathlib import Path
from typing import Any

import exmilter
from exmilter.model import Organization
from exmilter.sandbox import deliver

#: pipe(8) refuses root and the mail owner; this user writes STATE/delivered/.
DELIVERY_USER = "nobody"
#: The master.cf name of the agent's pipe(8) service.
TRANSPORT = "exdeliver"
#: The exmilter modules the agent imports (connector selection and what it imports), copied
#: beside it: standard library only, as tests/test_deliver.py checks on a copy.
AGENT_MODULES = ("values", "limits", "model", "selection", "listener")
#: The copy's package: the modules above and nothing else (the real __init__ may grow imports).
AGENT_PACKAGE_INIT = '"""The pure exmilter modules the sandbox\'s delivery agent imports (a copy)."""\n'
#: The agent's file name under STATE/bin/.
AGENT_NAME = "exmilter-deliver.py"


def install_agent(bin_dir: Path) -> Path:
    """Copy the agent and its modules into ``bin_dir`` (readable by everyone); the agent's path."""
    package = bin_dir / "exmilter"
    package.mkdir(parents=True, exist_ok=True)
    for d in (bin_dir, package):
        d.chmod(0o755)
    source = Path(exmilter.__file__).resolve().parent
    copies = {package / f"{name}.py": source / f"{name}.py" for name in AGENT_MODULES}
    copies[bin_dir / AGENT_NAME] = Path(deliver.__file__)
    for target, origin in copies.items():
        shutil.copyfile(origin, target)
    (package / "__init__.py").write_text(AGENT_PACKAGE_INIT)
    for target in [*copies, package / "__init__.py"]:
        target.chmod(0o644)
    return bin_dir / AGENT_NAME


def prepare_delivered(directory: Path) -> None:
    """``directory`` and its ``.tmp/``, owned by the delivery user."""
    pw = pwd.getpwnam(DELIVERY_USER)
    directory.mkdir(exist_ok=True)
    (directory / ".tmp").mkdir(exist_ok=True)
    for d in (directory, directory / ".tmp"):
        os.chown(d, pw.pw_uid, pw.pw_gid)
        d.chmod(0o755)


def connector_records(org: Organization) -> list[dict[str, Any]]:
    """What the agent selects from: every connector in configuration order (ties are broken
    by it, as in the policy daemon's ConnectorTable), with what selection reads."""
    return [
        {
            "name": c.name,
            "server": c.server,
            "bindings": [str(b) for b in c.bindings],
            "ranges": [str(r) for r in c.remote_ip_ranges],
            "enabled": c.enabled,
        }
        for c in org.receive_connectors
    ]


def write_connectors(org: Organization, path: Path) -> None:
    """Replace ``path`` atomically with the connector list (readable by the delivery user)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"connectors": connector_records(org)}))
    tmp.chmod(0o644)
    os.replace(tmp, path)


def agent_python(fallback: str) -> str:
    """An interpreter the delivery user can run: the system one unless there is none."""
    return "/usr/bin/python3" if Path("/usr/bin/python3").exists() else fallback


def transport_settings() -> dict[str, str]:
    """main.cf: every transport delivers through the agent."""
    return {
        "default_transport": TRANSPORT,
        "relay_transport": TRANSPORT,
        "local_transport": TRANSPORT,
        "virtual_transport": TRANSPORT,
        f"{TRANSPORT}_destination_recipient_limit": "1000",
    }


def routed_options(context: str) -> tuple[str, ...]:
    """The extra ``-o`` of a listener: content_filter's next hop carries the listener's
    context to the agent (``${nexthop}``), which names the connector from it."""
    return (f"-o content_filter={TRANSPORT}:{context}",)


def pipe_service(python: str, agent: Path, delivered: Path, selection: Path) -> str:
    """The agent's master.cf pipe(8) service."""
    return (
        f"{TRANSPORT} unix - n n - - pipe\n"
        f"  user={DELIVERY_USER} null_sender=\n"
        f"  argv={python} -I {agent} --dir={delivered}"
        f" --selection={selection} --sender=${{sender}} --client=${{client_address}}"
        f" --helo=${{client_helo}} --nexthop=${{nexthop}} --queue-id=${{queue_id}} -- ${{recipient}}"
    )
