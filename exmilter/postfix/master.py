"""One master.cf smtpd service per listener, put together from one option group per concern.

The groups (each a function returning an :class:`~exmilter.postfix.options.OptionGroup`):

- :func:`service_basics`: the listener's identity (banner, ``milter_macro_daemon_name``)
  and ``smtpd_delay_reject=no``;
- :func:`exmilter.postfix.restrictions.policy_options`: the policy check and the lists;
- :func:`limit_options`: MaxInboundConnection* as maxproc and anvil's per-client count;
- :func:`exmilter.postfix.completion.completion_options`: the listener's own cleanup and
  trivial-rewrite (DefaultDomain);
- :func:`smuggling_options`: ``smtpd_forbid_bare_newline`` (CVE-2023-51764).

- :func:`exmilter.postfix.auth.auth_options`: STARTTLS and AUTH, offered per client as
  each connector's AuthMechanism says (docs/authentication.md).

The milter wiring (``smtpd_milters`` and its macros per listener) is a further group
composed in :func:`master_service` (docs/render-postfix.md, "Where the code is").
"""

from __future__ import annotations

import re

from exmilter.model import Organization
from exmilter.postfix.auth import auth_options
from exmilter.postfix.completion import completion_options
from exmilter.postfix.listeners import (
    ConnectionLimits,
    ListenerLayout,
    ListenerPlan,
    connect_always_passes,
    connection_limits,
    shown,
)
from exmilter.postfix.milter import milter_options
from exmilter.postfix.options import OptionGroup, option, postfix_value
from exmilter.postfix.proxy import proxy_options
from exmilter.postfix.restrictions import policy_options
from exmilter.postfix.scope import capped

#: Exchange's code for bare linefeeds (spec §3.6 #5); Postfix's reject code where it rejects them.
BARE_LINEFEED_REJECT_CODE = 554


def banner(plan: ListenerPlan, org: Organization) -> str:
    """``smtpd_banner`` text (Postfix adds the ``220 ``): the connector's own banner
    when the listener serves one connector, else Exchange's default with the server FQDN."""
    if len(plan.connectors) == 1:
        first = plan.connectors[0].banner_text().splitlines()[0]
        text = re.sub(r"^220[ -]?", "", first).strip()
        if text:
            return text
    return f"{org.server.fqdn} Microsoft ESMTP MAIL Service ready"


def service_basics(plan: ListenerPlan, org: Organization) -> OptionGroup:
    """What every exmilter listener sets: its context as the milter's ``{daemon_name}``, its
    banner, and restriction lists that run at the stage they name."""
    return OptionGroup(
        comments=(
            f"# exmilter listener {plan.context}: Exchange bindings {', '.join(plan.bindings)}",
            f"#   connectors: {', '.join(c.identity for c in plan.connectors)}",
        ),
        options=(
            ("smtpd_delay_reject", "no"),
            ("smtpd_banner", postfix_value(banner(plan, org))),
            ("milter_macro_daemon_name", plan.context),
        ),
    )


def limit_options(limits: ConnectionLimits) -> OptionGroup:
    """Anvil's per-client count, without Postfix's exemption of ``$mynetworks`` (the maxproc
    column is the service line's: :func:`master_service`)."""
    return OptionGroup(
        comments=(
            f"#   connections: {shown(limits.per_source or None)} per client address, "
            f"{shown(limits.total or None)} in all (maxproc; beyond it clients wait, no 421)",
            *(f"#   not expressible: {g}" for g in limits.gaps),
        ),
        options=(
            ("smtpd_client_connection_count_limit", str(limits.per_source)),
            # Exchange exempts no client; Postfix's default exempts $mynetworks from the limit.
            ("smtpd_client_event_limit_exceptions", ""),
        ),
    )


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


def smuggling_options(plan: ListenerPlan) -> OptionGroup:
    """DATA ends only at ``<CR><LF>.<CR><LF>``, for every client (no exclusions)."""
    value = bare_newline(plan)
    why = (
        " (every connector has BareLinefeedRejectionEnabled)"
        if value == "reject"
        else " (DATA ends only at <CR><LF>.<CR><LF>; other bare LFs end a line)"
    )
    return OptionGroup(
        comments=(f"#   bare LF: {value}{why}",),
        options=(
            ("smtpd_forbid_bare_newline", value),
            ("smtpd_forbid_bare_newline_exclusions", ""),  # the default, $mynetworks, would be exempt
            *([("smtpd_forbid_bare_newline_reject_code", str(BARE_LINEFEED_REJECT_CODE))] if value == "reject" else []),
        ),
    )


def master_service(
    plan: ListenerPlan,
    org: Organization,
    endpoint: str,
    layout: ListenerLayout | None = None,
    *,
    process_limit: int = 0,
    milter: str | None = None,
) -> str:
    """One master.cf smtpd service (chroot n: an absolute unix: policy socket stays reachable).

    ``layout`` is the configuration's :class:`ListenerLayout`; give it when rendering many
    listeners (one is built otherwise, at the cost of a pass over the configuration).
    ``process_limit`` caps maxproc (:func:`exmilter.postfix.scope.capped`; 0: Exchange's sum).
    """
    layout = layout or ListenerLayout(org)
    limits = capped(connection_limits(plan, org, layout), process_limit)
    basics = service_basics(plan, org)
    policy = policy_options(plan, endpoint, ask_at_connect=not connect_always_passes(plan, org, layout))
    connections = limit_options(limits)
    completion = completion_options(plan, org, layout)
    smuggling = smuggling_options(plan)
    tls_sasl = auth_options(plan, org)
    filtering = milter_options(milter)
    proxy = proxy_options(org)  # behind HAProxy (docs/cluster.md); empty otherwise
    # Two orders, both kept from the first renderer so that rendered files do not change
    # (the shipped postfix/*.snippet included): a new group takes a place in both.
    explained = (basics, policy, connections, completion, smuggling, filtering, tls_sasl, proxy)
    applied = (basics, policy, connections, smuggling, completion, filtering, tls_sasl, proxy)
    lines = [
        *(line for g in explained for line in g.comments),
        f"{plan.bind} inet n - n - {limits.total} smtpd",
        *(f"  {option(name, value)}" for g in applied for name, value in g.options),
        *(f"  {o}" for o in plan.extra_options),
        *(service for g in applied for service in g.services),
    ]
    return "\n".join(lines)
