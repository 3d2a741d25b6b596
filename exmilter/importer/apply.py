"""Apply parsed commands, in order, to a model of one freshly installed Exchange 2019 server.

Each command is checked the way Exchange checks it: the model is written out and loaded
with :func:`exmilter.config.loads` (the loader ``exmilter check`` runs), and a command
that introduces a problem is refused at its own line, leaving the model as it was.
Values are checked with the loader's own parsers, so there is one definition of what is
valid.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exmilter import config
from exmilter.config import CONNECTOR_FIELDS, ConfigError
from exmilter.importer import writer
from exmilter.importer.limits import (
    MAX_CHECKED_CHARS,
    MAX_CHECKS,
    MAX_COMMANDS,
    MAX_PROPERTY_ITEMS,
    MAX_VALUE_CHARS,
    MAX_VALUE_ITEMS,
    Stopped,
)
from exmilter.importer.notes import Notes
from exmilter.importer.pwsh import Arg, BlockX, Call, Expr, ListX, Lit, Raw, Statement, TableX, Tmpl, Var, text_of
from exmilter.importer.state import ASSUMED_DOMAIN, Ace, Connector, Domain, State, UserGrant
from exmilter.importer.transcript import Dump
from exmilter.model import PermissionGroups, Right, parse_right
from exmilter.permissions import canonical, group_entries, well_known
from exmilter.values import parse_binding, parse_bool, parse_ip_range


#: Set-ReceiveConnector parameters exmilter models, as Exchange spells them.
def _words(text: str) -> list[str]:
    return text.split()


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
RC_KEYS: dict[str, str] = {p.lower(): _BY_NORM[p.lower()] for p in RC_PARAMS}
EXCHANGE_NAME: dict[str, str] = {key: p for p, key in zip(RC_PARAMS, RC_KEYS.values(), strict=True)}
EXCHANGE_NAME["usage"] = "Usage"
#: Understood, but without an effect on SMTP sessions through Postfix.
INERT = frozenset(
    _words(
        "advertiseclientsettings servicediscoveryfqdn proxyenabled maxacknowledgementdelay livecredentialenabled"
    )
)
#: Cmdlet plumbing that changes nothing in the configuration.
COMMON = frozenset(
    _words(
        "confirm domaincontroller erroraction warningaction errorvariable warningvariable outvariable verbose debug "
        "force informationaction"
    )
)
LIST_KEYS = frozenset(_words("bindings remote_ip_ranges auth_mechanism permission_groups tls_domain_capabilities"))
OPTIONAL_KEYS = frozenset({"banner", "default_domain", "tls_certificate_name"})
USAGES = ("Client", "Custom", "Internal", "Internet", "Partner")
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
READ_ONLY_VERBS = frozenset(
    _words(
        "get test format select sort where out export measure write send import connect read convertto convertfrom "
        "compare group tee start stop restart add-pssnapin clear"
    )
)
READ_ONLY_ALIASES = frozenset(_words("ft fl fw select sort where ? echo cls cd dir ls cat type gci cp"))
FOREACH = frozenset({"%", "foreach", "foreach-object"})


class Refused(Exception):
    """The command is not applied; the message says why."""


@dataclass(frozen=True)
class Unknown:
    """A value PowerShell computes at run time (``$cert.Subject``): not knowable offline.

    Also a value past :data:`MAX_VALUE_ITEMS` or :data:`MAX_VALUE_CHARS` (``limit``).
    """

    why: str
    limit: bool = False
    root: str = ""  # the first reason, when a variable passes it on ($b = $a): kept short

    def held_by(self, name: str) -> Unknown:
        root = self.root or self.why
        return Unknown(f"${name} holds {root}", self.limit, root)


#: Properties that decide who lands on a connector and what they may do: a value of one of
#: them that is not known offline refuses the whole command, since leaving it out would
#: give the connector its default (every address, for ``RemoteIPRanges``).
DECISIVE_KEYS = frozenset({"bindings", "remote_ip_ranges", "permission_groups", "auth_mechanism", "transport_role"})


@dataclass(frozen=True)
class Obj:
    """A connector or accepted domain flowing through a pipeline."""

    kind: str
    name: str
    server: str = ""

    def __str__(self) -> str:
        return f"{self.server}\\{self.name}" if self.server else self.name


MISSING = object()  # a parameter given without its value


def cmdlet_kind(name: str) -> str:
    """``handler``, ``read`` (no side effect) or ``other``."""
    low = name.lower()
    if low.replace("-", "_") in Applier.HANDLERS:
        return "handler"
    verb = low.split("-", 1)[0]
    if low in READ_ONLY_ALIASES or low in FOREACH or verb in READ_ONLY_VERBS or low.startswith("add-pssnapin"):
        return "read"
    return "other"


def _exchange_words(text: str) -> str:
    """Loader messages name config keys; the admin wrote Exchange parameter names."""
    return re.sub(r"\b[a-z]+(?:_[a-z0-9]+)+\b", lambda m: EXCHANGE_NAME.get(m.group(), m.group()), text)


class Applier:
    HANDLERS = frozenset(
        _words(
            "new_receiveconnector set_receiveconnector remove_receiveconnector add_adpermission "
            "remove_adpermission new_accepteddomain set_accepteddomain remove_accepteddomain"
        )
    )

    def __init__(self, state: State, notes: Notes) -> None:
        self.state = state
        self.notes = notes
        self.env: dict[str, Any] = {"env:computername": state.server}
        self.context: str | None = None  # identity of the last Get-ReceiveConnector, for Format-List output
        self.loc: tuple[str, int] = ("", 0)  # the command being applied
        self.where = ""  # the command being applied, as origins name it ("Set-ReceiveConnector at f:3")
        self.commands = 0  # statements and objects run so far (MAX_COMMANDS)
        self.checks = 0  # commands checked so far (MAX_CHECKS)
        self.checked = 0  # characters of configuration checked so far (MAX_CHECKED_CHARS)
        self._last: tuple[str, set[str]] = ("", set())  # the last model checked and its problems
        self.baseline = self.problems(counted=False)

    # -- checking ---------------------------------------------------------------------

    def problems(self, counted: bool = True) -> set[str]:
        """What the loader refuses in the model now (``counted``: against :data:`MAX_CHECKED_CHARS`)."""
        if counted:
            self.checks += 1
            if self.checks > MAX_CHECKS:
                raise Stopped(*self.loc, f"more than {MAX_CHECKS:,} commands that change the model (each is "
                              "checked on the whole model): the input is too large to import in one run")
        text = writer.render(self.state, comments=False)
        self.checked += len(text) if counted else 0
        if self.checked > MAX_CHECKED_CHARS:
            raise Stopped(*self.loc, f"checking the commands up to here took more than {MAX_CHECKED_CHARS:,} "
                          "characters of configuration (each command that changes something is checked on the whole "
                          "model): the input is too large to import in one run")
        if text == self._last[0]:  # nothing changed since the last check (a command repeated)
            return self._last[1]
        try:
            config.loads(text, "<import>")
        except ConfigError as e:
            found = {_exchange_words(f"{p.key}: {p.message}") for p in e.problems if not p.warning}
        else:
            found = set()
        self._last = (text, found)
        return found

    def attempt(self, file: str, line: int, what: str, action: Callable[[], Any]) -> Any:
        """Run ``action`` on the model; undo it and report when Exchange would refuse it."""
        before = self.state.copy()
        self.loc = (file, line)
        try:
            result = action()
        except Refused as e:
            self.state = before
            self.notes.warn(file, line, f"{what}: {e}; not imported")
            return None
        except Stopped:
            raise
        except Exception as e:  # last resort: a bug of the importer's must not lose the other commands
            self.state = before
            self.notes.warn(file, line, f"{what}: internal error ({type(e).__name__}: {e}); not imported, "
                            "please report it")
            return None
        new = self.problems() - self.baseline
        if new:
            self.state = before
            self.notes.warn(file, line, f"{what}: Exchange refuses this: {'; '.join(sorted(new))}; not imported")
            return None
        for ip, where in self.state.addresses.items():
            if ip not in before.addresses:
                self.notes.info(file, line, f"{ip} is bound here, so it is one of this server's addresses: "
                                f"added to server.addresses ({where})")
        return result

    # -- statements -------------------------------------------------------------------

    def count(self, file: str, line: int) -> None:
        """One more statement or object run; the import stops past :data:`MAX_COMMANDS`."""
        self.commands += 1
        if self.commands > MAX_COMMANDS:
            raise Stopped(file, line, f"more than {MAX_COMMANDS:,} commands run (a script block counts once per "
                          "object piped into it): the input is too large to import in one run")

    def statement(self, st: Statement, bound: Obj | None = None) -> None:
        self.count(st.file, st.line)
        if st.broken:
            return
        calls = [s for s in st.stages if isinstance(s, Call)]
        if not self._has_effect(st):
            if st.assign:
                value = self.capture(st, bound)
                self.env[st.assign] = value
                if isinstance(value, Unknown) and value.limit and not value.root:  # where it was crossed
                    self.notes.warn(st.file, st.line, f"${st.assign}: {value.why}: it holds no value from here on")
            elif calls:
                names = " | ".join(c.name for c in calls)
                self.notes.info(st.file, st.line, f"{names}: read-only, nothing to import")
                self._remember_context(calls[0], bound)
            elif not isinstance(st.stages[0], Raw) or st.stages[0].text.strip():
                self.notes.warn(st.file, st.line, f"'{text_of(st)}' is not a command: not imported")
            return
        objs = self.source(st, bound)
        if objs is None:
            return
        for stage in st.stages[1:]:
            if not isinstance(stage, Call):
                self.notes.warn(st.file, st.line, f"'{text_of(stage)}' in a pipeline is not understood: not imported")
                return
            low = stage.name.lower()
            if low in FOREACH:
                block = next((a.value for a in stage.args if isinstance(a.value, BlockX)), None)
                if block is None:
                    self.notes.warn(st.file, st.line, f"{stage.name} without a script block: not imported")
                    return
                for o in objs:
                    for sub in block.body:
                        self.statement(sub, bound=o)
                objs = []
            elif low in ("where", "?", "where-object"):
                self.notes.warn(st.file, st.line, "a Where-Object filter cannot be evaluated offline: the rest of "
                                "this pipeline is not imported; name the objects instead")
                return
            elif cmdlet_kind(stage.name) == "read":
                continue
            else:
                results: list[Obj] = []
                for o in objs:
                    r = self.call(stage, st, o, bound)
                    results += r or []
                if not objs:
                    self.notes.warn(st.file, st.line, f"{stage.name}: nothing was piped to it: not imported")
                objs = results
        if st.assign:
            self.env[st.assign] = objs

    def _has_effect(self, st: Statement) -> bool:
        for s in st.stages:
            if isinstance(s, Call):
                if cmdlet_kind(s.name) != "read":
                    return True
                if s.name.lower() in FOREACH:
                    blocks = [a.value for a in s.args if isinstance(a.value, BlockX)]
                    if any(self._has_effect(b) for blk in blocks for b in blk.body):
                        return True
        return False

    def _remember_context(self, call: Call, bound: Obj | None) -> None:
        if call.name.lower() == "get-receiveconnector":
            ident = self.arg_value(call, "identity", 0, bound)
            self.context = ident if isinstance(ident, str) else None

    def capture(self, st: Statement, bound: Obj | None) -> Any:
        """``$x = …`` without side effects: a literal, the connectors of a query, or unknown."""
        first = st.stages[0]
        if isinstance(first, Call):
            if first.name.lower() == "get-receiveconnector" and len(st.stages) == 1:
                return self.query(first, st, bound) or []
            return Unknown(f"the result of {first.name} at line {st.line}, known only on the server")
        return self.eval(first, bound)

    def source(self, st: Statement, bound: Obj | None) -> list[Obj] | None:
        first = st.stages[0]
        if isinstance(first, Call):
            low = first.name.lower()
            if low == "get-receiveconnector" and len(st.stages) > 1:
                return self.query(first, st, bound)
            if low == "get-accepteddomain" and len(st.stages) > 1:
                ident = self.arg_value(first, "identity", 0, bound)
                d = self.state.domain(ident) if isinstance(ident, str) else None
                if isinstance(ident, str) and d is None:
                    self.notes.warn(st.file, st.line, f"no accepted domain '{ident}': the pipeline is not imported")
                    return None
                return [Obj("domain", str(x.spec["name"])) for x in ([d] if d else self.state.domains)]
            return self.call(first, st, None, bound) or []
        value = self.eval(first, bound)
        if isinstance(value, list) and all(isinstance(v, Obj) for v in value):
            return value
        self.notes.warn(st.file, st.line, f"{text_of(first)} does not hold receive connectors known offline "
                        f"({value.why if isinstance(value, Unknown) else 'a value'}): the pipeline is not imported")
        return None

    def query(self, call: Call, st: Statement, bound: Obj | None) -> list[Obj] | None:
        """The connectors ``Get-ReceiveConnector`` selects; None (reported) when it names none."""
        args = self.bind(call, ("identity",), None, bound)
        server = args.pop("server", None)
        if server is not None and str(server[0]).lower() != self.state.server.lower():
            self.notes.warn(st.file, call.line, f"Get-ReceiveConnector -Server {server[0]}: exmilter stands in for "
                            f"{self.state.server} only; nothing selected")
            return None
        ident = args.pop("identity", None)
        if ident is None:
            return [self.obj(c) for c in self.state.connectors]
        c = self.find_connector(ident[0], st, call.line)
        return [self.obj(c)] if c else None

    def obj(self, c: Connector) -> Obj:
        return Obj("connector", c.name, self.state.server)

    # -- values -----------------------------------------------------------------------

    def eval(self, e: Expr | None, bound: Obj | None) -> Any:
        """The value of ``e``: text, a flat list, a table, an object, None, or :class:`Unknown`.

        Values are bounded (:data:`MAX_VALUE_ITEMS`, :data:`MAX_VALUE_CHARS` for all their
        text): ``$a = $a,$a`` and ``"$s$s"`` double at each line, and a value past a limit
        is unknown, so it refuses whatever uses it.
        """
        value = self._eval(e, bound)
        return _bounded(value) if isinstance(value, list | dict | str) else value

    def _eval(self, e: Expr | None, bound: Obj | None) -> Any:
        if e is None:
            return MISSING
        if isinstance(e, Lit):
            return e.text
        if isinstance(e, Var):
            if e.name == "null":
                return None
            if e.name == "_" and bound is not None:
                if not e.members or e.members[0].lower() in ("identity", "id"):
                    return str(bound)
                if e.members[0].lower() == "name":
                    return bound.name
                return Unknown(f"$_.{'.'.join(e.members)} is a property read at run time")
            if e.name in self.env and not e.members:
                held = self.env[e.name]
                return held.held_by(e.name) if isinstance(held, Unknown) else held
            return Unknown(f"${e.name}{''.join('.' + m for m in e.members)} is not set by the input")
        if isinstance(e, Tmpl):
            parts = [p if isinstance(p, str) else self.eval(p, bound) for p in e.parts]
            bad = next((p for p in parts if isinstance(p, Unknown)), None)
            if bad is not None:
                return bad
            if any(isinstance(p, dict) for p in parts):
                return Unknown("a hashtable inside a string is not a value exmilter reads")
            out: list[str] = []
            size = 0
            for p in parts:  # joined piece by piece: a template may name a large variable many times
                for piece in ([" ".join(map(str, p))] if isinstance(p, list) else [str(p)]):
                    size += len(piece)
                    if size > MAX_VALUE_CHARS:
                        return _too_large(f"text of more than {MAX_VALUE_CHARS:,} characters")
                    out.append(piece)
            return "".join(out)
        if isinstance(e, ListX):
            items: list[Any] = []
            for x in e.items:
                v = self.eval(x, bound)
                if isinstance(v, Unknown):
                    return v
                if isinstance(v, dict) or (isinstance(v, list) and any(isinstance(i, dict) for i in v)):
                    return Unknown("a list of hashtables is not a value exmilter reads")
                items += v if isinstance(v, list) else [v]
                if len(items) > MAX_VALUE_ITEMS:
                    return _too_large(f"more than {MAX_VALUE_ITEMS:,} items")
            return items
        if isinstance(e, TableX):
            return {k.lower(): self.eval(v, bound) for k, v in e.items}
        if isinstance(e, Raw):
            return Unknown(f"{e.text}, computed by PowerShell at run time")
        return Unknown("a script block is not a value")

    def bind(
        self, call: Call, positional: tuple[str, ...], piped: Obj | None, bound: Obj | None, known: tuple[str, ...] = ()
    ) -> dict[str, tuple[Any, int, str]]:
        """Arguments by lower-case full parameter name: (value, line, name as written)."""
        out: dict[str, tuple[Any, int, str]] = {}
        names = tuple(dict.fromkeys((*positional, *known, *RC_KEYS, "server", "name", "usage", *USAGES)))
        names = tuple(n.lower() for n in names) + tuple(INERT) + tuple(COMMON) + ("whatif",)
        pos = list(positional)
        for a in call.args:
            if a.name is None:
                if not pos:
                    raise Refused(f"unexpected positional argument '{text_of(a.value)}'")
                key = pos.pop(0)
            else:
                key = self._param(a, names)
            out[key] = (self.eval(a.value, bound), a.line, a.name or key)
        if piped is not None and "identity" not in out:
            out["identity"] = (str(piped), call.line, "Identity")
        return out

    @staticmethod
    def _param(a: Arg, names: tuple[str, ...]) -> str:
        low = (a.name or "").lower()
        if low in names:
            return low
        matches = sorted({n for n in names if n.startswith(low)})
        if len(matches) == 1:
            return matches[0]
        return low  # unknown: reported by the handler that receives it

    def arg_value(self, call: Call, name: str, position: int, bound: Obj | None) -> Any:
        positional = [a for a in call.args if a.name is None]
        for a in call.args:
            if a.name and a.name.lower() == name:
                return self.eval(a.value, bound)
        return self.eval(positional[position].value, bound) if len(positional) > position else None

    # -- dispatch ---------------------------------------------------------------------

    def call(self, call: Call, st: Statement, piped: Obj | None, bound: Obj | None) -> list[Obj] | None:
        kind = cmdlet_kind(call.name)
        if kind == "read":
            self.notes.info(st.file, call.line, f"{call.name}: read-only, nothing to import")
            return []
        if kind == "other":
            self.notes.warn(st.file, call.line, f"{call.name} is not imported: exmilter models receive connectors, "
                            "their permissions and accepted domains only")
            return []
        self.loc = (st.file, call.line)
        try:
            args = self.bind(call, ("name",) if call.name.lower().startswith("new-") else ("identity",), piped, bound,
                             ("user", "extendedrights", "deny", "accessrights", "domainname", "domaintype",
                              "matchsubdomains", "addressbookenabled", "makedefault"))
        except Refused as e:
            self.notes.warn(st.file, call.line, f"{call.name}: {e}; not imported")
            return None
        if "whatif" in args:
            self.notes.info(st.file, call.line, f"{call.name} -WhatIf changes nothing: skipped")
            return []
        for key in [k for k in args if k in COMMON]:
            del args[key]
        handler = getattr(self, call.name.lower().replace("-", "_"))
        where = self.where = f"{call.name} at {st.file}:{call.line}"
        return self.attempt(st.file, call.line, call.name, lambda: handler(args, st.file, where))

    # -- receive connectors -----------------------------------------------------------

    def find_connector(self, ident: Any, st: Statement | None = None, line: int = 0, *, quiet: bool = False
                       ) -> Connector | None:
        text = str(ident).strip()
        server, _, name = text.rpartition("\\")
        if server and server.lower() != self.state.server.lower():
            if not quiet and st is not None:
                self.notes.warn(st.file, line, f"'{text}' is on server {server}; exmilter stands in for "
                                f"{self.state.server}: not imported")
            return None
        c = self.state.connector(name)
        if c is None and not quiet and st is not None:
            self.notes.warn(st.file, line, f"no receive connector '{text}' on {self.state.server}: it is not created "
                            "in the input (made in the admin center?) or its creation was refused above")
        return c

    def _connector(self, args: dict[str, tuple[Any, int, str]]) -> Connector:
        ident = self._text(args, "identity", required=True)
        server, _, name = ident.rpartition("\\")
        if server and server.lower() != self.state.server.lower():
            raise Refused(f"'{ident}' is on server {server}; exmilter stands in for {self.state.server}")
        c = self.state.connector(name)
        if c is None:
            raise Refused(f"no receive connector '{ident}' on {self.state.server}: it is not created in the input "
                          "(made in the admin center?) or its creation was refused above")
        return c

    def _text(self, args: dict[str, tuple[Any, int, str]], key: str, required: bool = False) -> str:
        if key not in args:
            if required:
                raise Refused(f"-{key.capitalize()} is required")
            return ""
        value = args.pop(key)[0]
        if value is MISSING or value is None or isinstance(value, list | dict):
            raise Refused(f"-{key.capitalize()} needs one value")
        if isinstance(value, Unknown):
            raise Refused(f"-{key.capitalize()}: {value.why}")
        return str(value).strip()

    def _server_arg(self, args: dict[str, tuple[Any, int, str]]) -> None:
        if "server" in args:
            server = self._text(args, "server")
            if server.lower() != self.state.server.lower():
                raise Refused(f"-Server {server}: exmilter stands in for {self.state.server} only")

    def new_receiveconnector(self, args: dict[str, tuple[Any, int, str]], file: str, where: str) -> list[Obj]:
        name = self._text(args, "name", required=True)
        self._server_arg(args)
        if "\\" in name:
            raise Refused(f"-Name '{name}': a connector name cannot contain '\\'")
        if self.state.connector(name) is not None:
            raise Refused(f"a receive connector named '{name}' already exists on {self.state.server}")
        usages = [u for u in USAGES if u.lower() in args and args.pop(u.lower())[0] in (MISSING, "true")]
        if "usage" in args:
            usages.append(self._text(args, "usage"))
        if len(usages) > 1:
            raise Refused(f"more than one usage type ({', '.join(usages)})")
        usage = usages[0] if usages else "Custom"
        canon = {u.lower(): u for u in USAGES}.get(usage.lower())
        if canon is None:
            raise Refused(f"-Usage {usage}: not one of {', '.join(USAGES)}")
        c = Connector({"name": name, "usage": canon}, [where])
        self.state.connectors.append(c)
        self.properties(c, args, file)
        return [self.obj(c)]

    def set_receiveconnector(self, args: dict[str, tuple[Any, int, str]], file: str, where: str) -> list[Obj]:
        c = self._connector(args)
        if "name" in args:
            new = self._text(args, "name")
            other = self.state.connector(new)
            if other is not None and other is not c:
                raise Refused(f"a receive connector named '{new}' already exists")
            c.spec["name"] = new
        self.properties(c, args, file)
        c.origins.append(where)
        return [self.obj(c)]

    def remove_receiveconnector(self, args: dict[str, tuple[Any, int, str]], file: str, where: str) -> list[Obj]:
        c = self._connector(args)
        self._leftovers(args, file)
        self.state.connectors.remove(c)
        return []

    def properties(self, c: Connector, args: dict[str, tuple[Any, int, str]], file: str) -> None:
        """Check and store ``-Param value`` pairs on ``c``; a bad value refuses the command."""
        for pname, (value, line, written) in list(args.items()):
            key = RC_KEYS.get(pname)
            if key is None:
                continue
            del args[pname]
            if isinstance(value, Unknown):
                if key in DECISIVE_KEYS:
                    raise Refused(f"-{written}: {value.why}, and without it the connector would keep "
                                  f"{'its default' if key != 'remote_ip_ranges' else 'every address'}")
                self.notes.warn(file, line, f"-{written}: {value.why}; this parameter is not imported")
                continue
            if value is MISSING:
                raise Refused(f"-{written} needs a value")
            self.store(c, key, value, written)
        self._leftovers(args, file)

    def store(self, c: Connector, key: str, value: Any, written: str) -> None:
        c.key_origins.setdefault(key, []).append(self.where)
        if isinstance(value, dict):
            if key not in LIST_KEYS or not set(value) <= {"add", "remove"}:
                raise Refused(f"-{written}: only multi-valued properties take @{{Add=…; Remove=…}}")
            current = list(c.current(key) or [])
            for item in _flat(value.get("add")):
                if not any(_same(key, item, x) for x in current):
                    current.append(item)
            for item in _flat(value.get("remove")):
                current = [x for x in current if not _same(key, item, x)]
            value = current
        if value is None:
            if key in OPTIONAL_KEYS:
                c.spec.pop(key, None)
                return
            if key not in LIST_KEYS and key != "comment":
                raise Refused(f"-{written} cannot be $null")
            value = [] if key in LIST_KEYS else ""
        if isinstance(value, Obj):
            value = str(value)
        if key in LIST_KEYS:
            flat = [str(v) for v in _flat(value)]
            if sum(v.count(",") for v in flat) > 4 * MAX_PROPERTY_ITEMS:  # before a dump's list is split
                raise Refused(f"-{written}: more than {4 * MAX_PROPERTY_ITEMS:,} entries; Exchange fails above about "
                              f"1,200 (the importer takes at most {MAX_PROPERTY_ITEMS:,}): use ranges or CIDR")
            items = [s.strip() for v in flat for s in v.split(",") if s.strip()]
            if len(items) > MAX_PROPERTY_ITEMS:
                raise Refused(f"-{written}: {len(items):,} entries; Exchange fails above about 1,200 (the importer "
                              f"takes at most {MAX_PROPERTY_ITEMS:,}): use ranges or CIDR")
            text: str | list[str] = items
        elif isinstance(value, list):
            raise Refused(f"-{written} takes one value, not a list")
        else:
            text = str(value)
        try:
            parsed = config.parse_connector_property(key, text)
        except ValueError as e:
            shown = ", ".join(items) if key in LIST_KEYS else str(value)
            raise Refused(f"-{written} {shown}: {e}") from None
        if key == "permission_groups":
            if parsed & PermissionGroups.Custom:
                raise Refused("-PermissionGroups Custom cannot be set: Exchange shows it once an entry is added")
            c.aces = [a for a in c.aces if a.group is None]
            items = [g.name for g in PermissionGroups if g and g in parsed and g.name] or ["None"]
        elif key == "auth_mechanism":
            items = [m.name for m in type(parsed) if m and m in parsed and m.name] or ["None"]
        elif key == "bindings":
            for b in parsed:
                if not b.is_wildcard and not b.ip.is_loopback:
                    self.state.addresses.setdefault(str(b.ip), f"-Bindings {b}")
        if key in LIST_KEYS:
            c.spec[key] = items
        elif isinstance(parsed, bool):
            c.spec[key] = parsed
        elif isinstance(parsed, str) and key not in ("banner", "comment", "default_domain", "tls_certificate_name"):
            c.spec[key] = parsed  # the canonical spelling of a choice
        elif key in ("transport_role", "usage"):
            c.spec[key] = parsed.value
        else:
            c.spec[key] = str(value).strip() if key not in ("banner", "comment") else str(value)

    def _leftovers(self, args: dict[str, tuple[Any, int, str]], file: str) -> None:
        for pname, (_, line, written) in args.items():
            if pname in INERT:
                self.notes.info(file, line, f"-{written} has no effect on SMTP sessions through Postfix: not imported")
            elif pname not in COMMON:
                self.notes.warn(file, line, f"-{written} is not a parameter exmilter understands here: not imported")
        args.clear()

    # -- permissions ------------------------------------------------------------------

    def _rights(self, args: dict[str, tuple[Any, int, str]]) -> Right:
        if "extendedrights" not in args:
            raise Refused("-ExtendedRights is required (receive connector rights such as ms-Exch-SMTP-Submit)")
        value, _, _ = args.pop("extendedrights")
        if isinstance(value, Unknown):
            raise Refused(f"-ExtendedRights: {value.why}")
        rights = Right.NONE
        for item in _flat(value):
            for part in str(item).split(","):
                if part.strip():
                    try:
                        rights |= parse_right(part)
                    except ValueError as e:
                        raise Refused(f"-ExtendedRights: {e}") from None
        if not rights:
            raise Refused("-ExtendedRights needs at least one right")
        return rights

    def _ace_args(self, args: dict[str, tuple[Any, int, str]], file: str) -> tuple[str, Right, bool]:
        user = self._text(args, "user", required=True)
        user = well_known(user) or user
        rights = self._rights(args)
        deny = False
        if "deny" in args:
            deny = args.pop("deny")[0] in (MISSING, "true")
        if "accessrights" in args:
            value, line, _ = args.pop("accessrights")
            if str(value).lower() != "extendedright":
                self.notes.warn(file, line, f"-AccessRights {value}: only extended rights matter to receive "
                                "connectors; not imported")
        return user, rights, deny

    def add_adpermission(self, args: dict[str, tuple[Any, int, str]], file: str, where: str) -> list[Obj]:
        ident = self._text(args, "identity", required=True)
        user, rights, deny = self._ace_args(args, file)
        self._leftovers(args, file)
        c = self.find_connector(ident, quiet=True)
        if c is None:
            if rights == Right.SendAs:
                return self.send_as(user, ident, where)
            raise Refused(f"permission for unknown receive connector '{ident}' on {self.state.server}")
        for a in c.aces:
            if a.user.lower() == user.lower() and a.deny == deny and a.group is None:
                a.rights |= rights
                a.origins.append(where)
                break
        else:
            c.aces.append(Ace(user, rights, deny, origins=[where]))
        c.origins.append(where)
        return [self.obj(c)]

    def send_as(self, user: str, ident: str, where: str) -> list[Obj]:
        grant = self.state.users.setdefault(user.lower(), UserGrant(user, []))
        grant.origins.append(where)
        if "@" in ident:
            grant.send_as.append(ident.lower())
        else:
            grant.origins.append(f"send_as needs the e-mail address of {ident}")
            self.notes.warn(*self.loc, f"Send-As on '{ident}' for {user}: '{ident}' is a directory object whose "
                            f"e-mail address is not in the input; add it to users[{user}].send_as")
        return []

    def remove_adpermission(self, args: dict[str, tuple[Any, int, str]], file: str, where: str) -> list[Obj]:
        c = self._connector(args)
        user, rights, deny = self._ace_args(args, file)
        self._leftovers(args, file)
        removed = Right.NONE
        for a in list(c.aces):
            if a.user.lower() == user.lower() and a.deny == deny:
                removed |= a.rights & rights
                a.rights &= ~rights
                if not a.rights:
                    c.aces.remove(a)
        if not deny:
            removed |= self._take_from_groups(c, user, rights)
        if not removed:
            raise Refused(f"{user} holds none of these rights explicitly on '{c.name}'")
        c.origins.append(where)
        return [self.obj(c)]

    def _take_from_groups(self, c: Connector, user: str, rights: Right) -> Right:
        """Removing a group's right: write the group out as entries, minus that right."""
        removed = Right.NONE
        groups = [g for g in c.current("permission_groups") or [] if g != "None"]
        fqdn = self.state.fqdn  # the NetBIOS domain as the loader derives it (state has no server.domain)
        domain = fqdn.split(".")[1].upper() if fqdn.count(".") else "EXCHANGE"
        for g in list(groups):
            entries = group_entries(PermissionGroups[g], domain)
            key = canonical(user, domain)
            hit = [e for e in entries if canonical(e.user, domain) == key and e.rights & rights and not e.deny]
            if not hit:
                continue
            if g == "ExchangeServers" and "ExternalAuthoritative" in (c.current("auth_mechanism") or []):
                raise Refused("ExternalAuthoritative needs the ExchangeServers group whole")
            groups.remove(g)
            for e in entries:
                left = e.rights & ~rights if e in hit else e.rights
                removed |= e.rights & rights if e in hit else Right.NONE
                if left:
                    c.aces.append(Ace(e.user, left, e.deny, group=g, origins=[f"permission group {g}", self.where]))
        if removed:
            c.spec["permission_groups"] = groups or ["None"]
        return removed

    # -- accepted domains -------------------------------------------------------------

    def new_accepteddomain(self, args: dict[str, tuple[Any, int, str]], file: str, where: str) -> list[Obj]:
        name = self._text(args, "name")
        dn = self._text(args, "domainname", required=True)
        spec = {"name": name or dn, "domain_name": self._domain_name(dn)}
        existing = self.state.domain(spec["domain_name"])
        if existing is not None and existing.origins == [ASSUMED_DOMAIN]:
            self.state.domains.remove(existing)
        elif existing is not None or self.state.domain(spec["name"]) is not None:
            raise Refused(f"accepted domain '{spec['name']}' ({spec['domain_name']}) already exists")
        d = Domain(spec, [where])
        self.state.domains.append(d)
        self._domain_props(d, args, file)
        return [Obj("domain", str(spec["name"]))]

    def set_accepteddomain(self, args: dict[str, tuple[Any, int, str]], file: str, where: str) -> list[Obj]:
        ident = self._text(args, "identity", required=True)
        d = self.state.domain(ident)
        if d is None:
            raise Refused(f"no accepted domain '{ident}'")
        if "name" in args:
            d.spec["name"] = self._text(args, "name")
        self._domain_props(d, args, file)
        d.origins.append(where)
        return [Obj("domain", str(d.spec["name"]))]

    def remove_accepteddomain(self, args: dict[str, tuple[Any, int, str]], file: str, where: str) -> list[Obj]:
        ident = self._text(args, "identity", required=True)
        d = self.state.domain(ident)
        if d is None:
            raise Refused(f"no accepted domain '{ident}'")
        self._leftovers(args, file)
        self.state.domains.remove(d)
        return []

    @staticmethod
    def _domain_name(text: str) -> str:
        try:
            return config.parse_domain_name(text)
        except ValueError as e:
            raise Refused(f"-DomainName: {e}") from None

    def _domain_props(self, d: Domain, args: dict[str, tuple[Any, int, str]], file: str) -> None:
        if "domainname" in args:
            d.spec["domain_name"] = self._domain_name(self._text(args, "domainname"))
        if "domaintype" in args:
            t = self._text(args, "domaintype")
            canon = {x.lower(): x for x in ("Authoritative", "InternalRelay", "ExternalRelay")}.get(t.lower())
            if canon is None:
                raise Refused(f"-DomainType {t}: not Authoritative, InternalRelay or ExternalRelay")
            d.spec["domain_type"] = canon
        for pname, key in (("matchsubdomains", "match_sub_domains"), ("addressbookenabled", "address_book_enabled")):
            if pname in args:
                value = args.pop(pname)[0]
                try:
                    d.spec[key] = True if value is MISSING else parse_bool(str(value))
                except ValueError as e:
                    raise Refused(f"-{pname}: {e}") from None
        if "makedefault" in args:
            line = args.pop("makedefault")[1]
            self.notes.info(file, line, "-MakeDefault chooses the domain of new mailboxes: no effect on SMTP receive")
        self._leftovers(args, file)

    # -- Format-List dumps ------------------------------------------------------------

    def dump(self, d: Dump) -> None:
        self.count(d.file, d.line)
        if d.refused:  # a line of it could not be read, noted there
            return
        self.where = f"Format-List output at {d.file}:{d.line}"
        keys = {k.lower() for k in d.props}
        oc = (d.get("ObjectClass") or "").lower()
        if "msexchsmtpreceiveconnector" in oc or keys & {"bindings", "remoteipranges", "authmechanism",
                                                         "permissiongroups", "transportrole"}:
            self.dump_connector(d)
        elif "msexchaccepteddomain" in oc or "domaintype" in keys or "domainname" in keys:
            self.dump_domain(d)
        elif {"user", "extendedrights"} <= keys:
            self.dump_permission(d)
        else:
            self.notes.warn(d.file, d.line, "a property list that is neither a receive connector, an accepted "
                            "domain nor a permission entry: not imported")

    def _dump_identity(self, d: Dump) -> str | None:
        ident = d.get("Identity") or d.get("Id")
        if not ident and d.get("Name"):
            ident = f"{d.get('Server') or self.state.server}\\{d.get('Name')}"
        return ident or self.context

    def dump_connector(self, d: Dump) -> None:
        ident = self._dump_identity(d)
        where = f"Format-List output at {d.file}:{d.line}"
        if not ident:
            self.notes.warn(d.file, d.line, "receive connector properties without Identity or Name (add Identity "
                            "to the Format-List): not imported")
            return
        inert = sorted(k for k in d.props if k.lower() in DUMP_INERT)
        unknown = [k for k in d.props if k.lower() not in DUMP_INERT and k.lower() not in RC_KEYS]

        def apply() -> None:
            server, _, name = ident.rpartition("\\")
            if server and server.lower() != self.state.server.lower():
                raise Refused(f"'{ident}' is on server {server}; exmilter stands in for {self.state.server}")
            c = self.state.connector(name)
            if c is None:
                c = Connector({"name": name, "usage": "Custom"}, [where])
                self.state.connectors.append(c)
            else:
                c.origins.append(where)
            for prop, (value, line) in d.props.items():
                key = RC_KEYS.get(prop.lower())
                if key is None:
                    continue
                text = value.strip()
                if text.startswith("{") and text.endswith("}"):
                    text = text[1:-1]
                if key == "permission_groups" and "custom" in text.lower():
                    text = ", ".join(g for g in text.split(",") if g.strip().lower() != "custom") or "None"
                if not text and key not in LIST_KEYS and key != "comment":
                    if key in OPTIONAL_KEYS:
                        c.spec.pop(key, None)
                    continue
                try:
                    self.store(c, key, text, prop)
                except Refused as e:
                    raise Refused(f"line {line}: {e}") from None

        self.attempt(d.file, d.line, f"receive connector {ident}", apply)
        if inert:
            self.notes.info(d.file, d.line, f"{len(inert)} properties without an effect on SMTP sessions not imported "
                            f"({', '.join(inert[:6])}{', …' if len(inert) > 6 else ''})")
        for k in unknown:
            self.notes.warn(d.file, d.props[k][1], f"{k} is not a receive connector property exmilter knows: "
                            "not imported")

    def dump_domain(self, d: Dump) -> None:
        dn = d.get("DomainName")
        if not dn:
            self.notes.warn(d.file, d.line, "accepted domain properties without DomainName: not imported")
            return
        where = f"Format-List output at {d.file}:{d.line}"
        props: dict[str, tuple[Any, int, str]] = {"domainname": (dn, d.line, "DomainName")}
        for prop, (value, line) in d.props.items():
            low = prop.lower()
            if low in ("domaintype", "matchsubdomains", "addressbookenabled"):
                props[low] = (value.strip(), line, prop)
            elif low not in DUMP_INERT and low != "domainname":
                self.notes.warn(d.file, line, f"{prop} is not an accepted domain property exmilter knows: not imported")

        def apply() -> None:
            existing = self.state.domain(dn.strip().lower())
            if existing is None:
                existing = Domain({"name": (d.get("Name") or dn).strip(), "domain_name": self._domain_name(dn)}, [])
                self.state.domains.append(existing)
            existing.origins[:] = [o for o in existing.origins if o != ASSUMED_DOMAIN] + [where]
            self._domain_props(existing, props, d.file)

        self.attempt(d.file, d.line, f"accepted domain {dn}", apply)

    def dump_permission(self, d: Dump) -> None:
        if (d.get("IsInherited") or "").lower() == "true":
            self.notes.info(d.file, d.line, "inherited permission entry: not part of the connector, skipped")
            return
        ident = self._dump_identity(d)
        rights = (d.get("ExtendedRights") or "").strip("{} ")
        if not rights:
            self.notes.info(d.file, d.line, "permission entry without extended rights: nothing for SMTP, skipped")
            return
        self.loc = (d.file, d.line)
        args = {
            "identity": (ident, d.line, "Identity"),
            "user": (d.get("User"), d.line, "User"),
            "extendedrights": (rights, d.line, "ExtendedRights"),
        }
        if (d.get("Deny") or "").lower() == "true":
            args["deny"] = ("true", d.line, "Deny")
        self.attempt(d.file, d.line, f"permission entry on {ident}",
                     lambda: self.add_adpermission(args, d.file, f"Get-ADPermission output at {d.file}:{d.line}"))


def _too_large(what: str) -> Unknown:
    return Unknown(f"{what} once variables are expanded (the importer's limit)", limit=True)


def _bounded(value: list[Any] | dict[str, Any] | str) -> Any:
    """``value``, or :class:`Unknown` when its items or all its text together pass the limits."""
    items = chars = 0
    stack: list[Any] = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            chars += len(v)
        elif isinstance(v, list):
            items += len(v)
            stack += v
        elif isinstance(v, dict):
            items += len(v)
            stack += v.values()
        else:
            chars += 1
        if items > MAX_VALUE_ITEMS:
            return _too_large(f"more than {MAX_VALUE_ITEMS:,} items")
        if chars > MAX_VALUE_CHARS:
            return _too_large(f"more than {MAX_VALUE_CHARS:,} characters in all")
    return value


def _flat(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list):
        return [x for v in value for x in _flat(v)]
    return [value]


def _same(key: str, a: Any, b: Any) -> bool:
    """Whether two items of a multi-valued property are the same value (Remove=…)."""
    try:
        if key == "remote_ip_ranges":
            ra, rb = parse_ip_range(str(a)), parse_ip_range(str(b))
            return (ra.version, ra.first, ra.last) == (rb.version, rb.first, rb.last)
        if key == "bindings":
            return parse_binding(str(a)) == parse_binding(str(b))
    except ValueError:
        pass
    return str(a).strip().lower() == str(b).strip().lower()
