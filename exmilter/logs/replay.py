"""Replay an Exchange server's SMTP receive protocol logs through the engine (``exmilter replay``).

The old server's own logs say which client connected where, which connector took it, what
it asked and what Exchange answered. :class:`Replayer` rebuilds each session from its rows
(streaming, in file order; a session may span hourly files), asks the engine the same
questions with the new configuration and records every session whose connector,
permissions or reply would differ, plus the inventory of which client used which connector.

What is compared (docs/logs.md, "Replay"): the connector (by name), the session's first
``Set Session Permissions``, and the reply to each MAIL, RCPT and end of data, by reply
code and enhanced status code (texts differ where Postfix owns them, spec §3.13). The
banner, EHLO, STARTTLS and AUTH exchanges are Postfix's and are not compared; a command
whose reply is missing from the log is not compared either.

Pure apart from reading the files: the engine is given, progress goes to a callback.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from exmilter.engine import Engine, Session
from exmilter.limits import REPLAY_MAX_OPEN_SESSIONS, REPLAY_MAX_SESSIONS_PER_GROUP
from exmilter.logs.w3c import log_files, parse_timestamp, read_rows
from exmilter.replies import Reply

_REPLY = re.compile(r"^(\d{3})[ -]?(?:([245]\.\d{1,3}\.\d{1,3})\b)?")
_MAIL = re.compile(r"^MAIL\s+FROM:\s*(<[^>]*>|\S*)(.*)$", re.IGNORECASE)
_RCPT = re.compile(r"^RCPT\s+TO:\s*(<[^>]*>|\S*)", re.IGNORECASE)
_SIZE = re.compile(r"\bSIZE=(\d{1,19})\b", re.IGNORECASE)
#: Spec §5.1's ``*`` texts that say what a message's header block held (Exchange writes them
#: before refusing it, so do exmilter's milter): enough to judge end of data the same way.
_HEADER_FACT = re.compile(
    r"^(?:(?P<what>ReceivedHeadersLength|LocalHopCount|HeaderSize): (?P<n>\d{1,12}) > \w+: \d{1,12})$"
)

#: Enhanced codes that answer only one command (spec §3.4, §3.5): a reply carrying one answers
#: the oldest pending command of that kind, so a command whose reply is missing from the log
#: (an excerpt, an EHLO reply Postfix gave and exmilter did not see) does not take it.
_ANSWERS = {
    "2.1.0": "MAIL",
    "5.1.7": "MAIL",
    "5.7.57": "MAIL",
    "2.1.5": "RCPT",
    "5.7.54": "RCPT",
    "5.1.3": "RCPT",
    "5.1.4": "RCPT",
    "5.1.5": "RCPT",
    "5.1.6": "RCPT",
    "5.1.8": "RCPT",
    "4.5.3": "RCPT",
}


def split_endpoint(text: str) -> tuple[str, int]:
    """``ip:port`` as Exchange writes it (IPv6 without brackets; brackets accepted too)."""
    t = text.strip()
    host, _, port = t.rpartition(":")
    host = host.strip("[]")
    return host, int(port) if port.isdigit() else 0


def reply_key(text: str) -> tuple[str, str] | None:
    """``(code, enhanced)`` of a reply line (``("550", "5.7.54")``), None if it is not one."""
    m = _REPLY.match(text.strip())
    return (m[1], m[2] or "") if m else None


def connector_name(identity: str) -> str:
    return identity.rpartition("\\")[2]


@dataclass(frozen=True, slots=True)
class Difference:
    """One thing the new configuration would do differently in one session."""

    stage: str  # "connector", "permissions", "MAIL", "RCPT", "END-OF-DATA"
    command: str  # what the client sent ("" for connector/permissions)
    exchange: str  # what Exchange said or chose
    exmilter: str  # what exmilter would say or choose


@dataclass(slots=True)
class SessionReport:
    session_id: str
    start: str  # the first row's date-time
    client: str
    local: str
    old_connector: str
    new_connector: str
    differences: list[Difference] = field(default_factory=list)


@dataclass(slots=True)
class InventoryEntry:
    client: str
    old_connector: str
    new_connector: str
    sessions: int = 0
    first: str = ""
    last: str = ""


@dataclass(slots=True)
class Progress:
    files_done: int
    files: int
    bytes_done: int
    bytes_total: int
    rows: int
    sessions: int


@dataclass(slots=True)
class ReplayReport:
    """What a replay found. Memory is bounded by the clients, not the sessions: each
    (client, connector) group keeps its first ``REPLAY_MAX_SESSIONS_PER_GROUP`` differing
    sessions and counts the rest (``differing_count``)."""

    sessions: int = 0
    rows: int = 0
    differing: list[SessionReport] = field(default_factory=list)
    differing_count: dict[tuple[str, str], int] = field(default_factory=dict)
    inventory: dict[tuple[str, str], InventoryEntry] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)  # sessions that could not be used, and why

    def add(self, s: SessionReport) -> None:
        key = (s.client, s.old_connector)
        n = self.differing_count.get(key, 0)
        self.differing_count[key] = n + 1
        if n < REPLAY_MAX_SESSIONS_PER_GROUP:
            self.differing.append(s)

    @property
    def total_differing(self) -> int:
        return sum(self.differing_count.values())

    def grouped(self) -> dict[tuple[str, str], list[SessionReport]]:
        """Differing sessions (those kept) by (client, old connector), in first-seen order."""
        out: dict[tuple[str, str], list[SessionReport]] = {}
        for s in self.differing:
            out.setdefault((s.client, s.old_connector), []).append(s)
        return out


class _Open:
    """A session being read: its rows as ``(event, data, context, date-time)``."""

    __slots__ = ("connector", "local", "remote", "rows", "start")

    def __init__(self, connector: str, local: str, remote: str, start: str) -> None:
        self.connector = connector
        self.local = local
        self.remote = remote
        self.start = start
        self.rows: list[tuple[str, str, str, str]] = []


class Replayer:
    """Streams rows in, judges each session when its ``-`` row (or the end) arrives."""

    def __init__(self, engine: Engine, *, sizes: dict[tuple[str, int], int] | None = None) -> None:
        self.engine = engine
        self.report = ReplayReport()
        self._open: OrderedDict[str, _Open] = OrderedDict()
        self._sizes = sizes or {}

    # -- reading ---------------------------------------------------------------------------

    def feed(self, rows: Iterable[dict[str, str]]) -> None:
        for r in rows:
            self.report.rows += 1
            sid = r.get("session-id", "")
            if not sid:
                continue
            key = f"{r.get('connector-id', '')}|{sid}"
            s = self._open.get(key)
            if s is None:
                s = _Open(r.get("connector-id", ""), r.get("local-endpoint", ""), r.get("remote-endpoint", ""), "")
                s.start = r.get("date-time", "")
                self._open[key] = s
                if len(self._open) > REPLAY_MAX_OPEN_SESSIONS:
                    _, oldest = self._open.popitem(last=False)
                    self._judge(sid, oldest)
            event = r.get("event", "")
            s.rows.append((event, r.get("data", ""), r.get("context", ""), r.get("date-time", "")))
            if event == "-":
                del self._open[key]
                self._judge(sid, s)

    def finish(self) -> ReplayReport:
        """Judge the sessions whose ``-`` row never came (the logs end mid-session)."""
        while self._open:
            key, s = self._open.popitem(last=False)
            self._judge(key.rpartition("|")[2], s)
        return self.report

    # -- judging ---------------------------------------------------------------------------

    def _judge(self, sid: str, s: _Open) -> None:
        self.report.sessions += 1
        try:
            local_ip, local_port = split_endpoint(s.local)
            client_ip, _ = split_endpoint(s.remote)
            engine = self.engine
            session = engine.open_session(local_ip, local_port, client_ip, helo=None)
        except ValueError as e:
            if len(self.report.unreadable) < REPLAY_MAX_SESSIONS_PER_GROUP:
                self.report.unreadable.append(f"session {sid}: endpoints {s.local!r} {s.remote!r}: {e}")
            return
        old = connector_name(s.connector)
        new = session.connector.name if session.connector is not None else ""
        rep = SessionReport(sid, s.start, client_ip, s.local, old, new)
        inv = self.report.inventory.get((client_ip, old))
        if inv is None:
            inv = self.report.inventory[(client_ip, old)] = InventoryEntry(client_ip, old, new, first=s.start)
        inv.sessions += 1
        inv.last = s.start
        if old.lower() != new.lower():
            rep.differences.append(Difference("connector", "", old, new or "none (421 4.3.2 Service not available)"))
        if session.connector is not None:
            self._commands(sid, s, session, rep, local_ip, local_port, client_ip)
        if rep.differences:
            self.report.add(rep)

    @staticmethod
    def _header_facts(session: Session, facts: dict[str, int]) -> dict[str, Any]:
        """``end_of_data`` keywords for what the ``*`` rows said of the header block: that many
        Received headers (by this server for LocalHopCount), a header block that size."""
        out: dict[str, Any] = {}
        c = session.connector
        if "HeaderSize" in facts:
            out["header_size"] = facts["HeaderSize"]
        received: list[str] = []
        if "LocalHopCount" in facts and c is not None:
            received += [f"from relay by {c.fqdn} (Postfix)"] * facts["LocalHopCount"]
        if "ReceivedHeadersLength" in facts:
            received += ["from elsewhere by elsewhere"] * max(0, facts["ReceivedHeadersLength"] - len(received))
        if received:
            out["received"] = received
        return out

    def _commands(
        self, sid: str, s: _Open, session: Session, rep: SessionReport, local_ip: str, local_port: int, client_ip: str
    ) -> None:
        engine = self.engine
        pending: list[tuple[str, str]] = []  # (stage, command) awaiting a reply, in order (pipelining)
        permissions_seen = False
        helo: str | None = None
        tls = False
        auth: str | None = None
        accepted = 0
        size = 0
        sender = ""
        in_data = False
        messages = 0
        header: dict[str, int] = {}  # the facts the `*` rows gave of the message in DATA

        def reopen() -> Session:
            return engine.open_session(local_ip, local_port, client_ip, auth_user=auth, tls=tls, helo=helo)

        for event, data, context, when in s.rows:
            if event == "*":
                if context == "Set Session Permissions" and not permissions_seen:
                    permissions_seen = True
                    want = set(data.split())
                    have = set(session.rights.tokens().split())
                    if want != have:
                        rep.differences.append(
                            Difference("permissions", "", " ".join(sorted(want)), " ".join(sorted(have)))
                        )
                elif context.lower() == "authenticated" and data:
                    auth = data
                    session = reopen()
                elif (fact := _HEADER_FACT.match(data)) is not None:
                    header[fact["what"]] = int(fact["n"])
                continue
            if event == "<":
                verb = data.split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    helo = data.split(" ", 1)[1].strip() if " " in data else ""
                    session = reopen()
                    pending.append(("HELO", data))
                elif verb in ("MAIL", "RCPT", "DATA", "BDAT", "STARTTLS", "RSET"):
                    pending.append((verb, data))
                else:
                    pending.append(("OTHER", data))
                continue
            if event != ">":
                continue
            got = reply_key(data)
            if got is None:
                continue
            expected = _ANSWERS.get(got[1])
            if expected is not None and any(p[0] == expected for p in pending):
                while pending[0][0] != expected:  # their replies are not in the log (an excerpt, or Postfix's)
                    pending.pop(0)
            if pending:
                stage, command = pending.pop(0)
            elif in_data:
                stage, command, in_data = "END-OF-DATA", "", False
            else:
                continue  # the banner
            new: Reply | None = None
            if stage == "MAIL":
                m = _MAIL.match(command)
                if m is None:
                    continue
                sender = m[1]
                sm = _SIZE.search(m[2])
                size = int(sm[1]) if sm else 0
                accepted = 0
                new = engine.mail(session, sender, size=size, now=_time(when))
            elif stage == "RCPT":
                m = _RCPT.match(command)
                if m is None:
                    continue
                new = engine.rcpt(session, m[1], accepted=accepted)
                if got[0].startswith("2"):
                    accepted += 1  # Exchange's count decides what follows
            elif stage in ("DATA", "BDAT"):
                in_data = got[0] == "354"
                continue
            elif stage == "STARTTLS":
                if got[0] == "220":
                    tls = True
                    session = reopen()
                continue
            elif stage == "END-OF-DATA":
                messages += 1
                known = self._sizes.get((sid, messages), size)
                new = engine.end_of_data(session, size=known, mail_from=sender, **self._header_facts(session, header))
                header = {}
            elif stage == "RSET":
                accepted = 0
                continue
            else:
                continue
            if new is not None and (str(new.code), new.enhanced) != got:
                rep.differences.append(Difference(stage, command, data, new.line))


def _time(text: str) -> float | None:
    try:
        return parse_timestamp(text)
    except ValueError:
        return None


def tracking_sizes(paths: Iterable[str]) -> dict[tuple[str, int], int]:
    """``(session id, message number) -> total-bytes`` of RECEIVE/SMTP events in tracking logs
    (``source-context`` is ``<session-id>;<start>;<n>``), for the end-of-data size check."""
    out: dict[tuple[str, int], int] = {}
    for path in log_files(paths):
        for r in read_rows(path):
            if r.get("event-id") != "RECEIVE" or r.get("source") != "SMTP":
                continue
            parts = r.get("source-context", "").split(";")
            size = r.get("total-bytes", "")
            if len(parts) >= 3 and parts[2].isdigit() and size.isdigit():
                out[(parts[0], int(parts[2]))] = int(size)
    return out


def replay(
    engine: Engine,
    paths: Iterable[str],
    tracking: Iterable[str] = (),
    progress: Callable[[Progress], None] | None = None,
) -> ReplayReport:
    """Every session of the protocol logs under ``paths`` judged with ``engine``."""
    files = log_files(paths, prefix="RECV")
    total = sum(os.path.getsize(f) for f in files)
    replayer = Replayer(engine, sizes=tracking_sizes(tracking) if tracking else None)
    done = 0
    for i, path in enumerate(files):
        replayer.feed(read_rows(path))
        done += os.path.getsize(path)
        if progress is not None:
            progress(Progress(i + 1, len(files), done, total, replayer.report.rows, replayer.report.sessions))
    return replayer.finish()


# -- output ---------------------------------------------------------------------------------------


def format_text(report: ReplayReport, *, limit: int = 20) -> Iterator[str]:
    """The report as text: the summary, differences by client and connector, then the inventory."""
    groups = report.grouped()
    yield (
        f"{report.sessions} session(s) from {report.rows} row(s); "
        f"{report.total_differing} session(s) would differ, from {len(groups)} client/connector pair(s)"
    )
    for (client, old), sessions in groups.items():
        yield ""
        total = report.differing_count[(client, old)]
        yield f"client {client}, Exchange connector {old!r}: {total} session(s) differ"
        for s in sessions[:limit]:
            new = s.new_connector or "-"
            yield f"  session {s.session_id} at {s.start} (local {s.local}; exmilter connector {new!r})"
            for d in s.differences:
                what = f" {d.command}" if d.command else ""
                yield f"    {d.stage}{what}: Exchange {d.exchange!r}; exmilter {d.exmilter!r}"
        if total > min(limit, len(sessions)):
            yield f"  … and {total - min(limit, len(sessions))} more"
    for note in report.unreadable[:limit]:
        yield f"unreadable: {note}"
    yield ""
    yield "inventory: client IP -> connector (Exchange, exmilter), sessions, first and last seen"
    for e in sorted(report.inventory.values(), key=lambda e: (e.old_connector, e.client)):
        same = "" if e.old_connector.lower() == e.new_connector.lower() else "  <- differs"
        new = e.new_connector or "-"
        yield f"  {e.client:<39} {e.old_connector!r} -> {new!r}  {e.sessions}  {e.first}  {e.last}{same}"


def as_json(report: ReplayReport) -> dict:
    return {
        "sessions": report.sessions,
        "rows": report.rows,
        "differing_sessions": report.total_differing,
        "differing": [
            {
                "session_id": s.session_id,
                "start": s.start,
                "client": s.client,
                "local": s.local,
                "exchange_connector": s.old_connector,
                "exmilter_connector": s.new_connector,
                "differences": [
                    {"stage": d.stage, "command": d.command, "exchange": d.exchange, "exmilter": d.exmilter}
                    for d in s.differences
                ],
            }
            for s in report.differing
        ],
        "inventory": [
            {
                "client": e.client,
                "exchange_connector": e.old_connector,
                "exmilter_connector": e.new_connector,
                "sessions": e.sessions,
                "first": e.first,
                "last": e.last,
            }
            for e in report.inventory.values()
        ],
        "unreadable": report.unreadable,
    }
