"""The mutable server model commands are applied to, in the configuration file's own syntax.

Values stay as text (``10MB``, ``10.0.0.0/24``) so the written file reads like the
runbook; the loader's parsers check them. Connectors created by setup remember their
default properties, so only what a runbook changed is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from exmilter import defaults
from exmilter.model import Right, Usage

#: The usage of a connector that names none (New-ReceiveConnector without -Usage, or a
#: Format-List object of a connector the input did not create). A plain string, read often.
NO_USAGE = Usage.Custom.value
#: Origin of the accepted domain setup is assumed to have created for the forest's DNS domain.
ASSUMED_DOMAIN = "assumed: Exchange setup's accepted domain for the forest"


@dataclass
class Ace:
    """An ``Add-ADPermission`` entry; ``group`` is set when a permission group was expanded."""

    user: str
    rights: Right
    deny: bool = False
    group: str | None = None
    origins: list[str] = field(default_factory=list)  # the commands that granted (or took) its rights


@dataclass
class Connector:
    spec: dict[str, Any]  # config keys: text, list of text, or bool
    origins: list[str]
    default: dict[str, Any] | None = None  # setup's properties, for connectors setup creates
    aces: list[Ace] = field(default_factory=list)
    key_origins: dict[str, list[str]] = field(default_factory=dict)  # key → the commands that set it

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def copy(self) -> Connector:
        return Connector(
            {k: list(v) if isinstance(v, list) else v for k, v in self.spec.items()},
            list(self.origins),
            self.default,
            [Ace(a.user, a.rights, a.deny, a.group, list(a.origins)) for a in self.aces],
            {k: list(v) for k, v in self.key_origins.items()},
        )

    def current(self, key: str) -> Any:
        """The value in effect: set, setup's, or the usage default."""
        if key in self.spec:
            return self.spec[key]
        if self.default and key in self.default:
            return self.default[key]
        return defaults.USAGE_DEFAULTS[str(self.spec.get("usage", NO_USAGE))].get(key)


@dataclass
class Domain:
    spec: dict[str, Any]
    origins: list[str]


@dataclass
class SendSpec:
    """A send connector: its configuration keys (text, list of text, or bool) and its origins."""

    spec: dict[str, Any]
    origins: list[str]

    @property
    def name(self) -> str:
        return str(self.spec["name"])


@dataclass
class UserGrant:
    name: str
    origins: list[str]
    send_as: list[str] = field(default_factory=list)


@dataclass
class State:
    server: str
    fqdn: str
    fqdn_known: bool
    addresses: dict[str, str] = field(default_factory=dict)  # IP -> where the input bound it
    connectors: list[Connector] = field(default_factory=list)
    domains: list[Domain] = field(default_factory=list)
    users: dict[str, UserGrant] = field(default_factory=dict)
    send_connectors: list[SendSpec] = field(default_factory=list)

    @classmethod
    def fresh(cls, server: str, fqdn: str, fqdn_known: bool) -> State:
        """A freshly installed Exchange 2019 Mailbox server."""
        state = cls(server, fqdn, fqdn_known)
        for d in defaults.default_connectors(server):
            state.connectors.append(Connector(dict(d), ["created by Exchange setup"], default=dict(d)))
        return state

    def copy(self) -> State:
        """A copy to restore when a command is refused; every command takes one, so no deepcopy.

        Values are text and bools, lists of text, or setup's defaults (never changed): the
        containers are copied, their items shared.
        """
        return State(
            self.server,
            self.fqdn,
            self.fqdn_known,
            dict(self.addresses),
            [c.copy() for c in self.connectors],
            [Domain(dict(d.spec), list(d.origins)) for d in self.domains],
            {k: UserGrant(u.name, list(u.origins), list(u.send_as)) for k, u in self.users.items()},
            [
                SendSpec({k: list(v) if isinstance(v, list) else v for k, v in c.spec.items()}, list(c.origins))
                for c in self.send_connectors
            ],
        )

    def connector(self, name: str) -> Connector | None:
        key = name.lower()
        return next((c for c in self.connectors if c.name.lower() == key), None)

    def domain(self, identity: str) -> Domain | None:
        key = identity.lower().rstrip(".")
        return next(
            (d for d in self.domains if str(d.spec["name"]).lower() == key or str(d.spec["domain_name"]) == key),
            None,
        )

    def send_connector(self, identity: str) -> SendSpec | None:
        """A send connector by name (they belong to the organisation, not to a server)."""
        key = identity.strip().rpartition("\\")[2].lower()
        return next((c for c in self.send_connectors if c.name.lower() == key), None)

    def defaults_intact(self) -> bool:
        """Whether ``default_connectors: true`` still describes setup's five connectors."""
        names = {c.name.lower() for c in self.connectors if c.default is not None and c.name == c.default["name"]}
        return len(names) == len(defaults.default_connectors(self.server))
