"""The JSON sink: one event as one JSON object per line, for log shippers (docs/logs.md).

Fields: ``time`` (RFC 3339 UTC), ``priority`` (syslog number) and ``level`` (its name),
``namespace``, ``event`` (the kind), every field of the typed event (a reply as its wire
line), and ``message``, the text sink's line. JSON escaping keeps control characters out
(``ensure_ascii``: a bidirectional override is ``\\u202e``, not the character).
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from exmilter.logs.events import Event
from exmilter.logs.levels import NAMES, Severity
from exmilter.logs.text import message
from exmilter.replies import Reply


def _value(v: Any) -> Any:
    if isinstance(v, Reply):
        return v.line
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def event_fields(event: Event) -> dict[str, Any]:
    """The typed event's fields (frozen dataclasses, some with a hand-written ``__init__``)."""
    return {f.name: _value(getattr(event, f.name)) for f in dataclasses.fields(event)}  # type: ignore[arg-type]


def json_line(event: Event | None, priority: Severity, namespace: str, when: float | None, text: str | None) -> str:
    """One line (without its newline); ``text`` for an untyped event (a failure, Twisted's own)."""
    t = time.time() if when is None else when
    out: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z",
        "priority": int(priority),
        "level": NAMES[priority],
        "namespace": namespace,
    }
    if event is not None:
        out["event"] = type(event).__name__
        out.update(event_fields(event))
        out["message"] = message(event)
    else:
        out["message"] = text or ""
    return json.dumps(out, ensure_ascii=True)
