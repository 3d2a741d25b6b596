"""Keep the sandbox's daemons running the way systemd would (``Restart=always``).

The sandbox starts its daemons (the policy daemon today, the milter later) as child
processes. A child that ends without the sandbox asking it to (a crash, SIGKILL, any
exit: while it is down Postfix fails closed, so there is no good reason to stay down)
is started again after :data:`RESTART_DELAY`, like systemd's ``RestartSec``. A child
that keeps failing — more than :data:`START_LIMIT_BURST` restarts within
:data:`START_LIMIT_INTERVAL`, like ``StartLimitBurst``/``StartLimitIntervalSec`` — is
given up on, and the supervisor says loudly that the stack is degraded and what the
clients get meanwhile (Postfix keeps running and fails closed). :meth:`Supervisor.start`
(the sandbox calls it on SIGHUP) tries such a child again.

Every change is reported as a :class:`Event` (what happened, to which child, a sentence
for the operator); the sandbox prints them.
"""

from __future__ import annotations

import contextlib
import enum
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: systemd's RestartSec: the pause before a dead child is started again.
RESTART_DELAY = 1.0
#: systemd's StartLimitBurst / StartLimitIntervalSec: more restarts than this within the
#: interval and the child is given up on (the stack is degraded until someone steps in).
START_LIMIT_BURST = 5
START_LIMIT_INTERVAL = 60.0
#: How long a started child may take to become ready (its readiness check passing).
READY_TIMEOUT = 30.0
#: How long a child may take to exit after SIGTERM before it gets SIGKILL.
STOP_TIMEOUT = 10.0
#: How often the watcher thread looks at the children.
WATCH_INTERVAL = 0.1


@dataclass(frozen=True)
class RestartPolicy:
    """When and how often a dead child is started again (systemd's names in the comments)."""

    delay: float = RESTART_DELAY  # RestartSec
    burst: int = START_LIMIT_BURST  # StartLimitBurst
    interval: float = START_LIMIT_INTERVAL  # StartLimitIntervalSec


#: ``ready(alive)`` waits until the child serves and returns True, or returns False on
#: timeout or as soon as ``alive()`` turns False.
ReadinessCheck = Callable[[Callable[[], bool]], bool]


@dataclass(frozen=True)
class ChildSpec:
    """One supervised daemon: how to start it, where it logs, how to tell it is ready."""

    name: str  # "policy daemon": how messages call it
    command: tuple[str, ...]
    log: Path  # stdout and stderr, appended
    pid_file: Path
    ready: ReadinessCheck
    #: What the stack does while this child is down, for the messages
    #: ("Postfix answers 451 4.3.5 (fails closed)").
    while_down: str
    env: Mapping[str, str] | None = None


class State(enum.Enum):
    STOPPED = "stopped"  # never started, or stopped on purpose: not restarted
    RUNNING = "running"
    WAITING = "waiting"  # dead; restarted when the delay has passed
    FAILED = "failed"  # gave up after too many restarts: the stack is degraded


class Kind(enum.Enum):
    DIED = "died"
    RESTARTED = "restarted"
    START_FAILED = "start failed"
    DEGRADED = "degraded"
    RECOVERED = "recovered"


@dataclass(frozen=True)
class Event:
    kind: Kind
    child: str
    message: str


class ChildError(RuntimeError):
    """A child did not start; the message says why and where its log is."""


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with status {returncode}"


@dataclass
class Child:
    """A daemon process the supervisor owns: started, watched, stopped by its PID."""

    spec: ChildSpec
    state: State = State.STOPPED
    restarts: list[float] = field(default_factory=list)  # when automatic restarts happened
    due: float = 0.0  # WAITING: when to start again
    last_pid: int | None = None  # the most recent process, alive or not
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int | None:
        """The PID while the process lives (None once it has exited)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def exit_status(self) -> int | None:
        """The return code once the current process has exited (None while it runs)."""
        return self._proc.poll() if self._proc is not None else None

    def spawn(self, closing: threading.Event | None = None) -> None:
        """Start the process and wait until it is ready; raise :class:`ChildError` if it is not."""
        spec = self.spec
        with open(spec.log, "ab") as log:
            proc = subprocess.Popen(
                spec.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=dict(spec.env) if spec.env is not None else None,
                # Its own session: Ctrl-C in the sandbox's terminal reaches the sandbox only,
                # which stops its children itself (a child that saw SIGINT first would be
                # "restarted" while the sandbox shuts down).
                start_new_session=True,
            )
        self._proc, self.last_pid = proc, proc.pid
        spec.pid_file.write_text(f"{proc.pid}\n")

        def alive() -> bool:
            return proc.poll() is None and not (closing is not None and closing.is_set())

        if spec.ready(alive):
            return
        rc = proc.poll()
        self.terminate()
        why = describe_exit(rc) if rc is not None else "was not ready in time"
        raise ChildError(f"the {spec.name} did not start: it {why}; see {spec.log}{_tail(spec.log)}")

    def send(self, sig: int) -> None:
        """Send ``sig`` to the process if it runs (SIGHUP: reload)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Wait until the current process has exited; its return code (None: still running)."""
        proc = self._proc
        if proc is None:
            return None
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> None:
        """Signal the process, wait for it (SIGKILL after ``timeout``), forget its PID file."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.spec.pid_file.unlink(missing_ok=True)


def _tail(path: Path, lines: int = 5, window: int = 8192) -> str:
    """The last lines of a log, indented for a message (only its end is read: logs grow)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - window))
            text = f.read().decode(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "".join(f"\n  | {line}" for line in text)


class Supervisor:
    """Starts children, notices when one dies, restarts it or declares the stack degraded.

    A watcher thread calls :meth:`check` every :data:`WATCH_INTERVAL`; tests may call it
    themselves. All state changes happen under one lock, so an explicit start or stop
    from another thread never races a restart.
    """

    def __init__(
        self,
        report: Callable[[Event], None],
        policy: RestartPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy or RestartPolicy()
        self._report = report
        self._clock = clock
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.children: list[Child] = []

    # -- explicit control ------------------------------------------------------------------

    def add(self, spec: ChildSpec) -> Child:
        child = Child(spec)
        with self._lock:
            self.children.append(child)
        return child

    def start(self, child: Child) -> None:
        """Start ``child`` if it is not running (a degraded child gets a fresh start budget).

        Raises :class:`ChildError` when it does not come up; it is then left FAILED if it
        was degraded before, else STOPPED.
        """
        with self._lock:
            if child.state is State.RUNNING and child.pid is not None:
                return
            was_failed = child.state is State.FAILED
            child.restarts.clear()
            try:
                child.spawn(self._closing)
            except ChildError:
                child.state = State.FAILED if was_failed else State.STOPPED
                raise
            child.state = State.RUNNING
            if was_failed:
                self._emit(
                    Kind.RECOVERED,
                    child,
                    f"the {child.name} runs again (pid {child.pid}); the stack is no longer degraded",
                )

    def stop(self, child: Child, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> None:
        """Stop ``child`` on purpose (``sig``, SIGKILL after ``timeout``): it is not restarted."""
        with self._lock:
            child.state = State.STOPPED
            child.terminate(sig, timeout)

    @contextlib.contextmanager
    def using(self, policy: RestartPolicy) -> Iterator[None]:
        """Another restart policy for the duration of a block (tests); each policy counts afresh."""
        before = self.policy
        self._set_policy(policy)
        try:
            yield
        finally:
            self._set_policy(before)

    def _set_policy(self, policy: RestartPolicy) -> None:
        with self._lock:
            self.policy = policy
            for child in self.children:
                child.restarts.clear()

    # -- watching --------------------------------------------------------------------------

    def watch(self) -> None:
        """Start the watcher thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._closing.clear()
        self._thread = threading.Thread(target=self._watch, name="exmilter-supervisor", daemon=True)
        self._thread.start()

    def unwatch(self) -> None:
        """Stop the watcher thread: from now on nothing is restarted (a start in progress is abandoned)."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(READY_TIMEOUT + STOP_TIMEOUT)
            self._thread = None
        self._closing.clear()  # explicit starts work again

    def close(self) -> None:
        """Stop watching, then stop every child."""
        self.unwatch()
        with self._lock:
            for child in self.children:
                self.stop(child)

    def _watch(self) -> None:
        while not self._closing.wait(WATCH_INTERVAL):
            self.check()

    def check(self) -> None:
        """One look at every child: notice deaths, start those whose delay has passed."""
        with self._lock:
            for child in self.children:
                if self._closing.is_set():
                    return
                if child.state is State.RUNNING:
                    rc = child.exit_status()
                    if rc is not None:
                        self._died(child, f"the {child.name} (pid {child.last_pid}) {describe_exit(rc)}")
                elif child.state is State.WAITING and self._clock() >= child.due:
                    self._restart(child)

    def _died(self, child: Child, what: str) -> None:
        """Schedule a restart, or give up when the start limit is reached."""
        now = self._clock()
        policy = self.policy
        child.restarts = [t for t in child.restarts if now - t < policy.interval]
        child.spec.pid_file.unlink(missing_ok=True)
        if len(child.restarts) >= policy.burst:
            child.state = State.FAILED
            self._emit(
                Kind.DEGRADED,
                child,
                f"{what}.\nDEGRADED: the {child.name} was restarted {len(child.restarts)} times within "
                f"{policy.interval:g} s and still fails; it is not restarted again. {child.spec.while_down} "
                f"until it runs again: see {child.spec.log}, fix the cause, then send SIGHUP to the sandbox "
                "to start it again.",
            )
            return
        child.state = State.WAITING
        child.due = now + policy.delay
        self._emit(
            Kind.DIED,
            child,
            f"{what}; restarting it in {policy.delay:g} s (restart {len(child.restarts) + 1} of at most "
            f"{policy.burst} within {policy.interval:g} s). Meanwhile: {child.spec.while_down}.",
        )

    def _restart(self, child: Child) -> None:
        child.restarts.append(self._clock())
        try:
            child.spawn(self._closing)
        except ChildError as e:
            if self._closing.is_set():
                return
            self._emit(Kind.START_FAILED, child, str(e))
            self._died(child, f"restart {len(child.restarts)} of the {child.name} failed")
            return
        child.state = State.RUNNING
        self._emit(Kind.RESTARTED, child, f"the {child.name} was restarted (pid {child.pid}) and serves again")

    def _emit(self, kind: Kind, child: Child, message: str) -> None:
        with contextlib.suppress(Exception):  # a broken reporter (closed stderr) must not stop supervision
            self._report(Event(kind, child.name, message))


def terminate_pid(pid: int, is_ours: Callable[[int], bool], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM a process a previous run left behind (only while ``is_ours(pid)``), SIGKILL if it lingers."""
    if not is_ours(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not is_ours(pid):
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
