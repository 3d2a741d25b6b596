"""One policy request in, one access(5) action out: the engine's verdict per SMTP stage.

Pure (no Twisted, no sockets, the clock injected) so every rule is table-testable. The
only state is what Postfix does not tell us: how many recipients of a transaction we
already accepted, and the answers already given, so a request Postfix re-sends after a
timeout (postfix-notes §1.5) gets the same answer without counting twice. Both live in
bounded, expiring maps; they outlive configuration reloads on purpose (a transaction in
flight keeps its count).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

from exmilter.engine import Clock, Engine, Session
from exmilter.limits import (
    POLICY_MAIL_WINDOW,
    POLICY_MAX_ANSWERS,
    POLICY_MAX_CONTEXTS,
    POLICY_MAX_DECISIONS,
    POLICY_MAX_PINNED_SESSIONS,
    POLICY_MAX_SESSIONS,
    POLICY_MAX_TRANSACTIONS,
    POLICY_PIN_TTL,
    POLICY_TRANSACTION_TTL,
)
from exmilter.listener import Listener
from exmilter.policy.protocol import OTHER_STATE, PROTOCOL_STATES, encode_action
from exmilter.replies import CONFIGURATION_PROBLEM as CONFIG_PROBLEM
from exmilter.replies import RATE_WINDOW_UNAVAILABLE, Reply

STATES = frozenset(PROTOCOL_STATES)
#: The states the engine judges; the rest are answered DUNNO (render-postfix calls the
#: daemon only at these, docs/render-postfix.md).
DECIDED_STATES = frozenset({"CONNECT", "MAIL", "RCPT", "END-OF-MESSAGE"})


@dataclass(frozen=True, slots=True)
class Decision:
    """What to answer and why: the engine reply (None when not consulted) and its action."""

    action: str
    payload: bytes  # the complete wire answer, rendered once
    reply: Reply | None
    connector: str  # connector identity, "" when none was selected or needed
    stage: str  # protocol_state, OTHER_STATE for anything unknown
    duplicate: bool = False
    note: str = ""
    #: Logged even without ``--verbose``: a refusal, a re-send or a note. Derived once here,
    #: since the daemon asks for every request and the answers themselves are shared.
    notable: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        refused = self.reply is not None and not self.reply.accepted
        object.__setattr__(self, "notable", refused or self.duplicate or bool(self.note))  # frozen: set once

    @property
    def code(self) -> str:
        """Bounded metric label: the reply code, or ``none`` when the engine was not asked."""
        return str(self.reply.code) if self.reply is not None else "none"


_DUNNO = encode_action("DUNNO")
_PASS = {s: Decision("DUNNO", _DUNNO, None, "", s) for s in (*STATES, OTHER_STATE)}
#: Sessions the milter judges (docs/milter.md, "Who judges which stage"): the policy daemon
#: does not decide them; OK at RCPT is Postfix's relay permission, the milter refuses verbatim.
_COVERED = {
    "MAIL": Decision("DUNNO", _DUNNO, None, "", "MAIL"),
    "RCPT": Decision("OK", encode_action("OK"), None, "", "RCPT"),
    "END-OF-MESSAGE": Decision("DUNNO", _DUNNO, None, "", "END-OF-MESSAGE"),
}


class Coverage(Protocol):
    """Which sessions the milter judges (exmilter.policy.coverage.CoverageReceiver)."""

    def covers(self, context: str, client: str, port: str) -> bool: ...


def passthrough(stage: str, note: str = "") -> Decision:
    """``DUNNO`` for a stage the engine has nothing to say about."""
    return Decision("DUNNO", _DUNNO, None, "", stage, note=note) if note else _PASS[stage]


class _Transaction:
    __slots__ = ("accepted", "answers", "seen")

    def __init__(self, now: float) -> None:
        self.accepted = 0
        self.seen = now
        self.answers: dict[tuple[str, str], Decision] = {}


K = TypeVar("K")
V = TypeVar("V")


class _Expiring(OrderedDict[K, V]):
    """An LRU map with an idle timeout: ``sweep`` drops the oldest entries while there are
    more than ``max_items`` or the oldest was last seen ``ttl`` seconds ago or more.
    Callers keep it in last-use order (``move_to_end`` on a hit, insert at the end)."""

    def __init__(self, max_items: int, ttl: float, seen: Callable[[V], float]) -> None:
        super().__init__()
        self.max_items = max_items
        self.ttl = ttl
        self._seen = seen

    def sweep(self, now: float) -> None:
        seen = self._seen
        while self:
            key, value = next(iter(self.items()))
            if len(self) <= self.max_items and now - seen(value) < self.ttl:
                break
            del self[key]


_Mail = tuple[int, float, Decision]  # (policy connection, first seen, the answer)


_PinKey = tuple[str | None, int, str, str]  # (listener address, port, client address, client port)
#: Where an SMTP session's connector is remembered: its first request (CONNECT, when asked)
#: and the start of each transaction (every later request of a session follows a MAIL).
_SESSION_STARTS = frozenset({"CONNECT", "MAIL"})
_PinValue = tuple[Engine, str]  # the engine that chose the connector, and its name


class _Pins:
    """Which connector each live SMTP session has, at the cost of a dict lookup per request.

    Two generations of plain dicts: entries go into the young one; when it is older than
    half the idle time or fuller than half the bound, the old one is dropped and the young
    one becomes old. An entry used again is copied back into the young one, so a session
    that keeps talking stays; one idle for a whole ``ttl`` is forgotten. At most
    ``max_items`` entries are held.
    """

    __slots__ = ("_half_items", "_half_ttl", "_old", "_started", "_young")

    def __init__(self, max_items: int, ttl: float) -> None:
        self._half_items = max(1, max_items // 2)
        self._half_ttl = ttl / 2
        self._young: dict[_PinKey, _PinValue] = {}
        self._old: dict[_PinKey, _PinValue] = {}
        self._started = 0.0

    def get(self, key: _PinKey, now: float) -> _PinValue | None:
        self._age(now)
        value = self._young.get(key)
        if value is None:
            value = self._old.get(key)
            if value is not None:
                self._young[key] = value
        return value

    def put(self, key: _PinKey, value: _PinValue, now: float) -> None:
        self._age(now)
        self._young[key] = value

    def _age(self, now: float) -> None:
        if now - self._started >= self._half_ttl or len(self._young) >= self._half_items:
            self._old, self._young, self._started = self._young, {}, now

    def __len__(self) -> int:
        return len(self._young) + len(self._old)


def _txn_seen(t: _Transaction) -> float:
    return t.seen


def _mail_seen(m: _Mail) -> float:
    return m[1]


class Decider:
    """Maps requests to decisions against whichever :class:`Engine` is current.

    Its memory is bounded (exmilter.limits, the decider's section: transactions, their
    answers, cached sessions, parsed contexts, rendered decisions).
    """

    def __init__(
        self,
        clock: Clock = time.monotonic,
        *,
        max_transactions: int = POLICY_MAX_TRANSACTIONS,
        transaction_ttl: float = POLICY_TRANSACTION_TTL,
        mail_window: float = POLICY_MAIL_WINDOW,
        max_sessions: int = POLICY_MAX_SESSIONS,
        coverage: Coverage | None = None,
    ) -> None:
        self.clock = clock
        self.coverage = coverage
        self._txns: _Expiring[str, _Transaction] = _Expiring(max_transactions, transaction_ttl, _txn_seen)
        self._mails: _Expiring[tuple[str, str, str, str], _Mail] = _Expiring(max_transactions, mail_window, _mail_seen)
        self._sessions: dict[tuple, Session] = {}
        self._sessions_engine: Engine | None = None
        self._max_sessions = max_sessions
        self._contexts: dict[str, Listener | str] = {}  # a policy_context: its listener, or why it is unusable
        self._decisions: dict[tuple[Reply, str, str], Decision] = {}
        # (listener, client address, client port) -> the engine that chose the session's
        # connector and its name: a reload never moves a live session (spec §2.1 step 6).
        self._pins = _Pins(POLICY_MAX_PINNED_SESSIONS, POLICY_PIN_TTL)
        self._reloaded_at = float("-inf")  # when the decider first saw the current engine replace another
        #: The session the last :meth:`decide` (or :meth:`window_unavailable`) judged, None when
        #: it judged none: the logs reuse its rights instead of selecting the connector again.
        self.session: Session | None = None

    def __len__(self) -> int:
        return len(self._txns)

    # -- entry point ------------------------------------------------------------------------

    def decide(
        self, engine: Engine, req: Mapping[str, str], conn: int = 0, counted: Mapping[str, int] | None = None
    ) -> Decision:
        """``conn`` identifies the policy connection; it tells a re-sent MAIL from a new one.

        ``counted``: a MAIL's counts from the shared window (:meth:`shared_rate_keys`, issue #17).
        """
        self.session = None
        state = req.get("protocol_state", "")
        stage = state if state in STATES else OTHER_STATE
        if stage not in DECIDED_STATES:
            return passthrough(stage)
        request = req.get("request")
        if request is not None and request != "smtpd_access_policy":
            return passthrough(stage, f"request={request[:40]!r} is not smtpd_access_policy")
        covered = _COVERED.get(stage)
        # A MAIL counted in the shared window (issue #17) is judged here even when the milter
        # covers the session: the milter counts MessageRateLimit per node only.
        if (
            covered is not None
            and counted is None
            and self.coverage is not None
            and self.coverage.covers(
                req.get("policy_context", ""), req.get("client_address", ""), req.get("client_port", "")
            )
        ):
            return covered
        now = self.clock()
        instance = req.get("instance", "")
        txn: _Transaction | None = None
        key = (stage, req.get("recipient", ""))
        if instance:
            txn = self._transaction(instance, now)
            done = txn.answers.get(key)
            if done is not None:
                return replace(done, duplicate=True)
        mail_key = None
        if stage == "MAIL" and not instance:
            mail_key = (
                req.get("client_address", ""),
                req.get("client_port", ""),
                req.get("sender", ""),
                req.get("size", ""),
            )
            d = self._mail_duplicate(mail_key, conn, now)
            if d is not None:
                return d
        decision = self._decide(engine, req, stage, txn, now, counted)
        if txn is not None and len(txn.answers) < POLICY_MAX_ANSWERS:
            txn.answers[key] = decision
        if mail_key is not None:
            self._mails.pop(mail_key, None)
            self._mails[mail_key] = (conn, now, decision)
        return decision

    # -- engine -----------------------------------------------------------------------------

    def _decide(
        self,
        engine: Engine,
        req: Mapping[str, str],
        stage: str,
        txn: _Transaction | None,
        now: float,
        counted: Mapping[str, int] | None = None,
    ) -> Decision:
        session, note = self._session(engine, req, stage, now)
        self.session = session
        size = _number(req.get("size")) if stage in ("MAIL", "END-OF-MESSAGE") else 0
        if session is None or size is None:
            note = note or f"size {req.get('size', '')[:40]!r} is not a number"
            return replace(self.decision(CONFIG_PROBLEM, "", stage), note=note)
        if stage == "CONNECT":
            reply = engine.connect(session)
        elif stage == "MAIL":
            reply = engine.mail(session, req.get("sender", ""), size=size, now=now, counted=counted)
        elif stage == "RCPT":
            reply = engine.rcpt(session, req.get("recipient", ""), accepted=txn.accepted if txn else 0)
            if reply.accepted and txn is not None:
                txn.accepted += 1
        else:
            reply = engine.end_of_data(session, size=size, mail_from=req.get("sender", ""))
        c = session.connector
        d = self.decision(reply, c.identity if c is not None else "", stage)
        if session.ignored_login:  # judged anonymous: say whose login was not trusted, and why
            d = replace(
                d, note=f"sasl_username {req.get('sasl_username', '')[:80]!r} not trusted: {session.ignored_login}"
            )
        return d

    def shared_rate_keys(self, engine: Engine, req: Mapping[str, str], conn: int = 0) -> tuple[tuple[str, int], ...]:
        """What a shared window must count before :meth:`decide` answers this request (issue #17).

        Empty unless it is a new MAIL whose connector limits the rate: a re-sent MAIL is
        answered from memory and must not be counted twice.
        """
        if req.get("protocol_state") != "MAIL" or req.get("request", "smtpd_access_policy") != "smtpd_access_policy":
            return ()
        now = self.clock()
        instance = req.get("instance", "")
        if instance:
            txn = self._txns.get(instance)
            if txn is not None and ("MAIL", req.get("recipient", "")) in txn.answers:
                return ()
        else:
            key = (
                req.get("client_address", ""),
                req.get("client_port", ""),
                req.get("sender", ""),
                req.get("size", ""),
            )
            prev = self._mails.get(key)
            if prev is not None and prev[0] != conn and now - prev[1] < self._mails.ttl:
                return ()
        session, _ = self._session(engine, req, "MAIL", now)
        return engine.rate_keys(session) if session is not None else ()

    def accepted_recipients(self, instance: str) -> list[str] | None:
        """The recipients accepted so far in transaction ``instance``, in order; None when it is not
        remembered. What the RECEIVE row lists (exmilter.policy.receipts), from the answers kept
        for re-sends, so the logs keep no second table per RCPT."""
        txn = self._txns.get(instance) if instance else None
        if txn is None:
            return None
        return [
            rcpt
            for (stage, rcpt), d in txn.answers.items()
            if stage == "RCPT" and not d.duplicate and d.reply is not None and d.reply.accepted
        ]

    def window_unavailable(self, engine: Engine, req: Mapping[str, str], reason: str) -> Decision:
        """A MAIL the shared window could not count: a temporary failure, noted (so logged)."""
        session, _ = self._session(engine, req, "MAIL", self.clock())
        self.session = session
        c = session.connector if session is not None else None
        d = self.decision(RATE_WINDOW_UNAVAILABLE, c.identity if c is not None else "", "MAIL")
        return replace(d, note=f"shared MessageRateLimit window unavailable ({reason})")

    def decision(self, reply: Reply, connector: str, stage: str) -> Decision:
        """Shared, pre-rendered decisions: the set is bounded by the configuration."""
        k = (reply, connector, stage)
        d = self._decisions.get(k)
        if d is None:
            # OK at RCPT is what permits relay in the rendered Postfix restrictions.
            action = ("OK" if stage == "RCPT" else "DUNNO") if reply.accepted else reply.line
            d = Decision(action, encode_action(action), reply, connector, stage)
            if len(self._decisions) > POLICY_MAX_DECISIONS:
                self._decisions.clear()
            self._decisions[k] = d
        return d

    def _session(
        self, engine: Engine, req: Mapping[str, str], stage: str = "", now: float = 0.0
    ) -> tuple[Session | None, str]:
        client = req.get("client_address", "")
        if not client:
            return None, "no client_address in the request"
        listener = self._listener(req)
        if isinstance(listener, str):
            return None, listener
        local, port = listener
        auth_user = req.get("sasl_username") or None
        tls = bool(req.get("encryption_protocol"))
        helo = req.get("helo_name")
        if self._sessions_engine is not engine:
            if self._sessions_engine is not None:
                self._reloaded_at = now
            self._sessions.clear()
            self._sessions_engine = engine
        # A CONNECT begins a session (a new TCP connection): selected afresh. Without a port a
        # session cannot be told from another one: selected afresh too. Pins are only read
        # while a session may have begun under an earlier configuration (a reload less than
        # the pins' lifetime ago), and only written where a session or a transaction begins.
        client_port = req.get("client_port", "")
        pin_key = (local, port, client, client_port) if client_port else None
        pin = None
        if pin_key is not None and stage != "CONNECT" and now - self._reloaded_at < POLICY_PIN_TTL:
            pin = self._pins.get(pin_key, now)
        pinned = pin[1] if pin is not None and pin[0] is not engine else None
        k = (local, port, client, auth_user, tls, helo, pinned)
        s = self._sessions.get(k)
        if s is None:
            try:
                s = engine.open_session(local, port, client, auth_user=auth_user, tls=tls, helo=helo, connector=pinned)
            except ValueError as e:
                return None, f"bad address in the request: {e}"
            if len(self._sessions) >= self._max_sessions:
                self._sessions.clear()
            self._sessions[k] = s
        if pin_key is not None and pinned is None and s.match is not None and stage in _SESSION_STARTS:
            self._pins.put(pin_key, (engine, s.match.connector.name), now)
        return s, ""

    def _listener(self, req: Mapping[str, str]) -> tuple[str | None, int] | str:
        """``(local address or None for a wildcard, port)``, or why the listener is unknown.

        A non-empty ``policy_context`` is authoritative: the renderer wrote it for exactly one
        binding. One that does not parse is a configuration problem, answered with a temporary
        failure; falling back to ``server_address``/``server_port`` could pick another
        connector (behind a proxy, or after the sandbox moved the ports, postfix-notes §4).
        Only a request without one (absent or empty) is placed by ``server_address``/``server_port``.
        """
        ctx = req.get("policy_context")
        if ctx:
            lst = self._contexts.get(ctx)
            if lst is None:
                try:
                    lst = Listener.parse(ctx)
                except ValueError as e:
                    lst = f"unusable policy_context {ctx[:80]!r}: {str(e)[:200]}"
                if len(self._contexts) > POLICY_MAX_CONTEXTS:
                    self._contexts.clear()
                self._contexts[ctx] = lst
            if isinstance(lst, str):
                return lst
            return lst.address, lst.port
        port = _number(req.get("server_port"))
        if port is None or not 0 < port < 65536:
            return "no policy_context and no server_address/server_port: cannot identify the listener"
        return req.get("server_address") or None, port

    # -- idempotency ------------------------------------------------------------------------

    def _transaction(self, instance: str, now: float) -> _Transaction:
        txns = self._txns
        txn = txns.get(instance)
        if txn is None:
            txn = txns[instance] = _Transaction(now)
            txns.sweep(now)
        else:
            txn.seen = now
            txns.move_to_end(instance)
        return txn

    def _mail_duplicate(self, key: tuple[str, str, str, str], conn: int, now: float) -> Decision | None:
        """A MAIL re-send arrives on a new policy connection (Postfix reconnects after a
        timeout); the same SMTP session's next MAIL arrives on the same one."""
        mails = self._mails
        mails.sweep(now)
        prev = mails.get(key)
        if prev is not None and prev[0] != conn and now - prev[1] < mails.ttl:
            mails[key] = (conn, prev[1], prev[2])  # the session's next MAIL comes on this connection
            return replace(prev[2], duplicate=True)
        return None


def _number(text: str | None) -> int | None:
    """A decimal attribute as Postfix writes it: ASCII digits; absent or empty is 0 (Postfix
    sends nothing or 0 when it has no value). Anything else (a sign, spaces, ``1_000``,
    other scripts' digits, more digits than a 64-bit count) is None: not a value Postfix
    sends, so the request cannot be decided (a temporary failure, never a guess)."""
    if not text:
        return 0
    if len(text) > 19 or not (text.isascii() and text.isdigit()):
        return None
    return int(text)
