"""The ``send_connectors`` and ``mailbox_next_hop`` sections: outbound routing, with located errors.

Keys are Exchange's parameter names in snake_case; values are written as Exchange writes
them (``SMTP:*.contoso.com;1``, ``$true``, ``35MB``, ``unlimited``). What Exchange refuses
is refused here, at the line and column of the value (docs/send-connectors.md, "Rules"):
DNS routing together with smart hosts, smart-host routing without them, address spaces
that are not SMTP or not a domain pattern, a cost outside 1-100, TLS settings that
contradict each other, basic authentication without a credentials file. Secrets are never
in this file: ``authentication_credential_file`` names a Postfix table the admin provides.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from exmilter.config import fields
from exmilter.config.fields import FAILED
from exmilter.config.problems import Collector
from exmilter.config.reader import Raw
from exmilter.domains import AcceptedDomains, DomainError, to_ascii
from exmilter.model import (
    AcceptedDomain,
    AcceptedDomainType,
    AddressSpace,
    NextHop,
    SendConnector,
    SmartHostAuthMechanism,
    TlsAuthLevel,
    Usage,
)
from exmilter.routing import best_match
from exmilter.values import parse_byte_size, parse_ip

#: Exchange's bounds on an address space's cost.
MIN_COST, MAX_COST = 1, 100
#: The largest MaxMessageSize Exchange takes (bytes) short of ``unlimited``.
MAX_SIZE = 2147483647
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_DOMAIN_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def address_space(text: str) -> AddressSpace:
    """``contoso.com``, ``*.contoso.com``, ``*``, each optionally ``SMTP:…;cost`` (cost 1 by default)."""
    s = str(text).strip()
    if s.startswith("[") and s.endswith("]"):
        s = s[1:-1].strip()
    kind, colon, rest = s.partition(":")
    if colon:
        if kind.strip().upper() != "SMTP":
            raise ValueError(f"{text!r}: only SMTP address spaces can be routed by Postfix (not {kind.strip()!r})")
        s = rest.strip()
    domain, semi, cost_text = s.partition(";")
    cost = 1
    if semi:
        if not re.fullmatch(r"\s*\d{1,3}\s*", cost_text):
            raise ValueError(f"{text!r}: the cost after ';' must be a number {MIN_COST}-{MAX_COST}")
        cost = int(cost_text)
        if not MIN_COST <= cost <= MAX_COST:
            raise ValueError(f"{text!r}: cost {cost} is out of range {MIN_COST}-{MAX_COST}")
    domain = domain.strip().rstrip(".")
    if domain == "--":
        raise ValueError(f"{text!r}: '--' (the organisation's own domains) is for Edge Transport servers only")
    if domain == "*":
        return AddressSpace("*", cost)
    wildcard = domain.startswith("*.")
    body = domain[2:] if wildcard else domain
    if "*" in body or not body:
        raise ValueError(f"{text!r}: a wildcard is only valid as '*' or a leading '*.'")
    try:
        body = to_ascii(body)
    except DomainError as e:
        raise ValueError(f"{text!r}: {e}") from None
    if len(body) > 255 or not _DOMAIN_RE.fullmatch(body):
        raise ValueError(f"{text!r} is not a domain name")
    return AddressSpace(("*." if wildcard else "") + body, cost)


def _address_spaces(raw: Raw) -> tuple[AddressSpace, ...]:
    spaces = tuple(address_space(fields.scalar(i)) for i in fields.list_items(raw))
    if not spaces:
        raise ValueError("at least one address space is required, e.g. '*' or 'SMTP:contoso.com;1'")
    return spaces


def smart_host(text: str) -> str:
    """A smart host: a host name or an IP address (``[10.0.0.1]`` too); no port (Port is the connector's)."""
    s = str(text).strip()
    if s.startswith("[") and s.endswith("]"):
        s = s[1:-1]
    try:
        return str(parse_ip(s))
    except ValueError:
        pass
    if ":" in s:
        raise ValueError(f"{text!r}: a smart host has no port; set the connector's port")
    return fields.parse_fqdn(s).lower()


def _smart_hosts(raw: Raw) -> tuple[str, ...]:
    return tuple(smart_host(fields.scalar(i)) for i in fields.list_items(raw))


def next_hop(text: str) -> NextHop:
    """``host``, ``host:port``, ``10.0.0.20``, ``[10.0.0.20]:2525`` or ``[2001:db8::1]:25``."""
    s = str(text).strip()
    port = 25
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", s) or re.fullmatch(r"([^:\[\]]+)(?::(\d+))?", s)
    if m is None:
        raise ValueError(f"{text!r}: expected host, host:port or [address]:port")
    host, port_text = m.group(1), m.group(2)
    if port_text is not None:
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise ValueError(f"{text!r}: port {port} is out of range 1-65535")
    return NextHop(smart_host(host), port)


def _tls_domain(raw: Raw) -> str:
    s = fields.scalar(raw).strip().rstrip(".").lower()
    body = s[2:] if s.startswith("*.") else s
    try:
        body = to_ascii(body)
    except DomainError as e:
        raise ValueError(str(e)) from None
    if "*" in body or not _DOMAIN_RE.fullmatch(body):
        raise ValueError(f"{s!r} is not a domain (or '*.domain')")
    return ("*." if s.startswith("*.") else "") + body


def _max_size(raw: Raw) -> int | None:
    s = fields.scalar(raw).strip()
    if s.lower() == "unlimited":
        return None
    n = parse_byte_size(s)
    if not 0 < n <= MAX_SIZE:
        raise ValueError(f"{n} bytes is out of range 1-{MAX_SIZE:,} (or unlimited)")
    return n


def _credential_file(raw: Raw) -> str:
    s = fields.scalar(raw).strip()
    if not s.startswith("/"):
        raise ValueError(f"{s!r}: give an absolute path (Postfix reads it as root when smtp starts)")
    if any(c.isspace() or c in ",{}$" for c in s):
        raise ValueError(f"{s!r}: a path without blanks, commas, braces or '$' (it goes into master.cf)")
    return s


_USAGE = fields.choice(*(u.value for u in Usage))
_TLS_LEVEL = fields.choice(*(t.value for t in TlsAuthLevel))
_AUTH = fields.choice(*(m.value for m in SmartHostAuthMechanism))

#: Send-connector keys → parser. ``name`` and ``address_spaces`` are required.
SEND_CONNECTOR_FIELDS: dict[str, Callable[[Raw], Any]] = {
    "name": fields.scalar,
    "address_spaces": _address_spaces,
    "usage": lambda r: Usage(_USAGE(r)),
    "dns_routing_enabled": fields.boolean,
    "smart_hosts": _smart_hosts,
    "port": fields.int_range(1, 65535),
    "require_tls": fields.boolean,
    "tls_auth_level": lambda r: None if r.value in (None, "") else TlsAuthLevel(_TLS_LEVEL(r)),
    "tls_domain": _tls_domain,
    "ignore_starttls": fields.boolean,
    "smart_host_auth_mechanism": lambda r: SmartHostAuthMechanism(_AUTH(r)),
    "authentication_credential_file": _credential_file,
    "max_message_size": _max_size,
    "fqdn": fields.fqdn,
    "enabled": fields.boolean,
    "source_transport_servers": fields.strings,
    "cloud_services_mail_enabled": fields.boolean,
    "comment": fields.scalar,
}
SEND_CONNECTOR_KEYS = frozenset(SEND_CONNECTOR_FIELDS)


def parse_send_connector_property(key: str, value: str | Sequence[str]) -> Any:
    """A send-connector property from its text (or texts), judged as the loader judges it.

    KeyError for a key that is not a property; ValueError (the loader's message) for a bad value.
    """
    parser = SEND_CONNECTOR_FIELDS[key]
    if isinstance(value, str):
        return parser(Raw(value, 1, 1))
    return parser(Raw([Raw(str(v), 1, 1) for v in value], 1, 1))


def mailbox_next_hop(raw: Raw, out: Collector) -> NextHop | None:
    """``mailbox_next_hop``: where the mailboxes of the accepted domains live now."""
    v = fields.parse_or_report(raw, "mailbox_next_hop", lambda r: next_hop(fields.scalar(r)), out)
    return None if v is FAILED else v


def send_connectors(
    raw: Raw, out: Collector, server: str, spaces_at: dict[str, Raw] | None = None
) -> list[SendConnector]:
    """``send_connectors``: every connector that parsed, each refusal reported where it was written.

    ``spaces_at`` receives where each connector's ``address_spaces`` was written (by name),
    for the warnings :func:`check_routes` gives.
    """
    if not isinstance(raw.value, list):
        out.error(raw, "send_connectors", "expected a list")
        return []
    result: list[SendConnector] = []
    seen: dict[str, Raw] = {}
    for item in raw.value:
        written = fields.mapping(item, "send_connectors", out)
        values: dict[str, Any] = {}
        for key, (kraw, vraw) in written.items():
            parser = SEND_CONNECTOR_FIELDS.get(key)
            if parser is None:
                out.error(kraw, f"send_connectors.{key}", f"unknown key; expected {', '.join(SEND_CONNECTOR_FIELDS)}")
                continue
            v = fields.parse_or_report(vraw, f"send_connectors.{key}", parser, out)
            if v is not FAILED:
                values[key] = v
        for req in ("name", "address_spaces"):
            if req not in written:
                out.error(item, f"send_connectors.{req}", "required")
        if "name" not in values or "address_spaces" not in values:
            continue
        name = values["name"].strip()
        if name.lower() in seen:
            out.error(
                written["name"][1],
                "send_connectors.name",
                f"{name!r} is already a send connector (line {seen[name.lower()].line})",
            )
            continue
        seen[name.lower()] = written["name"][1]
        values["name"] = name
        if _check(values, written, item, out, server):
            result.append(SendConnector(**values))
            if spaces_at is not None:
                spaces_at[name] = written["address_spaces"][1]
    return result


def _check(values: dict[str, Any], written: dict[str, tuple[Raw, Raw]], item: Raw, out: Collector, server: str) -> bool:
    """Exchange's refusals of one connector's combination of values; False when one applies."""
    ok = True

    def at(key: str) -> Raw:
        return written[key][1] if key in written else item

    def refuse(key: str, message: str) -> None:
        nonlocal ok
        ok = False
        out.error(at(key), f"send_connectors.{key}", message)

    dns = values.get("dns_routing_enabled", "smart_hosts" not in values)
    values["dns_routing_enabled"] = dns
    hosts = values.get("smart_hosts", ())
    if dns and hosts:
        refuse("smart_hosts", "SmartHosts cannot be set while DNSRoutingEnabled is $true")
    if not dns and not hosts:
        refuse("dns_routing_enabled", "SmartHosts is required when DNSRoutingEnabled is $false")
    level = values.get("tls_auth_level")
    if level is not None and not values.get("require_tls", False):
        refuse("tls_auth_level", "TlsAuthLevel needs RequireTLS $true")
    if level is TlsAuthLevel.DomainValidation and not values.get("tls_domain"):
        refuse("tls_auth_level", "TlsAuthLevel DomainValidation needs TlsDomain")
    if values.get("tls_domain") and level is not TlsAuthLevel.DomainValidation:
        refuse("tls_domain", "TlsDomain is only used with TlsAuthLevel DomainValidation")
    if values.get("ignore_starttls") and values.get("require_tls"):
        refuse("ignore_starttls", "IgnoreSTARTTLS cannot be $true while RequireTLS is $true")
    mech = values.get("smart_host_auth_mechanism", SmartHostAuthMechanism.NONE)
    if mech in (SmartHostAuthMechanism.ExchangeServer, SmartHostAuthMechanism.ExternalAuthoritative):
        refuse(
            "smart_host_auth_mechanism",
            f"{mech.value}: Postfix's smtp client has no Exchange authentication; use BasicAuth or "
            "BasicAuthRequireTLS with a credentials file, or None",
        )
    basic = mech in (SmartHostAuthMechanism.BasicAuth, SmartHostAuthMechanism.BasicAuthRequireTLS)
    if basic and not values.get("authentication_credential_file"):
        refuse(
            "smart_host_auth_mechanism",
            f"{mech.value} needs authentication_credential_file: a Postfix table the admin writes, "
            "one line '[smarthost]:port username:password' (secrets never go in this file)",
        )
    if basic and values.get("ignore_starttls") and mech is SmartHostAuthMechanism.BasicAuthRequireTLS:
        refuse("ignore_starttls", "BasicAuthRequireTLS needs STARTTLS; IgnoreSTARTTLS must be $false")
    if basic and dns:
        out.warn(
            at("smart_host_auth_mechanism"),
            "send_connectors.smart_host_auth_mechanism",
            "smart-host authentication is not used under DNS routing (no smart hosts)",
        )
    if values.get("authentication_credential_file") and not basic:
        out.warn(
            at("authentication_credential_file"),
            "send_connectors.authentication_credential_file",
            "not used: SmartHostAuthMechanism is not BasicAuth or BasicAuthRequireTLS",
        )
    sources = values.get("source_transport_servers", ())
    if sources and server.lower() not in (s.lower() for s in sources):
        out.warn(
            at("source_transport_servers"),
            "send_connectors.source_transport_servers",
            f"{server} is not a source transport server: this server does not route over the connector",
        )
    return ok


def check_routes(
    domains: Sequence[AcceptedDomain],
    connectors: Sequence[SendConnector],
    hop: NextHop | None,
    at: Raw,
    out: Collector,
    spaces_at: dict[str, Raw] | None = None,
) -> None:
    """Warnings where mail would not go where the file seems to say: held, routed by MX, an
    address space the accepted domains take first, a tie only the connector name breaks."""
    if not connectors:
        return
    live = [c for c in connectors if c.enabled]
    for d in domains:
        routed_here = d.domain_type is AcceptedDomainType.Authoritative or (
            d.domain_type is AcceptedDomainType.InternalRelay and hop is not None
        )
        if d.domain_type is AcceptedDomainType.Authoritative and hop is None:
            message = f"{d.domain_name} is Authoritative and no mailbox_next_hop is set: Postfix routes it by MX"
            out.warn(at, "mailbox_next_hop", message)
        elif not routed_here and best_match(live, d.suffix) is None:
            message = f"{d.domain_name} ({d.domain_type.value}) matches no send connector: its mail is held"
            out.warn(at, "send_connectors", message)
    accepted = AcceptedDomains(domains)
    seen: dict[tuple[str, int], str] = {}
    key = "send_connectors.address_spaces"
    for c in live:
        where = (spaces_at or {}).get(c.name, at)
        for space in c.address_spaces:
            tie = seen.setdefault((space.domain, space.cost), c.name)
            if tie != c.name:
                out.warn(where, key, f"{space} is also on {tie!r} at the same cost: the connector name breaks the tie")
            taken = accepted.match(space.suffix) if space.suffix else None
            if taken is None:
                continue
            if taken.domain_type is AcceptedDomainType.Authoritative:
                why = "Authoritative"
            elif taken.domain_type is AcceptedDomainType.InternalRelay and hop is not None:
                why = "InternalRelay with a mailbox_next_hop"
            else:
                continue
            message = (
                f"{space} on {c.name!r}: {space.suffix} is an accepted domain ({why}): its mail goes to the "
                "mailboxes, never over this connector (InternalRelay without mailbox_next_hop routes it here)"
            )
            out.warn(where, key, message)
