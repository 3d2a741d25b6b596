"""One concern's share of a listener's master.cf service, and how an ``-o`` is written.

Each concern (policy wiring, connection limits, address completion, smuggling; later the
milter, TLS/SASL) is a function returning an :class:`OptionGroup`; ``master.master_service``
puts the groups of one listener together. A new concern is a new group, not an edit of
the others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: An ``-o`` value that needs the ``{ name = value }`` form (Postfix 3.0+).
_NEEDS_BRACES = re.compile(r"[\s{}]")


@dataclass(frozen=True)
class OptionGroup:
    """Why (comment lines above the smtpd service), how (its ``-o`` options, in order) and
    any master.cf services of the concern's own, written after the smtpd service."""

    comments: tuple[str, ...] = ()
    options: tuple[tuple[str, str], ...] = ()
    services: tuple[str, ...] = ()


def postfix_value(text: str) -> str:
    """A value safe inside ``-o { name = value }``: ``$`` doubled, braces cannot nest."""
    return text.replace("$", "$$").replace("{", "(").replace("}", ")").strip()


def option(name: str, value: str) -> str:
    """``-o name=value``, or ``-o { name = value }`` when the value has blanks or braces."""
    if _NEEDS_BRACES.search(value):
        return f"-o {{ {name} = {value} }}"
    return f"-o {name}={value}"
