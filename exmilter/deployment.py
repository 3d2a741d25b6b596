"""How a configuration is deployed on Postfix: its listeners, and what Postfix does with bare addresses.

A listener is one distinct binding of the enabled connectors (spec §2.1); Postfix serves
it with one smtpd service. The engine needs two facts about the set: which connectors
share a listener (:func:`plan_listeners`), and the domain Postfix completes addresses
without a domain with on each (:func:`completions`), since it must judge the domain
Postfix will route to (postfix-notes §9). Rendering (exmilter.postfix) and the sandbox
build on the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from exmilter.domains import default_domain_name, organization_default_domain
from exmilter.listener import Listener
from exmilter.model import Organization, ReceiveConnector


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
    Connectors keep the configuration's order; one listed under several bindings of a
    listener is served once.
    """
    # Per port: the wildcard connectors (by object: a connector is one entry however many of
    # its bindings lead here) with the families they are bound for, and the wildcard
    # bindings as written; per port and address, the exact connectors.
    wild: dict[int, dict[int, tuple[ReceiveConnector, set[int]]]] = {}
    wild_bindings: dict[int, dict[str, None]] = {}
    exact: dict[int, dict[str, dict[int, ReceiveConnector]]] = {}
    for c in org.receive_connectors:
        if not c.enabled:
            continue
        for b in c.bindings:
            if b.is_wildcard:
                wild.setdefault(b.port, {}).setdefault(id(c), (c, set()))[1].add(b.version)
                wild_bindings.setdefault(b.port, {})[str(b)] = None
            else:
                exact.setdefault(b.port, {}).setdefault(str(b.ip), {}).setdefault(id(c), c)
    plans: list[ListenerPlan] = []
    for port in sorted(set(wild) | set(exact)):
        exacts = exact.get(port, {})
        wildcard = wild.get(port, {})
        if wildcard and not exacts:
            conns = tuple(c for c, _ in wildcard.values())
            plans.append(ListenerPlan(Listener(None, port), str(port), conns, tuple(wild_bindings[port])))
            continue
        addresses = list(exacts)
        if wildcard:
            addresses = [a for a in org.server.addresses if a not in addresses] + addresses
        for addr in sorted(addresses, key=_address_order):
            lst = Listener(addr, port)
            family = 6 if ":" in addr else 4
            serving = dict(exacts.get(addr, {}))
            for key, (c, families) in wildcard.items():
                if family in families:
                    serving.setdefault(key, c)
            if serving:
                names = ((lst.context,) if addr in exacts else ()) + tuple(
                    b for b in wild_bindings.get(port, {}) if (6 if b.startswith("[") else 4) == family
                )
                plans.append(ListenerPlan(lst, lst.context, tuple(serving.values()), names))
    return plans


def _address_order(addr: str) -> tuple[int, str]:
    return (6 if ":" in addr else 4, addr)


@dataclass(frozen=True)
class Origin:
    """What Postfix appends to an address without a domain on one listener (postfix-notes §9).

    Each listener's own trivial-rewrite has ``myorigin`` = ``domain``: the DefaultDomain its
    connectors agree on, else the organisation's default accepted domain (where Exchange's
    postmaster lives). ``honoured`` are the connectors whose DefaultDomain this is; ``gaps``
    say why other connectors' DefaultDomain cannot be, so exmilter refuses their unqualified
    addresses (``501 5.1.3``) instead of judging a domain Postfix would not route to.
    """

    domain: str | None  # None: the organisation has no accepted domain; main.cf's myorigin applies
    why: str
    honoured: tuple[str, ...] = ()
    gaps: tuple[str, ...] = ()


def origin(plan: ListenerPlan, org: Organization) -> Origin:
    """The domain Postfix completes unqualified addresses with on this listener."""
    named = {c.name: default_domain_name(c.default_domain, org.accepted_domains) for c in plan.connectors}
    gaps = [
        f"{c.name}: default_domain {c.default_domain!r} names no accepted domain, so it completes nothing"
        for c in plan.connectors
        if c.default_domain and c.default_domain.strip() and named[c.name] is None
    ]
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
            gaps.append(
                f"DefaultDomain differs ({listing}); Postfix completes addresses with one domain per "
                f"listener ({domain or 'main.cf myorigin'}), so exmilter refuses unqualified addresses "
                "from the others"
            )
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
                note = (
                    f"listener {other[0].context} is shared with connectors whose DefaultDomain differs; "
                    f"Postfix completes addresses there with @{other[1].domain}"
                )
        out[c.name] = Completion(None if note else wanted, postmaster, note)
    return out
