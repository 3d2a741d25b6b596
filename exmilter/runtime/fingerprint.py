"""The configuration's fingerprint: which file a daemon runs, comparable across hosts and reloads.

A short SHA-256 of the file's bytes as the loader read them. Two daemons (the policy
daemon and the milter, or the same daemon on two cluster nodes) run the same file exactly
when their fingerprints are equal, and a fingerprint changes only when the file does, so
it can label ``exmilter_config_info`` without a new series per reload. Both daemons and
the cluster tools compute it here, with this one function.
"""

from __future__ import annotations

import hashlib

#: Hex digits kept: 64 bits, plenty to tell configurations apart and short enough to read.
FINGERPRINT_HEX_DIGITS = 16


def config_fingerprint(text: str | bytes) -> str:
    """The fingerprint of a configuration file's contents (text is hashed as UTF-8)."""
    data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()[:FINGERPRINT_HEX_DIGITS]


def file_fingerprint(path: str) -> str:
    """The fingerprint of the file at ``path`` now, or ``""`` when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return config_fingerprint(f.read())
    except OSError:
        return ""
