"""The header firewall and the stamps of accepted mail (spec §4), as typed header edits.

Pure: the session's rights and facts in, a tuple of :class:`Remove` / :class:`Add` out.
The milter applies them at end of data (``chgheader(name, index, "")`` deletes,
``addheader`` appends); nothing here knows about Postfix or pymilter.

Indexes are those of the milter protocol: the n-th header of that name (case-insensitive,
1-based) among the headers the client sent. Removals come highest index first per name,
because Postfix renumbers after each deletion.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

from exmilter.model import Right
from exmilter.permissions import EXTERNALLY_SECURED_SERVERS, PARTNER_SERVERS

ORG = "X-MS-Exchange-Organization-"
FOREST = "X-MS-Exchange-Forest-"
AUTH_AS = ORG + "AuthAs"
AUTH_SOURCE = ORG + "AuthSource"
AUTH_MECHANISM = ORG + "AuthMechanism"
CLASSIFICATION = ORG + "Classification"
ORIGINAL_ARRIVAL_TIME = ORG + "OriginalArrivalTime"
ORIGINAL_SIZE = ORG + "OriginalSize"
NETWORK_MESSAGE_ID = ORG + "Network-Message-Id"
DIRECTIONALITY = ORG + "MessageDirectionality"
ORIGINATING_IP = "X-Originating-IP"
#: The Partner classification GUID (spec §4.3).
PARTNER_CLASSIFICATION = "030e9e2f-134b-4020-861c-5bfc616f113d"
#: ``To:`` added when the message has no To, Cc or Bcc (spec §4.5).
UNDISCLOSED = "Undisclosed recipients:;"

_ORG = ORG.lower()
_FOREST = FOREST.lower()
_AUTH = (ORG + "Auth").lower()  # AuthAs, AuthSource, AuthMechanism, AuthDomain
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class AuthAs(enum.Enum):
    """``X-MS-Exchange-Organization-AuthAs`` values SMTP receive produces (spec §4.2)."""

    Partner = "Partner"
    Internal = "Internal"
    Anonymous = "Anonymous"


class AuthMechanismCode(enum.Enum):
    """``X-MS-Exchange-Organization-AuthMechanism`` (spec §4.4): two lowercase hex digits."""

    MutualTLS = "02"
    TLSAuthLogin = "06"
    Login = "07"
    SecureExternalSubmit = "10"


@dataclass(frozen=True, slots=True)
class Remove:
    """Delete the ``index``-th (1-based) header called ``name`` (case-insensitive)."""

    name: str
    index: int


@dataclass(frozen=True, slots=True)
class Add:
    """Append ``name: value`` to the header block."""

    name: str
    value: str


HeaderEdit = Remove | Add


@dataclass(frozen=True, slots=True)
class Who:
    """The session facts the firewall and stamps depend on (from the engine's Session)."""

    rights: Right
    principal: str  # the principal's name (permissions.PARTNER_SERVERS, an AUTH login, ...)
    authenticated: bool
    tls: bool = False
    client_ip: str = ""

    @property
    def partner(self) -> bool:
        return self.principal == PARTNER_SERVERS

    @property
    def externally_secured(self) -> bool:
        return self.principal == EXTERNALLY_SECURED_SERVERS

    @property
    def end_user(self) -> bool:
        """An authenticated end-user submission: neither sender right (spec §4.5)."""
        return self.authenticated and not (
            self.rights & (Right.SMTPAcceptAnySender | Right.SMTPAcceptAuthoritativeDomainSender)
        )


@dataclass(frozen=True, slots=True)
class Stamp:
    """What the stamps of one accepted message say besides the session (injected values)."""

    server_fqdn: str  # AuthSource: the server's FQDN, not the connector's
    arrival: datetime  # aware; OriginalArrivalTime and a missing Date
    size: int  # OriginalSize
    network_message_id: str  # a GUID
    message_id: str  # a whole ``<...>`` Message-ID, used when the message has none
    mail_from: str = ""  # the envelope sender, "" for the null sender
    auth_param: str | None = None  # MAIL FROM ... AUTH=<value>


def firewalled(name: str, rights: Right) -> bool:
    """Is a header called ``name`` removed from a session holding ``rights`` (spec §4.1)?"""
    n = name.lower()
    if n.startswith(_ORG):
        return Right.AcceptOrganizationHeaders not in rights
    if n.startswith(_FOREST):
        return Right.AcceptForestHeaders not in rights
    if n == "received" or n.startswith("resent-"):
        return Right.AcceptRoutingHeaders not in rights
    return False


def auth_as(who: Who, auth_param: str | None = None) -> AuthAs:
    """Spec §4.2, first match wins; ``MAIL FROM ... AUTH=<>`` forces Anonymous."""
    if auth_param is not None and auth_param.strip() == "<>":
        return AuthAs.Anonymous
    if who.partner:
        return AuthAs.Partner
    if who.authenticated and (who.end_user or Right.SMTPAcceptAuthenticationFlag in who.rights):
        return AuthAs.Internal
    return AuthAs.Anonymous


def auth_mechanism(who: Who) -> AuthMechanismCode | None:
    """Spec §4.4 and §7 #20: every SASL mechanism counts as LOGIN (06 under TLS, 07 without)."""
    if who.partner:
        return AuthMechanismCode.MutualTLS
    if who.externally_secured:
        return AuthMechanismCode.SecureExternalSubmit
    if who.authenticated:
        return AuthMechanismCode.TLSAuthLogin if who.tls else AuthMechanismCode.Login
    return None


def arrival_time(t: datetime) -> str:
    """``25 Mar 2023 03:23:47.1234 (UTC)`` (spec §4.5), locale-free."""
    u = t.astimezone(UTC)
    return f"{u.day:02d} {_MONTHS[u.month - 1]} {u.year} {u:%H:%M:%S}.{u.microsecond // 100:04d} (UTC)"


def edits(who: Who, headers: Sequence[tuple[str, str]], stamp: Stamp) -> tuple[HeaderEdit, ...]:
    """The firewall (§4.1), then the AuthAs stamps (§4.2, §4.3) and the other stamps (§4.5).

    ``headers`` are the ``(name, value)`` pairs the client sent, in order.
    """
    verdict = auth_as(who, stamp.auth_param)
    drop: set[int] = set()
    for i, (name, _) in enumerate(headers):
        if firewalled(name, who.rights):
            drop.add(i)
    kept = [(i, n.lower(), v) for i, (n, v) in enumerate(headers) if i not in drop]
    names = {n for _, n, _ in kept}
    add: list[Add] = []

    if verdict is AuthAs.Anonymous or AUTH_AS.lower() not in names:
        # Anonymous: whatever Auth* came through goes; Internal/Partner without an AuthAs
        # from a trusted hop: stale Auth* headers would contradict the ones written now.
        drop.update(i for i, n, _ in kept if n.startswith(_AUTH))
        add.append(Add(AUTH_SOURCE, stamp.server_fqdn))
        add.append(Add(AUTH_AS, verdict.value))
        mechanism = auth_mechanism(who) if verdict is not AuthAs.Anonymous else None
        if mechanism is not None:
            add.append(Add(AUTH_MECHANISM, mechanism.value))
        if verdict is AuthAs.Partner and CLASSIFICATION.lower() not in names:
            add.append(Add(CLASSIFICATION, PARTNER_CLASSIFICATION))

    present = {n for i, n, v in kept if i not in drop}
    if "message-id" not in present:
        add.append(Add("Message-ID", stamp.message_id))
    if "from" not in present and stamp.mail_from:
        add.append(Add("From", stamp.mail_from))
    if "return-path" not in present:
        add.append(Add("Return-Path", f"<{stamp.mail_from}>"))
    dates = [v for i, n, v in kept if n == "date" and i not in drop]
    if not dates or not any(v.strip() for v in dates):
        drop.update(i for i, n, v in kept if n == "date")
        add.append(Add("Date", format_datetime(stamp.arrival.astimezone(UTC))))
    if not present & {"to", "cc", "bcc"}:
        add.append(Add("To", UNDISCLOSED))
    if ORIGINAL_ARRIVAL_TIME.lower() not in present:
        add.append(Add(ORIGINAL_ARRIVAL_TIME, arrival_time(stamp.arrival)))
    if ORIGINAL_SIZE.lower() not in present:
        add.append(Add(ORIGINAL_SIZE, str(stamp.size)))
    ids = [(i, v) for i, n, v in kept if n == NETWORK_MESSAGE_ID.lower() and i not in drop]
    if not ids or not all(_GUID.match(v.strip()) for _, v in ids):
        drop.update(i for i, _ in ids)
        add.append(Add(NETWORK_MESSAGE_ID, stamp.network_message_id))
    if DIRECTIONALITY.lower() not in present:
        add.append(Add(DIRECTIONALITY, "Originating" if verdict is AuthAs.Internal else "Incoming"))
    if who.end_user and who.client_ip:
        add.append(Add(ORIGINATING_IP, f"[{who.client_ip}]"))
    return (*removals(headers, drop), *add)


def removals(headers: Sequence[tuple[str, str]], drop: set[int]) -> list[Remove]:
    """:class:`Remove` edits for the positions in ``drop``: per name, highest index first."""
    seen: dict[str, int] = {}
    out: list[Remove] = []
    for i, (name, _) in enumerate(headers):
        k = name.lower()
        seen[k] = seen.get(k, 0) + 1
        if i in drop:
            out.append(Remove(name, seen[k]))
    out.sort(key=lambda r: (r.name.lower(), -r.index))
    return out
