"""libmilter's callbacks on one SMTP connection: macros in, the session's verdict out.

The thin layer over :class:`~exmilter.milter.session.MilterSession`: each callback reads
the macros of its stage, asks the session and turns the verdict into libmilter's answer.
This is the only place that calls ``setreply`` (with :func:`~exmilter.milter.session.wire`,
so Postfix sends Exchange's reply byte for byte) and that edits headers.

Fail closed: a callback that raises is logged and counted, answered with a temporary
failure, and every later callback of the session answers the same (a missed header must
never let a message through the firewall unstamped).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import Milter

from exmilter.coverage import SessionKey
from exmilter.headers import Add, Remove
from exmilter.logs.protocol import ProtocolLog, SessionIds
from exmilter.logs.tracking import MessageFacts, TrackingLog, auth_as, auth_mechanism
from exmilter.milter import events as me
from exmilter.milter.coverage import CoverageSender
from exmilter.milter.macros import (
    CONNECT_MACROS,
    HELO_MACROS,
    MAIL_MACROS,
    auth_facts,
    connect_facts,
    queue_id,
    tls_facts,
)
from exmilter.milter.metrics import MilterMetrics
from exmilter.milter.protolog import SessionLog
from exmilter.milter.session import Accept, Continue, MilterSession, Received, Refuse, wire
from exmilter.replies import Reply
from exmilter.runtime.generation import Generations

#: The reply of a session whose milter failed internally: not Exchange's, says nothing of it.
INTERNAL_ERROR = Reply(451, "4.3.0", "Temporary server error, please try again later")


@dataclass
class Shared:
    """What every connection uses: the generation in use, metrics, coverage, the logs."""

    generations: Generations
    metrics: MilterMetrics
    coverage: CoverageSender
    log: Callable[[object], None]
    verbose: bool = False
    #: Exchange's message tracking log (docs/logs.md): a RECEIVE row per accepted message.
    tracking: TrackingLog | None = None
    #: Exchange's SMTP receive protocol log: the rows of the sessions on Verbose connectors.
    protocol: ProtocolLog | None = None
    session_ids: SessionIds = field(default_factory=SessionIds)
    clock: Callable[[], float] = time.time


F = TypeVar("F", bound=Callable[..., Any])


def guarded(stage: str) -> Callable[[F], F]:
    """Any exception in the callback: logged, counted, TEMPFAIL; the session stays failed."""

    def wrap(func: F) -> F:
        @functools.wraps(func)
        def call(self: ExchangeMilter, *args: Any) -> Any:
            if self.failed:
                return self.refuse(stage, INTERNAL_ERROR)
            try:
                return func(self, *args)
            except Exception as e:
                self.failed = True
                self.shared.metrics.errors.labels(stage).inc()
                self.shared.log(me.CallbackFailed(stage, self.client, f"{type(e).__name__}: {e}"[:400]))
                return self.refuse(stage, INTERNAL_ERROR)

        return call  # type: ignore[return-value]

    return wrap


class ExchangeMilter(Milter.Base):
    """One SMTP connection. libmilter calls from varying threads, never two at once."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.session = MilterSession(shared.generations.current.engine)  # fixed for the connection
        self.plog = SessionLog(shared.protocol, shared.session_ids, shared.clock)
        self.failed = False
        self.key: SessionKey | None = None
        self.client = ""
        self.sender = ""
        self.counted = False
        self.messages = 0  # accepted in this connection (the tracking row's source-context)

    # -- helpers -------------------------------------------------------------------------------

    def macros(self, names: tuple[str, ...]) -> dict[str, str | None]:
        return {n: self.getsymval(n) for n in names}

    @property
    def connector(self) -> str:
        s = self.session.session
        return s.connector.identity if s is not None and s.connector is not None else ""

    def refuse(self, stage: str, reply: Reply, recipient: str = "") -> Any:
        """Refuse with Exchange's words (and say so in the protocol log)."""
        self.plog.sent(reply)
        code, enhanced, text = wire(reply)
        with contextlib.suppress(Exception):  # the verdict stands; Postfix's own text is sent
            self.setreply(code, enhanced, text)
        self.shared.metrics.decisions.labels(self.connector, stage, code).inc()
        qid = ""
        with contextlib.suppress(Exception):  # the queue id is for the log only
            qid = queue_id(self.macros(("i",)))
        self.shared.log(me.MilterDecision(stage, self.connector, self.client, qid, self.sender, recipient, reply))
        return Milter.TEMPFAIL if reply.code < 500 else Milter.REJECT

    def answer(self, stage: str, verdict: Continue | Refuse, recipient: str = "") -> Any:
        if isinstance(verdict, Refuse):
            self.plog.info(verdict.note)
            return self.refuse(stage, verdict.reply, recipient)
        if verdict.reply is not None:
            self.plog.sent(verdict.reply)
        self.shared.metrics.decisions.labels(self.connector, stage, "continue").inc()
        return Milter.CONTINUE

    # -- callbacks -----------------------------------------------------------------------------

    @guarded("CONNECT")
    def connect(self, hostname: str, family: int, hostaddr: Any) -> Any:
        self.shared.metrics.sessions.inc()
        self.counted = True
        peer_ip, peer_port = "", 0
        if isinstance(hostaddr, tuple) and len(hostaddr) >= 2:
            peer_ip, peer_port = str(hostaddr[0]), int(hostaddr[1])
        facts = connect_facts(self.macros(CONNECT_MACROS), peer_ip, peer_port)
        self.client = facts.client_ip
        self.session.connect(facts)
        s = self.session.session
        if s is not None and s.connector is not None:
            self.plog.open(s.connector, facts, s.rights, self.session.engine.connect(s))
        if facts.problem:
            self.shared.metrics.unplaced.inc()
            self.shared.log(me.Unplaced(facts.client_ip, facts.problem))
        elif self.session.covered and facts.listener is not None and facts.client_port:
            self.key = SessionKey(facts.listener.context, facts.client_ip, str(facts.client_port))
            if not self.shared.coverage.register(self.key):
                self.shared.metrics.coverage_failures.inc()
        return Milter.CONTINUE

    @guarded("HELO")
    def hello(self, hostname: str) -> Any:
        tls = tls_facts(self.macros(HELO_MACROS))
        self.session.hello(hostname, tls)
        self.plog.hello(hostname, tls)
        return Milter.CONTINUE

    @guarded("MAIL")
    def envfrom(self, sender: str, *params: str) -> Any:
        self.sender = sender.strip().strip("<>")
        m = self.macros(MAIL_MACROS + HELO_MACROS[:1])
        auth = auth_facts(m)
        verdict = self.session.mail(sender, params, auth, tls_facts(m))
        s = self.session.session
        self.plog.mail(sender, params, auth.user, s.rights if s is not None else None)
        return self.answer("MAIL", verdict)

    @guarded("RCPT")
    def envrcpt(self, recipient: str, *params: str) -> Any:
        verdict = self.session.rcpt(recipient)
        self.plog.rcpt(recipient, params)
        return self.answer("RCPT", verdict, recipient.strip().strip("<>"))

    @guarded("DATA")
    def data(self) -> Any:
        """Only for the protocol log (``< DATA``, ``> 354``): DATA itself is Postfix's to answer."""
        self.plog.data(self.session.data())
        return Milter.CONTINUE

    @Milter.noreply
    def header(self, name: str, value: str) -> Any:
        if not self.failed:
            try:
                self.session.header(name, value)
            except Exception as e:
                self.failed = True
                self.shared.metrics.errors.labels("HEADER").inc()
                self.shared.log(me.CallbackFailed("HEADER", self.client, f"{type(e).__name__}: {e}"[:400]))
        return Milter.CONTINUE

    @guarded("END-OF-HEADERS")
    def eoh(self) -> Any:
        mid = self.session.message_id
        if mid:
            self.plog.info(f"receiving message with InternetMessageId {mid}")
        return self.answer("END-OF-HEADERS", self.session.end_of_headers())

    @Milter.noreply
    def body(self, chunk: bytes) -> Any:
        if not self.failed:
            try:
                self.session.body(chunk)
            except Exception as e:
                self.failed = True
                self.shared.metrics.errors.labels("BODY").inc()
                self.shared.log(me.CallbackFailed("BODY", self.client, f"{type(e).__name__}: {e}"[:400]))
        return Milter.CONTINUE

    @guarded("END-OF-MESSAGE")
    def eom(self) -> Any:
        verdict = self.session.end_of_message()
        if isinstance(verdict, Refuse):
            return self.answer("END-OF-MESSAGE", verdict)
        assert isinstance(verdict, Accept)
        for edit in verdict.edits:
            if isinstance(edit, Remove):
                self.chgheader(edit.name, edit.index, "")
            elif isinstance(edit, Add):
                self.addheader(edit.name, edit.value)
        self.shared.metrics.decisions.labels(self.connector, "END-OF-MESSAGE", "250").inc()
        self.plog.sent(verdict.reply)
        if self.shared.tracking is not None and verdict.received is not None:
            self.track(verdict.received)
        if self.shared.verbose:
            qid = queue_id(self.macros(("i",)))
            self.shared.log(
                me.MilterDecision("END-OF-MESSAGE", self.connector, self.client, qid, self.sender, "", None)
            )
        return Milter.CONTINUE

    def track(self, r: Received) -> None:
        """The RECEIVE row (spec §5.2); the policy daemon writes none for covered sessions."""
        s, facts = self.session.session, self.session.facts
        if s is None or facts is None or self.shared.tracking is None:
            return
        as_ = auth_as(s)
        self.messages += 1
        self.shared.tracking.receive(
            MessageFacts(
                time=time.time(),
                queue_id=queue_id(self.macros(("i",))) or "",
                connector_id=self.connector,
                client_ip=facts.client_ip,
                client_hostname=self.session.helo or "",
                server_ip=facts.daemon_addr,
                server_hostname=self.session.engine.org.server.fqdn,
                sender=r.sender,
                recipients=r.recipients,
                size=r.size,
                message_id=r.message_id,
                subject=r.subject,
                auth_mechanism=auth_mechanism(s, as_),
                auth_as=as_,
                directionality="Originating" if as_ == "Internal" else "Incoming",
                session_id=self.plog.id,
                session_start=self.plog.start,
                message_number=self.messages,
                network_message_id=r.network_message_id,
            )
        )

    def abort(self) -> Any:
        self.session.abort()
        return Milter.CONTINUE

    def close(self) -> Any:
        try:  # nothing left to answer: never raise here
            self.plog.close()
            if self.key is not None:
                self.shared.coverage.withdraw(self.key)
                self.key = None
            if self.counted:
                self.shared.metrics.sessions.dec()
                self.counted = False
        except Exception:
            pass
        return Milter.CONTINUE
