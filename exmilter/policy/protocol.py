"""Postfix policy delegation framing without I/O (postfix-notes §1.1).

A request is ``name=value`` lines ended by an empty line; the answer is one ``action=``
line plus an empty line. The parser keeps no socket and no clock so it can be fed any
chunking (byte by byte, several pipelined requests at once) and tested exhaustively.
Limits are enforced while bytes arrive, so a peer can never make us buffer more than
``max_line_length`` bytes of an unfinished line or ``max_attributes`` lines of a request.
"""

from __future__ import annotations

Request = dict[str, str]


class ProtocolError(Exception):
    """The peer sent something that is not a policy request; the connection must close.

    ``complete`` holds the requests that were fully received before the bad input, so a
    caller may still answer them before closing.
    """

    def __init__(self, message: str, complete: list[Request] | None = None) -> None:
        super().__init__(message)
        self.complete: list[Request] = complete or []


class RequestParser:
    """Incremental parser: ``feed(bytes)`` returns every request completed by those bytes."""

    __slots__ = ("_attrs", "_buf", "_count", "_failed", "max_attributes", "max_line_length")

    def __init__(self, max_line_length: int = 4096, max_attributes: int = 64) -> None:
        self.max_line_length = max_line_length
        self.max_attributes = max_attributes
        self._buf = b""
        self._attrs: Request = {}
        self._count = 0
        self._failed = False

    @property
    def pending(self) -> bool:
        """True while a request is partly received (bytes or attributes are buffered)."""
        return bool(self._buf) or self._count > 0

    def feed(self, data: bytes) -> list[Request]:
        if self._failed:
            raise ProtocolError("input after a protocol error")
        buf = self._buf + data if self._buf else data
        if b"\r" in buf:  # tolerate CRLF; Postfix itself sends LF
            buf = buf.replace(b"\r\n", b"\n")
        out: list[Request] = []
        start = 0
        try:
            while True:
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
            nl = buf.rfind(b"\n", start)
            if nl >= 0:  # complete lines of an unfinished request: parse now, buffer only the tail
                self._lines(buf[start:nl])
                start = nl + 1
            if len(buf) - start > self.max_line_length:
                raise ProtocolError(f"line longer than {self.max_line_length} bytes")
        except ProtocolError as e:
            self._failed = True
            self._buf = b""
            self._attrs = {}
            e.complete = out
            raise
        self._buf = buf[start:]
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
        try:
            # a duplicate keeps the last value (postfix-notes §1.1)
            self._attrs.update(line.split("=", 1) for line in lines)  # type: ignore[misc]
        except ValueError:
            bad = next(line for line in lines if "=" not in line)
            raise ProtocolError(f"not a name=value attribute: {bad[:60]!r}") from None

    def _finish(self) -> Request:
        attrs = self._attrs
        names = "".join(attrs)
        if " " in names or not names.isprintable() or "" in attrs:
            bad = next(n for n in attrs if not n or " " in n or not n.isprintable())
            raise ProtocolError(f"not a name=value attribute: bad name {bad[:60]!r}")
        self._attrs = {}
        self._count = 0
        return attrs


def encode_action(action: str) -> bytes:
    """The complete reply for ``action`` (an access(5) action: ``OK``, ``550 5.7.54 …``)."""
    return f"action={action}\n\n".encode()
