"""The ``cluster`` section: this server as one node of a pool behind HAProxy (docs/cluster.md).

Every node reads the same file; what is per node (``server``) stays in its own section.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from exmilter import limits
from exmilter.config import fields
from exmilter.config.fields import FAILED
from exmilter.config.problems import Collector
from exmilter.config.reader import Raw
from exmilter.model import ClusterSettings


def _host_port(raw: Raw) -> str:
    value = fields.scalar(raw).strip()
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port")
    return value


_FIELDS: dict[str, Callable[[Raw], Any]] = {
    "proxy_protocol": fields.choice("none", "haproxy"),
    "proxy_timeout": fields.int_range(1, 300),
    "message_rate_window": fields.choice("local", "redis"),
    "redis": _host_port,
    "redis_timeout_ms": fields.int_range(limits.REDIS_TIMEOUT_MS_MIN, limits.REDIS_TIMEOUT_MS_MAX),
    "health": fields.optional_text,
    "health_probe": _host_port,
}


def cluster(raw: Raw, out: Collector) -> ClusterSettings:
    """``cluster``: every bad key or value reported; what parsed over the defaults."""
    m = fields.mapping(raw, "cluster", out)
    values: dict[str, Any] = {}
    for key, (kraw, vraw) in m.items():
        if key not in _FIELDS:
            out.error(kraw, f"cluster.{key}", f"unknown key; expected {', '.join(_FIELDS)}")
            continue
        v = fields.parse_or_report(vraw, f"cluster.{key}", _FIELDS[key], out)
        if v is not FAILED:
            values[key] = v
    return dataclasses.replace(ClusterSettings(), **values)
