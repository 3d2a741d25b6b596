"""Write the imported server as exmilter YAML that a person can review.

Connectors keep their Exchange names; each entry is preceded by a comment naming the
commands it came from. Setup's connectors are written only where the input changed them
(``default_connectors: true`` supplies the rest), unless one was removed or renamed.
"""

from __future__ import annotations

import dataclasses
import json
import re
import textwrap
from collections.abc import Sequence
from typing import Any

from exmilter import defaults
from exmilter.config import CONNECTOR_FIELDS, Raw
from exmilter.importer.state import Ace, Connector, State
from exmilter.model import RIGHT_DISPLAY, ReceiveConnector, Right

_PLAIN = re.compile(r"[A-Za-z0-9_./\\(][A-Za-z0-9_./@*\\:()\[\] -]*")
_KEY_ORDER = ["name", "transport_role", "usage", "bindings", "remote_ip_ranges", "auth_mechanism", "permission_groups"]


def scalar(value: Any, in_flow: bool = False) -> str:
    """A YAML scalar the loader reads back as the same text (plain when that is safe)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    s = str(value)
    plain = (
        _PLAIN.fullmatch(s) is not None
        and not s.endswith((" ", ":"))
        and ": " not in s
        and s.lower() not in ("null", "~", "true", "false", "yes", "no", "on", "off")
        and not (in_flow and any(ch in s for ch in "[]{},"))
    )
    return s if plain else json.dumps(s, ensure_ascii=False)


def flow(items: list[Any]) -> str:
    return "[" + ", ".join(scalar(i, in_flow=True) for i in items) + "]"


def typed(key: str, value: Any) -> Any:
    """The value as the loader parses it, to compare an override with a default."""
    if value is None:
        return None
    raw = Raw([Raw(str(v), 1, 1) for v in value], 1, 1) if isinstance(value, list) else Raw(str(value), 1, 1)
    try:
        parsed = CONNECTOR_FIELDS[key](raw)
    except ValueError:
        return object()  # never equal: written out, so the loader reports it
    if key in ("bindings", "remote_ip_ranges"):
        return sorted((r.version, r.first, r.last) if hasattr(r, "first") else (r.version, r.address, r.port)
                      for r in parsed)
    return parsed


_MODEL_DEFAULTS = {
    f.name: f.default for f in dataclasses.fields(ReceiveConnector) if f.default is not dataclasses.MISSING
}


def _baseline(c: Connector, key: str, fqdn: str) -> Any:
    """What the loader would use for ``key`` if the file did not say it."""
    if c.default is not None and key in c.default:
        return typed(key, c.default[key])
    usage = defaults.USAGE_DEFAULTS[str(c.spec.get("usage", "Custom"))]
    if key in usage:
        return typed(key, usage[key])
    if key == "fqdn":
        return fqdn
    return _MODEL_DEFAULTS.get(key, object())


def changed_keys(c: Connector, fqdn: str) -> list[str]:
    """Keys to write: those that differ from what the loader would assume anyway."""
    usage = str(c.spec.get("usage", "Custom"))
    always = {"name"} if c.default else {"name", "usage", "transport_role", *defaults.USAGE_REQUIRED[usage]}
    keys = []
    for key, value in c.spec.items():
        if key in always:
            keys.append(key)
            continue
        mine = typed(key, value)
        if isinstance(mine, str) and key == "fqdn":
            mine = mine.lower()
        if mine != _baseline(c, key, fqdn.lower()):
            keys.append(key)
    return keys


def _comment(lines: list[str], text: str, indent: str) -> None:
    for chunk in textwrap.wrap(text, 100 - len(indent) - 2, break_on_hyphens=False):
        lines.append(f"{indent}# {chunk}")


def _ace(a: Ace) -> list[str]:
    rights = [RIGHT_DISPLAY[r] for r in Right if r and r in a.rights and r in RIGHT_DISPLAY]
    out = [f"      - user: {scalar(a.user)}", f"        extended_rights: {flow(rights)}"]
    if a.deny:
        out.append("        deny: true")
    return out


def render(state: State, header: Sequence[str] = ()) -> str:
    lines = [f"# {h}" if h else "#" for h in header]
    lines.append("server:")
    lines.append(f"  name: {scalar(state.server)}")
    fqdn = f"  fqdn: {scalar(state.fqdn)}"
    lines.append(fqdn if state.fqdn_known else fqdn + "  # not in the input: replace with the server's FQDN")
    if state.addresses:
        _comment(lines, "bound by the input (a specific IP is one of this server's addresses): "
                 + "; ".join(f"{ip} at {where}" for ip, where in state.addresses.items()), "  ")
        lines.append(f"  addresses: {flow(list(state.addresses))}")
    keep_defaults = state.defaults_intact()
    lines.append("")
    if keep_defaults:
        lines.append("# The five receive connectors Exchange 2019 setup creates on this server.")
    lines.append(f"default_connectors: {scalar(keep_defaults)}")
    if state.domains:
        lines += ["", "accepted_domains:"]
        for d in state.domains:
            _comment(lines, "; ".join(d.origins), "  ")
            first = True
            for key, value in d.spec.items():
                lines.append(f"  {'- ' if first else '  '}{key}: {scalar(value)}")
                first = False
    written = [
        c for c in state.connectors
        if not keep_defaults or c.default is None or c.aces or changed_keys(c, state.fqdn) != ["name"]
    ]
    if written:
        lines += ["", "receive_connectors:"]
    for c in written:
        _comment(lines, "; ".join(c.origins), "  ")
        keys = changed_keys(c, state.fqdn) if keep_defaults or c.default is None else list(c.spec)
        keys.sort(key=lambda k: (_KEY_ORDER.index(k) if k in _KEY_ORDER else len(_KEY_ORDER), list(c.spec).index(k)))
        first = True
        for key in keys:
            value = c.spec[key]
            text = flow(value) if isinstance(value, list) else scalar(value)
            lines.append(f"  {'- ' if first else '  '}{key}: {text}")
            first = False
        if c.aces:
            lines.append("    permissions:")
            for a in c.aces:
                lines += _ace(a)
    if state.users:
        lines += ["", "users:"]
        for u in state.users.values():
            _comment(lines, "; ".join(u.origins), "  ")
            lines.append(f"  - name: {scalar(u.name)}")
            if u.send_as:
                lines.append(f"    send_as: {flow(u.send_as)}")
    return "\n".join(lines) + "\n"
