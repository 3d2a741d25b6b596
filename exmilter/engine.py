"""The receive-connector engine: configuration in, Exchange's decisions out.

Pure and shared by both front ends (policy daemon and milter): no sockets, no logging,
the clock injected. One :class:`Engine` is built per loaded configuration and is safe
to call from many threads; the only mutable state is the message-rate counters, which
sit behind a lock. Every check follows the order of the spec's tables (§3.4–§3.7) and
returns a :class:`~exmilter.replies.Reply` constant.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from exmilter import replies as R
from exmilter.domains import AcceptedDomains, address_domain
from exmilter.model import AuthMechanism, Organization, ReceiveConnector, Right, User
from exmilter.permissions import Principal, access_list, effective_rights
from exmilter.replies import Reply
from exmilter.selection import ConnectorTable, IPAddress, Match

Clock = Callable[[], float]

#: Address length limits (spec §1.2 "Address length").
MAX_ADDRESS = 571
MAX_LONG_ADDRESS = 1860

_ADDRESS_RE = re.compile(r"^[^\s<>@()\[\],;:\"\\]+(?:\"[^\"]*\")?@[A-Za-z0-9_.\-\[\]:]+$|^\"[^\"]+\"@[A-Za-z0-9_.\-]+$")
_RESERVED_TLDS = frozenset({"test", "example", "invalid", "localhost"})
_RESERVED_SLDS = frozenset({"example.com", "example.net", "example.org"})


@dataclass(frozen=True)
class Session:
    """What Exchange knows about one SMTP connection once the connector is chosen."""

    match: Match | None
    client_ip: str
    principal: Principal
    rights: Right
    tls: bool = False
    helo: str | None = None  # None: not known to the caller; "": no HELO/EHLO was sent
    auth_user: str | None = None

    @property
    def connector(self) -> ReceiveConnector | None:
        return self.match.connector if self.match else None

    @property
    def authenticated(self) -> bool:
        return self.principal.authenticated

    def has(self, right: Right) -> bool:
        return right in self.rights


class MessageRateLimiter:
    """Exchange's per-key fixed 60-second window (spec §3.10), shared across connectors."""

    WINDOW = 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, list[float]] = {}  # key -> [window start, count]
        self._next_purge = 0.0

    def take(self, key: str, limit: int, now: float) -> bool:
        """Count one MAIL FROM for ``key``; False when it is over ``limit`` this window."""
        with self._lock:
            if now >= self._next_purge:
                self._purge(now)
            w = self._windows.get(key)
            if w is None or now - w[0] >= self.WINDOW:
                w = [now, 0]
                self._windows[key] = w
            w[1] += 1
            return w[1] <= limit

    def give_back(self, key: str) -> None:
        with self._lock:
            w = self._windows.get(key)
            if w is not None and w[1] > 0:
                w[1] -= 1

    def _purge(self, now: float) -> None:
        stale = [k for k, w in self._windows.items() if now - w[0] >= self.WINDOW]
        for k in stale:
            del self._windows[k]
        self._next_purge = now + self.WINDOW

    def __len__(self) -> int:
        return len(self._windows)


class Engine:
    """Decisions for one configuration generation."""

    def __init__(
        self, org: Organization, *, clock: Clock = time.monotonic, rate_limiter: MessageRateLimiter | None = None
    ) -> None:
        self.org = org
        self.clock = clock
        self.table = ConnectorTable(org.receive_connectors)
        self.domains = AcceptedDomains(org.accepted_domains)
        # A reload keeps the counters: Exchange's windows do not restart with the config.
        self.rate_limiter = rate_limiter or MessageRateLimiter()
        self._acl = {c.name: access_list(c, org.server.domain) for c in org.receive_connectors}
        self._users = {u.name.lower(): u for u in org.users}

    # -- connection ---------------------------------------------------------------------

    def select(self, local_ip: str | IPAddress | None, local_port: int, client_ip: str | IPAddress) -> Match | None:
        return self.table.select(local_ip, local_port, client_ip)

    def open_session(
        self,
        local_ip: str | IPAddress | None,
        local_port: int,
        client_ip: str,
        *,
        auth_user: str | None = None,
        tls: bool = False,
        helo: str | None = None,
    ) -> Session:
        """Select the connector and compute the session's rights (spec §2, §1.8)."""
        match = self.select(local_ip, local_port, client_ip)
        principal = self.principal(match.connector if match else None, auth_user)
        rights = self.rights(match.connector, principal) if match else Right.NONE
        return Session(match, str(client_ip), principal, rights, tls, helo, auth_user)

    def principal(self, connector: ReceiveConnector | None, auth_user: str | None) -> Principal:
        if connector is not None and AuthMechanism.ExternalAuthoritative in connector.auth_mechanism:
            return Principal.externally_secured()
        if auth_user:
            return Principal.user(auth_user, self.org.server, self.org.users)
        return Principal.anonymous()

    def rights(self, connector: ReceiveConnector, principal: Principal) -> Right:
        return effective_rights(self._acl[connector.name], principal, self.org.server.domain)

    def connect(self, s: Session) -> Reply:
        if s.connector is None:
            return R.NO_CONNECTOR
        return Reply(220, "", s.connector.banner_text().removeprefix("220 ").removeprefix("220"))

    # -- MAIL FROM (spec §3.4) ------------------------------------------------------------

    def mail(self, s: Session, sender: str, *, size: int = 0, now: float | None = None) -> Reply:
        c = s.connector
        if c is None:
            return R.NO_CONNECTOR
        if not self._valid_address(c, sender, null_ok=True):
            return R.INVALID_SENDER
        if s.helo == "":
            return R.SEND_HELLO_FIRST
        if c.require_tls and not s.tls:
            return R.STARTTLS_REQUIRED
        if not self._take_rate_slot(s, c, self.clock() if now is None else now):
            return R.MESSAGE_RATE_EXCEEDED
        if not s.has(Right.SMTPSubmit):
            return R.SUBMIT_DENIED if s.authenticated else R.ANONYMOUS_SUBMIT_DENIED
        if (
            size > c.max_message_size
            and not s.has(Right.BypassMessageSizeLimit)
            and not s.has(Right.AcceptOrganizationHeaders)
        ):
            return R.MESSAGE_SIZE_EXCEEDED_MAIL
        return R.SENDER_OK

    def _take_rate_slot(self, s: Session, c: ReceiveConnector, now: float) -> bool:
        limit, source = c.message_rate_limit, c.message_rate_source
        if limit is None or source == "None" or s.has(Right.BypassMessageSizeLimit):
            return True
        ip_key = f"ip:{s.client_ip}"
        user_key = f"user:{s.auth_user.lower()}" if s.auth_user else None
        if source == "IPAddress" or user_key is None:
            return self.rate_limiter.take(ip_key, limit, now)
        if source == "User":
            return self.rate_limiter.take(user_key, limit, now)
        if not self.rate_limiter.take(user_key, limit, now):  # All: user first, then IP
            return False
        if not self.rate_limiter.take(ip_key, limit, now):
            self.rate_limiter.give_back(user_key)
            return False
        return True

    # -- RCPT TO (spec §3.5) --------------------------------------------------------------

    def rcpt(self, s: Session, recipient: str, *, accepted: int = 0) -> Reply:
        """``accepted`` is how many recipients this transaction already has."""
        c = s.connector
        if c is None:
            return R.NO_CONNECTOR
        if not self._valid_address(c, recipient, null_ok=False):
            return R.INVALID_RECIPIENT
        if accepted >= c.max_recipients_per_message and not s.has(Right.BypassMessageSizeLimit):
            return R.TOO_MANY_RECIPIENTS
        domain = address_domain(recipient)
        reserved = self._reserved(c, domain)
        if reserved is not None:
            return reserved
        if not s.has(Right.SMTPAcceptAnyRecipient) and self.domains.match(domain) is None:
            return R.UNABLE_TO_RELAY
        return R.RECIPIENT_OK

    @staticmethod
    def _reserved(c: ReceiveConnector, domain: str) -> Reply | None:
        labels = domain.split(".")
        if c.reject_single_label_recipient_domains and len(labels) == 1:
            return R.SINGLE_LABEL_DOMAIN
        if c.reject_reserved_top_level_recipient_domains and labels[-1] in _RESERVED_TLDS:
            return R.RESERVED_TLD
        if c.reject_reserved_second_level_recipient_domains and ".".join(labels[-2:]) in _RESERVED_SLDS:
            return R.RESERVED_SLD
        return None

    # -- DATA and end of data (spec §3.6, §3.7) ---------------------------------------------

    def data(self, s: Session, *, accepted: int) -> Reply:
        if s.connector is None:
            return R.NO_CONNECTOR
        return R.START_MAIL_INPUT if accepted > 0 else R.NEED_RCPT

    def end_of_data(
        self,
        s: Session,
        *,
        size: int,
        header_size: int = 0,
        received: Sequence[str] = (),
        mail_from: str | None = None,
        header_from: str | None = None,
        header_sender: str | None = None,
        message_partial: bool = False,
        bare_linefeeds: bool = False,
        original_size: int | None = None,
    ) -> Reply:
        """The end-of-headers checks in the project order (spec §3.6, §7 #13)."""
        c = s.connector
        if c is None:
            return R.NO_CONNECTOR
        bypass_size = s.has(Right.BypassMessageSizeLimit)
        if header_size > c.max_header_size and not bypass_size:
            return R.HEADER_SIZE_EXCEEDED
        if len(received) > c.max_hop_count:
            return R.HOP_COUNT_EXCEEDED
        if c.max_local_hop_count and self.local_hops(c, received) > c.max_local_hop_count:
            return R.HOP_COUNT_EXCEEDED
        denied = self.sender_denial(s, mail_from, header_from, header_sender)
        if denied is not None:
            return denied
        if message_partial:
            return R.MESSAGE_PARTIAL
        if bare_linefeeds and c.bare_linefeed_rejection_enabled:
            return R.BARE_LINEFEEDS
        effective = size
        if original_size is not None and s.has(Right.AcceptOrganizationHeaders):
            effective = min(size, original_size)
        if effective > c.max_message_size and not bypass_size:
            return R.MESSAGE_SIZE_EXCEEDED
        return R.QUEUED

    @staticmethod
    def local_hops(c: ReceiveConnector, received: Sequence[str]) -> int:
        """``Received:`` headers written by this server (spec §3.6 #3, §7 #19)."""
        by = re.compile(r"\bby\s+" + re.escape(c.fqdn) + r"\b", re.IGNORECASE)
        return sum(
            1
            for h in received
            if by.search(h) and (re.search(r"\bwith\s+Microsoft SMTP Server", h, re.I) or "(Postfix)" in h)
        )

    def sender_denial(
        self, s: Session, mail_from: str | None, header_from: str | None, header_sender: str | None
    ) -> Reply | None:
        """Sender authorisation of P1 and P2 (spec §3.7); None when allowed."""
        if s.has(Right.SMTPAcceptAnySender) and s.has(Right.SMTPAcceptAuthoritativeDomainSender):
            return None
        p1 = (mail_from or "").strip().strip("<>")
        p2 = (header_sender or header_from or "").strip()
        for address in (p1, p2 if p2 and p2.lower() != p1.lower() else ""):
            if address and not self.may_send_as(s, address):
                return R.SEND_AS_DENIED if s.authenticated else R.ANONYMOUS_SEND_AS_DENIED
        return None

    def may_send_as(self, s: Session, address: str) -> bool:
        internal = self.domains.is_internal(address)
        if internal and s.has(Right.SMTPAcceptAuthoritativeDomainSender):
            return True
        if not internal and s.has(Right.SMTPAcceptAnySender):
            return True
        if internal and s.auth_user:
            user = self.user(s.auth_user)
            addr = address.lower()
            return user is not None and (addr in user.addresses or addr in user.send_as)
        return False

    def user(self, login: str) -> User | None:
        return self._users.get(login.lower()) or self._users.get(login.rpartition("\\")[2].lower())

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _valid_address(c: ReceiveConnector, address: str, *, null_ok: bool) -> bool:
        a = address.strip()
        if a.startswith("<") and a.endswith(">"):
            a = a[1:-1]
        if not a:
            return null_ok
        if len(a) > (MAX_LONG_ADDRESS if c.long_addresses_enabled else MAX_ADDRESS):
            return False
        return bool(_ADDRESS_RE.match(a))
