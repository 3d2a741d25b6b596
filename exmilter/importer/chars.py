"""Character classes of the import (docs/import-exchange.md, "Control characters").

One definition for every stage: the transcript removes invisible format characters, the
tokenizer refuses statements holding a :data:`REFUSED_CHARS` character, and what is
shown (notes, comments and values of the written YAML) never carries either raw.
"""

from __future__ import annotations

import re
import unicodedata

#: C0 controls but TAB (CR and LF end lines), DEL, C1 controls (NEL among them), the line
#: and paragraph separators, lone surrogates and U+FFFE/U+FFFF: YAML cannot carry them or
#: reads them as line breaks, and no admin typed them. A statement or Format-List object
#: holding one is refused.
REFUSED_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")
#: What a message or comment line shows escaped: the refused characters, line ends, and
#: format characters (zero-width, bidi controls, byte order mark) that would hide or
#: reorder text.
_UNSHOWN = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff\u00ad\u200b-\u200f"
    "\u202a-\u202e\u2060-\u206f\ufeff]"
)
#: What a double-quoted YAML scalar must escape beyond what JSON escapes (the loader
#: refuses these raw, even inside quotes).
_YAML_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]")
_CONTROL_NAMES = {0x00: "NUL", 0x07: "BEL", 0x08: "BS", 0x0B: "VT", 0x0C: "FF", 0x1B: "ESC", 0x7F: "DEL", 0x85: "NEL"}


def char_name(ch: str) -> str:
    """``U+200B (ZERO WIDTH SPACE)``: how notes name a character that cannot be shown."""
    name = _CONTROL_NAMES.get(ord(ch)) or unicodedata.name(ch, "")
    return f"U+{ord(ch):04X}" + (f" ({name})" if name else "")


def refused_char(text: str, start: int = 0, end: int | None = None) -> int:
    """Index of the first :data:`REFUSED_CHARS` character in ``text[start:end]``, or -1."""
    m = REFUSED_CHARS.search(text, start, len(text) if end is None else end)
    return m.start() if m else -1


def is_format_char(ch: str) -> bool:
    """An invisible Unicode format character (category Cf): removed from the input, with a note."""
    return ch >= "\x80" and unicodedata.category(ch) == "Cf"


def _escape(m: re.Match[str]) -> str:
    cp = ord(m.group())
    return f"\\x{cp:02x}" if cp < 0x100 else f"\\u{cp:04x}"


def printable(text: str) -> str:
    """``text`` on one line, with every character :data:`_UNSHOWN` written as ``\\xNN``/``\\uNNNN``."""
    return _UNSHOWN.sub(_escape, text)


def yaml_escaped(quoted: str) -> str:
    """A JSON string literal made safe as a YAML double-quoted scalar (same text once read)."""
    return _YAML_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", quoted)
