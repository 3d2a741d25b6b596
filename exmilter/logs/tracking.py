"""The message tracking log (spec §5.2): RECEIVE at end of data, then each delivery outcome.

Usage::

    tlog = TrackingLog(sink, server_hostname="mx.contoso.com")
    tlog.receive(MessageFacts(...))                  # the milter, once the message is queued
    tlog.outcome(Outcome(...))                       # the Postfix-log follower (logs/postfixlog.py)

RECEIVE carries what only the milter knows at end of data (message-id, subject, AuthAs and
the AuthMechanism code, the Postfix queue id); DELIVER/SEND/DEFER/FAIL/DSN come from
Postfix's own log lines for the same queue id. exmilter writes the Postfix queue id as
``internal-message-id``, the per-server id Exchange keeps there (docs/logs.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from exmilter.engine import Session
from exmilter.logs.w3c import RowSink, header, row, timestamp
from exmilter.model import AuthMechanism, Right
from exmilter.permissions import PARTNER_SERVERS

#: The build the header and schema-version name (the version the Received stamps name, spec §4.5).
VERSION = "15.02.1118.007"
LOG_TYPE = "Message Tracking Log"
PREFIX = "MSGTRK"
#: The milter's own files in the same directory (RECEIVE of the sessions it covers).
MILTER_PREFIX = "MSGTRKMT"
FIELDS = (
    "date-time",
    "client-ip",
    "client-hostname",
    "server-ip",
    "server-hostname",
    "source-context",
    "connector-id",
    "source",
    "event-id",
    "internal-message-id",
    "message-id",
    "network-message-id",
    "recipient-address",
    "recipient-status",
    "total-bytes",
    "recipient-count",
    "related-recipient-address",
    "reference",
    "message-subject",
    "sender-address",
    "return-path",
    "message-info",
    "directionality",
    "tenant-id",
    "original-client-ip",
    "original-server-ip",
    "custom-data",
    "transport-traffic-type",
    "log-id",
    "schema-version",
)
INDEX = {name: i for i, name in enumerate(FIELDS)}

#: Delivery outcomes (Get-MessageTrackingLog's event ids) and the source Exchange names for each.
EVENT_SOURCES = {
    "RECEIVE": "SMTP",
    "DELIVER": "STOREDRIVER",
    "SEND": "SMTP",
    "DEFER": "SMTP",
    "FAIL": "SMTP",
    "DSN": "DSN",
}

#: The first letter of AuthAs in message-info (``00A:``, ``10I:``, ``02P:contoso.com``).
AUTH_AS_INITIAL = {"Anonymous": "A", "Internal": "I", "Partner": "P", "External": "E"}


def auth_as(session: Session) -> str:
    """Spec §4.2, first match wins: Partner, then Internal, else Anonymous."""
    if PARTNER_SERVERS.lower() in session.principal.names:
        return "Partner"
    if session.authenticated and (
        not (session.has(Right.SMTPAcceptAnySender) or session.has(Right.SMTPAcceptAuthoritativeDomainSender))
        or session.has(Right.SMTPAcceptAuthenticationFlag)
    ):
        return "Internal"
    return "Anonymous"


def auth_mechanism(session: Session, as_: str) -> str:
    """Spec §4.4: ``00`` anonymous, ``10`` ExternalAuthoritative, ``02`` partner mutual TLS,
    ``06`` AUTH under TLS, ``07`` AUTH without TLS."""
    c = session.connector
    if c is not None and AuthMechanism.ExternalAuthoritative in c.auth_mechanism:
        return "10"
    if as_ == "Partner":
        return "02"
    if session.auth_user:
        return "06" if session.tls else "07"
    return "00"


def tracking_header(created: float) -> str:
    return header(VERSION, LOG_TYPE, created, FIELDS)


def message_info(auth_mechanism: str, auth_as: str, auth_domain: str = "") -> str:
    """``<AuthMechanism hex><AuthAs initial>:<AuthDomain>`` (spec §5.2): ``00A:``, ``02P:contoso.com``."""
    return f"{auth_mechanism}{AUTH_AS_INITIAL.get(auth_as, auth_as[:1])}:{auth_domain}"


@dataclass(frozen=True, slots=True)
class MessageFacts:
    """One accepted message at end of data: what the milter knows (it builds this).

    ``session_id``/``session_start`` are the protocol log's for the same connection
    (source-context ``<id>;<start>;<n>``); ``message_number`` counts the session's messages
    from 1. ``auth_mechanism`` is the two-hex-digit code of spec §4.4, ``auth_as`` Anonymous,
    Internal or Partner (§4.2).
    """

    time: float
    queue_id: str
    connector_id: str  # SERVER\Connector
    client_ip: str
    client_hostname: str  # the HELO name
    server_ip: str
    server_hostname: str
    sender: str
    recipients: tuple[str, ...]
    size: int
    message_id: str
    subject: str
    auth_mechanism: str  # "00", "06", "10", ...
    auth_as: str  # "Anonymous", "Internal", "Partner"
    auth_domain: str = ""
    directionality: str = "Incoming"
    session_id: str = ""
    session_start: float | None = None
    message_number: int = 1
    network_message_id: str = ""
    original_client_ip: str = ""
    custom_data: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    """A delivery outcome from Postfix's log for one queue id (DELIVER, SEND, DEFER, FAIL, DSN)."""

    time: float
    event: str
    queue_id: str
    recipients: tuple[str, ...]
    status: str  # "250 2.0.0 Ok: queued as X" / "dsn=4.4.1 (connect refused)"
    sender: str = ""
    message_id: str = ""
    size: int = 0
    relay: str = ""  # the next hop (server-hostname for SEND)
    relay_ip: str = ""
    related: str = ""  # DSN: the queue id of the notification


def receive_row(f: MessageFacts) -> list[str]:
    values = [""] * len(FIELDS)
    ctx = ""
    if f.session_id:
        start = timestamp(f.session_start) if f.session_start is not None else ""
        ctx = f"{f.session_id};{start};{f.message_number}"
    values[INDEX["date-time"]] = timestamp(f.time)
    values[INDEX["client-ip"]] = f.client_ip
    values[INDEX["client-hostname"]] = f.client_hostname
    values[INDEX["server-ip"]] = f.server_ip
    values[INDEX["server-hostname"]] = f.server_hostname
    values[INDEX["source-context"]] = ctx
    values[INDEX["connector-id"]] = f.connector_id
    values[INDEX["source"]] = "SMTP"
    values[INDEX["event-id"]] = "RECEIVE"
    values[INDEX["internal-message-id"]] = f.queue_id
    values[INDEX["message-id"]] = f.message_id
    values[INDEX["network-message-id"]] = f.network_message_id
    values[INDEX["recipient-address"]] = ";".join(f.recipients)
    values[INDEX["recipient-status"]] = ";".join("250 2.1.5 Recipient OK" for _ in f.recipients)
    values[INDEX["total-bytes"]] = str(f.size)
    values[INDEX["recipient-count"]] = str(len(f.recipients))
    values[INDEX["message-subject"]] = f.subject
    values[INDEX["sender-address"]] = f.sender
    values[INDEX["return-path"]] = f.sender
    values[INDEX["message-info"]] = message_info(f.auth_mechanism, f.auth_as, f.auth_domain)
    values[INDEX["directionality"]] = f.directionality
    values[INDEX["original-client-ip"]] = f.original_client_ip
    values[INDEX["custom-data"]] = f.custom_data
    values[INDEX["transport-traffic-type"]] = "Email"
    values[INDEX["schema-version"]] = VERSION
    return values


def outcome_row(o: Outcome, server_hostname: str) -> list[str]:
    values = [""] * len(FIELDS)
    values[INDEX["date-time"]] = timestamp(o.time)
    values[INDEX["server-ip"]] = o.relay_ip
    values[INDEX["server-hostname"]] = o.relay or server_hostname
    values[INDEX["client-hostname"]] = server_hostname
    values[INDEX["source"]] = EVENT_SOURCES.get(o.event, "SMTP")
    values[INDEX["event-id"]] = o.event
    values[INDEX["internal-message-id"]] = o.queue_id
    values[INDEX["message-id"]] = o.message_id
    values[INDEX["recipient-address"]] = ";".join(o.recipients)
    values[INDEX["recipient-status"]] = o.status
    values[INDEX["total-bytes"]] = str(o.size) if o.size else ""
    values[INDEX["recipient-count"]] = str(len(o.recipients))
    values[INDEX["related-recipient-address"]] = o.related
    values[INDEX["sender-address"]] = o.sender
    values[INDEX["return-path"]] = o.sender
    values[INDEX["transport-traffic-type"]] = "Email"
    values[INDEX["schema-version"]] = VERSION
    return values


class TrackingLog:
    """The daemon's message tracking log (thread-safe as far as its sink is)."""

    def __init__(self, sink: RowSink, server_hostname: str = "") -> None:
        self.sink = sink
        self.server_hostname = server_hostname

    def receive(self, facts: MessageFacts) -> bool:
        """The RECEIVE row of an accepted message; False when the row was lost (counted by the sink)."""
        return self.sink.write(facts.time, row(receive_row(facts)))

    def outcome(self, o: Outcome) -> bool:
        return self.sink.write(o.time, row(outcome_row(o, self.server_hostname)))
