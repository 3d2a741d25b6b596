"""The receive-connector engine: configuration in, Exchange's decisions out.

Pure and shared by both front ends (policy daemon and milter): no sockets, no logging,
the clock injected. One :class:`Engine` is built per loaded configuration and is safe
to call from many threads; the only mutable state is the message-rate counters, which
sit behind a lock. Every check follows the order of the spec's tables (§3.4–§3.7) and
returns a :class:`~exmilter.replies.Reply` constant.
"""

from __future__ import annotations

import enum
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import getaddresses, parseaddr

from exmilter import replies as R
from exmilter.auth import untrusted_login
from exmilter.deployment import completions
from exmilter.domains import AcceptedDomains, address_domain, ascii_domain
from exmilter.message import Message
from exmilter.model import AuthMechanism, Organization, ReceiveConnector, Right, User
from exmilter.permissions import Principal, access_list, effective_rights
from exmilter.replies import Reply
from exmilter.selection import ConnectorTable, Match, normalise
from exmilter.values import IPAddress

Clock = Callable[[], float]

#: Address length limits (spec §1.2 "Address length").
MAX_ADDRESS = 571
MAX_LONG_ADDRESS = 1860

#: ``local@domain`` in the form Postfix hands it on (quotes removed, see :func:`envelope_address`).
#: The local part has no ``@`` (``"a@b"@c`` is refused: Postfix would route on it in places,
#: resolve_dequoted_address). The domain is labels of letters, digits, ``-``, ``_`` (non-ASCII
#: is judged by SmtpUtf8Enabled first and converted by exmilter.domains) or an address literal,
#: with at most one trailing dot: Postfix routes ``labs.local..`` to ``labs.local..``.
_ADDRESS_RE = re.compile(
    r"[^\s<>@()\[\],;:\"\\]+@"
    r"(?:(?:[A-Za-z0-9_\-\u0080-\U0010ffff]+\.)*[A-Za-z0-9_\-\u0080-\U0010ffff]+|\[(?:[0-9.]+|IPv6:[0-9A-Fa-f:.]+)\])"
    r"\.?"
)
#: Routing operators in a local part (``user%example.org@accepted``, ``example.org!user@accepted``).
#: Postfix refuses them from clients without relay rights by default (allow_untrusted_routing=no
#: in reject_unauth_destination, which exmilter replaces); the engine does the same, so that a
#: next hop which still honours them cannot be made to relay (docs/render-postfix.md "Addresses").
_ROUTING = frozenset("%!")
#: RFC 5321 §4.5.1: Postfix accepts RCPT TO:<postmaster> without asking any restriction.
POSTMASTER = "postmaster"
_WITH_EXCHANGE = re.compile(r"\bwith\s+Microsoft SMTP Server", re.IGNORECASE)
_RESERVED_TLDS = frozenset({"test", "example", "invalid", "localhost"})
_RESERVED_SLDS = frozenset({"example.com", "example.net", "example.org"})


@dataclass(frozen=True)
class Session:
    """What Exchange knows about one SMTP connection once the connector is chosen."""

    match: Match | None
    client_ip: str  # normalised by open_session: one spelling per client (``::ffff:10.1.1.1`` is ``10.1.1.1``)
    principal: Principal
    rights: Right
    tls: bool = False
    helo: str | None = None  # None: not known to the caller; "": no HELO/EHLO was sent
    auth_user: str | None = None
    #: Why a ``sasl_username`` Postfix reported was not trusted ('' when none was ignored):
    #: the connector could not have accepted it (exmilter.auth), so the session is anonymous.
    ignored_login: str = ""

    @property
    def connector(self) -> ReceiveConnector | None:
        return self.match.connector if self.match else None

    @property
    def authenticated(self) -> bool:
        return self.principal.authenticated

    def has(self, right: Right) -> bool:
        return right in self.rights


class AddressFault(enum.Enum):
    """Why an envelope address is refused (spec §3.4 #1, §3.5 #1)."""

    INVALID = "invalid"
    LONG = "long"
    UTF8 = "utf8"


#: MAIL FROM has one syntax reply (spec §3.4 #1); RCPT TO tells the faults apart (§3.5 #1).
MAIL_ADDRESS_REPLIES = {fault: R.INVALID_SENDER for fault in AddressFault}
RCPT_ADDRESS_REPLIES = {
    AddressFault.INVALID: R.INVALID_RECIPIENT,
    AddressFault.LONG: R.LONG_ADDRESS,
    AddressFault.UTF8: R.UTF8_ADDRESS,
}


def _received_by(fqdn: str) -> re.Pattern[str] | None:
    """``by <fqdn>`` as a whole host name: ``by relay.example.com.evil`` is another host."""
    if not fqdn:
        return None
    return re.compile(r"\bby\s+" + re.escape(fqdn.rstrip(".")) + r"\.?(?=[\s;(]|$)", re.IGNORECASE)


def header_addresses(value: str | None) -> tuple[str, ...]:
    """The mailbox(es) of a ``From:``/``Sender:`` value, without display names or comments.

    ``"Boss" <ceo@contoso.com> (CEO)`` is ``ceo@contoso.com``. A value listing several
    mailboxes yields each; a value that parses to nothing is judged as written, so an
    unparseable header cannot pass for an absent one.
    """
    if value is None or not value.strip():
        return ()
    found = tuple(addr for _, addr in getaddresses([value]) if addr)
    if len(found) > 1:
        return found
    _, addr = parseaddr(value)
    return (addr,) if addr else (value.strip(),)


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


class CountedWindow:
    """A window already counted elsewhere (the cluster-wide one on Redis), read by the engine.

    The policy front end counts this MAIL's keys in one round trip before asking the engine
    (:meth:`Engine.rate_keys` says which, in order) and hands the counts here; the counting
    side already returned a slot where Exchange does (``All``), so ``give_back`` is a no-op.
    Keeps the engine free of I/O whichever window counts.
    """

    def __init__(self, counts: Mapping[str, int]) -> None:
        self._counts = counts

    def take(self, key: str, limit: int, now: float) -> bool:
        return self._counts.get(key, limit + 1) <= limit  # a key not counted is refused: fail closed

    def give_back(self, key: str) -> None:
        return None


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
        self.rate_limiter = rate_limiter if rate_limiter is not None else MessageRateLimiter()  # empty is falsy
        self._acl = {c.name: access_list(c, org.server.domain) for c in org.receive_connectors}
        self._users = {u.name.lower(): u for u in org.users}
        # How the rendered Postfix completes addresses without a domain, per connector: the
        # engine must judge the domain Postfix will route to (exmilter.listener.origin).
        self._completion = completions(org)
        self._received_by = {c.fqdn: _received_by(c.fqdn) for c in org.receive_connectors}

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
        connector: str | None = None,
    ) -> Session:
        """Select the connector and compute the session's rights (spec §2, §1.8).

        ``connector`` names the connector the session was given when it began (the policy
        daemon remembers it across a reload); a session whose connector is gone, or no
        longer takes the client, has none (``421 4.3.2``: nothing opens).

        A login the connector could not have accepted (no BasicAuth, or BasicAuthRequireTLS
        without TLS: exmilter.auth) is not trusted: the session is anonymous, as it would be
        on Exchange, and ``Session.ignored_login`` says why.
        """
        ip = normalise(client_ip)
        match = self.select(local_ip, local_port, ip)
        if connector is not None and (match is None or match.connector.name != connector):
            # The session began under another configuration: it keeps its connector (spec §2.1
            # step 6) while that connector still exists and still takes this client.
            found = [m for m in self.table.candidates(local_ip, local_port, ip) if m.connector.name == connector]
            match = found[0] if found else None
        return self._session(match, str(ip), auth_user, tls, helo)

    def _session(self, match: Match | None, ip: str, auth_user: str | None, tls: bool, helo: str | None) -> Session:
        connector = match.connector if match else None
        ignored = untrusted_login(connector, auth_user, tls)
        if ignored:
            auth_user = None
        principal = self.principal(connector, auth_user)
        rights = self.rights(match.connector, principal) if match else Right.NONE
        return Session(match, ip, principal, rights, tls, helo, auth_user, ignored)

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

    def mail(
        self,
        s: Session,
        sender: str,
        *,
        size: int = 0,
        now: float | None = None,
        counted: Mapping[str, int] | None = None,
    ) -> Reply:
        """``counted``: this MAIL's window counts from a shared window (:class:`CountedWindow`), else the local one."""
        c = s.connector
        if c is None:
            return R.NO_CONNECTOR
        fault = self.address_fault(c, self.qualify(c, sender), null_ok=True)
        if fault is not None:
            return MAIL_ADDRESS_REPLIES[fault]
        if s.helo == "":
            return R.SEND_HELLO_FIRST
        if c.require_tls and not s.tls:
            return R.STARTTLS_REQUIRED
        limiter = self.rate_limiter if counted is None else CountedWindow(counted)
        if not self._take_rate_slot(s, c, self.clock() if now is None else now, limiter):
            return R.MESSAGE_RATE_EXCEEDED
        if not s.has(Right.SMTPSubmit):
            return R.SUBMIT_DENIED if s.authenticated else R.ANONYMOUS_SUBMIT_DENIED
        if s.authenticated and self.sender_denial(s, sender, None, None) is not None:
            # P1 of an authenticated session is judged at MAIL (issue #13; the milter repeats
            # P1/P2 at end of headers with the same function). Anonymous P1 stays at end of
            # data, where Exchange refuses it (spec §3.7, mistake #10).
            return R.SEND_AS_DENIED
        if (
            size > c.max_message_size
            and not s.has(Right.BypassMessageSizeLimit)
            and not s.has(Right.AcceptOrganizationHeaders)
        ):
            return R.MESSAGE_SIZE_EXCEEDED_MAIL
        return R.SENDER_OK

    def rate_keys(self, s: Session) -> tuple[tuple[str, int], ...]:
        """The window keys a MAIL of this session counts, in order, with the limit: empty when exempt.

        ``All`` gives the user's key, then the IP's; a shared window counts them in this
        order, stops at the first one over the limit and returns the earlier slots (spec §3.10).
        """
        c = s.connector
        if c is None:
            return ()
        limit, source = c.message_rate_limit, c.message_rate_source
        if limit is None or source == "None" or s.has(Right.BypassMessageSizeLimit):
            return ()
        ip_key = f"ip:{s.client_ip}"
        user_key = f"user:{s.auth_user.lower()}" if s.auth_user else None
        if source == "IPAddress" or user_key is None:
            return ((ip_key, limit),)
        if source == "User":
            return ((user_key, limit),)
        return ((user_key, limit), (ip_key, limit))

    def _take_rate_slot(
        self, s: Session, c: ReceiveConnector, now: float, limiter: MessageRateLimiter | CountedWindow
    ) -> bool:
        keys = self.rate_keys(s)
        for i, (key, limit) in enumerate(keys):
            if not limiter.take(key, limit, now):
                for earlier, _ in keys[:i]:  # All: the user's slot comes back when the IP check fails
                    limiter.give_back(earlier)
                return False
        return True

    # -- RCPT TO (spec §3.5) --------------------------------------------------------------

    def rcpt(self, s: Session, recipient: str, *, accepted: int = 0) -> Reply:
        """``accepted`` is how many recipients this transaction already has."""
        c = s.connector
        if c is None:
            return R.NO_CONNECTOR
        address = self.qualify(c, recipient, rcpt=True)
        fault = self.address_fault(c, address, null_ok=False)
        if fault is not None:
            return RCPT_ADDRESS_REPLIES[fault]
        if accepted >= c.max_recipients_per_message and not s.has(Right.BypassMessageSizeLimit):
            return R.TOO_MANY_RECIPIENTS
        domain = address_domain(address)
        reserved = self._reserved(c, domain)
        if reserved is not None:
            return reserved
        if not s.has(Right.SMTPAcceptAnyRecipient) and (
            self.domains.match(domain) is None or not _ROUTING.isdisjoint(address.rpartition("@")[0])
        ):
            return R.UNABLE_TO_RELAY
        return R.RECIPIENT_OK

    @staticmethod
    def _reserved(c: ReceiveConnector, domain: str) -> Reply | None:
        labels = (ascii_domain(domain) or domain.lower()).split(".")
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
        """:meth:`end_of_message` with the facts as keywords (the policy daemon knows few)."""
        m = Message(
            size=size,
            header_size=header_size,
            received=tuple(received),
            mail_from=mail_from,
            header_from=header_from,
            header_sender=header_sender,
            content_type="message/partial" if message_partial else None,
            bare_linefeeds=bare_linefeeds,
            original_size=original_size,
        )
        return self.end_of_message(s, m)

    def end_of_message(self, s: Session, m: Message) -> Reply:
        """Every end-of-data check in the project order (spec §3.6 #1-#6, §7 #13)."""
        refused = self.end_of_headers(s, m)
        if refused is not None:
            return refused
        c = s.connector
        assert c is not None  # end_of_headers refused a session without one
        effective = m.size
        if m.original_size is not None and s.has(Right.AcceptOrganizationHeaders):
            effective = min(m.size, m.original_size)
        if effective > c.max_message_size and not s.has(Right.BypassMessageSizeLimit):
            return R.MESSAGE_SIZE_EXCEEDED
        return R.QUEUED

    def end_of_headers(self, s: Session, m: Message) -> Reply | None:
        """The checks that need only the header block (spec §3.6 #1-#5); None when all pass.

        Exchange reports them after the final dot; a milter refusing at end of headers is
        reported by Postfix at the same point, so the body need not be read.
        """
        c = s.connector
        if c is None:
            return R.NO_CONNECTOR
        if m.header_size > c.max_header_size and not s.has(Right.BypassMessageSizeLimit):
            return R.HEADER_SIZE_EXCEEDED
        if len(m.received) > c.max_hop_count:
            return R.HOP_COUNT_EXCEEDED
        if c.max_local_hop_count and self.local_hops(c, m.received) > c.max_local_hop_count:
            return R.HOP_COUNT_EXCEEDED
        denied = self.sender_denial(s, m.mail_from, m.header_from, m.header_sender)
        if denied is not None:
            return denied
        if m.partial:
            return R.MESSAGE_PARTIAL
        if m.bare_linefeeds and c.bare_linefeed_rejection_enabled:
            return R.BARE_LINEFEEDS
        return None

    def local_hops(self, c: ReceiveConnector, received: Sequence[str]) -> int:
        """``Received:`` headers written by this server (spec §3.6 #3, §7 #19)."""
        by = self._received_by[c.fqdn] if c.fqdn in self._received_by else _received_by(c.fqdn)
        if by is None:
            return 0
        return sum(1 for h in received if by.search(h) and (_WITH_EXCHANGE.search(h) or "(Postfix)" in h))

    def sender_denial(
        self, s: Session, mail_from: str | None, header_from: str | None, header_sender: str | None
    ) -> Reply | None:
        """Sender authorisation of P1, P2 and send-on-behalf (spec §3.7); None when allowed.

        P1 is the envelope sender, P2 the ``Sender:`` mailbox, else the ``From:`` one;
        P2 is checked when it differs from P1. A ``From:`` that differs from ``Sender:``
        is sent on behalf of, and must be allowed in its own right.
        """
        if s.has(Right.SMTPAcceptAnySender) and s.has(Right.SMTPAcceptAuthoritativeDomainSender):
            return None
        c = s.connector
        p1 = self.qualify(c, mail_from or "") if c is not None else (mail_from or "").strip().strip("<>")
        send_as = R.SEND_AS_DENIED if s.authenticated else R.ANONYMOUS_SEND_AS_DENIED
        if p1 and not self.may_send_as(s, p1):
            return send_as
        senders = header_addresses(header_sender)
        froms = header_addresses(header_from)
        checked = {p1.lower()}
        for p2 in senders or froms:
            if p2.lower() not in checked and not self.may_send_as(s, p2):
                return send_as
            checked.add(p2.lower())
        if senders:
            for author in froms:
                if author.lower() not in checked and not self.may_send_on_behalf(s, author):
                    return R.SEND_ON_BEHALF_DENIED
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

    def may_send_on_behalf(self, s: Session, author: str) -> bool:
        """May the session put ``author`` in ``From:`` with someone else in ``Sender:``?

        The sender rights cover it as for Send-As, and Send-As on the author implies it.
        The directory model has no GrantSendOnBehalfTo list, so nothing else allows it.
        """
        return self.may_send_as(s, author)

    def user(self, login: str) -> User | None:
        return self._users.get(login.lower()) or self._users.get(login.rpartition("\\")[2].lower())

    # -- addresses ---------------------------------------------------------------------------

    def qualify(self, c: ReceiveConnector, address: str, *, rcpt: bool = False) -> str:
        """The address as Postfix will route it: :func:`envelope_address`, and one without a
        domain completed as the rendered Postfix completes it on the connector's listener.

        That is the connector's DefaultDomain (spec §1.2) where Postfix can complete with it
        (``exmilter.listener.origin``); elsewhere the address stays unqualified and is
        refused as invalid. ``RCPT TO:<postmaster>`` is routed to the listener's domain.
        """
        a = envelope_address(address)
        if a and "@" not in a and c.name in self._completion:
            how = self._completion[c.name]
            domain = how.postmaster if rcpt and a.lower() == POSTMASTER else how.domain
            if domain:
                a = f"{a}@{domain}"
        return a

    def default_domain_note(self, c: ReceiveConnector) -> str:
        """Why the connector's DefaultDomain completes nothing ('' when it does or is unset)."""
        how = self._completion.get(c.name)
        return how.note if how is not None else ""

    @staticmethod
    def address_fault(c: ReceiveConnector, address: str, *, null_ok: bool) -> AddressFault | None:
        """Length, then UTF-8, then syntax (spec §1.2 "Address length", SmtpUtf8Enabled)."""
        if not address:
            return None if null_ok else AddressFault.INVALID
        if len(address) > (MAX_LONG_ADDRESS if c.long_addresses_enabled else MAX_ADDRESS):
            return AddressFault.LONG
        if not address.isascii() and not c.smtp_utf8_enabled:
            return AddressFault.UTF8
        return None if _ADDRESS_RE.fullmatch(address) else AddressFault.INVALID


def envelope_address(text: str) -> str:
    """An envelope address in the form Postfix's smtpd hands it on (the policy ``sender`` and
    ``recipient``), which is also the form Postfix routes.

    Angle brackets go; a source route goes (smtpd drops ``@a,@b:`` from ``@a,@b:user@c``
    before anything judges or routes it); a quoted local part is unquoted (``"a b"@c`` is
    ``a b@c``, ``"user@example.org"`` is ``user@example.org``). On an address already in
    that form it changes nothing that decides the destination.
    """
    a = text.strip()
    if a.startswith("<") and a.endswith(">"):
        a = a[1:-1]
    if a.startswith("@") and ":" in a:
        a = a.partition(":")[2]
    if a.startswith('"'):
        local, end = _unquote(a)
        if end is not None and (end == len(a) or a[end] == "@"):
            a = local + a[end:]
    return a


def _unquote(text: str) -> tuple[str, int | None]:
    """The content of the quoted string at the start of ``text`` and the index after it
    (None when it is not closed); a backslash quotes the next character."""
    out: list[str] = []
    i = 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if ch == '"':
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    return "", None
