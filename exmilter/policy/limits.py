"""The policy daemon's connection cap, computed from what Postfix can open (docs/policyd.md, "Limits").

The bounds themselves are named in :mod:`exmilter.limits` (the configurable ones are
:class:`exmilter.model.PolicydSettings` fields, whose defaults are there too).

Postfix opens one policy connection per smtpd process and service string (postfix-notes
§1.5; the renderer uses one string per listener), and a listener runs at most ``maxproc``
smtpd processes, which render-postfix sets to the sum of MaxInboundConnection of the
listener's connectors (docs/render-postfix.md). So the rendered master.cf bounds the
connections Postfix can hold: ``max_connections: auto`` admits that many, plus headroom.
"""

from __future__ import annotations

import contextlib
import resource
from dataclasses import dataclass

from exmilter.limits import POLICY_FD_RESERVE, POLICY_HEADROOM_MIN, POLICY_HEADROOM_PERCENT
from exmilter.model import Organization

#: master.cf's maxproc is a C int; beyond it render-postfix writes 0 (no limit).
MAXPROC_MAX = 2**31 - 1


def postfix_connections(org: Organization) -> int | None:
    """An upper bound of the smtpd processes the rendered master.cf allows, or None if any
    listener is unlimited (a connector without MaxInboundConnection) or there is no listener.

    Linear in the connectors. Each enabled connector counts its MaxInboundConnection once
    per listener it is rendered on: its exact bindings, and for a wildcard binding the port's
    wildcard listener, or, when that port also has exact bindings, one listener per exact or
    server address (exmilter.postfix.render.plan_listeners). Never less than the rendered
    total, so the cap never refuses a connection Postfix is configured to open.
    """
    enabled = [c for c in org.receive_connectors if c.enabled and c.bindings]
    if not enabled:
        return None
    exact: dict[int, set[str]] = {}
    for c in enabled:
        for b in c.bindings:
            if not b.is_wildcard:
                exact.setdefault(b.port, set()).add(str(b.ip))
    servers = set(org.server.addresses)
    total = 0
    for c in enabled:
        if c.max_inbound_connection is None:
            return None
        listeners: set[tuple[int, str]] = set()
        for b in c.bindings:
            if not b.is_wildcard:
                listeners.add((b.port, str(b.ip)))
            elif b.port in exact:
                listeners.update((b.port, a) for a in exact[b.port] | servers)
            else:
                listeners.add((b.port, "*"))
        total += c.max_inbound_connection * len(listeners)
        if total > MAXPROC_MAX:
            return None
    return total


def open_files_limit() -> int | None:
    """The soft RLIMIT_NOFILE, None when unlimited."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def raise_open_files_limit() -> int | None:
    """Raise the soft open-files limit to the hard one; return the soft limit now in force.

    systemd starts services with a soft limit of 1024 and a high hard limit, and advises
    programs that need more descriptors (and do not use ``select()``; Twisted's reactor on
    Linux is epoll) to raise it themselves (systemd.exec(5), LimitNOFILE=).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and soft != resource.RLIM_INFINITY:
        with contextlib.suppress(ValueError, OSError):  # not allowed: keep the soft limit, reported at start
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return open_files_limit()


@dataclass(frozen=True)
class ConnectionCap:
    """How many policy connections are admitted, and why (logged at start and on change)."""

    limit: int
    reason: str
    clamped: bool = False  # the wanted limit was above what the open-files limit allows


def connection_cap(org: Organization, fd_limit: int | None) -> ConnectionCap:
    """``policyd.max_connections``, or for ``auto`` the rendered maxproc total plus headroom;
    in both cases no more than the open-files limit leaves (``fd_limit - POLICY_FD_RESERVE``),
    since beyond it ``accept`` fails and connections would wait unanswered instead."""
    fds = None if fd_limit is None else max(1, fd_limit - POLICY_FD_RESERVE)
    wanted = org.policyd.max_connections
    if wanted is not None:
        reason = "policyd.max_connections"
    else:
        postfix = postfix_connections(org)
        if postfix is None:
            if fds is None:
                return ConnectionCap(
                    MAXPROC_MAX, "auto: some listener has no process limit and the open-files limit is unlimited"
                )
            return ConnectionCap(
                fds,
                f"auto: some listener has no process limit (maxproc 0); the open-files "
                f"limit {fd_limit} less {POLICY_FD_RESERVE} kept free",
            )
        wanted = postfix + max(POLICY_HEADROOM_MIN, -(-postfix * POLICY_HEADROOM_PERCENT // 100))
        reason = (
            f"auto: up to {postfix} smtpd processes in the rendered master.cf (maxproc), "
            f"plus {POLICY_HEADROOM_PERCENT} %"
        )
    if fds is not None and wanted > fds:
        return ConnectionCap(
            fds,
            f"{reason} would be {wanted}, but the open-files limit is {fd_limit} "
            f"({POLICY_FD_RESERVE} kept free): raise LimitNOFILE",
            clamped=True,
        )
    return ConnectionCap(wanted, reason)
