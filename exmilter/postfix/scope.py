"""Which Exchange listeners a host renders, and how many smtpd processes each may run.

**Listeners.** Exchange's own server-to-server listeners (the backend ``Default`` connector
on 2525, ``Client Proxy`` on 465 and ``Outbound Proxy Frontend`` on 717) exist because
Exchange's frontend proxies to its backend on the same host. Postfix has no backend: its
relay clients (printers, scanners, applications) use the frontend listeners (25, 587 and
the admin's custom connectors). So by default only listeners with at least one connector
for clients are rendered; a listener all of whose connectors are those three internal
default connectors of the server is rendered only on request (``--internal``), and
``--listener CONTEXT`` picks listeners by name. An admin's own connector is never internal,
whatever its transport role or usage: Exchange creates custom connectors on
``HubTransport`` unless told otherwise, and relay clients use them all the same.

**Process limits.** Exchange's MaxInboundConnection (5,000 per connector; 15,000 on a
default listener) sizes Exchange's thread pool, not Postfix's: each Postfix client holds
one smtpd process (and one policy daemon connection). The rendered ``maxproc`` is

    maxproc = min(Σ MaxInboundConnection of the listener's connectors, process limit)

with the process limit :data:`exmilter.limits.POSTFIX_PROCESS_LIMIT` (100, Postfix's own
``default_process_limit``, what a host sized for Postfix runs) unless ``--process-limit N`` says otherwise
(0: Exchange's sum, uncapped). An unlimited connector counts as the process limit. Beyond
``maxproc`` clients wait in the listen queue; nobody gets a refusal Exchange would not give.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from exmilter.deployment import ListenerPlan
from exmilter.limits import POLICY_FD_RESERVE, POSTFIX_PROCESS_LIMIT
from exmilter.model import ReceiveConnector
from exmilter.postfix.listeners import ConnectionLimits

#: The default of ``render-postfix --process-limit``.
DEFAULT_PROCESS_LIMIT = POSTFIX_PROCESS_LIMIT


#: Exchange's own server-to-server receive connectors (defaults.py), by name for a server.
INTERNAL_DEFAULT_CONNECTORS = ("Outbound Proxy Frontend {}", "Default {}", "Client Proxy {}")


def internal_connector(c: ReceiveConnector, server: str) -> bool:
    """One of the internal default connectors of ``server``: only Exchange's own services use it."""
    return c.name.lower() in {n.format(server).lower() for n in INTERNAL_DEFAULT_CONNECTORS}


def internal(plan: ListenerPlan, server: str) -> bool:
    """A listener whose every connector is internal (none serves relay clients)."""
    return bool(plan.connectors) and all(internal_connector(c, server) for c in plan.connectors)


class UnknownListener(ValueError):
    """``--listener`` names a listener the configuration does not have."""


def choose(
    plans: Sequence[ListenerPlan], server: str, *, include_internal: bool = False, only: Sequence[str] = ()
) -> list[ListenerPlan]:
    """The listeners to render: ``only`` (contexts, e.g. ``*:25``) when given, else every
    listener for clients, plus the internal ones with ``include_internal``.

    Raises :class:`UnknownListener` naming a context in ``only`` that is not a listener of the configuration.
    """
    if only:
        known = {p.context: p for p in plans}
        unknown = [c for c in only if c not in known]
        if unknown:
            raise ValueError(f"no listener {', '.join(unknown)}; the configuration has {', '.join(known) or 'none'}")
        return [p for p in plans if p.context in only]
    return [p for p in plans if include_internal or not internal(p, server)]


def capped(limits: ConnectionLimits, process_limit: int) -> ConnectionLimits:
    """``limits`` with maxproc at most ``process_limit`` (0: no cap), saying so when it bites."""
    if process_limit <= 0 or 0 < limits.total <= process_limit:
        return limits
    exchange = "unlimited" if limits.total == 0 else str(limits.total)
    gap = (
        f"maxproc {process_limit} (render-postfix --process-limit), not Exchange's {exchange}: "
        "one smtpd process per client; beyond it clients wait, none is refused"
    )
    return replace(limits, total=process_limit, gaps=(*limits.gaps, gap))


def process_total(maxprocs: Sequence[int]) -> int | None:
    """smtpd processes these listeners allow (the sum of maxproc), or None when a listener is
    unlimited (maxproc 0)."""
    return None if any(m == 0 for m in maxprocs) else sum(maxprocs)


def descriptors_needed(processes: int | None) -> int | None:
    """Open files the policy daemon needs for ``processes`` smtpd processes (one connection
    each, plus a reserve); None for an unlimited listener."""
    return None if processes is None else processes + POLICY_FD_RESERVE
