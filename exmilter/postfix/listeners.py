"""Which smtpd services an Organization needs, and what Postfix must know about each.

One service per listener (a distinct binding of the enabled connectors, spec §2.1), the
facts about the whole set a service needs (its position, the other listeners of its
connectors, every range behind a binding) computed once in :class:`ListenerLayout`, and
the two per-listener questions Postfix answers before exmilter is asked: does every
client select a connector (CONNECT need not be asked), and how many connections it admits.

Everything here is linear in the size of the configuration: a file with 10,000 connectors
on one binding renders in well under a second (docs/render-postfix.md, "Scale").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from exmilter.deployment import ListenerPlan, plan_listeners
from exmilter.model import Organization, ReceiveConnector
from exmilter.values import Binding, parse_ip

#: master.cf's maxproc column is a C int; a larger total is as good as no limit (0).
MAXPROC_CAP = 2**31 - 1


class ListenerLayout:
    """Every listener of one configuration, and what one service needs to know about the others.

    Built once per rendering (one pass over the connectors), so that rendering every
    service costs the size of the configuration, not that times the number of listeners.
    Listeners are looked up by context, so plans moved elsewhere (the sandbox) still match.
    """

    def __init__(self, org: Organization, plans: Iterable[ListenerPlan] | None = None) -> None:
        self.org = org
        self.plans = tuple(plan_listeners(org) if plans is None else plans)
        self._numbers: dict[str, int] = {}
        self._contexts: dict[str, list[str]] = {}  # connector identity -> contexts of its listeners
        for n, p in enumerate(self.plans, 1):
            self._numbers.setdefault(p.context, n)
            for c in p.connectors:
                self._contexts.setdefault(c.identity, []).append(p.context)
        self._spans: dict[Binding, list[tuple[int, int]]] = {}  # binding -> its connectors' ranges
        for c in org.receive_connectors:
            if c.enabled:
                for b in set(c.bindings):
                    self._spans.setdefault(b, []).extend(
                        (r.first, r.last) for r in c.remote_ip_ranges if r.version == b.version
                    )

    def number(self, plan: ListenerPlan) -> int:
        """1-based position of the listener in :func:`plan_listeners`: names its own services."""
        try:
            return self._numbers[plan.context]
        except KeyError:
            raise ValueError(f"{plan.context}: not a listener of this configuration") from None

    def other_contexts(self, plan: ListenerPlan, connector: ReceiveConnector) -> list[str]:
        """The other listeners ``connector`` is rendered on, in listener order."""
        return [ctx for ctx in self._contexts.get(connector.identity, ()) if ctx != plan.context]

    def spans(self, bindings: Iterable[Binding]) -> list[tuple[int, int]]:
        """``(first, last)`` of every range the enabled connectors of ``bindings`` hold, sorted."""
        return sorted(s for b in set(bindings) for s in self._spans.get(b, ()))


def connect_always_passes(plan: ListenerPlan, org: Organization, layout: ListenerLayout | None = None) -> bool:
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
    layout = layout or ListenerLayout(org)
    lst = plan.listener
    local = parse_ip(lst.address) if lst.address is not None else None
    for version in (4, 6) if local is None else (local.version,):
        keys = [Binding(version, 0, lst.port)]
        if local is not None:
            keys.append(Binding(version, int(local), lst.port))
        if not _covers_all(layout.spans(keys), (1 << (32 if version == 4 else 128)) - 1):
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


def shown(limit: int | None) -> str:
    """A limit as the comments write it: a number, or ``unlimited``."""
    return "unlimited" if limit is None else str(limit)


def connection_limits(plan: ListenerPlan, org: Organization, layout: ListenerLayout | None = None) -> ConnectionLimits:
    """Per-listener limits: exact when the listener's connectors agree, else never stricter.

    Postfix counts before the policy daemon knows the connector, so one listener gets one
    per-source limit and one process limit. When its connectors' limits differ, the most
    permissive is rendered (Postfix must never answer before exmilter with a stricter
    limit, postfix-notes §5) and the difference is reported as a gap.
    """
    layout = layout or ListenerLayout(org)
    conns = plan.connectors
    gaps: list[str] = []
    per = {c.name: source_limit(c) for c in conns}
    values = set(per.values())
    per_source = 0 if None in values else max(v for v in values if v is not None)
    if len(values) > 1:
        listing = ", ".join(f"{n} {shown(v)}" for n, v in per.items())
        gaps.append(
            f"connections per source differ ({listing}); Postfix counts per listener before "
            f"the connector is known, so the most permissive ({shown(per_source or None)}) applies to all"
        )
    totals = [c.max_inbound_connection for c in conns]
    total = 0 if None in totals else sum(t for t in totals if t is not None)
    if total > MAXPROC_CAP:
        total = 0
    if len(conns) > 1:
        gaps.append(
            f"MaxInboundConnection counts per connector; Postfix caps the listener: maxproc is "
            f"their sum ({shown(total or None)})"
        )
    shares = [
        f"{c.name} {c.max_inbound_connection_percentage_per_source}%"
        for c in conns
        if c.max_inbound_connection_percentage_per_source < 100 and c.max_inbound_connection is not None
    ]
    if shares:
        gaps.append(
            f"MaxInboundConnectionPercentagePerSource ({', '.join(shares)}) only as the share of an idle "
            "connector; Exchange's shrinks as the connector fills"
        )
    for c in conns:
        elsewhere = layout.other_contexts(plan, c)
        if elsewhere:
            gaps.append(
                f"{c.name} also listens on {', '.join(elsewhere)}: its limits count per "
                "listener here, across all its bindings in Exchange"
            )
    return ConnectionLimits(per_source, total, tuple(gaps))
