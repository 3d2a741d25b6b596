"""One message as the end-of-headers and end-of-data checks see it (spec §3.6, §3.7).

A front end builds one :class:`Message` from what the client sent (the milter from its
header and body callbacks, the policy daemon from the few attributes Postfix gives it)
and asks :meth:`exmilter.engine.Engine.end_of_message`. Pure: values only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: ``X-MS-Exchange-Organization-OriginalSize``, trusted only from sessions that keep
#: Organization headers (spec §3.6 #6).
ORIGINAL_SIZE = "x-ms-exchange-organization-originalsize"
#: Bytes the header block costs beyond the header text: ``": "`` after each name and the
#: CRLF ending each line, then the empty line ending the block.
HEADER_OVERHEAD = 4
HEADER_BLOCK_END = 2


@dataclass(frozen=True, slots=True)
class Message:
    """The facts of one message the engine judges at end of headers / end of data.

    ``header_size`` is the byte offset of the end of the header block (the empty line
    included); ``size`` the whole message in bytes (headers and body); ``received`` the
    ``Received:`` values the client sent (Postfix's own is never among them); ``mail_from``
    the MAIL FROM address (None when unknown), ``auth_param`` its ``AUTH=`` value (None
    when absent); ``original_size`` the ``X-MS-Exchange-Organization-OriginalSize`` the
    client sent, when it is a number.
    """

    size: int = 0
    header_size: int = 0
    received: tuple[str, ...] = ()
    mail_from: str | None = None
    header_from: str | None = None
    header_sender: str | None = None
    content_type: str | None = None
    bare_linefeeds: bool = False
    original_size: int | None = None
    auth_param: str | None = None

    @property
    def partial(self) -> bool:
        """``Content-Type: message/partial`` (spec §3.6 #5), parameters and case ignored."""
        if self.content_type is None:
            return False
        return self.content_type.split(";", 1)[0].strip().lower() == "message/partial"


def header_bytes(name: str, value: str) -> int:
    """What one header line costs on the wire: ``Name: value`` and CRLF, each fold a CRLF.

    Postfix hands a milter the value with folds as bare LF and without the space after the
    colon, so each LF is counted as CRLF and the space is added back.
    """
    return len(name) + len(value.encode("utf-8", "surrogateescape")) + value.count("\n") + HEADER_OVERHEAD


def size_value(text: str | None) -> int | None:
    """A header's decimal byte count (``OriginalSize``), or None when it is not one."""
    if text is None:
        return None
    t = text.strip()
    if not t or len(t) > 19 or not (t.isascii() and t.isdigit()):
        return None
    return int(t)


def first(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """The first value of header ``name`` (case-insensitive), None when absent."""
    key = name.lower()
    for n, v in headers:
        if n.lower() == key:
            return v
    return None
