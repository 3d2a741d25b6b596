"""systemd drop-ins sizing both daemons' ``LimitNOFILE`` from the rendered process limits.

Every smtpd process of a rendered listener keeps one connection to the policy daemon and,
with the milter enabled, one to the milter. ``render-postfix --apply`` writes
``/etc/systemd/system/exmilter-policyd.service.d/limits.conf`` and the milter's with

    LimitNOFILE = max(UNIT_LIMIT_NOFILE, P + max(ceil(P × HEADROOM_PERCENT / 100), HEADROOM_MIN) + FD_RESERVE)

where P is the sum of the rendered listeners' maxproc: the connections Postfix may open,
the room ``max_connections: auto`` admits beyond them, and the descriptors kept for
everything else (exmilter.limits). The floor is the units' own value, so a drop-in never
lowers it. ``--limit-nofile N`` writes N instead.
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass
from pathlib import Path

from exmilter.limits import POLICY_FD_RESERVE, POLICY_HEADROOM_MIN, POLICY_HEADROOM_PERCENT, UNIT_LIMIT_NOFILE

UNITS = ("exmilter-policyd.service", "exmilter-milter.service")
DROPIN = "limits.conf"
#: Where the drop-ins go when the edited Postfix is the host's own /etc/postfix.
SYSTEMD_DIR = "/etc/systemd/system"


def limit_nofile(processes: int) -> int:
    """The module's formula for ``processes`` smtpd processes (the rendered maxproc sum)."""
    headroom = max(math.ceil(processes * POLICY_HEADROOM_PERCENT / 100), POLICY_HEADROOM_MIN)
    return max(UNIT_LIMIT_NOFILE, processes + headroom + POLICY_FD_RESERVE)


def dropin_text(limit: int, processes: int | None, override: bool) -> str:
    why = (
        "given with --limit-nofile"
        if override
        else f"max({UNIT_LIMIT_NOFILE}, {processes} + max({POLICY_HEADROOM_PERCENT} % of {processes}, "
        f"{POLICY_HEADROOM_MIN}) + {POLICY_FD_RESERVE})"
    )
    return (
        '# Written by exmilter render-postfix --apply (docs/render-postfix.md, "Descriptor limits"):\n'
        f"# the rendered smtpd listeners allow {processes if processes is not None else 'unlimited'} processes, "
        "each with one connection here.\n"
        f"# LimitNOFILE = {why}\n"
        "[Service]\n"
        f"LimitNOFILE={limit}\n"
    )


@dataclass(frozen=True)
class DropIns:
    """The drop-ins for one rendering: what each file holds now and will hold."""

    limit: int
    files: dict[Path, tuple[str, str]]  # path -> (current text or "", new text)

    def diff(self) -> str:
        out: list[str] = []
        for path, (old, new) in self.files.items():
            if old != new:
                out += difflib.unified_diff(
                    old.splitlines(True), new.splitlines(True), str(path) if old else "/dev/null", str(path), n=2
                )
        return "".join(out)

    def write(self) -> None:
        for path, (old, new) in self.files.items():
            if old != new:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + ".exmilter-new")
                tmp.write_text(new)
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)


def plan_dropins(systemd_dir: str | Path, processes: int | None, override: int | None) -> DropIns | None:
    """The drop-ins under ``systemd_dir``; None when there is nothing to size them by
    (an unlimited listener and no ``override``)."""
    if override is None and processes is None:
        return None
    limit = override if override is not None else limit_nofile(processes or 0)
    text = dropin_text(limit, processes, override is not None)
    files: dict[Path, tuple[str, str]] = {}
    for unit in UNITS:
        path = Path(systemd_dir) / f"{unit}.d" / DROPIN
        try:
            old = path.read_text()
        except FileNotFoundError:
            old = ""
        files[path] = (old, text)
    return DropIns(limit, files)
