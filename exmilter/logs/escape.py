"""Text from the network made safe for a log line: control characters escaped, length bounded.

A policy request (or, later, a milter macro) can carry any character: CR/LF that would
start a fake log line, ANSI escapes that rewrite a terminal, NUL, DEL, C1 controls,
bidirectional overrides. Events carry such values as they came; the text sink
(:mod:`exmilter.logs.text`) puts every value a peer chose through :func:`escape` where it
formats the line, and the stderr observer applies :func:`printable_lines` to the whole
line as a second guard.
"""

from __future__ import annotations

from exmilter.limits import LOG_VALUE_MAX

_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escaped(ch: str) -> str:
    short = _SHORT.get(ch)
    if short is not None:
        return short
    if ch.isprintable():
        return ch
    n = ord(ch)
    if n < 0x100:
        return f"\\x{n:02x}"
    if n < 0x10000:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def escape(value: str, limit: int = LOG_VALUE_MAX) -> str:
    """``value`` as one printable run: Python's escapes (``\\x1b``, ``\\n``, ``\\u202e``)
    for every non-printable character, ``\\\\`` for a backslash (so the escapes are
    unambiguous), and at most ``limit`` characters of it followed by ``…[+N]``.

    Printable text (non-ASCII letters included: ``jörg@straße.de``) is kept as it is.
    """
    cut = len(value) - limit
    if cut > 0:
        value = value[:limit]
    if not value.isprintable() or "\\" in value:
        value = "".join(map(_escaped, value))
    return f"{value}…[+{cut}]" if cut > 0 else value


def printable_lines(text: str) -> str:
    """``text`` with every non-printable character but the newline escaped (``\\x1b``).

    For text already formatted (a traceback, a message built elsewhere): newlines stay line
    breaks, which the log observer turns into indented continuation lines; backslashes are
    left alone, since the text may already hold escapes made by :func:`escape` or ``repr``.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch == "\n" or ch.isprintable() else _escaped(ch) for ch in text)
