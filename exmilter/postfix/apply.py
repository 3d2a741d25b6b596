"""The edits that put a rendering into a live Postfix configuration, as postconf(1) commands.

Pure: it reads what ``postconf -n``, ``-M`` and ``-P`` printed and returns the ``postconf``
arguments to run (:class:`Edits`); :mod:`exmilter.postfix.postconf` runs them on a copy of
the configuration directory, shows the diff, keeps a backup and puts the copy in place
(``exmilter render-postfix --apply``, docs/render-postfix.md "Applying").

Why postconf and not appended text: ``postconf -e`` replaces a parameter where it is
defined (no ``overriding earlier entry`` warnings, no second definition), ``-M`` replaces a
whole master.cf service, ``-M#`` comments one out, ``-MX`` removes one. The edits:

- main.cf: each rendered setting with ``-e``, except the limits exmilter only needs to be
  *no stricter* than the connectors (:data:`NO_STRICTER`): a more permissive value already
  there (Debian's ``mailbox_size_limit = 0``, unlimited) is kept;
- master.cf: each rendered service with ``-M``; exmilter's services that the rendering no
  longer has with ``-MX``; a service of someone else on a port a rendered listener needs is
  a :class:`Conflict`, except Postfix's stock ``smtp/inet`` on port 25, which is commented
  out (``-M#``): the rendered listener replaces it. ``replace=True`` comments out the
  others too. Two services on one port are never left behind.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from exmilter.postfix.restrictions import POLICY_PARAM
from exmilter.postfix.transport import MAILBOX_SERVICE, SERVICE_PREFIX, UNREACHABLE_SERVICE

#: Settings exmilter needs at least as permissive as rendered; ``0`` means unlimited for the sizes.
NO_STRICTER = {
    "message_size_limit": True,  # True: 0 means unlimited
    "mailbox_size_limit": True,
    "virtual_mailbox_limit": True,
    "smtpd_recipient_limit": False,
    "hopcount_limit": False,
    "smtpd_hard_error_limit": False,
    "smtpd_timeout": False,
}
#: Postfix's stock SMTP service: replaced by a rendered listener on its port without asking.
STOCK_SMTP = "smtp/inet"
#: master.cf services named so are exmilter's (a listener's own cleanup and trivial-rewrite).
OWN_PREFIX = "exmilter-"

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class Service:
    """One master.cf service as ``postconf -M`` prints it (one line, continuations joined)."""

    name: str
    type: str
    line: str

    @property
    def key(self) -> str:
        return f"{self.name}/{self.type}"

    @property
    def command(self) -> str:
        words = self.line.split()
        return words[7] if len(words) > 7 else ""


@dataclass(frozen=True)
class Conflict:
    """A service of someone else where a rendered listener must be."""

    existing: str  # its key, e.g. "2525/inet"
    listener: str  # the rendered key it collides with
    port: int

    def __str__(self) -> str:
        return (
            f"master.cf service {self.existing} listens on port {self.port}, which the rendered "
            f"{self.listener} needs: remove it, or give --replace to comment it out"
        )


@dataclass
class Edits:
    """postconf arguments, in order, and what was kept or is in the way."""

    main: list[tuple[str, str]] = field(default_factory=list)  # -e name=value
    services: list[tuple[str, str]] = field(default_factory=list)  # -M key=line
    comment_out: list[str] = field(default_factory=list)  # -M# key
    remove: list[str] = field(default_factory=list)  # -MX key
    kept: list[str] = field(default_factory=list)  # notes: settings left as they are, and why
    conflicts: list[Conflict] = field(default_factory=list)

    def commands(self) -> list[list[str]]:
        """The postconf argument lists (without ``-c DIR``), in the order they must run."""
        out: list[list[str]] = []
        if self.main:
            out.append(["-e", *(f"{n} = {v}" if v else f"{n} =" for n, v in self.main)])
        if self.comment_out:
            out.append(["-M#", *self.comment_out])
        if self.remove:
            out.append(["-MX", *self.remove])
        if self.services:
            out.append(["-M", *(f"{key} = {line}" for key, line in self.services)])
        return out


def parse_main(text: str) -> dict[str, str]:
    """``postconf -n`` (or ``postconf``) output: ``name = value`` per line."""
    out = {}
    for line in text.splitlines():
        name, sep, value = line.partition(" = ")
        if sep:
            out[name.strip()] = value.strip()
        elif line.rstrip().endswith(" ="):
            out[line.rstrip()[:-2].strip()] = ""
    return out


def parse_services(text: str) -> list[Service]:
    """``postconf -M`` output, or master.cf text (comments skipped, continuation lines joined)."""
    entries: list[list[str]] = []
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        if raw[0].isspace() and entries:
            entries[-1].append(raw.strip())
        elif not raw[0].isspace():
            entries.append([raw.strip()])
    out = []
    for parts in entries:
        line = " ".join(parts)
        words = line.split()
        if len(words) >= 8:
            out.append(Service(words[0], words[1], re.sub(r"\s+", " ", line)))
    return out


def parse_service_params(text: str) -> dict[str, dict[str, str]]:
    """``postconf -P`` output: ``service/type/name = value`` → {key: {name: value}}."""
    out: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        lhs, sep, value = line.partition(" =")
        if not sep:
            continue
        service, _, name = lhs.strip().rpartition("/")
        out.setdefault(service, {})[name] = value.strip()
    return out


def service_port(name: str, lookup: Callable[[str], int] | None = None) -> tuple[str | None, int] | None:
    """The address (None: every address) and port of an ``inet`` service name, or None if
    the port is not known (``smtp``, ``10.0.0.5:25``, ``[::1]:2525``, ``host:submission``)."""
    host: str | None = None
    port = name
    if name.startswith("["):
        host, _, port = name[1:].partition("]:")
    elif name.count(":") == 1:
        host, _, port = name.partition(":")
    if port.isdigit():
        return host, int(port)
    try:
        return host, (lookup or _getservbyname)(port)
    except OSError:
        return None


def _getservbyname(name: str) -> int:
    return socket.getservbyname(name, "tcp")


def ours(service: Service, params: Mapping[str, Mapping[str, str]]) -> bool:
    """A service exmilter rendered: it carries the listener's policy check, or exmilter's name
    (a listener's cleanup/rewrite, a send connector's smtp service, the mailbox and unreachable ones)."""
    name = service.name
    return (
        name.startswith((OWN_PREFIX, SERVICE_PREFIX))
        or name in (MAILBOX_SERVICE, UNREACHABLE_SERVICE)
        or POLICY_PARAM in params.get(service.key, {})
    )


def _number(value: str) -> int | None:
    m = re.fullmatch(r"(\d+)([smhdw]?)", value.strip())
    return int(m.group(1)) * _UNITS.get(m.group(2) or "s", 1) if m else None


def more_permissive(name: str, current: str, rendered: str) -> bool:
    """Whether ``current`` (as main.cf has it) admits at least what ``rendered`` does."""
    cur, new = _number(current), _number(rendered)
    if cur is None or new is None:
        return False  # an expression ($other, ...): cannot tell, exmilter's value is written
    if NO_STRICTER[name] and cur == 0:
        return True  # unlimited
    return cur >= new


def plan_edits(
    settings: Iterable[tuple[str, str]],
    rendered_master: str,
    main: Mapping[str, str],
    services: Sequence[Service],
    params: Mapping[str, Mapping[str, str]],
    *,
    replace: bool = False,
    lookup: Callable[[str], int] | None = None,
) -> Edits:
    """The postconf edits that put ``settings`` (main.cf) and ``rendered_master`` into the
    configuration whose ``postconf -n`` is ``main``, ``-M`` ``services`` and ``-P`` ``params``."""
    edits = Edits()
    for name, value in settings:
        current = main.get(name)
        if current == value:
            continue
        if current is not None and name in NO_STRICTER and more_permissive(name, current, value):
            edits.kept.append(f"{name} = {current} kept: no stricter than exmilter's {value}")
            continue
        edits.main.append((name, value))
    wanted = parse_services(rendered_master)
    wanted_keys = {s.key for s in wanted}
    edits.services = [(s.key, s.line) for s in wanted]
    ports = {}
    for s in wanted:
        if s.type == "inet":
            where = service_port(s.name, lookup)
            if where is not None:
                ports[s.key] = where
    for s in services:
        mine = ours(s, params)
        if mine and s.key not in wanted_keys:
            edits.remove.append(s.key)
            continue
        if s.key in wanted_keys:
            if not mine and not replace:  # someone else's service of the same name: not silently replaced
                where = service_port(s.name, lookup)
                edits.conflicts.append(Conflict(s.key, s.key, where[1] if where else 0))
            continue
        if s.type != "inet":
            continue
        where = service_port(s.name, lookup)
        if where is None:
            continue
        for key, (host, port) in ports.items():
            if port == where[1] and (host is None or where[0] is None or host == where[0]):
                if s.key == STOCK_SMTP or replace:
                    edits.comment_out.append(s.key)
                else:
                    edits.conflicts.append(Conflict(s.key, key, port))
                break
    return edits
