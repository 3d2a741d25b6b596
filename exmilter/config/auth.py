"""The ``tls`` and ``sasl`` sections: the default certificate for STARTTLS, and how Postfix
checks AUTH passwords (docs/authentication.md). Plus the authentication checks on the
connectors that need the whole file (a certificate for RequireTLS, Integrated alone).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from exmilter.auth import certificate
from exmilter.config import fields
from exmilter.config.fields import FAILED
from exmilter.config.problems import Collector, Sink, Where, nowhere
from exmilter.config.reader import Raw
from exmilter.model import AuthMechanism, Organization, SaslSettings, TlsSettings

#: Words of the refusals that are exmilter's own, not Exchange's (the importer says so).
INTEGRATED_ALONE = "Integrated (NTLM/Kerberos) is Windows authentication that Postfix cannot offer"
EXMILTER_ONLY = (INTEGRATED_ALONE,)

#: Postfix's SASL back ends (``postconf -a``): Dovecot's auth socket, or the Cyrus library.
SASL_TYPES = ("dovecot", "cyrus")

_TLS_FIELDS: dict[str, Callable[[Raw], Any]] = {"certificate_file": fields.pem_path, "key_file": fields.pem_path}


def _sasl_path(raw: Raw) -> str:
    path = fields.scalar(raw).strip()
    if not path or any(ch in path for ch in ", \t{}$"):
        raise ValueError(f"{path!r}: a socket path (private/auth, /run/dovecot/auth-client) or a Cyrus name")
    return path


_SASL_FIELDS: dict[str, Callable[[Raw], Any]] = {"type": fields.choice(*SASL_TYPES), "path": _sasl_path}


def _section(raw: Raw, name: str, parsers: Mapping[str, Callable[[Raw], Any]], out: Collector) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, (kraw, vraw) in fields.mapping(raw, name, out).items():
        if key not in parsers:
            out.error(kraw, f"{name}.{key}", f"unknown key; expected {', '.join(parsers)}")
            continue
        v = fields.parse_or_report(vraw, f"{name}.{key}", parsers[key], out)
        if v is not FAILED:
            values[key] = v
    return values


def tls(raw: Raw, out: Collector) -> TlsSettings:
    """``tls``: ``certificate_file`` and ``key_file`` (absolute paths, given together)."""
    values = _section(raw, "tls", _TLS_FIELDS, out)
    if bool(values.get("certificate_file")) != bool(values.get("key_file")):
        out.error(raw, "tls", "give certificate_file and key_file together")
        return TlsSettings()
    return dataclasses.replace(TlsSettings(), **values)


def sasl(raw: Raw, out: Collector) -> SaslSettings:
    """``sasl``: ``type`` (dovecot, cyrus) and ``path`` (Postfix's smtpd_sasl_path)."""
    values = _section(raw, "sasl", _SASL_FIELDS, out)
    if values.get("type") == "cyrus" and "path" not in values:
        values["path"] = "smtpd"  # Cyrus reads smtpd.conf: the path is the application name
    return dataclasses.replace(SaslSettings(), **values)


def check_authentication(org: Organization, where: Mapping[str, Where], out: Sink) -> None:
    """Per connector: Integrated alone cannot work; RequireTLS needs a certificate."""
    for c in org.receive_connectors:
        pos = where.get(c.name, nowhere)
        am = c.auth_mechanism
        if bool(c.tls_certificate_file) != bool(c.tls_key_file):
            out.error(pos("tls_certificate_file"), f"{c.name}: tls_certificate_file", "give tls_key_file with it")
        if AuthMechanism.Integrated in am and AuthMechanism.BasicAuth not in am:
            out.error(
                pos("auth_mechanism"),
                f"{c.name}: auth_mechanism",
                f"{INTEGRATED_ALONE}; clients of this connector could never authenticate: "
                "add BasicAuth (AUTH LOGIN/PLAIN through Dovecot) or remove Integrated",
            )
        if c.require_tls and AuthMechanism.Tls in am and certificate(org, c) is None:
            # Only RequireTLS is warned about: Exchange's own connectors have BasicAuthRequireTLS
            # and no certificate in most files; docs/authentication.md says what that means.
            out.warn(
                pos("require_tls"),
                f"{c.name}: require_tls",
                "no certificate (tls.certificate_file or the connector's tls_certificate_file): STARTTLS "
                "is not offered, so no client can send here",
            )
