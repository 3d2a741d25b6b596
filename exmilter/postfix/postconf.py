"""Reading and editing a live Postfix configuration directory with postconf(1).

The one module of this package that runs programs and touches files: the rest renders and
judges text (:mod:`exmilter.postfix.apply` plans the edits, :mod:`exmilter.postfix.verify`
judges the result). :func:`apply_rendering` edits a *copy* of ``main.cf`` and ``master.cf``
with the planned postconf commands, has ``postfix check`` and the verify-postfix checks
judge the copy, shows the diff, and only then (not with ``dry_run``, not when ``postfix
check`` fails) keeps a backup of both files and puts the copies in place, each with one
rename. Postfix is not reloaded: that is the admin's ``postfix reload``.

Postfix reads a ``main.cf`` written less than about two seconds ago only after waiting
for it to settle (measured: ``postconf -n`` takes 2.4 s right after a ``touch``, 10 ms
later); the copy is a private temporary file, so its time stamps are set back
(:data:`SETTLED`) before it is read.
"""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from exmilter.postfix.apply import (
    Conflict,
    Edits,
    Service,
    parse_main,
    parse_service_params,
    parse_services,
    plan_edits,
)
from exmilter.postfix.verify import Finding, verify

_SEARCH = "/usr/sbin:/usr/bin:/sbin:/bin"
POSTCONF = shutil.which("postconf", path=_SEARCH) or "/usr/sbin/postconf"
POSTFIX = shutil.which("postfix", path=_SEARCH) or "/usr/sbin/postfix"
#: The files exmilter edits; everything else in the directory is left alone.
FILES = ("main.cf", "master.cf")
#: Seconds the edited copy's time stamps are set back, so Postfix does not wait for it to settle.
SETTLED = 10


class PostconfError(RuntimeError):
    """postconf or postfix failed; the message carries the command and its output."""


class ApplyRefused(RuntimeError):
    """The rendering cannot be applied without replacing someone else's service."""

    def __init__(self, conflicts: list[Conflict]) -> None:
        super().__init__("; ".join(str(c) for c in conflicts))
        self.conflicts = conflicts


def run(program: str, directory: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [program, "-c", str(directory), *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0:
        name = os.path.basename(program)
        raise PostconfError(f"{name} -c {directory} {' '.join(args)}: {(proc.stderr or proc.stdout).strip()}")
    return proc


@dataclass(frozen=True)
class Snapshot:
    """A configuration directory as postconf reads it, and the two files' text."""

    directory: Path
    effective: dict[str, str]  # postconf: every parameter, set or default
    set: dict[str, str]  # postconf -n: what main.cf sets
    services: list[Service]  # postconf -M
    params: dict[str, dict[str, str]]  # postconf -P
    main_text: str
    master_text: str
    warnings: list[str]  # what postconf said on stderr (e.g. "overriding earlier entry")


def read(directory: Path | str) -> Snapshot:
    d = Path(directory)
    for name in FILES:
        if not (d / name).is_file():
            raise PostconfError(f"{d / name}: no such file: not a Postfix configuration directory")
    runs = [run(POSTCONF, d), run(POSTCONF, d, "-n"), run(POSTCONF, d, "-M"), run(POSTCONF, d, "-P")]
    warnings = list(dict.fromkeys(line for r in runs for line in r.stderr.splitlines() if line.strip()))
    return Snapshot(
        d,
        parse_main(runs[0].stdout),
        parse_main(runs[1].stdout),
        parse_services(runs[2].stdout),
        parse_service_params(runs[3].stdout),
        (d / "main.cf").read_text(errors="replace"),
        (d / "master.cf").read_text(errors="replace"),
        warnings,
    )


def verify_directory(
    directory: Path | str,
    *,
    policy_endpoint: str | None = None,
    milter: str | None = None,
    shown_as: Path | str | None = None,
) -> list[Finding]:
    """:func:`exmilter.postfix.verify.verify` on the configuration in ``directory``; findings
    name the files as in ``shown_as`` (the directory a copy was made from) when given."""
    s = read(directory)
    named = Path(shown_as) if shown_as is not None else s.directory
    return verify(
        s.effective,
        s.services,
        s.params,
        main_file=str(named / "main.cf"),
        master_file=str(named / "master.cf"),
        main_text=s.main_text,
        master_text=s.master_text,
        policy_endpoint=policy_endpoint,
        milter=milter,
    )


@dataclass
class Applied:
    """What :func:`apply_rendering` did or (dry run) would do."""

    edits: Edits
    diff: str
    warnings: list[str] = field(default_factory=list)  # postconf's, on the edited copy
    backup: Path | None = None  # where the originals are (None: dry run or nothing changed)
    check: list[str] = field(default_factory=list)  # what postfix check printed
    findings: list[Finding] = field(default_factory=list)  # verify-postfix's, on the result


def _diff(old: Path, new: Path) -> str:
    a = old.read_text(errors="replace") if old.exists() else ""  # a table written for the first time
    b = new.read_text(errors="replace")
    return "".join(difflib.unified_diff(a.splitlines(True), b.splitlines(True), str(old), f"{old} (exmilter)", n=2))


def _install(source: Path, target: Path) -> None:
    """Replace ``target`` with ``source``'s content in one rename, keeping its owner and mode
    (a new file, such as a send-connector table, gets 0644 and the directory's owner)."""
    st = target.stat() if target.exists() else target.parent.stat()
    tmp = target.with_name(f".{target.name}.exmilter-new")
    shutil.copyfile(source, tmp)
    os.chmod(tmp, st.st_mode & 0o7777 if target.exists() else 0o644)
    if os.geteuid() == 0:
        os.chown(tmp, st.st_uid, st.st_gid)
    os.replace(tmp, target)


def _new_directory(parent: Path, name: str) -> Path:
    """``parent/name``, or ``name-2``, ``name-3``, ... when taken (two applies in one second)."""
    for n in range(1, 1000):
        path = parent / (name if n == 1 else f"{name}-{n}")
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        return path
    raise PostconfError(f"{parent}: too many {name}* backups")


def apply_rendering(
    directory: Path | str,
    settings: Iterable[tuple[str, str]],
    master: str,
    *,
    dry_run: bool = False,
    replace: bool = False,
    check: bool = True,
    now: float | None = None,
    tables: Mapping[str, str] | None = None,
) -> Applied:
    """Put the rendered main.cf ``settings`` and ``master`` services into ``directory``, and
    ``tables`` (file name -> text: the send connectors' maps main.cf names) beside them.

    Raises :class:`ApplyRefused` when a service of someone else is in the way, and
    :class:`PostconfError` when postconf fails or ``postfix check`` refuses the result;
    in every one of these cases ``directory`` is unchanged.
    """
    d = Path(directory)
    snap = read(d)
    edits = plan_edits(settings, master, snap.set, snap.services, snap.params, replace=replace)
    if edits.conflicts:
        raise ApplyRefused(edits.conflicts)
    when = time.time() if now is None else now
    with tempfile.TemporaryDirectory(prefix="exmilter-apply-") as tmp:
        work = Path(tmp)
        for name in FILES:
            shutil.copyfile(d / name, work / name)
        for args in edits.commands():
            run(POSTCONF, work, *args)
        names = (*FILES, *(tables or {}))
        for name, text in (tables or {}).items():
            (work / name).write_text(text)
        for name in names:
            os.utime(work / name, (when - SETTLED, when - SETTLED))
        warnings = [line for args in (("-n",), ("-M",)) for line in run(POSTCONF, work, *args).stderr.splitlines()]
        diff = "".join(_diff(d / name, work / name) for name in names)
        applied = Applied(edits, diff, list(dict.fromkeys(w for w in warnings if w.strip())))
        if check:
            proc = run(POSTFIX, work, "check")
            applied.check = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
        applied.findings = verify_directory(work, shown_as=d)
        if dry_run or not diff:
            return applied
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(when))
        backup = _new_directory(d, f"exmilter-backup-{stamp}")
        for name in names:
            if (d / name).exists():
                shutil.copy2(d / name, backup / name)
        for name in names:
            _install(work / name, d / name)
    applied.backup = backup
    return applied
