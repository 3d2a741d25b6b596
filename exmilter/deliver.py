"""Final delivery for the sandbox: a pipe(8) command that files each message away.

Postfix runs it as an unprivileged user (pipe refuses root) with the message on stdin.
It writes ``DIR/<time>-<queue id>-<pid>.msg``: one JSON line with the envelope, then the
message exactly as Postfix passed it. The file appears atomically (temporary file, fsync,
rename), and every failure exits with EX_TEMPFAIL so Postfix keeps the message queued:
nothing is lost. Only the standard library is used, so the system ``python3`` can run
this file directly even when exmilter's virtualenv is unreadable to that user.

The connector is found from ``--selection`` (written by the sandbox): per listener
context, candidate ranges ordered as Exchange ranks them (smallest range first, the exact
binding before the wildcard on a tie, then configuration order as exmilter.selection breaks
the ties Exchange refuses), so the first range holding the client wins. This is a copy of the
selection rules (spec §2.1): tests/test_deliver.py compares it with ConnectorTable.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

EX_TEMPFAIL = 75


@dataclass(frozen=True)
class Delivery:
    """One delivered message as read back from its file."""

    path: Path
    envelope: dict
    content: bytes

    @property
    def sender(self) -> str:
        return self.envelope["sender"]

    @property
    def recipients(self) -> list[str]:
        return self.envelope["recipients"]

    @property
    def connector(self) -> str:
        return self.envelope.get("connector", "")

    @property
    def client(self) -> str:
        return self.envelope.get("client_address", "")


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


def connector_for(selection: dict, context: str, client: str) -> str:
    """Identity of the connector that took ``client`` on listener ``context``, or ''."""
    try:
        addr = ipaddress.ip_address(client.strip("[]").split("%", 1)[0])
    except ValueError:
        return ""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    point = int(addr)
    for version, first, last, identity in selection.get("contexts", {}).get(context, ()):
        if version == addr.version and first <= point <= last:
            return identity
    return ""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="exmilter-deliver", description="pipe(8) delivery into a directory")
    p.add_argument("--dir", required=True, help="the delivered/ directory")
    p.add_argument("--selection", help="JSON connector selection written by the sandbox")
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
            envelope["connector"] = connector_for(json.load(f), args.nexthop, args.client)
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
