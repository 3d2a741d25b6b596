"""Addresses without a domain: what Postfix completes them with on each listener.

Postfix completes ``user`` with ``@$myorigin`` in cleanup (trivial-rewrite,
``append_at_myorigin``) and accepts ``RCPT TO:<postmaster>`` without asking any
restriction (RFC 5321 §4.5.1), so each listener gets its own cleanup and trivial-rewrite
services with ``myorigin`` set to the domain exmilter judges such addresses by
(postfix-notes §9, docs/render-postfix.md "Addresses"). Which domain that is, per listener,
is the engine's to know (:func:`exmilter.listener.origin`); this module renders it.
"""

from __future__ import annotations

from exmilter.deployment import Origin, origin
from exmilter.model import Organization
from exmilter.postfix.listeners import ListenerLayout, ListenerPlan
from exmilter.postfix.options import OptionGroup

#: master.cf names of a listener's own cleanup and trivial-rewrite services (see :func:`origin`).
CLEANUP_SERVICE = "exmilter-cleanup-{}"
REWRITE_SERVICE = "exmilter-rewrite-{}"


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
