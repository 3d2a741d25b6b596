"""Final delivery for the sandbox: a pipe(8) command that files each message away.

Postfix runs it as an unprivileged user (pipe refuses root) with the message on stdin.
It writes ``DIR/<time>-<queue id>-<pid>.msg``: one JSON line with the envelope, then the
message exactly as Postfix passed it. The file appears atomically (temporary file, fsync,
rename), and every failure exits with EX_TEMPFAIL so Postfix keeps the message queued:
nothing is lost.

The system ``python3`` runs this file as the delivery user, who may not be able to read
exmilter's virtualenv, so the sandbox copies it into ``STATE/bin/`` with the pure engine
modules connector selection needs beside it (``STATE/bin/exmilter/``, standard library
only: :data:`exmilter.sandbox.delivery.AGENT_MODULES`). The connector is found by
:class:`exmilter.selection.ConnectorTable`, the policy daemon's own selection, over the
connector list the sandbox writes (``--selection``): name, server, bindings, ranges and
whether it is enabled, in configuration order (which breaks ties as the daemon does).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from exmilter.selection import ConnectorTable

EX_TEMPFAIL = 75


@dataclass(frozen=True)
class Delivery:
    """One delivered message as read back from its file."""

    path: Path
    envelope: dict[str, Any]
    content: bytes

    @property
    def sender(self) -> str:
        return str(self.envelope["sender"])

    @property
    def recipients(self) -> list[str]:
        return list(self.envelope["recipients"])

    @property
    def connector(self) -> str:
        return str(self.envelope.get("connector", ""))

    @property
    def client(self) -> str:
        return str(self.envelope.get("client_address", ""))


def read_delivery(path: Path | str) -> Delivery:
    data = Path(path).read_bytes()
    head, _, content = data.partition(b"\n")
    return Delivery(Path(path), json.loads(head), content)


def read_deliveries(directory: Path | str) -> list[Delivery]:
    """Every delivered message, oldest first (names start with a nanosecond timestamp)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return [read_delivery(p) for p in sorted(d.glob("*.msg"))]


@functools.cache
def _import_path() -> None:
    """Run as the sandbox's copy, import the exmilter modules copied beside this file.

    ``python3 -I`` leaves the script's directory off ``sys.path``; from the source tree
    (no ``exmilter/`` beside the file) the installed exmilter is used as it is.
    """
    here = Path(__file__).resolve().parent
    if (here / "exmilter" / "selection.py").is_file() and str(here) not in sys.path:
        sys.path.insert(0, str(here))


def connector_table(records: list[dict[str, Any]]) -> ConnectorTable:
    """The policy daemon's selection over the connectors the sandbox wrote (the rest defaulted)."""
    _import_path()
    from exmilter.model import AuthMechanism, PermissionGroups, ReceiveConnector, TransportRole, Usage
    from exmilter.selection import ConnectorTable
    from exmilter.values import parse_binding, parse_ip_range

    return ConnectorTable(
        [
            ReceiveConnector(
                name=r["name"],
                server=r["server"],
                transport_role=TransportRole.FrontendTransport,
                usage=Usage.Custom,
                bindings=tuple(parse_binding(b) for b in r["bindings"]),
                remote_ip_ranges=tuple(parse_ip_range(x) for x in r["ranges"]),
                auth_mechanism=AuthMechanism.NONE,
                permission_groups=PermissionGroups.NONE,
                enabled=bool(r["enabled"]),
            )
            for r in records
        ]
    )


def connector_for(table: ConnectorTable, context: str, client: str) -> str:
    """Identity of the connector that took ``client`` on listener ``context``, or ''."""
    _import_path()
    from exmilter.listener import Listener

    try:
        listener = Listener.parse(context)
        match = table.select(listener.address, listener.port, client)
    except ValueError:  # no listener context, or no client address (a local submission)
        return ""
    return match.connector.identity if match is not None else ""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="exmilter-deliver", description="pipe(8) delivery into a directory")
    p.add_argument("--dir", required=True, help="the delivered/ directory")
    p.add_argument("--selection", help="JSON connector list written by the sandbox")
    p.add_argument("--sender", default="")
    p.add_argument("--client", default="", help="${client_address}")
    p.add_argument("--helo", default="", help="${client_helo}")
    p.add_argument("--nexthop", default="", help="${nexthop}: the listener context under the sandbox")
    p.add_argument("--queue-id", default="")
    p.add_argument("recipients", nargs="*")
    return p


def deliver(args: argparse.Namespace, content: bytes) -> Path:
    directory = Path(args.dir)
    envelope = {
        "sender": args.sender,
        "recipients": args.recipients,
        "client_address": args.client,
        "client_helo": args.helo,
        "listener": args.nexthop,
        "connector": "",
        "queue_id": args.queue_id,
        "received_at": time.time(),
        "size": len(content),
    }
    if args.selection:
        with open(args.selection, encoding="utf-8") as f:
            table = connector_table(json.load(f)["connectors"])
        envelope["connector"] = connector_for(table, args.nexthop, args.client)
    name = f"{time.time_ns()}-{args.queue_id or 'noid'}-{os.getpid()}.msg"
    tmp_dir = directory / ".tmp"
    tmp_dir.mkdir(exist_ok=True)
    tmp = tmp_dir / name
    with open(tmp, "wb") as f:
        f.write(json.dumps(envelope, sort_keys=True).encode() + b"\n")
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    final = directory / name
    os.rename(tmp, final)
    return final


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit:
        return EX_TEMPFAIL  # even a usage error: a bounce would lose the message
    try:
        deliver(args, sys.stdin.buffer.read())
    except Exception as e:  # anything at all: keep the message queued
        print(f"exmilter-deliver: {type(e).__name__}: {e}", file=sys.stderr)
        return EX_TEMPFAIL
    return 0


if __name__ == "__main__":
    sys.exit(main())
