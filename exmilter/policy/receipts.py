"""RECEIVE tracking events from the policy daemon, for the sessions it judges itself.

In a policy-only deployment (or for a listener without the milter) nobody else sees a
message being accepted, so the policy daemon writes its RECEIVE row at END-OF-MESSAGE
from what Postfix's requests carried: the queue id, connector, client and HELO, sender,
the recipients it accepted at RCPT (Postfix sends ``recipient`` at END-OF-MESSAGE only when
there is exactly one), the size, and the AuthMechanism code and AuthAs of the session (spec
§4.2, §4.4). It cannot see the message id or the subject: those come with the delivery rows
(Postfix's ``cleanup`` logs the message id, exmilter.logs.postfixlog) or from the milter,
which writes RECEIVE itself for the sessions it covers (the policy daemon then answers
without deciding, so no row is written twice).

In the daemon the accepted recipients come from the decider, which remembers each
transaction's answers anyway (for re-sends, ``POLICY_TRANSACTION_TTL`` after its last
request): an RCPT costs the logs nothing. A transaction silent for longer (a DATA phase
over ten minutes) lists only the ``recipient`` Postfix sends with a single recipient.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from exmilter.engine import Engine, Session
from exmilter.listener import Listener
from exmilter.logs.tracking import MessageFacts, TrackingLog, auth_as, auth_mechanism
from exmilter.policy.decide import Decision

#: Transactions whose accepted recipients are remembered until their END-OF-MESSAGE (at least
#: half as many once full: the older half is forgotten at once).
MAX_TRANSACTIONS = 10_000
#: Recipients remembered per transaction (the RECEIVE row's recipient-address).
MAX_RECIPIENTS = 5_000


class Receipts:
    """Accepted recipients per transaction, and a RECEIVE row when the message is queued."""

    def __init__(
        self,
        log: TrackingLog,
        server_hostname: str,
        clock: Callable[[], float] = time.time,
        recipients: Callable[[str], list[str] | None] | None = None,
    ) -> None:
        """``recipients``: a transaction's accepted recipients as the decider remembers them
        (``Decider.accepted_recipients``, the daemon's): then an RCPT costs nothing here."""
        self.log = log
        self.server_hostname = server_hostname
        self.clock = clock
        self._recipients = recipients
        # insertion-ordered; full, the older half is forgotten at once (amortised: a plain dict
        # costs a new transaction less than an OrderedDict's insert and popitem)
        self._rcpts: dict[str, list[str]] = {}

    def record(self, engine: Engine, req: Mapping[str, str], d: Decision, session: Session | None = None) -> None:
        """Called after each decision; ``session``: the one it was made with (AuthAs, AuthMechanism)."""
        reply = d.reply
        if reply is None or not reply.accepted or d.duplicate:
            return
        stage = d.stage
        if stage == "RCPT":
            if self._recipients is not None:
                return
            instance = req.get("instance", "")
            if not instance:
                return
            rcpts = self._rcpts.get(instance)
            if rcpts is None:
                if len(self._rcpts) >= MAX_TRANSACTIONS:
                    self._rcpts = dict(list(self._rcpts.items())[MAX_TRANSACTIONS // 2 :])
                self._rcpts[instance] = [req.get("recipient", "")]
            elif len(rcpts) < MAX_RECIPIENTS:
                rcpts.append(req.get("recipient", ""))
        elif stage == "END-OF-MESSAGE":
            self._receive(engine, req, d, session)

    def _receive(self, engine: Engine, req: Mapping[str, str], d: Decision, session: Session | None) -> None:
        get = req.get
        instance = get("instance", "")
        known = self._recipients(instance) if self._recipients is not None else self._rcpts.pop(instance, None)
        rcpts = known or ([get("recipient", "")] if get("recipient") else [])
        if session is None:
            session = self._session(engine, req)
        as_ = auth_as(session) if session is not None else "Anonymous"
        mech = auth_mechanism(session, as_) if session is not None else "00"
        size = get("size", "")
        self.log.receive(
            MessageFacts(
                time=self.clock(),
                queue_id=get("queue_id", ""),
                connector_id=d.connector,
                client_ip=get("client_address", ""),
                client_hostname=get("helo_name", ""),
                server_ip=get("server_address", ""),
                server_hostname=self.server_hostname,
                sender=get("sender", ""),
                recipients=tuple(rcpts),
                size=int(size) if size.isdigit() else 0,
                message_id="",
                subject="",
                auth_mechanism=mech,
                auth_as=as_,
                directionality="Originating" if as_ == "Internal" else "Incoming",
            )
        )

    @staticmethod
    def _session(engine: Engine, req: Mapping[str, str]) -> Session | None:
        ctx = req.get("policy_context", "")
        try:
            if ctx:
                lst = Listener.parse(ctx)
                address, port = lst.address, lst.port
            else:
                address, port = req.get("server_address") or None, int(req.get("server_port", "0") or 0)
            return engine.open_session(
                address,
                port,
                req.get("client_address", ""),
                auth_user=req.get("sasl_username") or None,
                tls=bool(req.get("encryption_protocol")),
            )
        except ValueError:
            return None
