"""What a receive connector offers a client (STARTTLS, AUTH), and which logins may be trusted.

Pure (engine layer). Exchange offers ``STARTTLS`` only where AuthMechanism has ``Tls``
and ``AUTH LOGIN`` only where it has ``BasicAuth``, and with ``BasicAuthRequireTLS`` only
after STARTTLS (spec §1.2, §3.2). Postfix is rendered to offer the same per client
(exmilter.postfix.auth); this module is the one place both that rendering and the engine
read the rule from, so the policy daemon can refuse to trust a ``sasl_username`` that the
connector could not have accepted (a hand-edited or stale Postfix configuration, a
listener shared by connectors that Postfix cannot tell apart): such a session is judged
anonymous, which is what it is on Exchange (defence in depth).
"""

from __future__ import annotations

from exmilter.model import AuthMechanism, Organization, ReceiveConnector


def offers_starttls(c: ReceiveConnector) -> bool:
    """``STARTTLS`` in the EHLO reply (a certificate is the deployment's business)."""
    return AuthMechanism.Tls in c.auth_mechanism


def offers_basic_auth(c: ReceiveConnector) -> bool:
    """``AUTH`` at all on this connector (before or after STARTTLS)."""
    am = c.auth_mechanism
    return AuthMechanism.BasicAuth in am and AuthMechanism.ExternalAuthoritative not in am


def auth_requires_tls(c: ReceiveConnector) -> bool:
    """``BasicAuthRequireTLS``: AUTH is offered only once the session is under TLS."""
    return AuthMechanism.BasicAuthRequireTLS in c.auth_mechanism


def accepts_login(c: ReceiveConnector, tls: bool) -> bool:
    """Could Exchange have accepted an AUTH on this connector in this TLS state?"""
    return offers_basic_auth(c) and (tls or not auth_requires_tls(c))


def certificate(org: Organization, c: ReceiveConnector) -> tuple[str, str] | None:
    """The (certificate, key) PEM files STARTTLS on ``c`` uses: its own, else the file's
    ``tls`` section; None when there are none (then STARTTLS is not offered, spec §3.2)."""
    cert = c.tls_certificate_file or org.tls.certificate_file
    key = c.tls_key_file or org.tls.key_file
    return (cert, key) if cert and key else None


def untrusted_login(c: ReceiveConnector | None, login: str | None, tls: bool) -> str:
    """Why ``login`` cannot be this session's identity ('' when it can, or there is none)."""
    if not login or c is None or accepts_login(c, tls):
        return ""
    if not offers_basic_auth(c):
        why = (
            "its AuthMechanism has no BasicAuth"
            if AuthMechanism.ExternalAuthoritative not in c.auth_mechanism
            else ("it is ExternalAuthoritative")
        )
        return f"connector {c.identity} offers no AUTH ({why})"
    return (
        f"connector {c.identity} offers AUTH only after STARTTLS (BasicAuthRequireTLS) and the session is not under TLS"
    )
