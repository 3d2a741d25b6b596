"""Organization → Postfix configuration text (pure functions, no I/O).

Postfix answers some things before any policy server is asked (limits, relay checks,
the banner), so the rendered settings make Postfix at least as permissive as every
connector and leave each decision to exmilter (postfix-notes §1.5, §5). The policy
service is wired fail-closed: when exmilter is down, slow or answers nonsense, clients
get a temporary failure, never an open relay.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from exmilter.domains import default_domain_name, organization_default_domain, to_unicode
from exmilter.listener import Listener
from exmilter.model import Organization, ReceiveConnector
from exmilter.replies import CONFIGURATION_PROBLEM
from exmilter.values import Binding, parse_ip

#: What Postfix answers when the policy daemon cannot be asked (postfix-notes §1.5).
DEFAULT_ACTION = CONFIGURATION_PROBLEM.line
#: Per-request timeout and attempts: a dead daemon costs about retry_delay (1 s).
POLICY_TIMEOUT = "5s"
POLICY_TRY_LIMIT = 2
POLICY_RETRY_DELAY = "1s"
#: Postfix's own defaults; the rendered limits never go below them.
POSTFIX_MAILBOX_SIZE_LIMIT = 51200000
POSTFIX_RECIPIENT_LIMIT = 1000
POSTFIX_HOPCOUNT_LIMIT = 50
POSTFIX_HARD_ERROR_LIMIT = 20
#: Exchange's code for bare linefeeds (spec §3.6 #5); Postfix's reject code where it rejects them.
BARE_LINEFEED_REJECT_CODE = 554
#: master.cf names of a listener's own cleanup and trivial-rewrite services (see :func:`origin`).
CLEANUP_SERVICE = "exmilter-cleanup-{}"
REWRITE_SERVICE = "exmilter-rewrite-{}"


@dataclass(frozen=True)
class ListenerPlan:
    """One smtpd service: where it binds, which context it reports, whom it serves."""

    listener: Listener
    bind: str  # master.cf service name: "25", "10.1.1.1:25", "[2001:db8::1]:25"
    connectors: tuple[ReceiveConnector, ...]
    bindings: tuple[str, ...]  # the Exchange bindings this listener stands for
    extra_options: tuple[str, ...] = field(default=())  # more master.cf "-o" words (sandbox)

    @property
    def context(self) -> str:
        return self.listener.context

    def moved(self, host: str, port: int) -> ListenerPlan:
        """The same listener bound elsewhere; the context (what exmilter decides on) stays."""
        return replace(self, bind=f"[{host}]:{port}" if ":" in host else f"{host}:{port}")

    @property
    def port(self) -> int:
        return int(self.bind.rpartition(":")[2]) if ":" in self.bind else int(self.bind)


def plan_listeners(org: Organization) -> list[ListenerPlan]:
    """One listener per distinct binding of the enabled connectors.

    ``0.0.0.0:P`` and ``[::]:P`` share one wildcard listener (context ``*:P``). Linux
    cannot bind ``0.0.0.0:P`` next to ``10.1.1.1:P``, so a port with both wildcard and
    exact bindings gets one exact listener per server address instead; the wildcard
    connectors are still found behind them (the engine falls back to the wildcard).
    """
    wild: dict[int, list[ReceiveConnector]] = {}
    wild_bindings: dict[int, list[str]] = {}
    exact: dict[int, dict[str, list[ReceiveConnector]]] = {}
    for c in org.receive_connectors:
        if not c.enabled:
            continue
        for b in c.bindings:
            if b.is_wildcard:
                _add(wild.setdefault(b.port, []), c)
                _add(wild_bindings.setdefault(b.port, []), str(b))
            else:
                _add(exact.setdefault(b.port, {}).setdefault(str(b.ip), []), c)
    plans: list[ListenerPlan] = []
    for port in sorted(set(wild) | set(exact)):
        exacts = exact.get(port, {})
        if port in wild and not exacts:
            plans.append(ListenerPlan(Listener(None, port), str(port), tuple(wild[port]), tuple(wild_bindings[port])))
            continue
        addresses = list(exacts)
        if port in wild:
            addresses = [a for a in org.server.addresses if a not in addresses] + addresses
        for addr in sorted(addresses, key=_address_order):
            lst = Listener(addr, port)
            conns = list(exacts.get(addr, []))
            for c in wild.get(port, []):
                if any(b.is_wildcard and b.port == port and _same_family(b.version, addr) for b in c.bindings):
                    _add(conns, c)
            if conns:
                names = ((lst.context,) if addr in exacts else ()) + tuple(
                    b for b in wild_bindings.get(port, []) if _same_family(6 if b.startswith("[") else 4, addr)
                )
                plans.append(ListenerPlan(lst, lst.context, tuple(conns), names))
    return plans


def _add(items: list, item: object) -> None:
    if item not in items:
        items.append(item)


def _same_family(version: int, addr: str) -> bool:
    return (":" in addr) == (version == 6)


def _address_order(addr: str) -> tuple[int, str]:
    return (6 if ":" in addr else 4, addr)


def banner(plan: ListenerPlan, org: Organization) -> str:
    """``smtpd_banner`` text (Postfix adds the ``220 ``): the connector's own banner
    when the listener serves one connector, else Exchange's default with the server FQDN."""
    if len(plan.connectors) == 1:
        first = plan.connectors[0].banner_text().splitlines()[0]
        text = re.sub(r"^220[ -]?", "", first).strip()
        if text:
            return text
    return f"{org.server.fqdn} Microsoft ESMTP MAIL Service ready"


def postfix_value(text: str) -> str:
    """A value safe inside ``-o { name = value }``: ``$`` doubled, braces cannot nest."""
    return text.replace("$", "$$").replace("{", "(").replace("}", ")").strip()


def policy_endpoint(twisted_endpoint: str) -> str:
    """The Postfix form of a policy daemon listener given as a Twisted endpoint string.

    ``unix:/run/exmilter/policy.sock:mode=660`` → ``unix:/run/exmilter/policy.sock``;
    ``tcp:10040:interface=127.0.0.1`` → ``inet:127.0.0.1:10040``.
    """
    parts = [a.replace("\\:", ":") for a in re.split(r"(?<!\\):", twisted_endpoint)]
    kind, args = parts[0], parts[1:]
    positional = [a for a in args if "=" not in a]
    named = dict(a.split("=", 1) for a in args if "=" in a)
    if kind == "unix":
        path = named.get("address") or (positional[0] if positional else "")
        if not path:
            raise ValueError(f"{twisted_endpoint!r}: no socket path")
        return f"unix:{path}"
    if kind in ("tcp", "tcp6"):
        port = named.get("port") or (positional[0] if positional else "")
        if not port.isdigit():
            raise ValueError(f"{twisted_endpoint!r}: no port")
        host = named.get("interface") or ("::1" if kind == "tcp6" else "127.0.0.1")
        if host in ("0.0.0.0", "::", ""):
            host = "::1" if host == "::" else "127.0.0.1"
        return f"inet:[{host}]:{port}" if ":" in host else f"inet:{host}:{port}"
    raise ValueError(f"{twisted_endpoint!r}: Postfix reaches a policy server over unix: or tcp: only")


def policy_check(endpoint: str, context: str) -> str:
    """One ``check_policy_service`` with per-use overrides (Postfix 3.0+), fail-closed."""
    return (
        f"check_policy_service {{ {endpoint}, timeout={POLICY_TIMEOUT}, try_limit={POLICY_TRY_LIMIT}, "
        f"retry_delay={POLICY_RETRY_DELAY}, {{ default_action = {DEFAULT_ACTION} }}, policy_context={context} }}"
    )


#: The per-listener parameter holding that listener's policy check; the lists refer to it.
POLICY_PARAM = "exmilter_policy"


def restrictions(ask_at_connect: bool = True) -> list[tuple[str, str]]:
    """The per-listener restriction lists: exmilter is asked once per stage it decides.

    With ``smtpd_delay_reject=no`` the lists run at CONNECT (client), EHLO/HELO (helo),
    MAIL (sender), RCPT (relay, recipient), DATA (data) and END-OF-MESSAGE (end-of-data).
    exmilter decides at CONNECT, MAIL, RCPT and END-OF-MESSAGE only
    (``exmilter.policy.decide._DECIDED``) and answers ``DUNNO`` at EHLO/HELO and DATA
    without consulting the engine, so asking there costs a policy round trip and daemon
    CPU for nothing (two of the six requests per message the first renderer asked for).
    The helo and data lists are therefore empty. They are still set, empty, per listener,
    so restrictions in the system main.cf cannot answer before exmilter either. The client
    list is empty too when ``ask_at_connect`` is False: see :func:`connect_always_passes`.

    RCPT is asked in ``smtpd_relay_restrictions``: exmilter's ``OK`` ends the list,
    its refusal refuses, and the trailing ``defer`` turns anything else (a ``DUNNO``
    from a misconfigured daemon) into a temporary failure. ``smtpd_recipient_restrictions``
    is ``permit`` so nothing after it undoes exmilter's verdict.
    """
    check = f"${POLICY_PARAM}"
    return [
        ("smtpd_client_restrictions", check if ask_at_connect else ""),
        ("smtpd_helo_restrictions", ""),  # EHLO/HELO: exmilter always answers DUNNO
        ("smtpd_sender_restrictions", check),
        ("smtpd_relay_restrictions", f"{check}, defer"),
        ("smtpd_recipient_restrictions", "permit"),
        ("smtpd_data_restrictions", ""),  # DATA: exmilter always answers DUNNO
        ("smtpd_end_of_data_restrictions", check),
    ]


def connect_always_passes(plan: ListenerPlan, org: Organization) -> bool:
    """Whether every client that can reach this listener selects a connector.

    Exchange's one refusal at connect is ``421 4.3.2 Service not available`` for a client
    that no connector's RemoteIPRanges hold (``Engine.connect``); otherwise exmilter answers
    ``DUNNO`` at CONNECT. When the enabled connectors the engine considers for this listener
    (its exact binding and the wildcard binding of the port, spec §2.1) cover the whole
    address space of every family the listener can receive (a wildcard listener: IPv4 and
    IPv6; an exact one: its own family), as the default Frontend connector's
    ``0.0.0.0-255.255.255.255`` and ``::-ffff:…`` do, that answer is always ``DUNNO`` and
    asking costs a round trip per message for nothing. Should a reload later leave a
    client without a connector before Postfix is re-rendered, MAIL and RCPT still answer
    ``421 4.3.2`` for it: nothing opens.
    """
    lst = plan.listener
    local = parse_ip(lst.address) if lst.address is not None else None
    for version in (4, 6) if local is None else (local.version,):
        keys = {Binding(version, 0, lst.port)}
        if local is not None:
            keys.add(Binding(version, int(local), lst.port))
        spans = sorted(
            (r.first, r.last)
            for c in org.receive_connectors
            if c.enabled and not keys.isdisjoint(c.bindings)
            for r in c.remote_ip_ranges
            if r.version == version
        )
        if not _covers_all(spans, (1 << (32 if version == 4 else 128)) - 1):
            return False
    return True


def _covers_all(spans: Iterable[tuple[int, int]], top: int) -> bool:
    """Do the sorted inclusive ``(first, last)`` spans cover ``0..top`` without a gap?"""
    uncovered = 0  # the lowest address not yet covered
    for first, last in spans:
        if first > uncovered:
            return False
        uncovered = max(uncovered, last + 1)
        if uncovered > top:
            return True
    return False


@dataclass(frozen=True)
class Origin:
    """What Postfix appends to an address without a domain on one listener (postfix-notes §9).

    Postfix completes ``user`` with ``@$myorigin`` in cleanup (trivial-rewrite,
    ``append_at_myorigin``) and accepts ``RCPT TO:<postmaster>`` without asking any
    restriction (RFC 5321 §4.5.1), so each listener gets its own cleanup and trivial-rewrite
    with ``myorigin`` = ``domain``: the DefaultDomain its connectors agree on, else the
    organisation's default accepted domain (where Exchange's postmaster lives). ``honoured``
    are the connectors whose DefaultDomain this is; ``gaps`` say why other connectors'
    DefaultDomain cannot be, so exmilter refuses their unqualified addresses
    (``501 5.1.3``) instead of judging a domain Postfix would not route to.
    """

    domain: str | None  # None: the organisation has no accepted domain; main.cf's myorigin applies
    why: str
    honoured: tuple[str, ...] = ()
    gaps: tuple[str, ...] = ()


def origin(plan: ListenerPlan, org: Organization) -> Origin:
    """The domain Postfix completes unqualified addresses with on this listener."""
    named = {c.name: default_domain_name(c.default_domain, org.accepted_domains) for c in plan.connectors}
    gaps = [f"{c.name}: default_domain {c.default_domain!r} names no accepted domain, so it completes nothing"
            for c in plan.connectors if c.default_domain and c.default_domain.strip() and named[c.name] is None]
    chosen = {d for d in named.values() if d is not None}
    domain: str | None
    if len(chosen) == 1:
        domain = chosen.pop()
        why = f"DefaultDomain of {', '.join(n for n, d in named.items() if d == domain)}"
    else:
        domain = organization_default_domain(org.accepted_domains)
        why = "the organisation's default accepted domain, the first Authoritative one"
        if len(chosen) > 1:
            listing = ", ".join(f"{n} {d}" for n, d in named.items() if d is not None)
            gaps.append(f"DefaultDomain differs ({listing}); Postfix completes addresses with one domain per "
                        f"listener ({domain or 'main.cf myorigin'}), so exmilter refuses unqualified addresses "
                        "from the others")
    honoured = tuple(n for n, d in named.items() if d is not None and d == domain)
    return Origin(domain, why, honoured, tuple(gaps))


@dataclass(frozen=True)
class Completion:
    """How one connector's addresses without a domain end up (``Engine.qualify``)."""

    domain: str | None  # unqualified MAIL/RCPT addresses are completed with it; None: refused
    postmaster: str | None  # where Postfix routes RCPT TO:<postmaster> (it asks no one)
    note: str = ""  # why a configured DefaultDomain is not applied


def completions(org: Organization) -> dict[str, Completion]:
    """Per connector name, how the rendered Postfix completes its unqualified addresses.

    A DefaultDomain is honoured only where Postfix completes with it on every listener of
    the connector; the engine judges exactly those addresses.
    """
    seen: dict[str, list[tuple[ListenerPlan, Origin]]] = {}
    for plan in plan_listeners(org):
        o = origin(plan, org)
        for c in plan.connectors:
            seen.setdefault(c.name, []).append((plan, o))
    out: dict[str, Completion] = {}
    for c in org.receive_connectors:
        listeners = seen.get(c.name, [])
        wanted = default_domain_name(c.default_domain, org.accepted_domains)
        postmaster = listeners[0][1].domain if listeners else None
        note = ""
        if c.default_domain and c.default_domain.strip() and wanted is None:
            note = f"DefaultDomain {c.default_domain} names no accepted domain"
        elif wanted is not None and not listeners:
            note = "the connector has no listener (disabled)"
        elif wanted is not None:
            other = next(((p, o) for p, o in listeners if o.domain != wanted), None)
            if other is not None:
                note = (f"listener {other[0].context} is shared with connectors whose DefaultDomain differs; "
                        f"Postfix completes addresses there with @{other[1].domain}")
        out[c.name] = Completion(None if note else wanted, postmaster, note)
    return out


def bare_newline(plan: ListenerPlan) -> str:
    """``smtpd_forbid_bare_newline`` for a listener (CVE-2023-51764, postfix-notes §9).

    Both values require ``<CR><LF>.<CR><LF>`` to end DATA, which is what stops smuggling.
    ``reject`` refuses a message with a bare LF, as BareLinefeedRejectionEnabled does
    (spec §3.6 #5), so it is used where every connector of the listener has it; otherwise
    ``normalize`` takes bare LF as a line end like Exchange without the switch.
    """
    if plan.connectors and all(c.bare_linefeed_rejection_enabled for c in plan.connectors):
        return "reject"
    return "normalize"


def _origin_comment(o: Origin) -> str:
    if o.domain is None:
        return ("#   unqualified addresses: refused by exmilter; no accepted domain, so RCPT TO:<postmaster> "
                "gets main.cf's myorigin")
    if o.honoured:
        return f"#   unqualified addresses: completed with @{o.domain} ({o.why})"
    return (f"#   unqualified addresses: refused by exmilter (no DefaultDomain); RCPT TO:<postmaster> goes to "
            f"postmaster@{o.domain} ({o.why})")


def listener_number(plan: ListenerPlan, org: Organization) -> int:
    """1-based position of the listener in :func:`plan_listeners`: names its own services."""
    for n, p in enumerate(plan_listeners(org), 1):
        if p.context == plan.context:
            return n
    raise ValueError(f"{plan.context}: not a listener of this configuration")


#: master.cf's maxproc column is a C int; a larger total is as good as no limit (0).
_MAXPROC_CAP = 2**31 - 1


@dataclass(frozen=True)
class ConnectionLimits:
    """How many connections Postfix admits on one listener (spec §3.1, §3.10).

    ``per_source`` becomes ``-o smtpd_client_connection_count_limit`` (anvil counts the
    simultaneous connections of one client address to one master.cf service); ``total``
    becomes the service's maxproc column. 0 means no limit in both. ``gaps`` are the
    parts of the connectors' limits Postfix cannot express on this listener, rendered as
    comments above the service (docs/render-postfix.md, "Connection limits").
    """

    per_source: int
    total: int
    gaps: tuple[str, ...] = ()


def source_limit(c: ReceiveConnector) -> int | None:
    """The most connections one address can ever hold on ``c`` (None: unlimited).

    MaxInboundConnectionPerSource, and, when the percentage rule applies (below 100 % and
    MaxInboundConnection not unlimited), its share of an idle connector:
    ``ceil(MaxInboundConnection × pct / 100)``. Exchange's share shrinks as the connector
    fills; this static bound is the largest it can be, so Postfix is never stricter.
    """
    limits = []
    if c.max_inbound_connection_per_source is not None:
        limits.append(c.max_inbound_connection_per_source)
    pct = c.max_inbound_connection_percentage_per_source
    if pct < 100 and c.max_inbound_connection is not None:
        limits.append(-(-c.max_inbound_connection * pct // 100))
    return min(limits) if limits else None


def _shown(limit: int | None) -> str:
    return "unlimited" if limit is None else str(limit)


def connection_limits(plan: ListenerPlan, org: Organization) -> ConnectionLimits:
    """Per-listener limits: exact when the listener's connectors agree, else never stricter.

    Postfix counts before the policy daemon knows the connector, so one listener gets one
    per-source limit and one process limit. When its connectors' limits differ, the most
    permissive is rendered (Postfix must never answer before exmilter with a stricter
    limit, postfix-notes §5) and the difference is reported as a gap.
    """
    conns = plan.connectors
    gaps: list[str] = []
    per = {c.name: source_limit(c) for c in conns}
    values = set(per.values())
    per_source = 0 if None in values else max(v for v in values if v is not None)
    if len(values) > 1:
        listing = ", ".join(f"{n} {_shown(v)}" for n, v in per.items())
        gaps.append(f"connections per source differ ({listing}); Postfix counts per listener before "
                    f"the connector is known, so the most permissive ({_shown(per_source or None)}) applies to all")
    totals = [c.max_inbound_connection for c in conns]
    total = 0 if None in totals else sum(t for t in totals if t is not None)
    if total > _MAXPROC_CAP:
        total = 0
    if len(conns) > 1:
        gaps.append(f"MaxInboundConnection counts per connector; Postfix caps the listener: maxproc is "
                    f"their sum ({_shown(total or None)})")
    shares = [f"{c.name} {c.max_inbound_connection_percentage_per_source}%" for c in conns
              if c.max_inbound_connection_percentage_per_source < 100 and c.max_inbound_connection is not None]
    if shares:
        gaps.append(f"MaxInboundConnectionPercentagePerSource ({', '.join(shares)}) only as the share of an idle "
                    "connector; Exchange's shrinks as the connector fills")
    elsewhere: dict[str, list[str]] = {}
    for other in plan_listeners(org):
        if other.context != plan.context:
            for c in other.connectors:
                elsewhere.setdefault(c.identity, []).append(other.context)
    for c in conns:
        if c.identity in elsewhere:
            gaps.append(f"{c.name} also listens on {', '.join(elsewhere[c.identity])}: its limits count per "
                        "listener here, across all its bindings in Exchange")
    return ConnectionLimits(per_source, total, tuple(gaps))


def _option(name: str, value: str) -> str:
    if re.search(r"[\s{}]", value):
        return f"-o {{ {name} = {value} }}"
    return f"-o {name}={value}"


def master_service(plan: ListenerPlan, org: Organization, endpoint: str) -> str:
    """One master.cf smtpd service (chroot n: an absolute unix: policy socket stays reachable)."""
    ids = ", ".join(c.identity for c in plan.connectors)
    limits = connection_limits(plan, org)
    at_connect = not connect_always_passes(plan, org)
    qualify = origin(plan, org)
    number = listener_number(plan, org)
    bare_lf = bare_newline(plan)
    lines = [
        f"# exmilter listener {plan.context}: Exchange bindings {', '.join(plan.bindings)}",
        f"#   connectors: {ids}",
        "#   CONNECT: asked (some clients select no connector: 421 4.3.2)" if at_connect else
        "#   CONNECT: not asked (every client selects a connector: exmilter's answer is always DUNNO)",
        f"#   connections: {_shown(limits.per_source or None)} per client address, "
        f"{_shown(limits.total or None)} in all (maxproc; beyond it clients wait, no 421)",
        *(f"#   not expressible: {g}" for g in limits.gaps),
        _origin_comment(qualify),
        *(f"#   not expressible: {g}" for g in qualify.gaps),
        f"#   bare LF: {bare_lf}" + (" (every connector has BareLinefeedRejectionEnabled)" if bare_lf == "reject" else
                                   " (DATA ends only at <CR><LF>.<CR><LF>; other bare LFs end a line)"),
        "#   TLS/SASL hooks (auth issue): per-listener -o smtpd_tls_security_level=may,",
        "#   -o smtpd_sasl_auth_enable=yes when these connectors offer STARTTLS/AUTH.",
        f"{plan.bind} inet n - n - {limits.total} smtpd",
    ]
    options = [
        ("smtpd_delay_reject", "no"),
        ("smtpd_banner", postfix_value(banner(plan, org))),
        ("milter_macro_daemon_name", plan.context),
        (POLICY_PARAM, policy_check(endpoint, plan.context)),
        *restrictions(at_connect),
        ("smtpd_client_connection_count_limit", str(limits.per_source)),
        # Exchange exempts no client; Postfix's default exempts $mynetworks from the limit.
        ("smtpd_client_event_limit_exceptions", ""),
        ("smtpd_forbid_bare_newline", bare_lf),
        ("smtpd_forbid_bare_newline_exclusions", ""),  # the default, $mynetworks, would be exempt
        *([("smtpd_forbid_bare_newline_reject_code", str(BARE_LINEFEED_REJECT_CODE))] if bare_lf == "reject" else []),
    ]
    if qualify.domain:
        options.append(("cleanup_service_name", CLEANUP_SERVICE.format(number)))
    lines += [f"  {_option(n, v)}" for n, v in options]
    lines += [f"  {o}" for o in plan.extra_options]
    if qualify.domain:
        lines += [
            f"# exmilter listener {plan.context}: its own cleanup and trivial-rewrite, so that Postfix completes",
            f"#   unqualified addresses (and RCPT TO:<postmaster>) with @{qualify.domain}, as exmilter judges them",
            f"{CLEANUP_SERVICE.format(number)} unix n - n - 0 cleanup",
            f"  -o rewrite_service_name={REWRITE_SERVICE.format(number)}",
            f"{REWRITE_SERVICE.format(number)} unix - - n - - trivial-rewrite",
            f"  -o myorigin={qualify.domain}",
        ]
    return "\n".join(lines)


def render_master(plans: Sequence[ListenerPlan], org: Organization, endpoint: str) -> str:
    head = [
        f"# exmilter: smtpd services generated from {org.source or 'the configuration'} by exmilter render-postfix.",
        "# One service per Exchange listener; remove Postfix's own 'smtp inet' line for these ports.",
        f"# Policy server: {endpoint}; when it fails, clients get '{DEFAULT_ACTION}' (temporary).",
        "#",
        "# Why each line (docs/render-postfix.md):",
        "#   maxproc column                 MaxInboundConnection of the listener's connectors (0 = no limit)",
        "#   smtpd_delay_reject=no          exmilter is asked at MAIL (and CONNECT), not only at RCPT",
        "#   exmilter_policy                one check_policy_service for every list: one policy connection",
        "#                                  per smtpd; timeout 5s, 2 tries 1s apart, then a temporary 451",
        "#   sender, end_of_data            ask exmilter at MAIL and END-OF-MESSAGE",
        "#   client                         ask exmilter at CONNECT, or empty where every client",
        "#                                  selects a connector (exmilter would answer DUNNO)",
        "#   helo, data (empty)             exmilter answers DUNNO at EHLO/HELO and DATA: not asked",
        "#   relay = ..., defer             exmilter's OK accepts the recipient; no answer is a 4xx",
        "#   recipient = permit             nothing after exmilter's verdict can undo it",
        "#   connection_count_limit         MaxInboundConnectionPerSource (0 = no limit), no exceptions",
        "#   forbid_bare_newline            DATA ends only at <CR><LF>.<CR><LF> (no SMTP smuggling); reject",
        "#                                  where every connector has BareLinefeedRejectionEnabled; no exclusions",
        "#   cleanup_service_name           the listener's own cleanup + trivial-rewrite: Postfix completes",
        "#                                  unqualified addresses with the domain exmilter judges them by",
    ]
    return "\n".join(head) + "\n\n" + "\n\n".join(master_service(p, org, endpoint) for p in plans) + "\n"


@dataclass(frozen=True)
class Setting:
    name: str
    value: str
    why: str


#: Postfix rewrites exmilter's engine does not model (Exchange has none of them), switched
#: off so that Postfix routes every address to the domain exmilter judged (postfix-notes §9,
#: docs/render-postfix.md "Addresses"). The integration relay harness proves each one.
ROUTING_SETTINGS = (
    Setting("allow_percent_hack", "no", "user%domain stays a local part: no user@domain rewrite"),
    Setting("swap_bangpath", "no", "domain!user stays a local part: no user@domain rewrite"),
    Setting("resolve_dequoted_address", "no", "never route on an @, % or ! inside a quoted local part"),
    Setting("allow_untrusted_routing", "no", "Postfix's own check of routed local parts (exmilter does it too)"),
    Setting("append_at_myorigin", "yes", "user becomes user@$myorigin, set per listener to the DefaultDomain"),
    Setting("append_dot_mydomain", "no", "user@host never becomes user@host.$mydomain"),
    Setting("enable_idna2003_compatibility", "no", "UTS #46 non-transitional: straße.de is xn--strae-oqa.de"),
)


def main_settings(org: Organization) -> list[Setting]:
    """Global limits no stricter than any connector's (postfix-notes §5) and relay domains.

    Connection limits are not here: they are set per listener in master.cf
    (:func:`connection_limits`), where Postfix can tell the connectors apart.
    """
    conns = [c for c in org.receive_connectors if c.enabled] or list(org.receive_connectors)
    size = max((c.max_message_size for c in conns), default=36 << 20)
    size_limit = size + size // 10
    errors = [c.max_protocol_errors for c in conns]
    most_errors = max((e or 0 for e in errors), default=0)
    hard = 1000 if None in errors else max(POSTFIX_HARD_ERROR_LIMIT, 2 * most_errors + 1)
    timeout = max((int(c.connection_inactivity_timeout.total_seconds()) for c in conns), default=300)
    mailbox = max(POSTFIX_MAILBOX_SIZE_LIMIT, size_limit)
    recipients = max(POSTFIX_RECIPIENT_LIMIT, *(c.max_recipients_per_message for c in conns))
    hops = max(POSTFIX_HOPCOUNT_LIMIT, max((c.max_hop_count for c in conns), default=60) + 10)
    return [
        Setting("message_size_limit", str(size_limit), "largest MaxMessageSize + 10%; exmilter enforces each's own"),
        Setting("mailbox_size_limit", str(mailbox), "never below message_size_limit"),
        Setting("virtual_mailbox_limit", str(mailbox), "likewise"),
        Setting("smtpd_recipient_limit", str(recipients), "at least the largest MaxRecipientsPerMessage"),
        Setting("hopcount_limit", str(hops), "above MaxHopCount + 1 (Postfix counts its own Received:)"),
        Setting("smtpd_hard_error_limit", str(hard), "above MaxProtocolErrors: exmilter says when to disconnect"),
        Setting("smtpd_timeout", f"{timeout}s", "largest ConnectionInactivityTimeout"),
        Setting("relay_domains", ", ".join(_relay_domains(org)) or "",
                "accepted domains (ASCII and UTF-8 forms), for routing only: exmilter decides relay"),
        *ROUTING_SETTINGS,
    ]


def _relay_domains(org: Organization) -> Iterable[str]:
    """Each accepted domain in ASCII and, for ``xn--`` names, UTF-8 form: Postfix matches the
    domain list on the name as the client wrote it (case-folded), not on its ASCII form."""
    for d in org.accepted_domains:
        sub = d.is_wildcard or d.match_sub_domains
        for name in (d.suffix, to_unicode(d.suffix)):
            if name:
                yield name
                if sub:
                    yield f".{name}"


def render_main(org: Organization) -> str:
    out = [
        f"# exmilter: main.cf settings generated from {org.source or 'the configuration'} by exmilter render-postfix.",
        "# Append to main.cf (a later line wins). The restriction lists are set per listener in master.cf.",
        "# Keep the accepted domains out of mydestination: exmilter, not local(8), decides who is accepted.",
        "",
    ]
    for s in main_settings(org):
        out.append(f"# {s.why}")
        out.append(f"{s.name} = {s.value}".rstrip())
    out += [
        "",
        "# --- TLS/SASL hooks (auth issue) --------------------------------------------------",
        "# Connectors with AuthMechanism Tls/BasicAuth will need these; left off on purpose.",
        "#smtpd_tls_cert_file = /etc/exmilter/tls/cert.pem",
        "#smtpd_tls_key_file = /etc/exmilter/tls/key.pem",
        "#smtpd_tls_security_level = may",
        "#smtpd_sasl_type = dovecot",
        "#smtpd_sasl_path = private/auth",
        "#smtpd_sasl_auth_enable = no",
        "",
    ]
    return "\n".join(out)
