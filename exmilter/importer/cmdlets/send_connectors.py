"""``New-``, ``Set-`` and ``Remove-SendConnector``, and ``Get-SendConnector | Format-List`` objects.

Values are judged by :func:`exmilter.config.send_connectors.parse_send_connector_property`,
the loader's own parsers. Secrets are never imported: ``-AuthenticationCredential`` (a
``Get-Credential`` object in a runbook, a PSCredential in a dump) becomes a clearly marked
reference to a credentials file the admin must write (:func:`credential_file`).
"""

from __future__ import annotations

import re
from typing import Any

from exmilter.config.send_connectors import parse_send_connector_property
from exmilter.importer.cmdlets.command import Command, leftovers, switch_arg, text_arg
from exmilter.importer.evaluator import MISSING, Args, Obj, Refused, Unknown, flat
from exmilter.importer.parameters import DUMP_INERT, USAGES
from exmilter.importer.state import SendSpec
from exmilter.model import SmartHostAuthMechanism

#: Where an imported connector's credentials file is expected (the admin writes it; never the importer).
CREDENTIALS_DIR = "/etc/exmilter/credentials"
#: Set-SendConnector parameters exmilter models, as Exchange spells them → configuration key.
SC_KEYS: dict[str, str] = {
    p.lower(): key
    for p, key in (
        ("AddressSpaces", "address_spaces"),
        ("DNSRoutingEnabled", "dns_routing_enabled"),
        ("SmartHosts", "smart_hosts"),
        ("Port", "port"),
        ("RequireTLS", "require_tls"),
        ("TlsAuthLevel", "tls_auth_level"),
        ("TlsDomain", "tls_domain"),
        ("IgnoreSTARTTLS", "ignore_starttls"),
        ("SmartHostAuthMechanism", "smart_host_auth_mechanism"),
        ("MaxMessageSize", "max_message_size"),
        ("Fqdn", "fqdn"),
        ("Enabled", "enabled"),
        ("SourceTransportServers", "source_transport_servers"),
        ("CloudServicesMailEnabled", "cloud_services_mail_enabled"),
        ("Comment", "comment"),
        ("Usage", "usage"),
    )
}
_LISTS = frozenset({"address_spaces", "smart_hosts", "source_transport_servers"})
_OPTIONAL = frozenset({"tls_auth_level", "tls_domain", "fqdn", "comment"})
#: Understood, but not routing: Postfix has no counterpart, or exmilter does not model it yet.
SC_NOT_MODELLED = frozenset(
    [
        "connectioninactivitytimeout",
        "errorpolicies",
        "forcehelo",
        "frontendproxyenabled",
        "protocollogginglevel",
        "smtpmaxmessagesperconnection",
        "sourceipaddress",
        "useexternaldnsserversenabled",
        "isscopedconnector",
        "iscoexistenceconnector",
        "domainsecureenabled",
        "tlscertificatename",
        "requireoorg",
        "connectortype",
        "linkedreceiveconnector",
    ]
)
#: A send connector dump's bookkeeping (besides the receive connectors' :data:`DUMP_INERT`).
SC_DUMP_INERT = frozenset(
    [
        "homemta",
        "smarthostsstring",
        "homemtaserverid",
        "sourceroutinggroup",
        "connecteddomains",
        "issmtpconnector",
        "linkedreceiveconnector",
        "sourceiptaddress",
        "addressspacesstring",
        "internal",
    ]
)


#: Values of not-modelled dump properties that are Exchange's defaults (nothing lost: no warning).
_NOT_MODELLED_DEFAULTS = frozenset({"false", "none", "0", "default", "00:10:00", "20", "0.0.0.0"})


def credential_file(name: str) -> str:
    """The credentials-file reference an imported connector gets (the secret is never imported)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "connector"
    return f"{CREDENTIALS_DIR}/{slug}.credentials"


def new_send_connector(cmd: Command, args: Args) -> list[Obj]:
    name = text_arg(args, "name", required=True)
    if cmd.state.send_connector(name) is not None:
        raise Refused(f"a send connector named '{name}' already exists")
    usages = [u for u in USAGES if switch_arg(args, u.lower())]
    if "usage" in args:
        usages.append(text_arg(args, "usage"))
    if len(usages) > 1:
        raise Refused(f"more than one usage type ({', '.join(usages)})")
    if "addressspaces" not in args:
        raise Refused("-AddressSpaces is required")
    c = SendSpec({"name": name}, [cmd.where])
    if usages:
        store(c, "usage", usages[0], "Usage")
    cmd.state.send_connectors.append(c)
    properties(cmd, c, args)
    return [Obj("sendconnector", name)]


def set_send_connector(cmd: Command, args: Args) -> list[Obj]:
    ident = text_arg(args, "identity", required=True)
    c = cmd.state.send_connector(ident)
    if c is None:
        raise Refused(f"no send connector '{ident}': it is not created in the input or its creation was refused")
    if "name" in args:
        new = text_arg(args, "name")
        other = cmd.state.send_connector(new)
        if other is not None and other is not c:
            raise Refused(f"a send connector named '{new}' already exists")
        c.spec["name"] = new
    properties(cmd, c, args)
    c.origins.append(cmd.where)
    return [Obj("sendconnector", c.name)]


def remove_send_connector(cmd: Command, args: Args) -> list[Obj]:
    ident = text_arg(args, "identity", required=True)
    c = cmd.state.send_connector(ident)
    if c is None:
        raise Refused(f"no send connector '{ident}'")
    leftovers(cmd, args)
    cmd.state.send_connectors.remove(c)
    return []


def properties(cmd: Command, c: SendSpec, args: Args) -> None:
    """Check and store the ``-Param value`` pairs of a send connector; a bad value refuses the command."""
    if "authenticationcredential" in args:
        _, line, written = args.pop("authenticationcredential")
        reference(cmd, c, line, written)
    for pname, (value, line, written) in list(args.items()):
        low = pname.lower()
        if low in SC_NOT_MODELLED:
            del args[pname]
            cmd.notes.warn(cmd.file, line, f"-{written} is not modelled by exmilter's send connectors: not imported")
            continue
        key = SC_KEYS.get(low)
        if key is None:
            continue
        del args[pname]
        if isinstance(value, Unknown):
            raise Refused(f"-{written}: {value.why}, and routing without it would send mail elsewhere")
        if value is MISSING:
            raise Refused(f"-{written} needs a value")
        store(c, key, value, written)
    leftovers(cmd, args)


def reference(cmd: Command, c: SendSpec, line: int, written: str) -> None:
    """Replace a credential by a reference to a file the admin writes; say so where it was read."""
    path = credential_file(c.name)
    c.spec["authentication_credential_file"] = path
    cmd.notes.warn(
        cmd.file,
        line,
        f"-{written}: the secret is never imported; write it to {path} (mode 600) as one line "
        f"'[smarthost]:port username:password' per smart host",
    )


def store(c: SendSpec, key: str, value: Any, written: str) -> None:
    """Set one property, as the loader would read it (``$null`` unsets an optional one)."""
    if isinstance(value, dict):
        raise Refused(f"-{written}: @{{Add=…; Remove=…}} is not supported for send connectors; give the full list")
    if value is None or (isinstance(value, str) and not value.strip() and key in _OPTIONAL | _LISTS):
        if key in _OPTIONAL:
            c.spec.pop(key, None)
            return
        if key in _LISTS:
            c.spec[key] = []
            return
        raise Refused(f"-{written} cannot be $null")
    if key in _LISTS:
        items = [s.strip() for v in flat(value) for s in str(v).split(",") if s.strip()]
        text: str | list[str] = items
    elif isinstance(value, list):
        raise Refused(f"-{written} takes one value, not a list")
    else:
        text = str(value).strip()
    try:
        parsed = parse_send_connector_property(key, text)
    except ValueError as e:
        raise Refused(f"-{written} {', '.join(text) if isinstance(text, list) else text}: {e}") from None
    if key in _LISTS:
        c.spec[key] = items
    elif isinstance(parsed, bool | int) and key != "max_message_size":
        c.spec[key] = parsed
    elif hasattr(parsed, "value"):  # an enum: its canonical spelling
        c.spec[key] = parsed.value
    else:
        c.spec[key] = text
    if key == "smart_host_auth_mechanism" and parsed is SmartHostAuthMechanism.NONE:
        c.spec.pop("authentication_credential_file", None)


def is_send_connector_dump(object_class: str, keys: set[str]) -> bool:
    """Whether a ``Format-List`` object is a send connector (``Get-SendConnector | Format-List``)."""
    return "msexchroutingsmtpconnector" in object_class or (
        "addressspaces" in keys and bool(keys & {"smarthosts", "dnsroutingenabled", "smarthostauthmechanism"})
    )


def dump_properties(cmd: Command, c: SendSpec, props: dict[str, tuple[str, int]], file: str) -> None:
    """A send connector dump's properties on ``c``: known ones stored, the credential referenced,
    the rest reported (not modelled: a warning; bookkeeping: nothing)."""
    for prop, (value, line) in props.items():
        low = prop.lower()
        text = value.strip()
        if text.startswith("{") and text.endswith("}"):
            text = text[1:-1].strip()
        if low == "authenticationcredential":
            if text:
                reference(cmd, c, line, prop)
            continue
        key = SC_KEYS.get(low)
        if key is None:
            if low in SC_NOT_MODELLED and text and text.lower() not in _NOT_MODELLED_DEFAULTS:
                cmd.notes.warn(file, line, f"{prop} is not modelled by exmilter's send connectors: not imported")
            elif low not in SC_NOT_MODELLED and low not in DUMP_INERT and low not in SC_DUMP_INERT:
                cmd.notes.warn(file, line, f"{prop} is not a send connector property exmilter knows: not imported")
            continue
        if not text:
            if key in _OPTIONAL:
                c.spec.pop(key, None)
            continue
        try:
            store(c, key, text, prop)
        except Refused as e:
            raise Refused(f"line {line}: {e}") from None
