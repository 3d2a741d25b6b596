"""A file or text → :class:`Loaded`, or :class:`ConfigError` listing every located problem, and nothing else."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from exmilter.config import auth, connectors, fields, reader, sections, send_connectors
from exmilter.config import cluster as config_cluster
from exmilter.config import logs as config_logs
from exmilter.config.problems import Collector, ConfigError, Problem
from exmilter.config.reader import Raw
from exmilter.config.relays import OPEN_RELAY
from exmilter.config.validation import validate
from exmilter.model import LogSettings, MilterSettings, Organization, PolicydSettings

DEFAULT_PATH = "/etc/exmilter/exmilter.yaml"

TOP_KEYS = (
    "server",
    "default_connectors",
    "accepted_domains",
    "receive_connectors",
    "users",
    "policyd",
    "tls",
    "sasl",
    "send_connectors",
    "mailbox_next_hop",
    "logs",
    "cluster",
    "milter",
)


@dataclass
class Loaded:
    """The result of a successful load: the organisation plus non-fatal warnings."""

    organization: Organization
    warnings: list[Problem] = field(default_factory=list)

    @property
    def open_relays(self) -> list[Problem]:
        """The warnings of kind :data:`OPEN_RELAY`: Exchange accepts these, and they relay for anyone."""
        return [w for w in self.warnings if w.kind == OPEN_RELAY]


def load(path: str | Path) -> Loaded:
    """Read and validate ``path``; raise :class:`ConfigError` listing every problem, and nothing else."""
    path = str(path)
    return loads(reader.read_file(path), path)


def loads(text: str, file: str = "<string>") -> Loaded:
    """Load a configuration from text; raise :class:`ConfigError`, and nothing else, on any input."""
    try:
        return _loads(text, file)
    except ConfigError:
        raise
    except Exception as e:  # a bug of exmilter's, not the admin's: still refuse the file, never crash a reload
        message = f"internal error while reading this file ({type(e).__name__}: {e}); please report it"
        raise ConfigError([Problem(file, 1, 1, "internal", message)]) from e


def _loads(text: str, file: str) -> Loaded:
    out = Collector(file)
    entries = connectors.ConnectorEntries(out)
    root = reader.read(text, file, entries)
    if root is None:
        out.error(None, "file", "the file is empty")
        raise ConfigError(out.problems)
    org = _organization(root, file, entries, out)
    if out.errors:
        raise ConfigError(out.problems)
    return Loaded(org, sorted(out.warnings))


def _organization(root: Raw, file: str, entries: connectors.ConnectorEntries, out: Collector) -> Organization:
    """Every section built (each reporting its own problems), then Exchange's rules checked on the whole."""
    top = fields.mapping(root, "file", out)
    for key, (kraw, _) in top.items():
        if key not in TOP_KEYS:
            out.error(kraw, key, f"unknown key; expected one of {', '.join(TOP_KEYS)}")
    server, server_unknown = sections.server(top.get("server"), root, out)
    domains = sections.accepted_domains(top["accepted_domains"][1], out) if "accepted_domains" in top else ()
    if not domains:
        out.warn(
            top.get("accepted_domains", (root,))[0],
            "accepted_domains",
            "no accepted domain: every recipient needs relay rights",
        )
    defaults_at = None
    if "default_connectors" in top:
        kraw, vraw = top["default_connectors"]
        if fields.parse_or_report(vraw, "default_connectors", fields.boolean, out) is True:
            defaults_at = Raw(None, kraw.line, kraw.col)
    built = connectors.build(
        entries, top.get("receive_connectors"), server, "name" not in server_unknown, defaults_at, out
    )
    users = sections.users(top["users"][1], out) if "users" in top else ()
    policyd = sections.policyd(top["policyd"][1], out) if "policyd" in top else PolicydSettings()
    spaces_at: dict[str, Raw] = {}  # where each send connector's address_spaces are, for its warnings
    sends = (
        send_connectors.send_connectors(top["send_connectors"][1], out, server.name, spaces_at)
        if "send_connectors" in top
        else ()
    )
    hop = send_connectors.mailbox_next_hop(top["mailbox_next_hop"][1], out) if "mailbox_next_hop" in top else None
    send_connectors.check_routes(domains, sends, hop, top.get("send_connectors", (root,))[0], out, spaces_at)
    org = Organization(
        server,
        tuple(domains),
        tuple(b.connector for b in built),
        tuple(users),
        policyd,
        file,
        send_connectors=tuple(sends),
        mailbox_next_hop=hop,
        logs=config_logs.logs(top["logs"][1], out) if "logs" in top else LogSettings(),
        milter=sections.milter(top["milter"][1], out) if "milter" in top else MilterSettings(),
    )
    if "cluster" in top:
        org = dataclasses.replace(org, cluster=config_cluster.cluster(top["cluster"][1], out))
    if "tls" in top or "sasl" in top:
        org = dataclasses.replace(
            org,
            tls=auth.tls(top["tls"][1], out) if "tls" in top else org.tls,
            sasl=auth.sasl(top["sasl"][1], out) if "sasl" in top else org.sasl,
        )
    validate(
        org,
        {b.connector.name: b.where for b in built},
        out,
        unknown={b.connector.name: b.failed for b in built if b.failed},
        server_unknown=server_unknown,
    )
    return org
