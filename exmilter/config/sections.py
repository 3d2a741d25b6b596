"""The small sections: ``server``, ``accepted_domains``, ``users`` and ``policyd``, one builder each.

Each takes the section as read and the collector, reports every bad key or value, and
returns what parsed, so the rest of the file is still checked.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

from exmilter.config import fields
from exmilter.config.fields import FAILED
from exmilter.config.problems import Collector
from exmilter.config.reader import Raw
from exmilter.model import AcceptedDomain, AcceptedDomainType, MilterSettings, PolicydSettings, Server, User
from exmilter.permissions import is_group_principal_name
from exmilter.values import parse_ip

#: The server name used for the remaining checks when ``server.name`` is missing or unusable.
UNKNOWN_SERVER = "<server>"

_SERVER_KEYS = ("name", "fqdn", "domain", "addresses")


def server(section: tuple[Raw, Raw] | None, root: Raw, out: Collector) -> tuple[Server, frozenset[str]]:
    """The server, and which of its fields are unknown (missing or bad): checks that need them are skipped."""
    if section is None:
        out.error(root, "server", "required: name and fqdn of the server exmilter replaces")
        return Server(UNKNOWN_SERVER, "", "EXCHANGE"), frozenset(_SERVER_KEYS)
    raw = section[1]
    m = fields.mapping(raw, "server", out)
    values: dict[str, str] = {}
    addresses: tuple[str, ...] = ()
    unknown: set[str] = set()
    for key, (kraw, vraw) in m.items():
        if key not in _SERVER_KEYS:
            out.error(kraw, f"server.{key}", "unknown key; expected name, fqdn, domain, addresses")
            continue
        if key == "addresses":
            addrs = fields.parse_or_report(vraw, "server.addresses", _addresses, out)
            if addrs is FAILED:
                unknown.add("addresses")
            else:
                addresses = addrs
            continue
        v = fields.parse_or_report(vraw, f"server.{key}", fields.fqdn if key == "fqdn" else fields.scalar, out)
        if v is FAILED:
            unknown.add(key)
        else:
            values[key] = v.strip()
    for req in ("name", "fqdn"):
        if req not in m:
            out.error(raw, f"server.{req}", "required")
        if req not in values:
            unknown.add(req)
    name = values.get("name", UNKNOWN_SERVER)
    if "name" in values and ("\\" in name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}", name)):
        out.error(m["name"][1], "server.name", f"{name!r} is not a server (NetBIOS) name")
    fqdn = values.get("fqdn", "")
    domain = values.get("domain") or (fqdn.split(".")[1].upper() if fqdn.count(".") else "EXCHANGE")
    return Server(name, fqdn, domain, addresses), frozenset(unknown)


def _addresses(raw: Raw) -> tuple[str, ...]:
    return tuple(str(parse_ip(fields.scalar(i))) for i in fields.list_items(raw))


_DOMAIN_FIELDS: dict[str, Callable[[Raw], Any]] = {
    "name": fields.scalar,
    "domain_name": fields.domain_name,
    "domain_type": lambda r: AcceptedDomainType(fields.choice(*(t.value for t in AcceptedDomainType))(r)),
    "match_sub_domains": fields.boolean,
    "address_book_enabled": fields.boolean,
}


def accepted_domains(raw: Raw, out: Collector) -> list[AcceptedDomain]:
    """``accepted_domains``: full entries, or a bare domain name for an Authoritative one."""
    if not isinstance(raw.value, list):
        out.error(raw, "accepted_domains", "expected a list")
        return []
    result: list[AcceptedDomain] = []
    seen: dict[str, Raw] = {}
    for item in raw.value:
        if isinstance(item.value, str):  # shorthand: "- contoso.com" = Authoritative
            written = {"domain_name": (item, item)}
        else:
            written = fields.mapping(item, "accepted_domains", out)
        values: dict[str, Any] = {}
        for key, (kraw, vraw) in written.items():
            parser = _DOMAIN_FIELDS.get(key)
            if parser is None:
                out.error(kraw, f"accepted_domains.{key}", f"unknown key; expected {', '.join(_DOMAIN_FIELDS)}")
                continue
            v = fields.parse_or_report(vraw, f"accepted_domains.{key}", parser, out)
            if v is not FAILED:
                values[key] = v
        if "domain_name" not in written:
            out.error(item, "accepted_domains.domain_name", "required")
            continue
        if "domain_name" not in values:
            continue
        dn = values["domain_name"]
        if dn in seen:
            out.error(
                written["domain_name"][1],
                "accepted_domains.domain_name",
                f"{dn} is already an accepted domain (line {seen[dn].line})",
            )
            continue
        seen[dn] = written["domain_name"][1]
        dtype = values.get("domain_type", AcceptedDomainType.Authoritative)
        result.append(
            AcceptedDomain(
                name=values.get("name", dn),
                domain_name=dn,
                domain_type=dtype,
                match_sub_domains=values.get("match_sub_domains", False),
                address_book_enabled=values.get("address_book_enabled", dtype is AcceptedDomainType.Authoritative),
            )
        )
    return result


_USER_KEYS = ("name", "addresses", "member_of", "send_as")


def users(raw: Raw, out: Collector) -> list[User]:
    """``users``: SASL login names, the addresses they own, their groups and Send-As grants."""
    if not isinstance(raw.value, list):
        out.error(raw, "users", "expected a list")
        return []
    result = []
    for item in raw.value:
        m = fields.mapping(item, "users", out)
        values: dict[str, Any] = {}
        for key, (kraw, vraw) in m.items():
            if key not in _USER_KEYS:
                out.error(kraw, f"users.{key}", "unknown key; expected name, addresses, member_of, send_as")
                continue
            parser = fields.scalar if key == "name" else fields.strings
            v = fields.parse_or_report(vraw, f"users.{key}", parser, out)
            if v is not FAILED:
                values[key] = v
        if "name" not in values:
            if m:
                out.error(item, "users.name", "required: the SASL login name")
            continue
        if is_group_principal_name(values["name"]):
            out.error(
                m["name"][1],
                "users.name",
                f"{values['name'].strip()!r} is a group or well-known principal, not a login: "
                "a login is never given a group's rights (list the groups in member_of)",
            )
            continue
        result.append(
            User(
                values["name"].strip(),
                tuple(a.lower() for a in values.get("addresses", ())),
                values.get("member_of", ()),
                tuple(a.lower() for a in values.get("send_as", ())),
            )
        )
    return result


_POLICYD_FIELDS: dict[str, Callable[[Raw], Any]] = {
    "listen": fields.strings,
    "metrics": fields.optional_text,
    "max_line_length": fields.int_range(64, 1 << 20),
    "max_attributes": fields.int_range(8, 4096),
    "max_connections": fields.auto_or(fields.int_range(1, 10_000_000)),
    "request_timeout": fields.int_range(1, 3600),
    "idle_timeout": fields.int_range(10, 86400),
}


def policyd(raw: Raw, out: Collector) -> PolicydSettings:
    """``policyd``: the policy daemon's listeners and its own bounds, over :class:`PolicydSettings`' defaults."""
    m = fields.mapping(raw, "policyd", out)
    values: dict[str, Any] = {}
    for key, (kraw, vraw) in m.items():
        if key not in _POLICYD_FIELDS:
            out.error(kraw, f"policyd.{key}", f"unknown key; expected {', '.join(_POLICYD_FIELDS)}")
            continue
        v = fields.parse_or_report(vraw, f"policyd.{key}", _POLICYD_FIELDS[key], out)
        if v is not FAILED:
            values[key] = v
    return dataclasses.replace(PolicydSettings(), **values)


_MILTER_FIELDS: dict[str, Callable[[Raw], Any]] = {
    "enabled": fields.boolean,
    "listen": fields.optional_text,
    "metrics": fields.optional_text,
    "coverage": fields.optional_text,
}


def milter(raw: Raw, out: Collector) -> MilterSettings:
    """``milter``: whether Postfix is rendered with the milter, where it listens, its metrics
    and the policy daemon's coverage socket, over :class:`MilterSettings`' defaults."""
    m = fields.mapping(raw, "milter", out)
    values: dict[str, Any] = {}
    for key, (kraw, vraw) in m.items():
        if key not in _MILTER_FIELDS:
            out.error(kraw, f"milter.{key}", f"unknown key; expected {', '.join(_MILTER_FIELDS)}")
            continue
        v = fields.parse_or_report(vraw, f"milter.{key}", _MILTER_FIELDS[key], out)
        if v is FAILED:
            continue
        if key == "listen" and not v:
            out.error(vraw, "milter.listen", "give an endpoint (unix:PATH or tcp:PORT:interface=ADDRESS)")
            continue
        if key == "coverage" and v is not None and not v.startswith("/"):
            out.error(vraw, "milter.coverage", "give an absolute path of a unix datagram socket, or null")
            continue
        values[key] = v
    return dataclasses.replace(MilterSettings(), **values)
