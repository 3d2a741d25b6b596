"""Two configurations compared connector by connector, in Exchange's terms (``exmilter diff``).

The migration check for a load-balanced pool: "the same receive connectors exist on all of
the servers". Connectors are paired by name with the server's own name taken out
(``Default Frontend EXA`` on EXA pairs with ``Default Frontend EXB`` on EXB), and what is
legitimately per node is not a difference: the server's name, a connector FQDN that is
just its server's FQDN, and an exact binding on one of the server's own addresses.

Pure: values in, :class:`Difference` values out; the command prints them.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from exmilter.model import RIGHT_DISPLAY, AcceptedDomain, Organization, ReceiveConnector, Right

#: Configuration keys whose Exchange name is not the plain CamelCase of the key.
_EXCHANGE_SPELLING = {
    "remote_ip_ranges": "RemoteIPRanges",
    "require_tls": "RequireTLS",
    "require_ehlo_domain": "RequireEHLODomain",
    "enable_auth_gssapi": "EnableAuthGSSAPI",
    "suppress_xanonymous_tls": "SuppressXAnonymousTls",
}
#: Per node by design (Exchange's own per-server values), or compared separately below.
_NOT_COMPARED = frozenset({"name", "server", "fqdn", "bindings", "remote_ip_ranges", "permissions"})
#: Placeholders for per-node values in what is shown.
SERVER_PLACEHOLDER = "<server>"
SERVER_ADDRESS_PLACEHOLDER = "<server address>"


def exchange_name(key: str) -> str:
    """``max_message_size`` -> ``MaxMessageSize``, as Set-ReceiveConnector spells it."""
    return _EXCHANGE_SPELLING.get(key) or "".join(w.capitalize() for w in key.split("_"))


@dataclass(frozen=True, slots=True)
class Difference:
    """One difference: ``where`` (a connector or the organisation), ``what`` (a parameter), A's and B's side.

    ``only_a``/``only_b`` hold the members of a multi-valued property on one side only;
    for a single value, ``a`` and ``b`` are the two values as Exchange writes them.
    """

    where: str
    what: str
    a: str = ""
    b: str = ""
    only_a: tuple[str, ...] = ()
    only_b: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.only_a or self.only_b:
            parts = []
            if self.only_a:
                parts.append("only in A: " + ", ".join(self.only_a))
            if self.only_b:
                parts.append("only in B: " + ", ".join(self.only_b))
            return f"{self.where}: {self.what}: " + "; ".join(parts)
        return f"{self.where}: {self.what}: A {self.a} / B {self.b}"


def _pool_name(name: str, server: str) -> str:
    """The connector's name with its server's name replaced, so nodes' default connectors pair."""
    if not server:
        return name.lower()
    return re.sub(rf"(?i)\b{re.escape(server)}\b", SERVER_PLACEHOLDER, name).lower()


def _shown(value: object) -> str:
    """A value as Exchange writes it: ``Unlimited``, ``$true``, ``{a, b}``, flag names."""
    if value is None:
        return "Unlimited"
    if isinstance(value, bool):
        return "$true" if value else "$false"
    if isinstance(value, tuple):
        return "{" + ", ".join(_shown(v) for v in value) + "}"
    if isinstance(value, enum.Flag):
        return ", ".join(m.name for m in type(value) if m and m in value and m.name) or "None"
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


def _bindings(c: ReceiveConnector, org: Organization) -> set[str]:
    own = set()
    for a in org.server.addresses:
        try:
            own.add(ipaddress.ip_address(a))
        except ValueError:
            continue
    out = set()
    for b in c.bindings:
        if b.ip in own:
            out.add(f"{SERVER_ADDRESS_PLACEHOLDER}:{b.port}")
        else:
            out.add(str(b))
    return out


def _fqdn(c: ReceiveConnector, org: Organization) -> str:
    """The connector's FQDN, or a placeholder when it is its own server's (a per-node value)."""
    fqdn = (c.fqdn or org.server.fqdn).lower()
    return SERVER_PLACEHOLDER + " FQDN" if fqdn == org.server.fqdn.lower() else fqdn


def _aces(c: ReceiveConnector) -> set[str]:
    """Each permission entry split into one Add-ADPermission line per right, as Exchange lists them."""
    out = set()
    for e in c.permissions:
        for r in Right:
            if r and r.name and r in e.rights:
                deny = " -Deny" if e.deny else ""
                out.add(f"-User '{e.user}' -ExtendedRights {RIGHT_DISPLAY[r]}{deny}")
    return out


def _sets(where: str, what: str, a: set[str], b: set[str]) -> list[Difference]:
    if a == b:
        return []
    return [Difference(where, what, only_a=tuple(sorted(a - b)), only_b=tuple(sorted(b - a)))]


def _connector(
    where: str, ca: ReceiveConnector, oa: Organization, cb: ReceiveConnector, ob: Organization
) -> list[Difference]:
    out: list[Difference] = []
    out += _sets(where, "Bindings", _bindings(ca, oa), _bindings(cb, ob))
    out += _sets(where, "RemoteIPRanges", {str(r) for r in ca.remote_ip_ranges}, {str(r) for r in cb.remote_ip_ranges})
    fa, fb = _fqdn(ca, oa), _fqdn(cb, ob)
    if fa != fb:
        out.append(Difference(where, "Fqdn", a=fa, b=fb))
    for f in dataclasses.fields(ReceiveConnector):
        if f.name in _NOT_COMPARED:
            continue
        va, vb = getattr(ca, f.name), getattr(cb, f.name)
        if va != vb:
            out.append(Difference(where, exchange_name(f.name), a=_shown(va), b=_shown(vb)))
    out += _sets(where, "ADPermission", _aces(ca), _aces(cb))
    return out


def _domains(ds: Iterable[AcceptedDomain]) -> dict[str, AcceptedDomain]:
    return {d.domain_name: d for d in ds}


def compare(a: Organization, b: Organization) -> list[Difference]:
    """Every difference between the two pools' receive connectors and accepted domains, in a stable order."""
    out: list[Difference] = []
    ra = {_pool_name(c.name, c.server or a.server.name): c for c in a.receive_connectors}
    rb = {_pool_name(c.name, c.server or b.server.name): c for c in b.receive_connectors}
    for key in sorted(ra.keys() | rb.keys()):
        ca, cb = ra.get(key), rb.get(key)
        if ca is None and cb is not None:
            out.append(Difference(f"Receive connector '{cb.identity}'", "exists", a="no", b="yes"))
        elif cb is None and ca is not None:
            out.append(Difference(f"Receive connector '{ca.identity}'", "exists", a="yes", b="no"))
        elif ca is not None and cb is not None:
            where = f"Receive connector '{ca.identity}'" + (f" / '{cb.identity}'" if ca.identity != cb.identity else "")
            out += _connector(where, ca, a, cb, b)
    da, db = _domains(a.accepted_domains), _domains(b.accepted_domains)
    for name in sorted(da.keys() | db.keys()):
        x, y = da.get(name), db.get(name)
        where = f"Accepted domain {name!r}"
        if x is None or y is None:
            out.append(Difference(where, "exists", a="yes" if x else "no", b="yes" if y else "no"))
            continue
        for f in dataclasses.fields(AcceptedDomain):
            vx, vy = getattr(x, f.name), getattr(y, f.name)
            if vx != vy:
                out.append(Difference(where, exchange_name(f.name), a=_shown(vx), b=_shown(vy)))
    return out
