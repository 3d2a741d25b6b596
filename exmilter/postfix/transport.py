"""The outbound side: send connectors as Postfix transports, a transport map and a TLS policy map.

Nothing is rendered for a configuration without ``send_connectors`` and ``mailbox_next_hop``
(Postfix then routes as before). Otherwise (docs/send-connectors.md, "What render-postfix writes"):

* one ``smtp`` service per send connector in master.cf (``exsend-<name>``): its helo name
  (Fqdn, else the server's), its TLS default, its smart hosts after the first as fallback
  relays, its port under DNS routing, and for basic authentication the admin's credentials
  table (``smtp_sasl_password_maps``; the secret is never in main.cf or master.cf);
  ``exmailbox`` carries mail to the ``mailbox_next_hop``;
* ``exmilter_transport``: one key per name an address space or accepted domain mentions
  (``contoso.com``, ``.contoso.com`` for its subdomains), each mapped to the route
  :class:`exmilter.routing.Router` computes for it, so Postfix's own lookup order (the
  name, then its parents) reproduces Exchange's "most specific address space wins";
  ``default_transport`` is the route of every other domain (``*``), the ``retry``
  transport (defer, never bounce) when no connector takes it;
* ``exmilter_tls_policy``: ``encrypt``/``verify``/``secure match=…`` per smart host and per
  DNS-routed domain; both tables are ``texthash:`` files beside main.cf, read when a Postfix
  process starts, so neither ``postmap`` nor a rebuild is needed (``postfix reload`` after
  a change).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from exmilter.model import NextHop, Organization, SendConnector, SmartHostAuthMechanism
from exmilter.postfix.options import option
from exmilter.routing import CONNECTOR, MAILBOX, UNREACHABLE_REASON, Route, Router, TlsRequirement, tls_requirement

#: File names beside main.cf (main.cf refers to them through ``$config_directory``).
TRANSPORT_FILE = "exmilter_transport"
TLS_POLICY_FILE = "exmilter_tls_policy"
#: The master.cf service that carries mail to the mailbox next hop.
MAILBOX_SERVICE = "exmailbox"
#: Prefix of each send connector's master.cf service.
SERVICE_PREFIX = "exsend-"
#: Where a route nobody takes goes: a transport in ``defer_transports``, so the message is
#: accepted and held in the deferred queue (Exchange's Unreachable queue) and resolved again
#: at each retry. Not ``retry:`` (error(8)): smtpd refuses such recipients at RCPT with a 450,
#: and the message would stay with the client instead (smtpd_check.c, unlisted recipients).
UNREACHABLE_SERVICE = "exunreachable"
UNREACHABLE_TRANSPORT = f"{UNREACHABLE_SERVICE}:"
#: Should someone force delivery (``postqueue -f``), the service itself defers: EX_TEMPFAIL.
UNREACHABLE_SERVICE_LINE = (
    f"# exmilter: recipients no send connector takes ({UNREACHABLE_REASON});\n"
    "#   held by defer_transports; forced (postqueue -f), it defers again (exit 75)\n"
    f"{UNREACHABLE_SERVICE} unix - n n - - pipe\n"
    "  flags=q user=nobody argv=/bin/sh -c { exit 75 }"
)
#: The system trust anchors verify/secure need (Debian's ca-certificates).
SYSTEM_CA_PATH = "/etc/ssl/certs"


@dataclass(frozen=True)
class Outbound:
    """What the outbound side adds: main.cf settings, master.cf services and the two tables."""

    main: tuple[tuple[str, str, str], ...] = ()  # (name, value, why)
    services: tuple[str, ...] = ()
    files: dict[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.main


def service_names(connectors: Iterable[SendConnector]) -> dict[str, str]:
    """Connector name → its master.cf service: ``exsend-`` and the name in lower-case letters,
    digits and ``-``, numbered when two names come out the same."""
    names: dict[str, str] = {}
    used: set[str] = set()
    for c in connectors:
        slug = re.sub(r"[^a-z0-9]+", "-", c.name.lower()).strip("-")[:40] or "connector"
        name, n = SERVICE_PREFIX + slug, 2
        while name in used:
            name, n = f"{SERVICE_PREFIX}{slug}-{n}", n + 1
        used.add(name)
        names[c.name] = name
    return names


def _table_keys(org: Organization) -> list[tuple[str, bool]]:
    """Every (name, subdomains?) a table needs: each address space's and each accepted domain's."""
    keys: dict[tuple[str, bool], None] = {}

    def add(name: str, below: bool) -> None:
        if name:
            keys.setdefault((name, False), None)
            if below:
                keys.setdefault((name, True), None)

    for c in org.send_connectors:
        for s in c.address_spaces:
            if s.domain != "*":
                add(s.suffix, s.is_wildcard)
    for d in org.accepted_domains:
        add(d.suffix, d.is_wildcard or d.match_sub_domains)
    return list(keys)


class OutboundRenderer:
    """Routes → transport-map values; ``dns_transport`` replaces DNS routes (the sandbox, offline)."""

    def __init__(self, org: Organization, dns_transport: str | None = None) -> None:
        self.org = org
        self.router = Router(org)
        self.services = service_names(org.send_connectors)
        self.dns_transport = dns_transport

    def transport(self, route: Route) -> str:
        """A route as a transport-map value (``service:nexthop``).

        With ``dns_transport`` (the sandbox, offline), every route that would need a name
        lookup (by MX, or to a host name rather than an IP address) is ``dns_transport``,
        its ``{}`` replaced by the service that would have carried it.
        """
        if route.kind == MAILBOX:
            service, default = MAILBOX_SERVICE, "relay:"
        elif route.kind == CONNECTOR and route.connector is not None:
            service = self.services[route.connector.name]
            default = f"{service}:"
        else:
            return UNREACHABLE_TRANSPORT
        if route.next_hops and (self.dns_transport is None or _is_ip(route.next_hops[0].host)):
            return f"{service}:{route.next_hops[0].postfix}"
        if self.dns_transport is not None:
            return self.dns_transport.format(service if route.next_hops or route.kind == CONNECTOR else "relay")
        return default

    def transport_table(self) -> list[tuple[str, str, str]]:
        """(key, value, why) lines of the transport map, most specific names first."""
        rows = []
        for name, below in _table_keys(self.org):
            route = self.router.route_below(name) if below else self.router.route_domain(name)
            rows.append(("." + name if below else name, self.transport(route), _why(route)))
        rows.sort(key=lambda r: (-r[0].count("."), r[0]))
        return rows

    def tls_table(self) -> list[tuple[str, str, str]]:
        """(key, policy, why): each smart host's and each DNS-routed name's TLS requirement.

        TLS is a connector's property in Exchange, but the table is keyed by next hop: a
        smart host that connectors with different requirements share gets no entry (the
        policy is then empty: a comment), so each connector's transport applies its own
        ``smtp_tls_security_level`` (:func:`connector_service`).
        """
        found: dict[str, list[tuple[TlsRequirement, str]]] = {}
        for c in self.org.send_connectors:
            if c.enabled:
                for hop in c.next_hops:
                    found.setdefault(hop.postfix, []).append((tls_requirement(c), c.name))
        if self.dns_transport is None:
            for name, below in _table_keys(self.org):
                route = self.router.route_below(name) if below else self.router.route_domain(name)
                if route.kind == CONNECTOR and route.dns and route.connector is not None:
                    found.setdefault("." + name if below else name, []).append(
                        (route.tls, f"{route.connector.name} (MX)")
                    )
        rows = []
        for key, uses in sorted(found.items()):
            names = ", ".join(dict.fromkeys(n for _, n in uses))
            if len({t for t, _ in uses}) == 1:
                rows.append((key, uses[0][0].policy, f"send connector {names}"))
            else:
                levels = ", ".join(f"{n}: {t.policy}" for t, n in uses)
                rows.append((key, "", f"{key}: connectors differ ({levels}): each transport's own level applies"))
        return rows

    def default_route(self) -> Route:
        return self.router.route_below("")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _why(route: Route) -> str:
    if route.kind == MAILBOX:
        ad = route.accepted_domain
        return f"accepted domain {ad.domain_name} ({ad.domain_type.value}): the mailboxes" if ad else "the mailboxes"
    if route.kind == CONNECTOR and route.connector is not None:
        return f"send connector {route.connector.name}, address space {route.address_space}"
    return "no send connector: held in the deferred queue and retried (Exchange's Unreachable queue)"


def _service(name: str, comment: Iterable[str], options: Iterable[tuple[str, str]]) -> str:
    return "\n".join([*comment, f"{name} unix - - n - - smtp", *(f"  {option(k, v)}" for k, v in options)])


def connector_service(c: SendConnector, name: str, org: Organization) -> str:
    """One send connector's smtp(8) service."""
    tls = tls_requirement(c)
    hops = c.next_hops
    opts: list[tuple[str, str]] = [("smtp_helo_name", c.fqdn or org.server.fqdn)]
    opts.append(("smtp_tls_security_level", tls.level))
    if tls.level == "secure" and tls.match:
        opts.append(("smtp_tls_secure_cert_match", ":".join(tls.match)))
    if len(hops) > 1:
        opts.append(("smtp_fallback_relay", ",".join(h.postfix for h in hops[1:])))
    if c.dns_routing_enabled and c.port != 25:
        opts.append(("smtp_tcp_port", str(c.port)))
    mech = c.smart_host_auth_mechanism
    if hops and c.authentication_credential_file and mech is not SmartHostAuthMechanism.NONE:
        opts += [
            ("smtp_sasl_auth_enable", "yes"),
            ("smtp_sasl_password_maps", f"texthash:{c.authentication_credential_file}"),
            # BasicAuth sends the password as Exchange does, with or without TLS; BasicAuthRequireTLS only under TLS
            (
                "smtp_sasl_security_options",
                "noanonymous" if mech is SmartHostAuthMechanism.BasicAuth else "noplaintext, noanonymous",
            ),
            ("smtp_sasl_tls_security_options", "noanonymous"),
        ]
    where = (
        ", ".join(str(h) for h in hops)
        if hops
        else "MX of the recipient domain" + (f", port {c.port}" if c.port != 25 else "")
    )
    comment = [
        f"# exmilter send connector {c.name!r}{'' if c.enabled else ' (disabled: no route uses it)'}",
        f"#   address spaces {', '.join(str(s) for s in c.address_spaces)} -> {where}; TLS {tls.policy}",
    ]
    if c.max_message_size is not None:
        comment.append(
            f"#   MaxMessageSize {c.max_message_size} bytes: smtp(8) has no per-transport limit "
            "(docs/send-connectors.md, 'MaxMessageSize')"
        )
    return _service(name, comment, opts)


def render_outbound(org: Organization, dns_transport: str | None = None) -> Outbound:
    """The outbound side of ``org``; empty when it has no send connector and no mailbox next hop."""
    if not org.send_connectors and org.mailbox_next_hop is None:
        return Outbound()
    r = OutboundRenderer(org, dns_transport)
    transport_rows = r.transport_table()
    tls_rows = r.tls_table()
    default = r.default_route()
    main = [
        (
            "transport_maps",
            f"texthash:${{config_directory}}/{TRANSPORT_FILE}",
            "send connectors and the mailbox next hop, per name (no postmap: read when Postfix starts)",
        ),
        ("default_transport", r.transport(default), f"every other domain ('*'): {_why(default)}"),
    ]
    main.append(
        (
            "defer_transports",
            UNREACHABLE_SERVICE,
            "recipients no send connector takes stay queued and are retried, never bounced at once",
        )
    )
    if any(value for _, value, _ in tls_rows):
        main.append(
            (
                "smtp_tls_policy_maps",
                f"texthash:${{config_directory}}/{TLS_POLICY_FILE}",
                "RequireTLS/TlsAuthLevel per smart host and DNS-routed domain",
            )
        )
    if any(tls_requirement(c).level in ("verify", "secure") for c in org.send_connectors):
        main.append(
            ("smtp_tls_CApath", SYSTEM_CA_PATH, "the trust anchors CertificateValidation/DomainValidation check")
        )
    main.append(("smtp_tls_loglevel", "1", "the maillog says which TLS each delivery had"))
    services = [connector_service(c, r.services[c.name], org) for c in org.send_connectors]
    if org.mailbox_next_hop is not None:
        services.append(mailbox_service(org.mailbox_next_hop, org))
    services.append(UNREACHABLE_SERVICE_LINE)
    files = {TRANSPORT_FILE: _table(transport_rows, "transport_maps")}
    if any(value for _, value, _ in tls_rows):
        files[TLS_POLICY_FILE] = _table(tls_rows, "smtp_tls_policy_maps")
    return Outbound(tuple(main), tuple(services), files)


def mailbox_service(hop: NextHop, org: Organization) -> str:
    return _service(
        MAILBOX_SERVICE,
        [f"# exmilter: mail for the accepted domains' mailboxes -> {hop} (opportunistic TLS)"],
        [("smtp_helo_name", org.server.fqdn), ("smtp_tls_security_level", "may")],
    )


def _table(rows: list[tuple[str, str, str]], what: str) -> str:
    head = [f"# exmilter: {what} table generated by exmilter render-postfix (texthash: no postmap needed)."]
    lines = [f"# {why}\n{key}\t{value}" if value else f"# {why}" for key, value, why in rows]
    return "\n".join([*head, *lines]) + "\n"
