"""Postfix policy delegation framing without I/O (postfix-notes §1.1).

A request is ``name=value`` lines ended by an empty line; the answer is one ``action=``
line plus an empty line. The parser keeps no socket and no clock so it can be fed any
chunking (byte by byte, several pipelined requests at once) and tested exhaustively.
Limits are enforced while bytes arrive, so a peer can never make us buffer more than
``max_line_length`` bytes of an unfinished line or ``max_attributes`` lines of a request.
``max_requests`` bounds the requests one ``feed`` returns: the rest of the bytes stay
buffered, unparsed, and ``more`` says so; the caller answers, reads nothing new, and calls
``feed(b"")`` for the next batch (the daemon's per-turn work bound, docs/policyd.md).
"""

from __future__ import annotations

Request = dict[str, str]

#: Postfix's ``protocol_state`` values (postfix-notes §1.3); anything else is reported as ``OTHER``.
PROTOCOL_STATES = ("CONNECT", "EHLO", "HELO", "MAIL", "RCPT", "DATA", "END-OF-MESSAGE", "VRFY", "ETRN")
OTHER_STATE = "OTHER"


class ProtocolError(Exception):
    """The peer sent something that is not a policy request; the connection must close.

    ``complete`` holds the requests that were fully received before the bad input, so a
    caller may still answer them before closing.
    """

    def __init__(self, message: str, complete: list[Request] | None = None) -> None:
        super().__init__(message)
        self.complete: list[Request] = complete or []


class RequestParser:
    """Incremental parser: ``feed(bytes)`` returns the requests completed by those bytes,
    at most ``max_requests`` of them (None: no bound)."""

    __slots__ = (
        "_attrs",
        "_buf",
        "_count",
        "_failed",
        "_more",
        "max_attributes",
        "max_line_length",
        "max_requests",
        "pending",
    )

    def __init__(self, max_line_length: int = 4096, max_attributes: int = 64, max_requests: int | None = None) -> None:
        self.max_line_length = max_line_length
        self.max_attributes = max_attributes
        self.max_requests = max_requests if max_requests is not None else 1 << 62
        if self.max_requests < 1:
            raise ValueError("max_requests must be at least 1")
        self._buf = b""
        self._attrs: Request = {}
        self._count = 0
        self._failed = False
        self._more = False
        #: True while a request is partly received (bytes or attributes are buffered). A plain
        #: attribute, not a property: the daemon reads it after every read.
        self.pending = False

    @property
    def more(self) -> bool:
        """True when the last ``feed`` stopped at ``max_requests`` with input left over:
        ``feed(b"")`` parses the next batch. Otherwise at most ``max_line_length`` bytes
        (an unfinished line) are buffered, plus a final CR that may be half of a CRLF."""
        return self._more

    @property
    def buffered(self) -> int:
        """Bytes received and not yet parsed."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Request]:
        if self._failed:
            raise ProtocolError("input after a protocol error")
        if not self.pending:
            one = self._whole(data)
            if one is not None:
                return [one]
        return self._feed(data)

    def _whole(self, data: bytes) -> Request | None:
        """The fast path: ``data`` is exactly one well-formed request, nothing is buffered.

        That is Postfix's usual read: one request per write, LF only, ending with the one
        empty line. Anything else (several requests, a partial one, CR, a line or request
        over a limit, a malformed line, bad UTF-8) returns None *without touching the
        parser's state*, and :meth:`_feed` handles it, with every limit and error message
        of the general path. So this path can only return what the general one would.
        """
        # len(data) within max_line_length: no line can be over it, whatever the split.
        if data[-2:] != b"\n\n" or len(data) > self.max_line_length or b"\r" in data:
            return None
        try:
            lines = data[:-2].decode("utf-8").split("\n")
        except UnicodeDecodeError:
            return None
        if len(lines) > self.max_attributes:
            return None
        attrs: Request = {}
        for line in lines:
            name, eq, value = line.partition("=")
            if not eq:  # no "=", or an empty line: another request follows, or an error
                return None
            attrs[name] = value  # a duplicate keeps the last value (postfix-notes §1.1)
        if not _good_names(attrs):
            return None
        return attrs

    def _feed(self, data: bytes) -> list[Request]:
        """The general path: any chunking, any number of requests, every error."""
        # Tolerate CRLF (Postfix itself sends LF). Only new bytes are normalised: the buffer
        # already is, and "\r\r\n" must not become "\n" in two steps. A CRLF split between
        # two reads leaves its CR at the end of the buffer.
        old = self._buf
        if old.endswith(b"\r") and data.startswith(b"\n"):
            old = old[:-1]
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        buf = old + data if old else data
        out: list[Request] = []
        start = 0
        limit = self.max_requests
        self._more = False
        try:
            while True:
                if len(out) >= limit:  # the batch is full: the rest waits, unparsed, for feed(b"")
                    self._more = start < len(buf)
                    break
                if buf.startswith(b"\n", start):  # the empty line ends the request
                    out.append(self._finish())
                    start += 1
                    continue
                end = buf.find(b"\n\n", start)
                if end < 0:
                    break
                self._lines(buf[start:end])  # a whole request block: decoded and split at once
                out.append(self._finish())
                start = end + 2
            if not self._more:
                nl = buf.rfind(b"\n", start)
                if nl >= 0:  # complete lines of an unfinished request: parse now, buffer only the tail
                    self._lines(buf[start:nl])
                    start = nl + 1
                # A CR at the very end may be the first half of a CRLF: it is not part of the line.
                tail = len(buf) - start - buf.endswith(b"\r")
                if tail > self.max_line_length:
                    raise ProtocolError(f"line longer than {self.max_line_length} bytes")
        except ProtocolError as e:
            self._failed = True
            self._more = False
            self.pending = False
            self._buf = b""
            self._attrs = {}
            e.complete = out
            raise
        self._buf = buf = buf[start:]
        self.pending = bool(buf) or self._count > 0
        return out

    def _lines(self, block: bytes) -> None:
        """Add the attributes of ``block``: complete, non-empty lines without the last newline."""
        limit = self.max_line_length
        if len(block) > limit and any(len(line) > limit for line in block.split(b"\n")):
            raise ProtocolError(f"line longer than {limit} bytes")
        try:
            lines = block.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            raise ProtocolError("attribute is not UTF-8") from None
        self._count += len(lines)
        if self._count > self.max_attributes:
            raise ProtocolError(f"more than {self.max_attributes} attributes in one request")
        attrs = self._attrs
        for line in lines:
            name, eq, value = line.partition("=")
            if not eq:
                raise ProtocolError(f"not a name=value attribute: {line[:60]!r}")
            attrs[name] = value  # a duplicate keeps the last value (postfix-notes §1.1)

    def _finish(self) -> Request:
        attrs = self._attrs
        if not _good_names(attrs):
            bad = next(n for n in attrs if not n or " " in n or not n.isprintable())
            raise ProtocolError(f"not a name=value attribute: bad name {bad[:60]!r}")
        self._attrs = {}
        self._count = 0
        return attrs


#: Every attribute name Postfix sends, up to 3.12 (postfix-notes §1.2). A request made only
#: of these (Postfix's every request) needs no character check of its names: a third of the
#: cost of the fast path. Any other name is checked as usual.
POSTFIX_ATTRIBUTES = frozenset(
    {
        "request",
        "protocol_state",
        "protocol_name",
        "helo_name",
        "queue_id",
        "sender",
        "recipient",
        "recipient_count",
        "client_address",
        "client_name",
        "reverse_client_name",
        "instance",
        "sasl_method",
        "sasl_username",
        "sasl_sender",
        "size",
        "ccert_subject",
        "ccert_issuer",
        "ccert_fingerprint",
        "encryption_protocol",
        "encryption_cipher",
        "encryption_keysize",
        "etrn_domain",
        "stress",
        "ccert_pubkey_fingerprint",
        "client_port",
        "policy_context",
        "server_address",
        "server_port",
        "compatibility_level",
        "mail_version",
        "tls_sni",
    }
)


def _good_names(attrs: Request) -> bool:
    """No empty name, no space or control character in any name."""
    if POSTFIX_ATTRIBUTES.issuperset(attrs):
        return True
    names = "".join(attrs)
    return " " not in names and names.isprintable() and "" not in attrs


def encode_action(action: str) -> bytes:
    """The complete reply for ``action`` (an access(5) action: ``OK``, ``550 5.7.54 …``)."""
    return f"action={action}\n\n".encode()
