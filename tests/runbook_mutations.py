"""Seeded mutations of the import corpus, run through the real ``exmilter import-exchange``.

The issue's attack (2,000 mutated runbooks) as a permanent part of the suite: byte flips,
control characters and byte order marks, lines duplicated, deleted and swapped, two
BOM-prefixed files concatenated, unbalanced quotes and brackets, very long lines,
expansion bombs. Each case runs in-process through :func:`exmilter.cli.main` (stdin,
stdout and stderr captured, ``SystemExit`` caught) inside a worker process; the parent
watches each case and kills a worker whose case runs over its deadline, so a hang fails
the test instead of hanging the suite.

Run by ``tests/test_import_fuzz.py``; also by hand against any checkout (its ``exmilter``
comes first on ``PYTHONPATH``), which is how the numbers for the parent commit were taken::

    .venv/bin/python -m tests.runbook_mutations --cases 2000 [--pythonpath /work/main]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import re
import selectors
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "import"
SEED = 20240610
CASES = 2000
#: A case that runs longer than this is a hang (the issue's acceptance line).
DEADLINE_S = 10.0
#: Exit statuses docs/import-exchange.md documents.
EXIT_CODES = frozenset({0, 2})
#: Address space of one worker: a memory bomb fails its case instead of the machine.
WORKER_MEMORY = 2 << 30

BOM = "\ufeff".encode()
#: Characters inserted one at a time: C0/C1 controls, DEL, line and paragraph separators,
#: byte order marks, invisible format characters, noncharacters, a lone CR.
CONTROLS = [
    "\x00",
    "\x01",
    "\x07",
    "\x08",
    "\x0b",
    "\x0c",
    "\x0e",
    "\x1b",
    "\x1f",
    "\x7f",
    "\x85",
    "\x9b",
    "\u2028",
    "\u2029",
    "\ufeff",
    "\u200b",
    "\u202e",
    "\u00ad",
    "\ufffe",
    "\r",
    "\t",
]
#: Fragments that open or close something, inserted anywhere.
UNBALANCED = [
    '"',
    "'",
    "{",
    "}",
    "(",
    ")",
    "@(",
    "@{",
    "$(",
    "<#",
    "#>",
    '@"',
    '"@',
    "`",
    "\u201c",
    "\u2019",
    "-",
    "|",
    ";",
    ",",
    "=",
    "$",
    "[PS] C:\\>",
    "-------- ",
    " : ",
    "#",
    "%{",
    "$_.",
    "@",
    "..",
    "+=",
]
#: Fragments repeated into a very long line (the issue's pasted 387-byte line among them).
LONG = [
    "@(",
    "(",
    "{",
    "@{a=",
    "$(",
    "$a",
    "`",
    "a",
    "10.0.0.1,",
    "-X ",
    '"',
    "'",
    "[PS] C:\\>",
    "-- ",
    "Ab ",
    "x:",
    "C:\\",
    '"$a"',
    "$a.b",
    "-a:",
    "|",
    "<#",
    '`"',
    "0.0.0.0:25,",
    ",",
    "Set-ReceiveConnector x ",
    "${",
]
LONG_LENGTHS = [387, 387, 1000, 4000, 20000, 70000]


@dataclass(frozen=True)
class Case:
    """One run: input files (name → bytes), or stdin, and the command-line options."""

    index: int
    files: tuple[tuple[str, bytes], ...]
    stdin: bytes | None
    options: tuple[str, ...]
    output: bool  # -o FILE (else stdout)
    what: str  # the mutations, for a failure message


def corpus() -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in sorted(DATA.glob("*.ps1")) + sorted(DATA.glob("*.txt"))]


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True) or [b""]


def _mutate(rng: random.Random, data: bytes, others: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    op = rng.choice(
        [
            "flip",
            "flip",
            "control",
            "control",
            "control",
            "bom_line",
            "bom_line",
            "dup",
            "delete",
            "swap",
            "concat",
            "concat",
            "unbalance",
            "unbalance",
            "unbalance",
            "long",
            "long",
            "truncate",
            "expand",
            "repeat",
        ]
    )
    pos = rng.randrange(len(data) + 1)
    lines = _lines(data)
    at = rng.randrange(len(lines))
    if op == "flip" and data:
        pos = min(pos, len(data) - 1)
        b = data[pos]
        new = b ^ (1 << rng.randrange(7)) if b < 0x80 and rng.random() < 0.9 else rng.randrange(256)
        return data[:pos] + bytes([new]) + data[pos + 1 :], f"flip@{pos}"
    if op == "control":
        ch = rng.choice(CONTROLS)
        return data[:pos] + ch.encode("utf-8") + data[pos:], f"control U+{ord(ch):04X}@{pos}"
    if op == "bom_line":
        lines[at] = BOM + lines[at]
        return b"".join(lines), f"bom@line{at + 1}"
    if op == "dup":
        lines.insert(at, lines[at])
        return b"".join(lines), f"dup@line{at + 1}"
    if op == "delete" and len(lines) > 1:
        del lines[at]
        return b"".join(lines), f"delete@line{at + 1}"
    if op == "swap":
        other = rng.randrange(len(lines))
        lines[at], lines[other] = lines[other], lines[at]
        return b"".join(lines), f"swap@{at + 1},{other + 1}"
    if op == "concat":
        name, second = rng.choice(others)
        first = data if data.startswith(BOM) else BOM + data
        if rng.random() < 0.7 and not first.endswith(b"\n"):
            first += b"\r\n" if rng.random() < 0.3 else b"\n"
        return first + BOM + second, f"cat+{name}"
    if op == "unbalance":
        frag = rng.choice(UNBALANCED)
        return data[:pos] + frag.encode() + data[pos:], f"insert {frag!r}@{pos}"
    if op == "long":
        frag = rng.choice([*LONG, lines[at].rstrip(b"\r\n").decode("utf-8", "replace")[:60] or "x"])
        size = rng.choice(LONG_LENGTHS)
        line = (frag * (size // max(len(frag), 1) + 1))[:size]
        if rng.random() < 0.5:
            line = (
                rng.choice(
                    [
                        'Set-ReceiveConnector "Default Frontend EXCH01" -Banner ',
                        "New-ReceiveConnector ",
                        "[PS] C:\\>",
                        "RemoteIPRanges : ",
                        "$x = ",
                    ]
                )
                + line
            )
        lines.insert(at, line.encode() + b"\n")
        return b"".join(lines), f"long {frag[:12]!r}x{size}@line{at + 1}"
    if op == "truncate":
        return data[:pos], f"truncate@{pos}"
    if op == "expand":
        k = rng.choice([10, 20, 40, 64])
        bomb = ['$a = "10.0.0.1","10.0.0.2"'] + ["$a = $a,$a"] * k + ['$s = "x"'] + ['$s = "$s$s"'] * k
        bomb.append('Set-ReceiveConnector "Default Frontend EXCH01" -RemoteIPRanges $a -Banner "220 $s"')
        return ("\n".join(bomb) + "\n").encode() + data, f"expand x{k}"
    if op == "repeat":
        n = rng.choice([20, 100, 400])
        lines[at : at + 1] = [lines[at] if lines[at].endswith(b"\n") else lines[at] + b"\n"] * n
        return b"".join(lines), f"repeat line{at + 1}x{n}"
    return data, "none"


def cases(seed: int = SEED, n: int = CASES) -> Iterator[Case]:
    """The ``n`` cases of ``seed``, always the same."""
    files = corpus()
    for index in range(n):
        rng = random.Random(f"{seed}:{index}")
        picked = [rng.choice(files)] + ([rng.choice(files)] if rng.random() < 0.2 else [])
        mutated: list[tuple[str, bytes]] = []
        what: list[str] = []
        for k, (name, data) in enumerate(picked):
            steps = []
            for _ in range(rng.choice([1, 1, 2, 3, 4])):
                data, step = _mutate(rng, data, files)
                steps.append(step)
            mutated.append((f"in{k}_{name}", data))
            what.append(f"{name}: {', '.join(steps)}")
        options: list[str] = []
        if rng.random() < 0.6:
            options += ["--server", rng.choice(["EXCH01.labs.local", "EXCH01", "EXSERVER.exchange2016demo.com"])]
        if rng.random() < 0.25:
            options.append("--strict")
        stdin = mutated[0][1] if len(mutated) == 1 and rng.random() < 0.25 else None
        yield Case(
            index,
            tuple(mutated) if stdin is None else (),
            stdin,
            tuple(options),
            rng.random() < 0.5,
            "; ".join(what) + (" (stdin)" if stdin is not None else ""),
        )


# --- one case, in-process ----------------------------------------------------------------

_NOTE = re.compile(r"(?P<file>[^:]+):(?P<line>\d+): (?:info|warning|error): \S")
_PROBLEM = re.compile(r"(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): \S")


def _physical_lines(data: bytes) -> int:
    """Lines as an editor counts them (CR LF, LF or CR end one)."""
    return len(re.split(rb"\r\n|\r|\n", data))


@dataclass
class Outcome:
    index: int
    rc: int | None = None
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    crashed: bool = False  # an exception escaped main()
    hung: bool = False  # killed at the deadline

    def to_json(self) -> str:
        return json.dumps(self.__dict__)


def run_case(case: Case, tmp: Path) -> Outcome:
    """Run one case through ``exmilter.cli.main`` and check what the issue asks of every run."""
    from exmilter.cli import main
    from exmilter.config import ConfigError, loads

    out = Outcome(case.index)
    work = tmp / f"case{case.index}"
    work.mkdir()
    argv = ["import-exchange"]
    names: dict[str, int] = {}
    for name, data in case.files:
        (work / name).write_bytes(data)
        argv.append(str(work / name))
        names[str(work / name)] = _physical_lines(data)
    if case.stdin is not None:
        names["<stdin>"] = _physical_lines(case.stdin)
    target = work / "out.yaml"
    if case.output:
        argv += ["-o", str(target)]
    argv += case.options
    stdin = io.TextIOWrapper(io.BytesIO(case.stdin or b""), encoding="utf-8")
    stdout, stderr = io.StringIO(), io.StringIO()
    saved = sys.stdin, sys.stdout, sys.stderr
    start = time.perf_counter()
    try:
        sys.stdin, sys.stdout, sys.stderr = stdin, stdout, stderr
        out.rc = main(argv)
    except SystemExit as e:
        out.rc = e.code if isinstance(e.code, int) else 1
    except BaseException as e:  # what the issue calls a crash: report it, keep fuzzing
        out.crashed = True
        out.problems.append(
            f"uncaught {type(e).__name__}: {e!s:.200} at "
            f"{traceback.extract_tb(e.__traceback__)[-1].filename.rsplit('/', 1)[-1]}:"
            f"{traceback.extract_tb(e.__traceback__)[-1].lineno}"
        )
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
    out.seconds = time.perf_counter() - start
    err = stderr.getvalue()
    if out.rc not in EXIT_CODES and not out.crashed:
        out.problems.append(f"exit status {out.rc} is not documented")
    if "Traceback" in err:
        out.problems.append("traceback on stderr")
    written = target.read_text(encoding="utf-8") if case.output and target.exists() else stdout.getvalue()
    if out.rc == 0:
        try:
            loads(written, "out.yaml")
        except ConfigError as e:
            out.problems.append(f"written configuration does not load: {str(e)[:300]}")
    elif out.rc == 2 and written:
        out.problems.append("exit 2 but a configuration was written")
    for line in err.splitlines():
        if line.startswith("import-exchange: ") or line == f"{target}: written" or line.startswith(f"{target}: "):
            if "internal error" in line:
                out.problems.append(f"internal error: {line[:200]}")
            continue
        m = _NOTE.match(line) or _PROBLEM.match(line)
        if m is None:
            out.problems.append(f"unlocated message: {line[:200]!r}")
            continue
        file, number = m.group("file"), int(m.group("line"))
        if file in names:
            if not 1 <= number <= names[file]:
                out.problems.append(f"{file.rsplit('/', 1)[-1]}:{number}: past the end ({names[file]} lines)")
        elif file not in (str(target), "<stdout>"):
            out.problems.append(f"note about an unknown file: {line[:200]!r}")
        if "internal error" in line:
            out.problems.append(f"internal error: {line[:200]}")
    return out


#: A case the worker sleeps through instead of running (tests of the watchdog itself).
HANG_CASE_ENV = "EXMILTER_FUZZ_HANG_CASE"


def worker(indices: Sequence[int], seed: int) -> None:
    """Run the given cases; report ``start N`` before and an outcome line after each one."""
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY, WORKER_MEMORY))
    wanted = set(indices)
    report = sys.__stdout__
    assert report is not None
    with tempfile.TemporaryDirectory(prefix="exmilter-fuzz-") as tmp:
        for case in cases(seed, max(wanted) + 1):
            if case.index not in wanted:
                continue
            report.write(f"start {case.index}\n")
            report.flush()
            if os.environ.get(HANG_CASE_ENV) == str(case.index):
                time.sleep(3600)
            try:
                outcome = run_case(case, Path(tmp))
            except MemoryError:
                outcome = Outcome(case.index, crashed=True, problems=["MemoryError (worker address space)"])
            report.write(outcome.to_json() + "\n")
            report.flush()


# --- the parent: workers, deadlines ------------------------------------------------------


def run_all(
    n: int = CASES, seed: int = SEED, workers: int = 2, deadline: float = DEADLINE_S, pythonpath: str | None = None
) -> list[Outcome]:
    """Every case, spread over ``workers`` processes; a case over ``deadline`` is killed and marked hung."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, str(ROOT), env.get("PYTHONPATH")) if p)
    pending = [list(range(w, n, workers)) for w in range(workers)]
    outcomes: dict[int, Outcome] = {}
    sel = selectors.DefaultSelector()

    @dataclass
    class Worker:
        proc: subprocess.Popen[bytes]
        todo: list[int]
        buffer: bytes = b""
        case: int | None = None  # the case running, since ``started``
        started: float = 0.0

    running: dict[int, Worker] = {}

    def spawn(slot: int) -> None:
        todo = [i for i in pending[slot] if i not in outcomes]
        if not todo:
            running.pop(slot, None)
            return
        proc = subprocess.Popen(  # run as a script: exmilter comes from PYTHONPATH, not from this checkout
            [sys.executable, __file__, "--worker", "--seed", str(seed), "--indices", ",".join(map(str, todo))],
            cwd=tempfile.gettempdir(),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        running[slot] = Worker(proc, todo)
        sel.register(proc.stdout, selectors.EVENT_READ, slot)

    def finish(slot: int, why: str, hung: bool = False) -> None:
        w = running[slot]
        assert w.proc.stdout is not None
        sel.unregister(w.proc.stdout)
        if hung:
            w.proc.kill()
        w.proc.wait()
        w.proc.stdout.close()
        if w.case is not None and w.case not in outcomes:
            outcomes[w.case] = Outcome(
                w.case, seconds=time.monotonic() - w.started, hung=hung, crashed=not hung, problems=[why]
            )
        elif w.proc.returncode:  # died between cases (cannot start at all?): no respawn loop
            for i in w.todo:
                outcomes.setdefault(i, Outcome(i, crashed=True, problems=[f"{why}, before this case"]))
        spawn(slot)

    for slot in range(workers):
        spawn(slot)
    while running:
        now = time.monotonic()
        for slot, w in list(running.items()):
            if w.case is not None and now - w.started > deadline:  # a hang: kill it, go on with the next case
                finish(slot, f"no answer within {deadline:.0f} s", hung=True)
        for key, _ in sel.select(timeout=0.5):
            slot = key.data
            w = running[slot]
            data = os.read(key.fileobj.fileno(), 1 << 16)  # type: ignore[union-attr]
            if not data:
                finish(slot, f"worker died (exit {w.proc.wait()})")
                continue
            w.buffer += data
            *lines, w.buffer = w.buffer.split(b"\n")
            for line in lines:
                if line.startswith(b"start "):
                    w.case, w.started = int(line.split()[1]), time.monotonic()
                else:
                    outcome = Outcome(**json.loads(line))
                    outcomes[outcome.index] = outcome
                    w.case = None
    return [outcomes[i] for i in sorted(outcomes)]


def summary(outcomes: Sequence[Outcome]) -> str:
    crashed = sum(o.crashed for o in outcomes)
    hung = sum(o.hung for o in outcomes)
    bad = sum(bool(o.problems) for o in outcomes)
    slowest = max(outcomes, key=lambda o: o.seconds) if outcomes else Outcome(-1)
    return (
        f"{len(outcomes)} cases: {crashed} crashed, {hung} hung, {bad} with problems; "
        f"slowest case {slowest.index}: {slowest.seconds:.2f} s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--cases", type=int, default=CASES)
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--pythonpath", help="a checkout whose exmilter is tested (default: this one)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--indices", help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true", help="print every case with a problem")
    args = p.parse_args(argv)
    if args.worker:
        worker([int(i) for i in args.indices.split(",") if i], args.seed)
        return 0
    start = time.monotonic()
    outcomes = run_all(args.cases, args.seed, pythonpath=args.pythonpath)
    by_index = {c.index: c for c in cases(args.seed, args.cases)} if args.verbose else {}
    for o in outcomes:
        if o.problems and args.verbose:
            print(
                f"case {o.index} ({by_index[o.index].what[:150]}): rc={o.rc} {o.seconds:.1f}s: "
                f"{'; '.join(o.problems)[:400]}"
            )
    print(summary(outcomes), f"(total {time.monotonic() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
