"""Where an accepted recipient goes next, as Exchange routes it (docs/send-connectors.md).

Pure: an :class:`~exmilter.model.Organization` in, one :class:`Route` per recipient domain out.

* The recipient's best-matching accepted domain decides first (spec §1.5):
  **Authoritative** mail goes to the mailboxes (``mailbox_next_hop``), never over a send
  connector; **InternalRelay** mail goes there too when a mailbox next hop is configured
  (the mailbox server holds the directory and routes the recipients it does not have),
  else over the send connectors; **ExternalRelay** mail (no recipients here) and every
  other domain go over the send connectors.
* Among enabled send connectors of this server, the address space that most closely
  matches the domain wins: an exact name beats ``*.name`` for the same name, a longer
  name beats a shorter one, ``*`` matches last. Then the lowest cost, then the connector
  name (Exchange's last tie-breakers are AD-site proximity and the name; one server has
  one site).
* No matching connector: the route is **unreachable**. Exchange accepts such mail, keeps
  it in its Unreachable queue and retries until it expires, then sends an NDR; the Postfix
  rendering accepts it too and holds it in the deferred queue (a transport in
  ``defer_transports``) until a route appears or ``maximal_queue_lifetime`` ends.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from exmilter.domains import AcceptedDomains, address_domain, ascii_domain
from exmilter.model import (
    AcceptedDomain,
    AcceptedDomainType,
    AddressSpace,
    NextHop,
    Organization,
    SendConnector,
    SmartHostAuthMechanism,
    TlsAuthLevel,
)
from exmilter.replies import ROUTE_SIZE_EXCEEDED, Reply

#: Route kinds: the mailboxes, a send connector, or nowhere (held, retried).
MAILBOX = "mailbox"
CONNECTOR = "connector"
UNREACHABLE = "unreachable"

#: What Postfix's retry transport says for an unreachable domain (it defers, never bounces).
UNREACHABLE_REASON = "4.4.1 no send connector routes this domain (Exchange: Unreachable queue)"


@dataclass(frozen=True, slots=True)
class TlsRequirement:
    """What the hop must offer before mail is handed over, in Postfix's TLS policy terms.

    ``level``: ``none`` (IgnoreSTARTTLS), ``may`` (opportunistic, Exchange's default),
    ``encrypt`` (RequireTLS), ``verify`` (CertificateValidation: chain and host name),
    ``secure`` with ``match`` (DomainValidation: the certificate names TlsDomain).
    """

    level: str
    match: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        return self.level in ("encrypt", "verify", "secure")

    @property
    def policy(self) -> str:
        """The smtp_tls_policy_maps value: ``secure match=mail.protection.outlook.com``."""
        return f"{self.level} match={':'.join(self.match)}" if self.match else self.level

    def describe(self) -> str:
        return {
            "none": "no TLS (IgnoreSTARTTLS)",
            "may": "opportunistic TLS",
            "encrypt": "TLS required (encryption only)",
            "verify": "TLS required, certificate validated",
            "secure": f"TLS required, certificate for {', '.join(self.match)}",
        }[self.level]


@dataclass(frozen=True, slots=True)
class Route:
    """One recipient domain's route: to the mailboxes, over a send connector, or unreachable."""

    kind: str
    domain: str
    accepted_domain: AcceptedDomain | None = None
    connector: SendConnector | None = None
    address_space: AddressSpace | None = None
    tls: TlsRequirement = TlsRequirement("may")
    #: Hosts mail is handed to; empty under DNS routing (the domain's MX) or when unreachable.
    next_hops: tuple[NextHop, ...] = ()
    max_message_size: int | None = None

    @property
    def dns(self) -> bool:
        """The next hop is found in DNS (MX of the recipient domain)."""
        return self.kind != UNREACHABLE and not self.next_hops

    def next_hop_text(self) -> str:
        if self.kind == UNREACHABLE:
            return "none (held in the deferred queue, retried)"
        if self.next_hops:
            return ", ".join(str(h) for h in self.next_hops)
        port = self.connector.port if self.connector else 25
        return f"MX of {self.domain}" + ("" if port == 25 else f" (port {port})")

    def size_refusal(self, size: int) -> Reply | None:
        """Exchange's NDR when a message of ``size`` bytes is too large for this route."""
        if self.max_message_size is not None and size > self.max_message_size:
            return ROUTE_SIZE_EXCEEDED
        return None

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "domain": self.domain,
            "accepted_domain": self.accepted_domain.domain_name if self.accepted_domain else None,
            "accepted_domain_type": self.accepted_domain.domain_type.value if self.accepted_domain else None,
            "connector": self.connector.name if self.connector else None,
            "address_space": str(self.address_space) if self.address_space else None,
            "next_hop": self.next_hop_text(),
            "tls": self.tls.policy,
            "tls_required": self.tls.required,
            "max_message_size": self.max_message_size,
        }


def tls_requirement(connector: SendConnector | None) -> TlsRequirement:
    """The TLS a connector demands of its next hop (the mailbox hop: opportunistic)."""
    if connector is None:
        return TlsRequirement("may")
    if connector.ignore_starttls:
        return TlsRequirement("none")
    level = connector.tls_auth_level
    if level is TlsAuthLevel.DomainValidation and connector.tls_domain:
        domain = connector.tls_domain
        return TlsRequirement("secure", (f".{domain[2:]}" if domain.startswith("*.") else domain,))
    if level is TlsAuthLevel.CertificateValidation or level is TlsAuthLevel.DomainValidation:
        return TlsRequirement("verify")
    auth_needs_tls = connector.smart_host_auth_mechanism is SmartHostAuthMechanism.BasicAuthRequireTLS
    if connector.require_tls or (auth_needs_tls and not connector.dns_routing_enabled):
        return TlsRequirement("encrypt")
    return TlsRequirement("may")


def matches(space: AddressSpace, domain: str, below: bool = False) -> bool:
    """Whether ``space`` covers ``domain`` (ASCII): ``*`` all, ``*.x`` x and below, else exact.

    With ``below``, whether it covers the names under ``domain`` ('' : every name): only
    ``*`` and wildcards for ``domain`` or a parent do.
    """
    if space.domain == "*":
        return True
    if space.is_wildcard:
        suffix = space.suffix
        return bool(domain) and (domain == suffix or domain.endswith("." + suffix))
    return not below and domain == space.domain


def specificity(space: AddressSpace) -> tuple[int, int]:
    """Higher is more specific: labels of the name, then exact over wildcard (``*`` is lowest)."""
    if space.domain == "*":
        return (0, 0)
    return (space.suffix.count(".") + 1, 0 if space.is_wildcard else 1)


def on_this_server(connector: SendConnector, server: str) -> bool:
    """A connector is this server's when SourceTransportServers is empty or names it."""
    return not connector.source_transport_servers or server.lower() in (
        s.lower() for s in connector.source_transport_servers
    )


class Router:
    """The routes of one configuration; built once, asked per recipient."""

    def __init__(self, org: Organization) -> None:
        self.org = org
        self.accepted = AcceptedDomains(org.accepted_domains)
        self.connectors = tuple(
            c for c in org.send_connectors if c.enabled and on_this_server(c, org.server.name) and c.address_spaces
        )
        self._cached = functools.lru_cache(maxsize=4096)(self._route_domain)  # (domain, below) -> Route

    def route(self, address: str) -> Route:
        """The route of one recipient address (its domain as Postfix routes it)."""
        return self.route_domain(address_domain(address))

    def route_domain(self, domain: str) -> Route:
        name = ascii_domain(domain) if domain else None
        return self._cached(name or domain.lower(), False)

    def route_below(self, domain: str) -> Route:
        """The route of any name under ``domain`` ('' for every domain) that nothing closer names:
        what a ``.domain`` entry of a Postfix table (or ``default_transport``) must say."""
        name = ascii_domain(domain) if domain else ""
        return self._cached(name or domain.lower(), True)

    def _route_domain(self, domain: str, below: bool) -> Route:
        accepted = accepted_below(self.org.accepted_domains, domain) if below else self.accepted.match(domain)
        hop = self.org.mailbox_next_hop
        if accepted is not None and (
            accepted.domain_type is AcceptedDomainType.Authoritative
            or (accepted.domain_type is AcceptedDomainType.InternalRelay and hop is not None)
        ):
            return Route(MAILBOX, domain, accepted, next_hops=(hop,) if hop else ())
        best = best_match(self.connectors, domain, below)
        if best is None:
            return Route(UNREACHABLE, domain, accepted, tls=TlsRequirement("may"))
        connector, space = best
        return Route(
            CONNECTOR,
            domain,
            accepted,
            connector,
            space,
            tls_requirement(connector),
            connector.next_hops,
            connector.max_message_size,
        )


def accepted_below(domains: Iterable[AcceptedDomain], domain: str) -> AcceptedDomain | None:
    """The accepted domain that covers the names under ``domain`` (a wildcard or MatchSubDomains
    entry for it or a parent; the longest wins), or None."""
    best: AcceptedDomain | None = None
    for d in domains:
        if not (d.is_wildcard or d.match_sub_domains) or not domain:
            continue
        suffix = ascii_domain(d.suffix) or d.suffix
        if (domain == suffix or domain.endswith("." + suffix)) and (best is None or len(suffix) > len(best.suffix)):
            best = d
    return best


def best_match(
    connectors: Iterable[SendConnector], domain: str, below: bool = False
) -> tuple[SendConnector, AddressSpace] | None:
    """The connector and address space that most closely match ``domain`` (with ``below``: a name
    under it), then the lowest cost, then the connector name; None when no address space matches."""
    best: tuple[tuple[int, int], int, str] | None = None
    found: tuple[SendConnector, AddressSpace] | None = None
    for c in connectors:
        for space in c.address_spaces:
            if not matches(space, domain, below):
                continue
            spec = specificity(space)
            key = ((-spec[0], -spec[1]), space.cost, c.name.lower())
            if best is None or key < best:
                best, found = key, (c, space)
    return found


def size_refusal(router: Router, recipients: Sequence[str], size: int) -> Reply | None:
    """The reply for a message of ``size`` bytes when any recipient's route is too small for it.

    For the milter's end-of-data (it knows every recipient and the real size): Exchange
    refuses such a message after accepting it (an NDR); refusing it at end of data leaves
    the NDR to the sending server, and nothing is lost.
    """
    for r in recipients:
        reply = router.route(r).size_refusal(size)
        if reply is not None:
            return reply
    return None
