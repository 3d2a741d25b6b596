"""The milter's wiring into Postfix (docs/milter.md): ``smtpd_milters`` per listener, fail-closed.

With the milter (``milter.enabled``, the default) each listener sends its sessions to
``exmilter milter``; a milter that is down, slow or failing gives a temporary failure
(``milter_default_action = tempfail``), never an accepted message that skipped the firewall.
The macros the milter needs are requested in main.cf; ``{daemon_name}`` is the listener's
context (``milter_macro_daemon_name``, in the service basics). Without the milter, Postfix is
rendered policy-only and :data:`POLICY_ONLY_GIVES_UP` says what that costs.
"""

from __future__ import annotations

from exmilter.limits import POSTFIX_MILTER_COMMAND_TIMEOUT, POSTFIX_MILTER_CONTENT_TIMEOUT
from exmilter.milter_macros import CONNECT, EOH, EOM, HELO, MAIL, RCPT
from exmilter.model import Organization
from exmilter.postfix.options import OptionGroup

#: What a policy-only rendering does not do (render-postfix and check say it).
POLICY_ONLY_GIVES_UP = (
    "policy only (milter.enabled: false): refusals carry Postfix's wrapping, not Exchange's text; "
    "no header firewall (forged X-MS-Exchange-Organization-* headers are delivered) and no AuthAs stamps; "
    "no MaxHeaderSize, MaxHopCount, MaxLocalHopCount, message/partial or From:/Sender: (P2) checks at end of data"
)


def milter_main_settings(org: Organization) -> list[tuple[str, str, str]]:
    """``(name, value, why)`` for main.cf: the macros and the failure action, when the milter is on."""
    if not org.milter.enabled:
        return []
    return [
        ("milter_default_action", "tempfail", "a milter down or failing: 451 4.7.1, never an unfiltered message"),
        ("milter_protocol", "6", "libmilter 8.14+ (pymilter)"),
        ("milter_connect_timeout", f"{POSTFIX_MILTER_COMMAND_TIMEOUT}s", "then milter_default_action"),
        ("milter_command_timeout", f"{POSTFIX_MILTER_COMMAND_TIMEOUT}s", "then milter_default_action"),
        ("milter_content_timeout", f"{POSTFIX_MILTER_CONTENT_TIMEOUT}s", "then milter_default_action"),
        ("milter_connect_macros", " ".join(CONNECT), "the listener context and both endpoints (postfix-notes 2.2)"),
        ("milter_helo_macros", " ".join(HELO), "TLS state"),
        ("milter_mail_macros", " ".join(MAIL), "SASL login and mechanism"),
        ("milter_rcpt_macros", " ".join(RCPT), "queue id"),
        ("milter_end_of_header_macros", " ".join(EOH), "queue id"),
        ("milter_end_of_data_macros", " ".join(EOM), "queue id"),
    ]


def milter_options(endpoint: str | None) -> OptionGroup:
    """``smtpd_milters`` for one listener (``endpoint`` in Postfix's form), or the policy-only note."""
    if endpoint is None:
        return OptionGroup(comments=(f"#   {POLICY_ONLY_GIVES_UP}",))
    return OptionGroup(
        comments=(f"#   milter: {endpoint} judges MAIL, RCPT and end of data verbatim; down or slow: 451 (tempfail)",),
        options=(("smtpd_milters", endpoint), ("non_smtpd_milters", "")),
    )
