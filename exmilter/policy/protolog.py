"""The SMTP receive protocol log from the policy daemon's side (policy-only deployments).

The policy daemon sees a session only as the requests Postfix sends at each stage, so it
logs what those show (docs/logs.md, "What differs from Exchange"): ``+`` and ``Set Session
Permissions`` at the session's first request, the banner exmilter would give (Postfix's own
``smtpd_banner`` is what the client saw), ``EHLO``/``HELO`` from ``helo_name``, ``MAIL
FROM``/``RCPT TO`` rebuilt from the request with the engine's reply, ``*  <user>,authenticated``
and the new permissions once ``sasl_username`` appears, and the engine's end-of-data reply.
It cannot see the disconnect (Postfix sends no request for it), DATA, STARTTLS or QUIT.

Only connectors with ``protocol_logging_level: Verbose`` are logged: for every other
request the cost is one set lookup (:meth:`Recorder.record`'s first lines). A Verbose
request's rows are formatted at once (two f-strings for a command and its reply,
:meth:`~exmilter.logs.protocol.ProtocolSession.exchange`) and appended to the background
writer's list; the permissions come from the session the decision was made with, so the
engine is asked again only without one (tests, a session whose first request is already
authenticated). A session is keyed by (policy_context, client address, client port); the
table is bounded.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from exmilter.engine import Engine, Session
from exmilter.listener import Listener
from exmilter.logs.events import LogWriteFailed
from exmilter.logs.files import Writers, open_protocol_log, open_tracking_log
from exmilter.logs.postfixlog import Follower
from exmilter.logs.protocol import FALLBACK_PREFIX, PREFIX, ProtocolLog, ProtocolSession
from exmilter.model import Organization, Right
from exmilter.policy.decide import Decision
from exmilter.policy.receipts import Receipts

#: What the connection calls after each decision (``Recorder.record``, ``Receipts.record``), with
#: the session the decision judged (``Decider.session``; None when none was).
LogHook = Callable[[Engine, Mapping[str, str], Decision, Session | None], None]

#: Sessions remembered for their next requests (the oldest are forgotten: a new ``+`` if they return).
MAX_SESSIONS = 10_000


def verbose_connectors(org: Organization) -> frozenset[str]:
    """Identities of the connectors that write the protocol log."""
    return frozenset(c.identity for c in org.receive_connectors if c.protocol_logging_level == "Verbose")


class _Session:
    __slots__ = ("auth", "helo", "log")

    def __init__(self, log: ProtocolSession) -> None:
        self.log = log
        self.helo: str | None = None
        self.auth = ""


class Recorder:
    """Turns decided policy requests into protocol-log rows for the Verbose connectors."""

    def __init__(self, log: ProtocolLog, clock: Callable[[], float] = time.time) -> None:
        self.log = log
        self.clock = clock
        self._sessions: OrderedDict[tuple[str, str, str], _Session] = OrderedDict()
        self._org: Organization | None = None
        self._verbose: frozenset[str] = frozenset()

    def record(self, engine: Engine, req: Mapping[str, str], d: Decision, session: Session | None = None) -> None:
        """Called after each decision; does nothing unless the connector is Verbose.

        ``session``: the one the decision was made with (its rights are the permissions row's;
        without it the engine is asked).
        """
        org = engine.org
        if org is not self._org:  # a reload: the set follows the generation in use
            self._org = org
            self._verbose = verbose_connectors(org)
        reply = d.reply
        if reply is None or d.connector not in self._verbose or d.duplicate:
            return
        get = req.get
        now = self.clock()
        key = (
            get("policy_context", "") or f"{get('server_address', '')}:{get('server_port', '')}",
            get("client_address", ""),
            get("client_port", ""),
        )
        stage = d.stage
        user = get("sasl_username", "")
        s = self._sessions.get(key)
        if s is None or stage == "CONNECT":
            # The session's rights before any login: the decision's, unless it already has one.
            rights = session.rights if session is not None and not user else self._rights(engine, req, None)
            s = self._open(key, req, d.connector, now, rights)
        else:
            self._sessions.move_to_end(key)
        log = s.log
        helo = get("helo_name")
        if helo and helo != s.helo:
            s.helo = helo
            log.received(("HELO " if get("protocol_name") == "SMTP" else "EHLO ") + helo, now)
        if user and user != s.auth:
            s.auth = user
            log.info(user, now, "authenticated")
            rights = session.rights if session is not None else self._rights(engine, req, user)
            if rights is not None:
                log.permissions(rights, now)
        if stage == "RCPT":
            log.exchange(f"RCPT TO:<{get('recipient', '')}>", reply.line, now)
        elif stage == "MAIL":
            size = get("size", "")
            command = f"MAIL FROM:<{get('sender', '')}>" + (f" SIZE={size}" if size and size != "0" else "")
            log.exchange(command, reply.line, now)
        else:  # CONNECT: the engine's 220 (the banner); END-OF-MESSAGE: its reply alone
            log.sent(reply.line, now)
        if reply.close:
            log.disconnect("Local", now)
            del self._sessions[key]

    def _open(
        self, key: tuple[str, str, str], req: Mapping[str, str], connector: str, now: float, rights: Right | None
    ) -> _Session:
        get = req.get
        local_ip, local_port = get("server_address", ""), get("server_port", "")
        ctx = get("policy_context", "")
        if ctx:  # the binding the listener stands for (the sandbox moves ports, a proxy hides them)
            try:
                lst = Listener.parse(ctx)
                local_port = str(lst.port)
                local_ip = lst.address or local_ip
            except ValueError:
                pass
        s = _Session(
            self.log.session(connector, local_ip, local_port, get("client_address", ""), get("client_port", ""), now)
        )
        self._sessions.pop(key, None)
        self._sessions[key] = s
        if len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        s.log.connect(now)
        if rights is not None:
            s.log.permissions(rights, now)
        return s

    @staticmethod
    def _rights(engine: Engine, req: Mapping[str, str], user: str | None) -> Right | None:
        """The session's rights as the engine computes them (None if the request cannot be placed):
        only without the decision's session, or for a session first seen logged in."""
        ctx = req.get("policy_context", "")
        try:
            if ctx:
                lst = Listener.parse(ctx)
                address, port = lst.address, lst.port
            else:
                address, port = req.get("server_address") or None, int(req.get("server_port", "0") or 0)
            session = engine.open_session(
                address,
                port,
                req.get("client_address", ""),
                auth_user=user or None,
                tls=bool(req.get("encryption_protocol")),
            )
        except ValueError:
            return None
        return session.rights


def open_recorder(org: Organization, report: Callable[[LogWriteFailed], object], writers: Writers) -> Recorder | None:
    """The daemon's recorder over a background protocol-log writer (None when
    ``logs.receive_protocol_log_path`` is empty); ``report`` gets each (rate-limited) write failure,
    from the writer's thread. Beside a milter its files are ``RECVPD…`` (docs/logs.md)."""

    def failed(directory: str, e: OSError) -> None:
        report(LogWriteFailed("protocol", directory, str(e)))

    prefix = FALLBACK_PREFIX if org.milter.enabled else PREFIX
    plog = open_protocol_log(org.logs, writers, failed, prefix)
    return Recorder(plog) if plog is not None else None


def open_exchange_logs(
    org: Organization,
    report: Callable[[LogWriteFailed], object],
    writers: Writers,
    follow_maillog: str | None = None,
    recipients: Callable[[str], list[str] | None] | None = None,
) -> tuple[tuple[LogHook, ...], Follower | None]:
    """What the policy daemon writes of Exchange's logs: the hooks its connections call after each
    decision (protocol log, RECEIVE rows) and, given Postfix's log file, the follower that appends
    the delivery outcomes (started by the caller). ``recipients``: the decider's accepted recipients
    per transaction (``Decider.accepted_recipients``); without it the receipts keep their own."""
    hooks: list[LogHook] = []
    rec = open_recorder(org, report, writers)
    if rec is not None:
        hooks.append(rec.record)

    def failed(directory: str, e: OSError) -> None:
        report(LogWriteFailed("tracking", directory, str(e)))

    tlog = open_tracking_log(org.logs, org.server.fqdn, writers, failed)
    follower = None
    if tlog is not None:
        hooks.append(Receipts(tlog, org.server.fqdn, recipients=recipients).record)
        if follow_maillog:
            follower = Follower(follow_maillog, tlog.outcome)
    return tuple(hooks), follower
