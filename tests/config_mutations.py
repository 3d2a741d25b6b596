"""Seeded mutations of the real configuration files, and a harness that runs ``exmilter check`` on them.

The generator damages ``conf/exmilter.yaml`` and ``tests/data/integration.yaml`` the ways
files really get damaged, and the ways an attacker would: flipped bytes, control
characters and byte order marks (in values and in comments), lines duplicated, deleted,
swapped or re-indented, truncation, deep nesting, alias bombs, huge numbers, odd Unicode,
and scalars swapped for other values the format knows. The same seed gives the same files.

``run_check`` drives the real entry point (:func:`exmilter.cli.main`) in-process, with
stdout and stderr captured, and classifies the outcome; ``python -m tests.config_mutations
[--guard SECONDS]`` prints the tally, so the same files can be run against an older
checkout (``PYTHONPATH=/path/to/old/tree python -m tests.config_mutations --guard 60``).
``--guard`` caps the process at 3 GB of address space and each run at SECONDS, and
counts a run that hits either as a crash (``MemoryError``) or a hang (``Timeout``).
"""

from __future__ import annotations

import contextlib
import io
import random
import re
import resource
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASES = (ROOT / "conf" / "exmilter.yaml", ROOT / "tests" / "data" / "integration.yaml")

#: Exit statuses docs/commands.md documents for ``exmilter check``.
DOCUMENTED_EXITS = frozenset({0, 2})

_CONTROL = [
    "\x00", "\x01", "\x07", "\x08", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f", "\x85", "\x9f",
    "\ufeff", "\u2028", "\u2029", "\ufffe", "\uffff", "\ud800", "\r", "\t",
]  # fmt: skip
_UNICODE = [
    "\u00a0", "\u200b", "\u202e", "\u0301", "é", "ß", "straße", "İ", "١٠", "１０", "😀", "\U0010fffd", "\ue000",
]  # fmt: skip
_SCALARS = [
    "$true", "$false", "yes", "~", "null", "''", '""', "[]", "{}", "unlimited", "0", "-1", "1e999", "0x10",
    "0.0.0.0:25", "[::]:25", "10.0.0.0/8", "0.0.0.0/0", "::/0", "10.0.0.1-10.0.0.0", "8.8.8.8", "1.2.3.4/33",
    "00:05:00", "1.00:00:00", "99:99:99", "36MB", "2GB", "36 MB (37,748,736 bytes)", "Tls, ExternalAuthoritative",
    "None, Tls", "AnonymousUsers", "Custom", "ExchangeServers", "ms-Exch-SMTP-Accept-Any-Recipient",
    "'NT AUTHORITY\\ANONYMOUS LOGON'", "FrontendTransport", "HubTransport", "Internet", "Partner",
    "*undefined", "&anchor", "!!binary aGVsbG8=", "!!python/object/apply:os.system ['true']", "<<: *x",
    "'unterminated", '"\\x00"', '"\\ud800"', "'a' 'b'", "? complex", "|", ">-", "%YAML 1.1", "---", "...",
]  # fmt: skip


@dataclass(frozen=True)
class Mutant:
    name: str  # what was done, for a failing assertion's message
    data: bytes


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _pos(rnd: random.Random, text: str) -> int:
    return rnd.randrange(len(text) + 1)


def _insert(rnd: random.Random, text: str, what: str) -> str:
    at = _pos(rnd, text)
    if rnd.random() < 0.3:  # in a comment: after a '#' when the file has one
        hashes = [m.start() for m in re.finditer("#", text)]
        if hashes:
            at = rnd.choice(hashes) + 1
    return text[:at] + what + text[at:]


def _scalar_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of the values after 'key: ' and of list items, where a value can be swapped."""
    return [m.span(1) for m in re.finditer(r"(?m)(?::[ \t]+|^[ \t]*-[ \t]+)([^\n#]+?)[ \t]*(?:#.*)?$", text)]


def _replace_scalar(rnd: random.Random, text: str, value: str) -> str:
    spans = _scalar_spans(text)
    if not spans:
        return text + value
    a, b = rnd.choice(spans)
    return text[:a] + value + text[b:]


def _nesting(rnd: random.Random) -> str:
    depth = rnd.choice([10, 63, 64, 65, 100, 999, 1000, 1001, 5000, 20000])
    kind = rnd.randrange(4)
    if kind == 0:
        return "[" * depth + "]" * rnd.choice([0, depth])
    if kind == 1:
        return "{a: " * depth + "}" * rnd.choice([0, depth])
    if kind == 2:
        return "\n" + "".join("  " * i + "- \n" for i in range(min(depth, 3000)))
    return "\n" + "".join(" " * i + "k:\n" for i in range(min(depth, 3000)))


def _alias_bomb(rnd: random.Random) -> tuple[str, str]:
    """A billion-laughs block of anchors, and the alias of its last level."""
    levels, width = rnd.randint(2, 12), rnd.randint(2, 12)
    item = rnd.choice(["10.0.0.1", "[]", "0.0.0.0:25", "ms-Exch-SMTP-Submit", "{user: a, extended_rights: x}"])
    out = [f"bomb0: &b0 [{', '.join([item] * width)}]"]
    out += [f"bomb{i}: &b{i} [{', '.join([f'*b{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(out) + "\n", f"*b{levels - 1}"


def _mutate_once(rnd: random.Random, text: str) -> tuple[str, str]:
    op = rnd.randrange(14)
    lines = _lines(text)
    if op == 0:  # flip bits of a byte (the result may not be UTF-8: done on bytes by the caller)
        return "flip", text
    if op == 1:
        ch = rnd.choice(_CONTROL)
        return f"control U+{ord(ch):04X}", _insert(rnd, text, ch * rnd.choice([1, 1, 1, 2, 50]))
    if op == 2 and lines:
        i = rnd.randrange(len(lines))
        return f"duplicate line {i + 1}", "".join(lines[: i + 1] + lines[i:])
    if op == 3 and lines:
        i = rnd.randrange(len(lines))
        return f"delete line {i + 1}", "".join(lines[:i] + lines[i + 1 :])
    if op == 4 and len(lines) > 1:
        i, j = rnd.sample(range(len(lines)), 2)
        lines[i], lines[j] = lines[j], lines[i]
        return f"swap lines {i + 1} and {j + 1}", "".join(lines)
    if op == 5 and lines:
        i = rnd.randrange(len(lines))
        lines[i] = (" " * rnd.randint(1, 4) + lines[i]) if rnd.random() < 0.5 else lines[i].lstrip(" ")
        return f"re-indent line {i + 1}", "".join(lines)
    if op == 6:
        return "truncate", text[: _pos(rnd, text)]
    if op == 7:
        return "deep nesting", _replace_scalar(rnd, text, _nesting(rnd))
    if op == 8:
        block, ref = _alias_bomb(rnd)
        target = rnd.choice(["remote_ip_ranges", "bindings", "extended_rights", "addresses", "accepted_domains"])
        text = re.sub(rf"(?m)^(\s*{target}:)[^\n]*", lambda m: f"{m.group(1)} {ref}", text, count=1)
        anchors = "".join("  " + line + "\n" for line in block.split("\n"))
        return f"alias bomb into {target}", "anchors:\n" + anchors + text
    if op == 9:
        digits = rnd.choice([20, 400, 4300, 4301, 20000])
        number = rnd.choice(["", "-"]) + "9" * digits + rnd.choice(["", "MB", ".5", "e5", ",000"])
        return f"huge number ({digits} digits)", _replace_scalar(rnd, text, number)
    if op == 10:
        return "unicode", _insert(rnd, text, rnd.choice(_UNICODE))
    if op == 11:
        return "scalar swap", _replace_scalar(rnd, text, rnd.choice(_SCALARS))
    if op == 12 and lines:  # a whole line from the other file, or a line repeated many times
        i = rnd.randrange(len(lines))
        return f"repeat line {i + 1}", "".join(lines[:i] + [lines[i]] * rnd.choice([2, 10, 2000]) + lines[i + 1 :])
    return "bom", rnd.choice(["\ufeff", ""]) + text + "\ufeff" + text  # two files joined with cat


def mutants(count: int = 2000, seed: int = 20261202) -> Iterator[Mutant]:
    """``count`` mutated files, 1 to 3 mutations each, alternating between the two real files."""
    rnd = random.Random(seed)
    bases = [b.read_text(encoding="utf-8") for b in BASES]
    for n in range(count):
        text = bases[n % len(bases)]
        done: list[str] = []
        flips = 0
        for _ in range(rnd.choice([1, 1, 1, 2, 3])):
            what, text = _mutate_once(rnd, text)
            done.append(what)
            flips += what == "flip"
        data = text.encode("utf-8", "surrogatepass")
        if flips:
            buf = bytearray(data)
            for _ in range(flips * rnd.choice([1, 1, 3, 20])):
                if buf:
                    buf[rnd.randrange(len(buf))] ^= 1 << rnd.randrange(8)
            data = bytes(buf)
        yield Mutant(f"#{n} {BASES[n % len(BASES)].name}: {', '.join(done)}", data)


_LOCATED = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): ")


@dataclass
class Outcome:
    code: int | None  # None: an exception escaped main()
    seconds: float
    stdout: str
    stderr: str
    crash: str = ""  # the traceback when an exception escaped
    error: str = ""  # and the exception's class

    def unlocated(self, path: str) -> list[str]:
        """stderr lines that are neither located problems nor one of the documented summary lines."""
        summary = re.compile(
            rf"^{re.escape(path)}: (\d+ error\(s\); configuration refused|OPEN RELAY: .*|"
            r"\d+ warning\(s\) and --strict; configuration refused)$"
        )
        return [
            line
            for line in self.stderr.splitlines()
            if not (_LOCATED.match(line) and line.startswith(f"{path}:")) and not summary.match(line)
        ]


class Timeout(Exception):
    """A guarded run took longer than allowed (raised from SIGALRM)."""


def run_check(path: str, *args: str, guard: float | None = None) -> Outcome:
    """``exmilter check -c PATH`` in this process, as the console script runs it."""
    from exmilter.cli import main

    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    code: int | None
    crash = error = ""
    if guard:
        signal.setitimer(signal.ITIMER_REAL, guard)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["check", "-c", path, *args])
        except SystemExit as e:  # argparse
            code = e.code if isinstance(e.code, int) else 2
        except Exception as e:  # RecursionError, MemoryError and Timeout included
            code = None
            crash = traceback.format_exc(limit=-3)
            error = f"{type(e).__module__}.{type(e).__qualname__}".removeprefix("builtins.")
        finally:
            if guard:
                signal.setitimer(signal.ITIMER_REAL, 0)
    return Outcome(code, time.perf_counter() - start, out.getvalue(), err.getvalue(), crash, error if crash else "")


def _alarm(signum: int, frame: object) -> None:
    raise Timeout


def tally(
    directory: Path,
    count: int,
    seed: int,
    on_outcome: Callable[[Mutant, Outcome, str], None] | None = None,
    guard: float | None = None,
) -> dict:
    """Run every mutant through ``check``; counts of exit statuses and crashes, max and total seconds."""
    if guard:
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, resource.getrlimit(resource.RLIMIT_AS)[1]))
        signal.signal(signal.SIGALRM, _alarm)
    codes: dict[str, int] = {}
    crashes: dict[str, int] = {}
    slowest = (0.0, "")
    total = 0.0
    for n, m in enumerate(mutants(count, seed)):
        path = directory / f"mutant-{n:04d}.yaml"
        path.write_bytes(m.data)
        o = run_check(str(path), guard=guard)
        total += o.seconds
        slowest = max(slowest, (o.seconds, m.name))
        codes[str(o.code)] = codes.get(str(o.code), 0) + 1
        if o.code is None:
            crashes[o.error] = crashes.get(o.error, 0) + 1
        if on_outcome is not None:
            on_outcome(m, o, str(path))
        path.unlink()
    return {"codes": codes, "crashes": crashes, "max_s": slowest[0], "slowest": slowest[1], "total_s": total}


if __name__ == "__main__":
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description="run exmilter check on the seeded mutated files")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--guard", type=float, metavar="SECONDS", help="3 GB address space, SECONDS per run")
    parser.add_argument("-v", "--verbose", action="store_true", help="name every mutant that crashed")
    a = parser.parse_args()

    def show(m: Mutant, o: Outcome, path: str) -> None:
        if a.verbose and o.code is None:
            print(f"{m.name}: {o.error}", flush=True)

    with tempfile.TemporaryDirectory(prefix="exmilter-mutants-") as tmp:
        print(tally(Path(tmp), a.count, a.seed, show, a.guard))
