"""Typed, immutable configuration objects: an organisation as an Exchange admin sees it.

Names follow Exchange (``ReceiveConnector``, ``AcceptedDomain``, ``PermissionGroups``…).
Objects are frozen so one loaded configuration can be shared by many threads and swapped
atomically on reload.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import timedelta

from exmilter import limits
from exmilter.values import Binding, IPRange


class TransportRole(enum.Enum):
    FrontendTransport = "FrontendTransport"
    HubTransport = "HubTransport"


class Usage(enum.Enum):
    Client = "Client"
    Custom = "Custom"
    Internal = "Internal"
    Internet = "Internet"
    Partner = "Partner"


class AuthMechanism(enum.Flag):
    """AuthMechanism flags (spec §1.2); ``NONE`` is Exchange's ``None``."""

    NONE = 0
    Tls = enum.auto()
    BasicAuth = enum.auto()
    BasicAuthRequireTLS = enum.auto()
    Integrated = enum.auto()
    ExchangeServer = enum.auto()
    ExternalAuthoritative = enum.auto()


class PermissionGroups(enum.Flag):
    """PermissionGroups flags (spec §1.6); ``Custom`` is derived, never set."""

    NONE = 0
    AnonymousUsers = enum.auto()
    ExchangeUsers = enum.auto()
    ExchangeServers = enum.auto()
    ExchangeLegacyServers = enum.auto()
    Partners = enum.auto()
    Custom = enum.auto()


class Right(enum.Flag):
    """Extended rights on a receive connector, in the protocol log's token order (spec §1.7)."""

    NONE = 0
    SMTPSubmit = enum.auto()
    SMTPAcceptAnyRecipient = enum.auto()
    SMTPAcceptAuthenticationFlag = enum.auto()
    SMTPAcceptAnySender = enum.auto()
    SMTPAcceptAuthoritativeDomainSender = enum.auto()
    BypassAntiSpam = enum.auto()
    BypassMessageSizeLimit = enum.auto()
    SMTPAcceptEXCH50 = enum.auto()
    AcceptRoutingHeaders = enum.auto()
    AcceptForestHeaders = enum.auto()
    AcceptOrganizationHeaders = enum.auto()
    SMTPAcceptXShadow = enum.auto()
    SMTPAcceptXProxyFrom = enum.auto()
    SMTPAcceptXSessionParams = enum.auto()
    SMTPAcceptXMessageContextADRecipientCache = enum.auto()
    SMTPAcceptXMessageContextExtendedProperties = enum.auto()
    SMTPAcceptXMessageContextFastIndex = enum.auto()
    SMTPAcceptXAttr = enum.auto()
    SMTPAcceptXSysProbe = enum.auto()
    SendAs = enum.auto()

    def tokens(self) -> str:
        """The ``Set Session Permissions`` log text: tokens separated by spaces."""
        return " ".join(r.name for r in Right if r and r in self and r.name)


#: Canonical AD names, for display and for writing configuration files.
RIGHT_DISPLAY: dict[Right, str] = {
    Right.SMTPSubmit: "ms-Exch-SMTP-Submit",
    Right.SMTPAcceptAnyRecipient: "ms-Exch-SMTP-Accept-Any-Recipient",
    Right.SMTPAcceptAuthenticationFlag: "ms-Exch-SMTP-Accept-Authentication-Flag",
    Right.SMTPAcceptAnySender: "ms-Exch-SMTP-Accept-Any-Sender",
    Right.SMTPAcceptAuthoritativeDomainSender: "ms-Exch-SMTP-Accept-Authoritative-Domain-Sender",
    Right.BypassAntiSpam: "ms-Exch-Bypass-Anti-Spam",
    Right.BypassMessageSizeLimit: "ms-Exch-Bypass-Message-Size-Limit",
    Right.SMTPAcceptEXCH50: "ms-Exch-SMTP-Accept-Exch50",
    Right.AcceptRoutingHeaders: "ms-Exch-Accept-Headers-Routing",
    Right.AcceptForestHeaders: "ms-Exch-Accept-Headers-Forest",
    Right.AcceptOrganizationHeaders: "ms-Exch-Accept-Headers-Organization",
    Right.SMTPAcceptXShadow: "ms-Exch-SMTP-Accept-XShadow",
    Right.SMTPAcceptXProxyFrom: "ms-Exch-SMTP-Accept-XProxyFrom",
    Right.SMTPAcceptXSessionParams: "ms-Exch-SMTP-Accept-XSessionParams",
    Right.SMTPAcceptXMessageContextADRecipientCache: "ms-Exch-SMTP-Accept-XMessageContext-ADRecipientCache",
    Right.SMTPAcceptXMessageContextExtendedProperties: "ms-Exch-SMTP-Accept-XMessageContext-ExtendedProperties",
    Right.SMTPAcceptXMessageContextFastIndex: "ms-Exch-SMTP-Accept-XMessageContext-FastIndex",
    Right.SMTPAcceptXAttr: "ms-Exch-SMTP-Accept-XAttr",
    Right.SMTPAcceptXSysProbe: "ms-Exch-SMTP-Accept-XSysProbe",
    Right.SendAs: "Send-As",
}

#: Lookup by lower-cased name without the "ms-exch-" prefix, as Add-ADPermission accepts.
RIGHT_NAMES: dict[str, Right] = {
    name.lower().removeprefix("ms-exch-"): right for right, name in RIGHT_DISPLAY.items()
} | {"send as": Right.SendAs, "sendas": Right.SendAs}


def parse_right(text: str) -> Right:
    """``ms-Exch-SMTP-Accept-Any-Recipient`` in any case, with or without the ``ms-Exch-`` prefix."""
    key = str(text).strip().lower()
    if key.startswith("ms-exch-"):
        key = key[len("ms-exch-") :]
    try:
        return RIGHT_NAMES[key]
    except KeyError:
        raise ValueError(f"{text!r} is not a receive-connector extended right") from None


@dataclass(frozen=True, slots=True)
class PermissionEntry:
    """One access-control entry, as ``Add-ADPermission -User … -ExtendedRights … [-Deny]``."""

    user: str
    rights: Right
    deny: bool = False


class AcceptedDomainType(enum.Enum):
    Authoritative = "Authoritative"
    InternalRelay = "InternalRelay"
    ExternalRelay = "ExternalRelay"

    @property
    def is_internal(self) -> bool:
        return self is not AcceptedDomainType.ExternalRelay


@dataclass(frozen=True, slots=True)
class AcceptedDomain:
    name: str
    domain_name: str  # lower-case; "*.contoso.com" for a wildcard
    domain_type: AcceptedDomainType = AcceptedDomainType.Authoritative
    match_sub_domains: bool = False
    address_book_enabled: bool = True

    @property
    def is_wildcard(self) -> bool:
        return self.domain_name.startswith("*.")

    @property
    def suffix(self) -> str:
        return self.domain_name[2:] if self.is_wildcard else self.domain_name


@dataclass(frozen=True, slots=True)
class ReceiveConnector:
    """Every session-affecting property of an Exchange receive connector (spec §1.2)."""

    name: str
    server: str
    transport_role: TransportRole
    usage: Usage
    bindings: tuple[Binding, ...]
    remote_ip_ranges: tuple[IPRange, ...]
    auth_mechanism: AuthMechanism
    permission_groups: PermissionGroups
    permissions: tuple[PermissionEntry, ...] = ()
    enabled: bool = True
    fqdn: str = ""
    banner: str | None = None
    require_tls: bool = False
    require_ehlo_domain: bool = False
    domain_secure_enabled: bool = False
    default_domain: str | None = None
    max_message_size: int = 36 << 20
    max_header_size: int = 256 << 10
    max_recipients_per_message: int = 200
    max_hop_count: int = 60
    max_local_hop_count: int = 5
    message_rate_limit: int | None = None  # None = unlimited
    message_rate_source: str = "IPAddress"
    max_inbound_connection: int | None = 5000
    max_inbound_connection_per_source: int | None = 20
    max_inbound_connection_percentage_per_source: int = 2
    connection_timeout: timedelta = timedelta(minutes=10)
    connection_inactivity_timeout: timedelta = timedelta(minutes=5)
    tarpit_interval: timedelta = timedelta(seconds=5)
    auth_tarpit_interval: timedelta = timedelta(seconds=5)
    max_logon_failures: int = 3
    max_protocol_errors: int | None = 5
    protocol_logging_level: str = "None"
    size_enabled: str = "Enabled"
    enhanced_status_codes_enabled: bool = True
    pipelining_enabled: bool = True
    delivery_status_notification_enabled: bool = True
    eight_bit_mime_enabled: bool = True
    chunking_enabled: bool = True
    binary_mime_enabled: bool = True
    smtp_utf8_enabled: bool = True
    long_addresses_enabled: bool = False
    orar_enabled: bool = False
    suppress_xanonymous_tls: bool = False
    bare_linefeed_rejection_enabled: bool = False
    reject_reserved_top_level_recipient_domains: bool = False
    reject_reserved_second_level_recipient_domains: bool = False
    reject_single_label_recipient_domains: bool = False
    tls_certificate_name: str | None = None  # Exchange's <I>issuer<S>subject: parse only
    #: PEM files for STARTTLS on this connector's listeners, over ``Organization.tls``
    #: (exmilter's, not Exchange's: Postfix reads files, Exchange a certificate store).
    tls_certificate_file: str | None = None
    tls_key_file: str | None = None
    tls_domain_capabilities: tuple[str, ...] = ()
    extended_protection_policy: str = "None"
    enable_auth_gssapi: bool = False
    comment: str = ""

    @property
    def identity(self) -> str:
        """``SERVER\\Name``: how Exchange names the connector in logs and cmdlets."""
        return f"{self.server}\\{self.name}"

    def banner_text(self) -> str:
        """The 220 text without the date Exchange appends (Postfix banners are static)."""
        if self.banner:
            return self.banner
        return f"220 {self.fqdn} Microsoft ESMTP MAIL Service ready"


@dataclass(frozen=True, slots=True)
class User:
    """A directory user that can authenticate (SASL login name) and what it may send as."""

    name: str
    addresses: tuple[str, ...] = ()
    member_of: tuple[str, ...] = ()
    send_as: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Server:
    """The Exchange server exmilter stands in for."""

    name: str
    fqdn: str
    domain: str  # NetBIOS domain, for "<Domain>\\Exchange Servers"
    addresses: tuple[str, ...] = ()  # the server's own IPs: exact bindings must use one


@dataclass(frozen=True, slots=True)
class PolicydSettings:
    """Where the policy daemon listens (Twisted endpoint strings), serves metrics, and its
    per-connection bounds (docs/policyd.md, "Limits"; defaults and the fixed ones: exmilter.limits)."""

    listen: tuple[str, ...] = ("unix:/run/exmilter/policy.sock:mode=660",)
    metrics: str | None = "tcp:9142:interface=127.0.0.1"
    max_line_length: int = limits.POLICY_MAX_LINE_LENGTH
    max_attributes: int = limits.POLICY_MAX_ATTRIBUTES
    max_connections: int | None = None  # None: auto, from the rendered maxproc (exmilter.policy.limits)
    request_timeout: int = limits.POLICY_REQUEST_TIMEOUT  # seconds from a request's first byte to its last
    idle_timeout: int = limits.POLICY_IDLE_TIMEOUT  # seconds without a request; Postfix closes first


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """The certificate every STARTTLS listener uses unless a connector names its own (PEM files)."""

    certificate_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True, slots=True)
class SaslSettings:
    """How Postfix checks AUTH passwords: its ``smtpd_sasl_type`` and ``smtpd_sasl_path``
    (docs/authentication.md). Dovecot's auth socket by default, as Debian wires it."""

    type: str = "dovecot"
    path: str = "private/auth"


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """One server of a pool behind a load balancer (the ``cluster`` section; docs/cluster.md)."""

    #: ``none`` or ``haproxy``: every listener expects HAProxy's PROXY header (v1 or v2).
    proxy_protocol: str = "none"
    proxy_timeout: int = limits.PROXY_TIMEOUT  # seconds
    #: ``local`` (Exchange's per-server counting, the default) or ``redis`` (one window for the pool).
    message_rate_window: str = "local"
    redis: str = "127.0.0.1:6379"  # host:port
    redis_timeout_ms: int = limits.REDIS_TIMEOUT_MS
    #: The balancer's HTTP check (a Twisted endpoint, e.g. ``tcp:9143:interface=127.0.0.1``); None: off.
    health: str | None = None
    #: The Postfix listener the check probes for a 220 banner (``host:port``); None: not probed.
    health_probe: str | None = None


@dataclass(frozen=True, slots=True)
class LogSettings:
    """Where the daemons write Exchange's logs and how much is kept (``logs:``; docs/logs.md).

    Names follow ``Set-TransportService`` (ReceiveProtocolLogPath, MessageTrackingLogMaxAge...).
    An empty path turns that log off; a connector writes the protocol log only with
    ``protocol_logging_level: Verbose`` (spec §5.1). ``format`` is the daemons' own log line:
    ``text`` or ``json``.
    """

    receive_protocol_log_path: str = "/var/log/exmilter/ProtocolLog/SmtpReceive"
    receive_protocol_log_max_file_size: int = limits.PROTOCOL_LOG_MAX_FILE
    receive_protocol_log_max_directory_size: int = limits.PROTOCOL_LOG_MAX_DIRECTORY
    receive_protocol_log_max_age: timedelta = timedelta(days=limits.PROTOCOL_LOG_MAX_AGE_DAYS)
    message_tracking_log_enabled: bool = True
    message_tracking_log_path: str = "/var/log/exmilter/MessageTracking"
    message_tracking_log_max_file_size: int = limits.TRACKING_LOG_MAX_FILE
    message_tracking_log_max_directory_size: int = limits.TRACKING_LOG_MAX_DIRECTORY
    message_tracking_log_max_age: timedelta = timedelta(days=limits.TRACKING_LOG_MAX_AGE_DAYS)
    format: str = "text"


@dataclass(frozen=True, slots=True)
class MilterSettings:
    """The milter (docs/milter.md): where it listens (an endpoint string as ``policyd.listen``:
    ``unix:PATH[:mode=660]`` or ``tcp:PORT:interface=127.0.0.1``), its metrics, and the datagram
    socket the policy daemon learns the milter's sessions on (None: no coverage, both judge).
    ``enabled`` False renders a policy-only Postfix (what it gives up: docs/milter.md)."""

    enabled: bool = True
    listen: str = "unix:/run/exmilter/milter.sock:mode=660"
    metrics: str | None = "tcp:9143:interface=127.0.0.1"
    coverage: str | None = "/run/exmilter/coverage.sock"


@dataclass(frozen=True, slots=True)
class Organization:
    """One loaded configuration file: the unit the engine decides against."""

    server: Server
    accepted_domains: tuple[AcceptedDomain, ...]
    receive_connectors: tuple[ReceiveConnector, ...]
    users: tuple[User, ...] = ()
    policyd: PolicydSettings = field(default_factory=PolicydSettings)
    source: str = ""
    tls: TlsSettings = field(default_factory=TlsSettings)
    sasl: SaslSettings = field(default_factory=SaslSettings)
    send_connectors: tuple[SendConnector, ...] = ()
    #: Where mail for the accepted domains' mailboxes goes (None: Postfix's relay_transport, by MX).
    mailbox_next_hop: NextHop | None = None
    logs: LogSettings = field(default_factory=LogSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    milter: MilterSettings = field(default_factory=MilterSettings)

    def connector(self, name_or_identity: str) -> ReceiveConnector | None:
        key = name_or_identity.lower()
        for c in self.receive_connectors:
            if c.name.lower() == key or c.identity.lower() == key:
                return c
        return None


# --------------------------------------------------------------------------------------
# send connectors: where accepted mail goes next (docs/send-connectors.md)
# --------------------------------------------------------------------------------------

#: Exchange's default MaxMessageSize of a send connector (35 MB); None is ``unlimited``.
SEND_CONNECTOR_MAX_MESSAGE_SIZE = 35 << 20
#: The port a send connector and a mailbox next hop use unless told otherwise.
SMTP_PORT = 25


class TlsAuthLevel(enum.Enum):
    """How a send connector checks the next hop's certificate once TLS is up."""

    EncryptionOnly = "EncryptionOnly"
    CertificateValidation = "CertificateValidation"
    DomainValidation = "DomainValidation"


class SmartHostAuthMechanism(enum.Enum):
    """How a send connector authenticates to its smart hosts (``None``: it does not)."""

    NONE = "None"
    BasicAuth = "BasicAuth"
    BasicAuthRequireTLS = "BasicAuthRequireTLS"
    ExchangeServer = "ExchangeServer"
    ExternalAuthoritative = "ExternalAuthoritative"


@dataclass(frozen=True, slots=True)
class AddressSpace:
    """``SMTP:*.contoso.com;1``: the recipient domains a send connector takes, at a cost.

    ``domain`` is ``*`` (every domain), an exact name, or ``*.name`` (the name and all its
    subdomains), in the ASCII form Postfix routes to.
    """

    domain: str
    cost: int = 1

    @property
    def is_wildcard(self) -> bool:
        return self.domain.startswith("*")

    @property
    def suffix(self) -> str:
        """The name a wildcard covers (``contoso.com`` for ``*.contoso.com``, '' for ``*``)."""
        return self.domain.removeprefix("*").removeprefix(".")

    def __str__(self) -> str:
        return f"SMTP:{self.domain};{self.cost}"


@dataclass(frozen=True, slots=True)
class NextHop:
    """A host (name or IP address) and port mail is handed to."""

    host: str
    port: int = SMTP_PORT

    @property
    def postfix(self) -> str:
        """The host as a Postfix next hop: ``[host]:port``, no MX lookup (as Exchange's smart hosts)."""
        return f"[{self.host}]:{self.port}"

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SendConnector:
    """Every routing-affecting property of an Exchange send connector."""

    name: str
    address_spaces: tuple[AddressSpace, ...]
    usage: Usage = Usage.Custom
    dns_routing_enabled: bool = True
    smart_hosts: tuple[str, ...] = ()
    port: int = SMTP_PORT
    require_tls: bool = False
    tls_auth_level: TlsAuthLevel | None = None
    tls_domain: str | None = None
    ignore_starttls: bool = False
    smart_host_auth_mechanism: SmartHostAuthMechanism = SmartHostAuthMechanism.NONE
    #: The admin-provided Postfix table of smart-host credentials (never the secret itself).
    authentication_credential_file: str | None = None
    max_message_size: int | None = SEND_CONNECTOR_MAX_MESSAGE_SIZE  # None = unlimited
    fqdn: str = ""
    enabled: bool = True
    source_transport_servers: tuple[str, ...] = ()  # empty: this server
    cloud_services_mail_enabled: bool = False
    comment: str = ""

    @property
    def next_hops(self) -> tuple[NextHop, ...]:
        """The smart hosts with the connector's port (empty under DNS routing)."""
        return () if self.dns_routing_enabled else tuple(NextHop(h, self.port) for h in self.smart_hosts)
