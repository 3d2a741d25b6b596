"""The policy daemon's wiring into one listener: the check, the restriction lists, fail-closed.

Postfix asks ``exmilter policyd`` through one per-listener ``check_policy_service`` with
per-use overrides (Postfix 3.0+): a short timeout, two tries, and a temporary failure as
the default action, so a daemon that is down, slow or answers nonsense never opens relay
(postfix-notes §1.5). The restriction lists ask it at exactly the stages it decides.
"""

from __future__ import annotations

import re

from exmilter.limits import POSTFIX_POLICY_RETRY_DELAY, POSTFIX_POLICY_TIMEOUT, POSTFIX_POLICY_TRY_LIMIT
from exmilter.postfix.listeners import ListenerPlan
from exmilter.postfix.options import OptionGroup
from exmilter.replies import CONFIGURATION_PROBLEM

#: What Postfix answers when the policy daemon cannot be asked (postfix-notes §1.5).
DEFAULT_ACTION = CONFIGURATION_PROBLEM.line
#: The per-listener parameter holding that listener's policy check; the lists refer to it.
POLICY_PARAM = "exmilter_policy"


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
        f"check_policy_service {{ {endpoint}, timeout={POSTFIX_POLICY_TIMEOUT}s, "
        f"try_limit={POSTFIX_POLICY_TRY_LIMIT}, retry_delay={POSTFIX_POLICY_RETRY_DELAY}s, "
        f"{{ default_action = {DEFAULT_ACTION} }}, policy_context={context} }}"
    )


def restrictions(ask_at_connect: bool = True) -> list[tuple[str, str]]:
    """The per-listener restriction lists: exmilter is asked once per stage it decides.

    With ``smtpd_delay_reject=no`` the lists run at CONNECT (client), EHLO/HELO (helo),
    MAIL (sender), RCPT (relay, recipient), DATA (data) and END-OF-MESSAGE (end-of-data).
    exmilter decides at CONNECT, MAIL, RCPT and END-OF-MESSAGE only
    (``exmilter.policy.decide.DECIDED_STATES``) and answers ``DUNNO`` at EHLO/HELO and DATA
    without consulting the engine, so asking there costs a policy round trip and daemon
    CPU for nothing (two of the six requests per message the first renderer asked for).
    The helo and data lists are therefore empty. They are still set, empty, per listener,
    so restrictions in the system main.cf cannot answer before exmilter either. The client
    list is empty too when ``ask_at_connect`` is False: see
    :func:`exmilter.postfix.listeners.connect_always_passes`.

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


def policy_options(plan: ListenerPlan, endpoint: str, ask_at_connect: bool) -> OptionGroup:
    """The listener's policy check and its restriction lists (``smtpd_delay_reject`` is in
    the service basics: it decides when every list runs, whoever fills them)."""
    return OptionGroup(
        comments=(
            "#   CONNECT: asked (some clients select no connector: 421 4.3.2)"
            if ask_at_connect
            else "#   CONNECT: not asked (every client selects a connector: exmilter's answer is always DUNNO)",
        ),
        options=((POLICY_PARAM, policy_check(endpoint, plan.context)), *restrictions(ask_at_connect)),
    )
