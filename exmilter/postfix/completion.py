"""Addresses without a domain: what Postfix completes them with on each listener.

Postfix completes ``user`` with ``@$myorigin`` in cleanup (trivial-rewrite,
``append_at_myorigin``) and accepts ``RCPT TO:<postmaster>`` without asking any
restriction (RFC 5321 §4.5.1), so each listener gets its own cleanup and trivial-rewrite
services with ``myorigin`` set to the domain exmilter judges such addresses by
(postfix-notes §9, docs/render-postfix.md "Addresses"). The engine reads
:func:`completions` to judge exactly the domain Postfix will route to.
"""

from __future__ import annotations

from dataclasses import dataclass

from exmilter.domains import default_domain_name, organization_default_domain
from exmilter.model import Organization
from exmilter.postfix.listeners import ListenerLayout, ListenerPlan, plan_listeners
from exmilter.postfix.options import OptionGroup

#: master.cf names of a listener's own cleanup and trivial-rewrite services (see :func:`origin`).
CLEANUP_SERVICE = "exmilter-cleanup-{}"
REWRITE_SERVICE = "exmilter-rewrite-{}"


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


def completion_options(plan: ListenerPlan, org: Organization, layout: ListenerLayout) -> OptionGroup:
    """The listener's own cleanup and trivial-rewrite, when there is a domain to complete with."""
    o = origin(plan, org)
    comments = (_origin_comment(o), *(f"#   not expressible: {g}" for g in o.gaps))
    if not o.domain:
        return OptionGroup(comments)
    number = layout.number(plan)
    cleanup, rewrite = CLEANUP_SERVICE.format(number), REWRITE_SERVICE.format(number)
    services = "\n".join(
        [
            f"# exmilter listener {plan.context}: its own cleanup and trivial-rewrite, so that Postfix completes",
            f"#   unqualified addresses (and RCPT TO:<postmaster>) with @{o.domain}, as exmilter judges them",
            f"{cleanup} unix n - n - 0 cleanup",
            f"  -o rewrite_service_name={rewrite}",
            f"{rewrite} unix - - n - - trivial-rewrite",
            f"  -o myorigin={o.domain}",
        ]
    )
    return OptionGroup(comments, (("cleanup_service_name", cleanup),), (services,))


def _origin_comment(o: Origin) -> str:
    if o.domain is None:
        return (
            "#   unqualified addresses: refused by exmilter; no accepted domain, so RCPT TO:<postmaster> "
            "gets main.cf's myorigin"
        )
    if o.honoured:
        return f"#   unqualified addresses: completed with @{o.domain} ({o.why})"
    return (
        f"#   unqualified addresses: refused by exmilter (no DefaultDomain); RCPT TO:<postmaster> goes to "
        f"postmaster@{o.domain} ({o.why})"
    )
