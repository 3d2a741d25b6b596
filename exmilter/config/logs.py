"""The ``logs`` section: where Exchange's protocol and tracking logs go, their limits, the line format.

Keys are ``Set-TransportService``'s parameter names in snake case (docs/logs.md); sizes
and ages take Exchange's syntax (``10MB``, ``30.00:00:00``). Over :class:`LogSettings`' defaults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from exmilter.config import fields
from exmilter.config.fields import FAILED
from exmilter.config.problems import Collector
from exmilter.config.reader import Raw
from exmilter.model import LogSettings

_SIZE = fields._size_range(1 << 10, 1 << 50)
_AGE = fields._span_range(3600, 3650 * 86400)


def _path(raw: Raw) -> str:
    value = fields.scalar(raw).strip()
    if value and not value.startswith("/"):
        raise ValueError(f"{value!r} is not an absolute path ('' turns the log off)")
    return value


_FIELDS: dict[str, Callable[[Raw], Any]] = {
    "receive_protocol_log_path": _path,
    "receive_protocol_log_max_file_size": _SIZE,
    "receive_protocol_log_max_directory_size": _SIZE,
    "receive_protocol_log_max_age": _AGE,
    "message_tracking_log_enabled": fields.boolean,
    "message_tracking_log_path": _path,
    "message_tracking_log_max_file_size": _SIZE,
    "message_tracking_log_max_directory_size": _SIZE,
    "message_tracking_log_max_age": _AGE,
    "format": fields.choice("text", "json"),
}


def logs(raw: Raw, out: Collector) -> LogSettings:
    """``logs``: every bad key or value reported; what parsed over the defaults."""
    m = fields.mapping(raw, "logs", out)
    values: dict[str, Any] = {}
    for key, (kraw, vraw) in m.items():
        if key not in _FIELDS:
            out.error(kraw, f"logs.{key}", f"unknown key; expected {', '.join(_FIELDS)}")
            continue
        v = fields.parse_or_report(vraw, f"logs.{key}", _FIELDS[key], out)
        if v is not FAILED:
            values[key] = v
    return dataclasses.replace(LogSettings(), **values)
