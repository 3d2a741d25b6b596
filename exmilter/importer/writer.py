"""Write the imported server as exmilter YAML that a person can review.

Connectors keep their Exchange names; each entry is preceded by a comment naming the
commands it came from. Setup's connectors are written only where the input changed them
(``default_connectors: true`` supplies the rest), unless one was removed or renamed.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import textwrap
from collections.abc import Sequence
from typing import Any

from exmilter import defaults, limits
from exmilter.config import parse_connector_property
from exmilter.importer.chars import printable, yaml_escaped
from exmilter.importer.state import NO_USAGE, Ace, Connector, State
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
    return s if plain else yaml_escaped(json.dumps(s, ensure_ascii=False))


def flow(items: list[Any]) -> str:
    return "[" + ", ".join(scalar(i, in_flow=True) for i in items) + "]"


def typed(key: str, value: Any) -> Any:
    """The value as the loader parses it, to compare an override with a default."""
    if value is None:
        return None
    parsed = _parsed(key, tuple(value) if isinstance(value, list) else value)
    return object() if parsed is _UNPARSED else parsed  # never equal: written out, so the loader reports it


_UNPARSED = object()


@functools.lru_cache(maxsize=4096)
def _parsed(key: str, value: Any) -> Any:
    """:func:`typed`, remembered: every check renders every connector, and most values never change."""
    try:
        parsed = parse_connector_property(key, [str(v) for v in value] if isinstance(value, tuple) else str(value))
    except ValueError:
        return _UNPARSED
    if key in ("bindings", "remote_ip_ranges"):
        return sorted(
            (r.version, r.first, r.last) if hasattr(r, "first") else (r.version, r.address, r.port) for r in parsed
        )
    return parsed


_MODEL_DEFAULTS = {
    f.name: f.default for f in dataclasses.fields(ReceiveConnector) if f.default is not dataclasses.MISSING
}


def _baseline(c: Connector, key: str, fqdn: str) -> Any:
    """What the loader would use for ``key`` if the file did not say it."""
    if c.default is not None and key in c.default:
        return typed(key, c.default[key])
    usage = defaults.USAGE_DEFAULTS[str(c.spec.get("usage", NO_USAGE))]
    if key in usage:
        return typed(key, usage[key])
    if key == "fqdn":
        return fqdn
    return _MODEL_DEFAULTS.get(key, object())


def changed_keys(c: Connector, fqdn: str) -> list[str]:
    """Keys to write: those that differ from what the loader would assume anyway."""
    usage = str(c.spec.get("usage", NO_USAGE))
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
    for chunk in textwrap.wrap(printable(text), 100 - len(indent) - 2, break_on_hyphens=False):
        lines.append(f"{indent}# {chunk}")


def _origins(origins: list[str]) -> str:
    most = limits.IMPORT_MAX_ORIGINS_SHOWN
    shown = "; ".join(origins[:most])
    return shown + (f"; and {len(origins) - most} more" if len(origins) > most else "")


def _ace(a: Ace) -> list[str]:
    rights = [RIGHT_DISPLAY[r] for r in Right if r and r in a.rights and r in RIGHT_DISPLAY]
    out = [f"      - user: {scalar(a.user)}", f"        extended_rights: {flow(rights)}"]
    if a.deny:
        out.append("        deny: true")
    return out


class _Out:
    """Lines of the file and, for each, the commands behind it (to trace the loader's warnings)."""

    def __init__(self, comments: bool) -> None:
        self.comments = comments
        self.lines: list[str] = []
        self.origins: list[tuple[str, ...]] = []

    def add(self, line: str, origins: Sequence[str] = ()) -> None:
        self.lines.append(line)
        self.origins.append(tuple(origins))

    def comment(self, text: str, indent: str) -> None:
        if self.comments:
            before = len(self.lines)
            _comment(self.lines, text, indent)
            self.origins += [()] * (len(self.lines) - before)


def render(state: State, header: Sequence[str] = (), comments: bool = True) -> str:
    """The YAML text; ``comments=False`` leaves out the origin comments (the per-command check)."""
    return "\n".join([f"# {printable(h)}" if h else "#" for h in header] + render_lines(state, comments)[0]) + "\n"


def render_lines(state: State, comments: bool = True) -> tuple[list[str], list[tuple[str, ...]]]:
    """The YAML lines after the header, and for each line the commands that made it."""
    out = _Out(comments)
    out.add("server:")
    out.add(f"  name: {scalar(state.server)}")
    fqdn = f"  fqdn: {scalar(state.fqdn)}"
    out.add(fqdn if state.fqdn_known else fqdn + "  # not in the input: replace with the server's FQDN")
    if state.addresses:
        out.comment(
            "bound by the input (a specific IP is one of this server's addresses): "
            + "; ".join(f"{ip} at {where}" for ip, where in state.addresses.items()),
            "  ",
        )
        out.add(f"  addresses: {flow(list(state.addresses))}", list(state.addresses.values()))
    keep_defaults = state.defaults_intact()
    out.add("")
    if keep_defaults:
        out.comment("The five receive connectors Exchange 2019 setup creates on this server.", "")
    out.add(f"default_connectors: {scalar(keep_defaults)}")
    if state.domains:
        out.add("")
        out.add("accepted_domains:")
        for d in state.domains:
            out.comment(_origins(d.origins), "  ")
            first = True
            for key, value in d.spec.items():
                out.add(f"  {'- ' if first else '  '}{key}: {scalar(value)}", d.origins)
                first = False
    written = [
        c
        for c in state.connectors
        if not keep_defaults or c.default is None or c.aces or changed_keys(c, state.fqdn) != ["name"]
    ]
    if written:
        out.add("")
        out.add("receive_connectors:")
    for c in written:
        out.comment(_origins(c.origins), "  ")
        keys = changed_keys(c, state.fqdn) if keep_defaults or c.default is None else list(c.spec)
        keys.sort(key=lambda k: (_KEY_ORDER.index(k) if k in _KEY_ORDER else len(_KEY_ORDER), list(c.spec).index(k)))
        first = True
        for key in keys:
            value = c.spec[key]
            text = flow(value) if isinstance(value, list) else scalar(value)
            out.add(f"  {'- ' if first else '  '}{key}: {text}", c.key_origins.get(key) or c.origins)
            first = False
        if c.aces:
            out.add("    permissions:", c.origins)
            for a in c.aces:
                for line in _ace(a):
                    out.add(line, a.origins)
    if state.send_connectors:
        out.add("")
        out.add("send_connectors:")
        for sc in state.send_connectors:
            out.comment(_origins(sc.origins), "  ")
            first = True
            for key, value in sc.spec.items():
                if key == "authentication_credential_file":  # a reference, never the secret
                    out.comment(
                        "CREDENTIALS NOT IMPORTED: write the smart host's user and password to this file "
                        "('[host]:port user:password', mode 600) before starting Postfix",
                        "    ",
                    )
                text = flow(value) if isinstance(value, list) else scalar(value)
                out.add(f"  {'- ' if first else '  '}{key}: {text}", sc.origins)
                first = False
    if state.users:
        out.add("")
        out.add("users:")
        for u in state.users.values():
            out.comment(_origins(u.origins), "  ")
            out.add(f"  - name: {scalar(u.name)}", u.origins)
            if u.send_as:
                out.add(f"    send_as: {flow(u.send_as)}", u.origins)
    return out.lines, out.origins
