"""main.cf settings: global limits no stricter than any connector, rewrites off, relay_domains.

Postfix answers some things before any policy server is asked (limits, relay checks), so
the global settings make Postfix at least as permissive as every connector and leave each
decision to exmilter (postfix-notes §5). Per-listener settings are in master.cf
(:mod:`exmilter.postfix.master`), where Postfix can tell the connectors apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from exmilter.auth import offers_basic_auth
from exmilter.domains import to_unicode
from exmilter.model import Organization
from exmilter.postfix.milter import milter_main_settings

#: Postfix's own defaults; the rendered limits never go below them.
POSTFIX_MAILBOX_SIZE_LIMIT = 51200000
POSTFIX_RECIPIENT_LIMIT = 1000
POSTFIX_HOPCOUNT_LIMIT = 50
POSTFIX_HARD_ERROR_LIMIT = 20


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


def limit_settings(org: Organization) -> list[Setting]:
    """Global limits no stricter than any connector's (postfix-notes §5).

    Connection limits are not here: they are set per listener in master.cf
    (:func:`exmilter.postfix.listeners.connection_limits`).
    """
    conns = [c for c in org.receive_connectors if c.enabled] or list(org.receive_connectors)
    size = max((c.max_message_size for c in conns), default=36 << 20)
    size_limit = size + size // 10
    errors = [c.max_protocol_errors for c in conns]
    most_errors = max((e or 0 for e in errors), default=0)
    hard = 1000 if None in errors else max(POSTFIX_HARD_ERROR_LIMIT, 2 * most_errors + 1)
    timeout = max((int(c.connection_inactivity_timeout.total_seconds()) for c in conns), default=300)
    mailbox = max(POSTFIX_MAILBOX_SIZE_LIMIT, size_limit)
    recipients = max((c.max_recipients_per_message for c in conns), default=POSTFIX_RECIPIENT_LIMIT)
    recipients = max(POSTFIX_RECIPIENT_LIMIT, recipients)
    hops = max(POSTFIX_HOPCOUNT_LIMIT, max((c.max_hop_count for c in conns), default=60) + 10)
    return [
        Setting("message_size_limit", str(size_limit), "largest MaxMessageSize + 10%; exmilter enforces each's own"),
        Setting("mailbox_size_limit", str(mailbox), "never below message_size_limit"),
        Setting("virtual_mailbox_limit", str(mailbox), "likewise"),
        Setting("smtpd_recipient_limit", str(recipients), "at least the largest MaxRecipientsPerMessage"),
        Setting("hopcount_limit", str(hops), "above MaxHopCount + 1 (Postfix counts its own Received:)"),
        Setting("smtpd_hard_error_limit", str(hard), "above MaxProtocolErrors: exmilter says when to disconnect"),
        Setting("smtpd_timeout", f"{timeout}s", "largest ConnectionInactivityTimeout"),
    ]


def sasl_settings(org: Organization) -> list[Setting]:
    """Where Postfix checks AUTH passwords, when some connector offers AUTH (each listener
    switches AUTH on or off itself: exmilter.postfix.auth)."""
    if not any(offers_basic_auth(c) for c in org.receive_connectors if c.enabled):
        return []
    why = (
        "Dovecot's auth socket (relative: under the queue directory); it must be up, else smtpd drops "
        "the session at the EHLO that would offer AUTH (docs/authentication.md)"
        if org.sasl.type == "dovecot"
        else "Cyrus SASL: the application name of its smtpd.conf (docs/authentication.md)"
    )
    return [
        Setting("smtpd_sasl_type", org.sasl.type, "AUTH passwords are checked by the SASL back end"),
        Setting("smtpd_sasl_path", org.sasl.path, why),
    ]


def main_settings(org: Organization) -> list[Setting]:
    """Every main.cf setting exmilter renders, in order: limits, relay domains, rewrites off, SASL."""
    return [
        *limit_settings(org),
        Setting(
            "relay_domains",
            ", ".join(relay_domains(org)) or "",
            "accepted domains (ASCII and UTF-8 forms), for routing only: exmilter decides relay",
        ),
        *ROUTING_SETTINGS,
        *sasl_settings(org),
        *(Setting(n, v, why) for n, v, why in milter_main_settings(org)),
    ]


def relay_domains(org: Organization) -> Iterable[str]:
    """Each accepted domain in ASCII and, for ``xn--`` names, UTF-8 form: Postfix matches the
    domain list on the name as the client wrote it (case-folded), not on its ASCII form."""
    for d in org.accepted_domains:
        sub = d.is_wildcard or d.match_sub_domains
        for name in (d.suffix, to_unicode(d.suffix)):
            if name:
                yield name
                if sub:
                    yield f".{name}"
