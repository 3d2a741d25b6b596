"""Exchange's names the importer reads: cmdlet parameters, ``Format-List`` properties, cmdlet verbs.

Each receive-connector parameter maps to the configuration key it sets (a key of
:data:`exmilter.config.CONNECTOR_FIELDS`, whose parsers judge its values); Exchange's
values themselves (usages, groups, mechanisms, rights) are the model's enums.
"""

from __future__ import annotations

import enum
import re

from exmilter.config import CONNECTOR_FIELDS
from exmilter.model import Usage


def _words(text: str) -> list[str]:
    return text.split()


#: Set-ReceiveConnector parameters exmilter models, as Exchange spells them.
RC_PARAMS = _words(
    "AuthMechanism AuthTarpitInterval Banner BareLinefeedRejectionEnabled BinaryMimeEnabled Bindings "
    "ChunkingEnabled Comment ConnectionInactivityTimeout ConnectionTimeout DefaultDomain "
    "DeliveryStatusNotificationEnabled DomainSecureEnabled EightBitMimeEnabled EnableAuthGSSAPI Enabled "
    "EnhancedStatusCodesEnabled ExtendedProtectionPolicy Fqdn LongAddressesEnabled MaxHeaderSize MaxHopCount "
    "MaxInboundConnection MaxInboundConnectionPercentagePerSource MaxInboundConnectionPerSource MaxLocalHopCount "
    "MaxLogonFailures MaxMessageSize MaxProtocolErrors MaxRecipientsPerMessage MessageRateLimit MessageRateSource "
    "OrarEnabled PermissionGroups PipeliningEnabled ProtocolLoggingLevel RejectReservedSecondLevelRecipientDomains "
    "RejectReservedTopLevelRecipientDomains RejectSingleLabelRecipientDomains RemoteIPRanges RequireEHLODomain "
    "RequireTLS SizeEnabled SmtpUtf8Enabled SuppressXAnonymousTls TarpitInterval TlsCertificateName "
    "TlsDomainCapabilities TransportRole"
)
_BY_NORM = {k.replace("_", ""): k for k in CONNECTOR_FIELDS}
#: Lower-case parameter (or dump property) name → configuration key.
RC_KEYS: dict[str, str] = {p.lower(): _BY_NORM[p.lower()] for p in RC_PARAMS}
#: Configuration key → the parameter name the admin wrote (for the loader's messages).
EXCHANGE_NAME: dict[str, str] = {key: p for p, key in zip(RC_PARAMS, RC_KEYS.values(), strict=True)}
EXCHANGE_NAME["usage"] = "Usage"
#: Understood, but without an effect on SMTP sessions through Postfix.
INERT = frozenset(
    _words("advertiseclientsettings servicediscoveryfqdn proxyenabled maxacknowledgementdelay livecredentialenabled")
)
#: Cmdlet plumbing that changes nothing in the configuration.
COMMON = frozenset(
    _words(
        "confirm domaincontroller erroraction warningaction errorvariable warningvariable outvariable verbose debug "
        "force informationaction"
    )
)
#: Multi-valued properties (they take ``@{Add=…; Remove=…}``).
LIST_KEYS = frozenset(_words("bindings remote_ip_ranges auth_mechanism permission_groups tls_domain_capabilities"))
#: Properties that may be unset (``$null`` or empty): the key is left out.
OPTIONAL_KEYS = frozenset({"banner", "default_domain", "tls_certificate_name"})
#: Free-text properties, kept as written (not replaced by the canonical spelling of a choice).
TEXT_KEYS = OPTIONAL_KEYS | {"comment"}
#: Properties that decide who lands on a connector and what they may do: a value of one of
#: them that is not known offline refuses the whole command, since leaving it out would
#: give the connector its default (every address, for ``RemoteIPRanges``).
DECISIVE_KEYS = frozenset({"bindings", "remote_ip_ranges", "permission_groups", "auth_mechanism", "transport_role"})
#: ``New-ReceiveConnector -Usage`` values, as Exchange spells them, in its order.
USAGES = tuple(u.value for u in Usage)
#: Dump properties that are Active Directory bookkeeping or Windows-only.
DUMP_INERT = INERT | frozenset(
    _words(
        "runspaceid distinguishedname identity guid objectcategory objectclass whenchanged whencreated whenchangedutc "
        "whencreatedutc organizationid id originatingserver isvalid objectstate exchangeversion admindisplayname name "
        "server pscomputername psshowcomputername exchangeobjectid catchallrecipientid default emailonly "
        "externallymanaged authenticationtype liveidinstancetype pendingremoval pendingcompletion "
        "federatedorganizationlink mailflowpartner outboundonly pendingfederatedaccountnamespace "
        "pendingfederateddomain "
        "iscoexistencedomain perimeterduplicatedetected isdefaultfederateddomain enablenego2authentication "
        "initialdomain sendingfromdomaindisabled"
    )
)
#: Cmdlet verbs without a side effect on the configuration.
READ_ONLY_VERBS = frozenset(
    _words(
        "get test format select sort where out export measure write send import connect read convertto convertfrom "
        "compare group tee start stop restart add-pssnapin clear"
    )
)
READ_ONLY_ALIASES = frozenset(_words("ft fl fw select sort where ? echo cls cd dir ls cat type gci cp"))
FOREACH = frozenset({"%", "foreach", "foreach-object"})
WHERE = frozenset({"where", "?", "where-object"})
#: Switch parameters of the cmdlets we read: they never take the next token as a value.
SWITCHES = frozenset(
    {u.lower() for u in USAGES} | set(_words("confirm whatif deny force makedefault autosize a wrap debug"))
)
#: How Exchange writes an empty flag set (``-PermissionGroups None``, ``-AuthMechanism None``).
NO_FLAGS = "None"


def flag_names(value: enum.Flag) -> list[str]:
    """``AnonymousUsers, ExchangeUsers`` → ``["AnonymousUsers", "ExchangeUsers"]``; the empty set is ``["None"]``."""
    return [m.name for m in type(value) if m and m in value and m.name] or [NO_FLAGS]


def exchange_words(text: str) -> str:
    """Loader messages name config keys; the admin wrote Exchange parameter names."""
    return re.sub(r"\b[a-z]+(?:_[a-z0-9]+)+\b", lambda m: EXCHANGE_NAME.get(m.group(), m.group()), text)


#: Parameters of the handled cmdlets beyond the receive-connector ones.
HANDLER_PARAMS = _words(
    "user extendedrights deny accessrights domainname domaintype matchsubdomains addressbookenabled makedefault"
    # send connectors (exmilter.importer.cmdlets.send_connectors): so that -TlsDomain is not -TlsDomainCapabilities
    " addressspaces dnsroutingenabled smarthosts port tlsauthlevel tlsdomain ignorestarttls smarthostauthmechanism"
    " sourcetransportservers cloudservicesmailenabled authenticationcredential"
)


def parameter_names(positional: str, handlers: bool = False) -> frozenset[str]:
    """The parameters an abbreviated ``-Param`` may stand for (``handlers``: with :data:`HANDLER_PARAMS`)."""
    return frozenset(
        {positional, *(HANDLER_PARAMS if handlers else ()), *RC_KEYS, "server", "name", "usage"}
        | {u.lower() for u in USAGES}
        | INERT
        | COMMON
        | {"whatif"}
    )
