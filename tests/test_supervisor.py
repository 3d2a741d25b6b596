"""The sandbox's supervisor: restart after a delay, a start limit, a degraded state (like systemd).

Real child processes (``sleep``, ``sh``), a fake clock for the delays and the start-limit
window, :meth:`Supervisor.check` called by the test; one test runs the watcher thread.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from exmilter.sandbox.supervisor import (
    ChildError,
    ChildSpec,
    Event,
    Kind,
    RestartPolicy,
    State,
    Supervisor,
    describe_exit,
    terminate_pid,
)

SETTLE = 0.1  # a child alive this long after its start counts as ready


def alive_for(seconds: float) -> Callable[[Callable[[], bool]], bool]:
    def ready(alive: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not alive():
                return False
            time.sleep(0.01)
        return alive()

    return ready


def spec(tmp_path: Path, command: tuple[str, ...] = ("sleep", "60")) -> ChildSpec:
    return ChildSpec(
        "test child", command, tmp_path / "child.log", tmp_path / "child.pid", alive_for(SETTLE), "Nothing answers"
    )


FAILING = ("sh", "-c", "echo cannot start >&2; exit 3")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def events() -> list[Event]:
    return []


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sup(events: list[Event], clock: Clock) -> Iterator[Supervisor]:
    s = Supervisor(events.append, RestartPolicy(delay=1.0, burst=2, interval=60.0), clock)
    yield s
    s.close()


def crash(sup: Supervisor) -> int:
    """SIGKILL the (only) child as a crash would; its PID."""
    child = sup.children[0]
    pid = child.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    child.wait_exit()
    return pid


@pytest.mark.parametrize(
    ("returncode", "text"),
    [
        (-signal.SIGKILL, "was killed by SIGKILL"),
        (-signal.SIGSEGV, "was killed by SIGSEGV"),
        (-200, "was killed by signal 200"),
        (0, "exited with status 0"),
        (2, "exited with status 2"),
    ],
)
def test_describe_exit(returncode: int, text: str) -> None:
    assert describe_exit(returncode) == text


def test_crashed_child_is_restarted_after_the_delay(
    sup: Supervisor, events: list[Event], clock: Clock, tmp_path: Path
) -> None:
    child = sup.add(spec(tmp_path))
    sup.start(child)
    assert child.state is State.RUNNING and events == []
    first = crash(sup)
    sup.check()
    assert events == [
        Event(
            Kind.DIED,
            "test child",
            f"the test child (pid {first}) was killed by SIGKILL; restarting it in 1 s (restart 1 of at most 2 "
            "within 60 s). Meanwhile: Nothing answers.",
        )
    ]
    assert child.state is State.WAITING and child.pid is None
    assert not (tmp_path / "child.pid").exists()
    clock.now += 0.9
    sup.check()
    assert len(events) == 1 and child.pid is None  # the delay has not passed
    clock.now += 0.1
    sup.check()
    second = child.pid
    assert second is not None and second != first
    assert events[1:] == [
        Event(Kind.RESTARTED, "test child", f"the test child was restarted (pid {second}) and serves again")
    ]
    assert (tmp_path / "child.pid").read_text() == f"{second}\n"
    assert child.state is State.RUNNING


def test_a_child_that_exits_non_zero_counts_as_dead(sup: Supervisor, events: list[Event], tmp_path: Path) -> None:
    child = sup.add(spec(tmp_path, ("sh", "-c", f"sleep {SETTLE * 3}; exit 7")))
    sup.start(child)
    assert child.wait_exit() == 7
    sup.check()
    assert events[0].kind is Kind.DIED
    assert events[0].message.startswith(f"the test child (pid {child.last_pid}) exited with status 7; restarting")


def test_a_child_stopped_on_purpose_is_not_restarted(
    sup: Supervisor, events: list[Event], clock: Clock, tmp_path: Path
) -> None:
    child = sup.add(spec(tmp_path))
    sup.start(child)
    pid = child.pid
    sup.stop(child, signal.SIGKILL)
    clock.now += 100
    sup.check()
    assert events == [] and child.state is State.STOPPED and child.pid is None
    assert not (tmp_path / "child.pid").exists()
    assert pid is not None and not Path(f"/proc/{pid}").exists()


def test_a_child_that_keeps_failing_degrades_the_stack_until_started_again(
    sup: Supervisor, events: list[Event], clock: Clock, tmp_path: Path
) -> None:
    good = spec(tmp_path)
    child = sup.add(good)
    sup.start(child)
    child.spec = replace(good, command=FAILING)  # from now on every start fails
    first = crash(sup)
    for _ in range(5):
        sup.check()
        clock.now += 1.0
    assert [e.kind for e in events] == [Kind.DIED, Kind.START_FAILED, Kind.DIED, Kind.START_FAILED, Kind.DEGRADED]
    assert events[1].message.startswith(
        f"the test child did not start: it exited with status 3; see {tmp_path / 'child.log'}\n  | cannot start"
    )
    assert events[2].message.startswith(
        "restart 1 of the test child failed; restarting it in 1 s (restart 2 of at most 2"
    )
    assert events[4].message == (
        "restart 2 of the test child failed.\n"
        "DEGRADED: the test child was restarted 2 times within 60 s and still fails; it is not restarted again. "
        f"Nothing answers until it runs again: see {tmp_path / 'child.log'}, fix the cause, then send SIGHUP to "
        "the sandbox to start it again."
    )
    assert child.state is State.FAILED and child.pid is None
    clock.now += 1000
    sup.check()
    assert len(events) == 5  # given up: no more attempts, however long we wait
    # An explicit start while it still fails leaves it degraded ...
    with pytest.raises(ChildError, match="did not start: it exited with status 3"):
        sup.start(child)
    assert child.state is State.FAILED
    # ... and once the cause is fixed, it runs again with a fresh budget.
    child.spec = good
    sup.start(child)
    assert child.state is State.RUNNING and child.restarts == []
    assert events[-1] == Event(
        Kind.RECOVERED, "test child", f"the test child runs again (pid {child.pid}); the stack is no longer degraded"
    )
    assert first != child.pid


def test_restarts_older_than_the_interval_are_forgotten(events: list[Event], clock: Clock, tmp_path: Path) -> None:
    sup = Supervisor(events.append, RestartPolicy(delay=0.0, burst=1, interval=10.0), clock)
    try:
        child = sup.add(spec(tmp_path))
        sup.start(child)
        crash(sup)
        sup.check()  # died: restart 1 of at most 1
        sup.check()  # restarted
        clock.now += 11  # the first restart leaves the window
        crash(sup)
        sup.check()
        sup.check()
        assert [e.kind for e in events] == [Kind.DIED, Kind.RESTARTED, Kind.DIED, Kind.RESTARTED]
        crash(sup)  # a second restart within 10 s: over the limit
        sup.check()
        assert events[-1].kind is Kind.DEGRADED and child.state is State.FAILED
    finally:
        sup.close()


def test_the_watcher_thread_restarts_and_close_stops_everything(events: list[Event], tmp_path: Path) -> None:
    sup = Supervisor(events.append, RestartPolicy(delay=0.05, burst=5, interval=60.0))
    child = sup.add(spec(tmp_path))
    sup.start(child)
    sup.watch()
    try:
        first = crash(sup)
        deadline = time.monotonic() + 10
        while not any(e.kind is Kind.RESTARTED for e in events) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [e.kind for e in events] == [Kind.DIED, Kind.RESTARTED]
        second = child.pid
        assert second is not None and second != first
    finally:
        sup.close()
    assert child.state is State.STOPPED and child.pid is None
    assert not Path(f"/proc/{second}").exists()
    time.sleep(0.2)
    assert [e.kind for e in events] == [Kind.DIED, Kind.RESTARTED]  # nothing restarted after close


def test_a_broken_reporter_does_not_stop_supervision(clock: Clock, tmp_path: Path) -> None:
    def report(event: Event) -> None:
        raise OSError("stderr is gone")

    sup = Supervisor(report, RestartPolicy(delay=0.0), clock)
    try:
        child = sup.add(spec(tmp_path))
        sup.start(child)
        crash(sup)
        sup.check()
        sup.check()
        assert child.state is State.RUNNING and child.pid is not None
    finally:
        sup.close()


def test_a_child_not_ready_in_time_is_stopped_and_reported(sup: Supervisor, tmp_path: Path) -> None:
    never = replace(spec(tmp_path), ready=lambda alive: False)
    child = sup.add(never)
    with pytest.raises(ChildError, match="did not start: it was not ready in time"):
        sup.start(child)
    assert child.state is State.STOPPED and child.pid is None
    assert child.last_pid is not None and not Path(f"/proc/{child.last_pid}").exists()


def test_terminate_pid_only_ends_what_is_ours(tmp_path: Path) -> None:
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        terminate_pid(proc.pid, lambda pid: False)
        assert proc.poll() is None  # not ours: left alone
        terminate_pid(proc.pid, lambda pid: proc.poll() is None)
        assert proc.wait(5) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()
