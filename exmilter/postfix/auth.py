"""STARTTLS and AUTH per listener, offered per client the way each connector would (issue #13).

Exchange offers ``STARTTLS`` where the connector's AuthMechanism has ``Tls`` and ``AUTH``
where it has ``BasicAuth`` (after STARTTLS only with ``BasicAuthRequireTLS``), decided per
connector, hence per client on a shared binding (spec §1.2, §3.2, §3.3; exmilter.auth). Postfix
switches both per service (``-o``), and hides them per client with
``smtpd_discard_ehlo_keyword_address_maps``: a hidden ``AUTH`` or ``STARTTLS`` is also
refused when the client sends it anyway (``503 5.5.1 Error: authentication not enabled``).
The map is an inline ``cidr:`` table (Postfix 3.7+) built from the engine's own selection,
so its first-match order gives each client exactly the connector exmilter will judge it by.

Where Postfix cannot follow Exchange, the rendered comments say so, and the policy daemon
still judges a login the connector could not have accepted as anonymous.

MaxLogonFailures and AuthTarpitInterval have no per-session equivalent in Postfix: anvil's
``smtpd_client_auth_rate_limit`` counts every AUTH of a client per minute, successes
included (a client sending a message per connection would hit it), so it is left at 0 and
the difference is written above the service (docs/authentication.md, "Differences").
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from exmilter.auth import auth_requires_tls, certificate, offers_basic_auth, offers_starttls
from exmilter.model import Organization, ReceiveConnector
from exmilter.postfix.listeners import ListenerPlan
from exmilter.postfix.options import OptionGroup
from exmilter.selection import ConnectorTable
from exmilter.values import parse_ip

#: SASL mechanisms Postfix offers: LOGIN as Exchange, and PLAIN, which Exchange lacks but
#: most clients prefer (spec §7 #20: stamped as LOGIN). Dovecot's others are filtered out.
SASL_MECHANISMS = "login, plain"
#: The EHLO keywords as ``smtpd_discard_ehlo_keywords`` spells them.
STARTTLS, AUTH = "starttls", "auth"
#: A map result that discards nothing: it ends the first-match lookup for that client.
DISCARD_NOTHING = "silent-discard"


@dataclass(frozen=True)
class Offer:
    """What one listener offers: TLS with which files, AUTH, and per client what is hidden."""

    certificate: tuple[str, str] | None  # (certificate file, key file) when STARTTLS is offered
    auth: bool
    auth_only_after_tls: bool
    hidden: str  # an inline cidr: map of EHLO keywords to hide per client, or ''
    gaps: tuple[str, ...] = ()  # where Postfix cannot follow Exchange
    notes: tuple[str, ...] = ()  # what the configuration leaves out (a certificate)


def keywords(c: ReceiveConnector | None, tls: bool, auth: bool, org: Organization) -> frozenset[str]:
    """The keywords this listener offers that ``c`` (None: no connector) must not."""
    hide = set()
    if tls and (c is None or not offers_starttls(c) or certificate(org, c) is None):
        hide.add(STARTTLS)
    if auth and (c is None or not offers_basic_auth(c)):
        hide.add(AUTH)
    return frozenset(hide)


def listener_offer(plan: ListenerPlan, org: Organization) -> Offer:
    """Decide the listener's switches from its connectors, and the per-client map when they differ."""
    gaps: list[str] = []
    with_tls = [c for c in plan.connectors if offers_starttls(c)]
    certs = {c.name: certificate(org, c) for c in with_tls}
    available = [f for f in certs.values() if f is not None]
    cert = available[0] if available else None
    if len(set(available)) > 1:
        gaps.append(
            "connectors name different certificates; one listener has one: "
            f"{cert[0] if cert else ''} is used for all (Postfix cannot choose by client address)"
        )
    auth = [c for c in plan.connectors if offers_basic_auth(c)]
    only_after_tls = bool(auth) and all(auth_requires_tls(c) for c in auth)
    if auth and not only_after_tls and any(auth_requires_tls(c) for c in auth):
        gaps.append(
            "BasicAuthRequireTLS differs between connectors: AUTH is offered before STARTTLS to all; "
            "a login without TLS on a connector that requires it is judged anonymous by exmilter"
        )
    notes = []
    if with_tls and cert is None:
        notes.append(
            "STARTTLS: not offered, no certificate (tls.certificate_file or a connector's tls_certificate_file)"
        )
        if auth and only_after_tls:
            notes.append("AUTH: not offered, only after STARTTLS (BasicAuthRequireTLS) and there is no STARTTLS")
            auth = []
    hidden = _hidden_map(plan, org, cert is not None, bool(auth))
    return Offer(cert, bool(auth), only_after_tls, hidden, tuple(gaps), tuple(notes))


def auth_options(plan: ListenerPlan, org: Organization) -> OptionGroup:
    """The listener's ``-o`` TLS/SASL settings, always set (the system main.cf cannot add an offer)."""
    offer = listener_offer(plan, org)
    options: list[tuple[str, str]] = [("smtpd_tls_security_level", "may" if offer.certificate else "none")]
    if offer.certificate:
        options += [("smtpd_tls_cert_file", offer.certificate[0]), ("smtpd_tls_key_file", offer.certificate[1])]
    options.append(("smtpd_sasl_auth_enable", "yes" if offer.auth else "no"))
    if offer.auth:
        options += [
            ("smtpd_tls_auth_only", "yes" if offer.auth_only_after_tls else "no"),
            ("smtpd_sasl_security_options", "noanonymous"),
            ("smtpd_sasl_tls_security_options", "noanonymous"),
            ("smtpd_sasl_mechanism_filter", SASL_MECHANISMS),
            ("smtpd_sasl_authenticated_header", "no"),
            ("smtpd_client_auth_rate_limit", "0"),
        ]
    options.append(("smtpd_discard_ehlo_keyword_address_maps", offer.hidden))
    offered = [
        *(["STARTTLS"] if offer.certificate else []),
        *(
            [f"AUTH {'after STARTTLS' if offer.auth_only_after_tls else 'before and after STARTTLS'}"]
            if offer.auth
            else []
        ),
    ]
    comments = [
        f"#   offered: {', '.join(offered) or 'neither STARTTLS nor AUTH'}"
        + ("; hidden per client where the client's connector lacks them" if offer.hidden else ""),
        *(f"#   {n}" for n in offer.notes),
        *(f"#   not expressible: {g}" for g in offer.gaps),
    ]
    if offer.auth:
        failures = sorted({c.max_logon_failures for c in plan.connectors if offers_basic_auth(c)})
        comments.append(
            f"#   not expressible: MaxLogonFailures ({', '.join(map(str, failures))}) and AuthTarpitInterval; "
            "failed AUTHs count toward smtpd_hard_error_limit"
        )
    return OptionGroup(comments=tuple(comments), options=tuple(options))


def _hidden_map(plan: ListenerPlan, org: Organization, tls: bool, auth: bool) -> str:
    """``cidr:{{net keywords}, …}`` when clients of this listener must see different offers, else ''."""
    if not (tls or auth):
        return ""
    conns = plan.connectors
    if all(keywords(c, tls, auth, org) == frozenset() for c in conns):
        return ""  # clients without a connector are refused at CONNECT (421 4.3.2) anyway
    table = ConnectorTable(conns)
    lst = plan.listener
    local = parse_ip(lst.address) if lst.address is not None else None
    entries: list[tuple[str, frozenset[str]]] = []
    for version in (4, 6) if local is None else (local.version,):
        spans: list[tuple[int, int, frozenset[str]]] = []
        for first, last in _segments(conns, version):
            m = table.select(lst.address, lst.port, _address(version, first))
            hide = keywords(m.connector if m else None, tls, auth, org)
            if spans and spans[-1][2] == hide:
                spans[-1] = (spans[-1][0], last, hide)
            else:
                spans.append((first, last, hide))
        entries.extend((net, hide) for first, last, hide in spans for net in _networks(version, first, last))
    if all(h == frozenset() for _, h in entries):
        return ""
    # The most common answer goes last, as the whole address space: fewer lines, same result.
    counts: dict[frozenset[str], int] = {}
    for _, h in entries:
        counts[h] = counts.get(h, 0) + 1
    usual = max(counts, key=lambda h: counts[h])
    lines = [f"{{{net} {_value(h)}}}" for net, h in entries if h != usual]
    if usual:
        lines += [f"{{{net} {_value(usual)}}}" for net in ("0.0.0.0/0", "::/0")]
    return "cidr:{" + ", ".join(lines) + "}"


def _value(hide: frozenset[str]) -> str:
    return ", ".join(sorted(hide)) if hide else DISCARD_NOTHING


def _segments(conns: Sequence[ReceiveConnector], version: int) -> Iterator[tuple[int, int]]:
    """The elementary address spans of the connectors' ranges of one family: within each,
    every client selects the same connector."""
    top = (1 << (32 if version == 4 else 128)) - 1
    cuts = {0}
    for c in conns:
        for r in c.remote_ip_ranges:
            if r.version == version:
                cuts.add(r.first)
                if r.last < top:
                    cuts.add(r.last + 1)
    points = sorted(cuts)
    for i, first in enumerate(points):
        yield first, (points[i + 1] - 1 if i + 1 < len(points) else top)


def _address(version: int, value: int) -> str:
    return str(ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value))


def _networks(version: int, first: int, last: int) -> Iterator[str]:
    cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    for net in ipaddress.summarize_address_range(cls(first), cls(last)):
        yield str(net)
