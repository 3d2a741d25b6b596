"""``exmilter milter`` assembled and run: libmilter on its own thread, signals on the main one.

libmilter runs every callback on threads it creates and, in ``smfi_main``, blocks SIGHUP,
SIGTERM and SIGINT for a signal thread of its own. So ``Milter.runmilter`` runs on a worker
thread and the main thread keeps the signals: SIGHUP sets a flag that a reload thread waits
on (the file is read off the callback threads, and a session keeps the generation of its
connect), SIGTERM/SIGINT stop libmilter. No Twisted (docs/design.md): metrics are served by
prometheus_client's own HTTP thread, systemd is told with exmilter.runtime.notify.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

import Milter
import milter as libmilter
from prometheus_client import start_http_server

from exmilter.config import ConfigError, Loaded
from exmilter.limits import MILTER_SOCKET_TIMEOUT
from exmilter.logs.events import LogWriteFailed, ReloadStarted
from exmilter.logs.files import PROTOCOL, TRACKING, Writers, open_protocol_log, open_tracking_log
from exmilter.logs.tracking import MILTER_PREFIX
from exmilter.milter import events as me
from exmilter.milter.callbacks import ExchangeMilter, Shared
from exmilter.milter.coverage import CoverageSender
from exmilter.milter.log import StderrSink
from exmilter.milter.metrics import MilterMetrics
from exmilter.milter.watchdog import MilterWatchdog, negotiate
from exmilter.runtime.generation import Generations
from exmilter.runtime.metrics import new_registry
from exmilter.runtime.notify import READY, RELOADING, STOPPING, sd_notify, watchdog_interval
from exmilter.runtime.watchdog import Pinger

EXIT_OK, EXIT_START_FAILED, EXIT_REFUSED = 0, 1, 2
#: How long the milter's socket may take to appear before the start is called failed.
START_TIMEOUT = 30.0


def _endpoint_parts(endpoint: str) -> tuple[str, list[str], dict[str, str]]:
    parts = [a.replace("\\:", ":") for a in endpoint.replace("\\:", "\0").split(":")]
    parts = [p.replace("\0", ":") for p in parts]
    kind, args = parts[0], parts[1:]
    return kind, [a for a in args if "=" not in a], dict(a.split("=", 1) for a in args if "=" in a)


def libmilter_socket(endpoint: str) -> tuple[str, str | None, int | None]:
    """``(libmilter socket, unix path or None, unix mode or None)`` for an endpoint string.

    ``unix:/run/exmilter/milter.sock:mode=660`` → ``unix:/run/exmilter/milter.sock``;
    ``tcp:10042:interface=127.0.0.1`` → ``inet:10042@127.0.0.1`` (pymilter's order).
    Raises ValueError for anything else.
    """
    kind, positional, named = _endpoint_parts(endpoint)
    if kind == "unix":
        path = named.get("address") or (positional[0] if positional else "")
        if not path.startswith("/"):
            raise ValueError(f"{endpoint!r}: give an absolute socket path")
        mode = named.get("mode")
        try:
            return f"unix:{path}", path, int(mode, 8) if mode else None
        except ValueError:
            raise ValueError(f"{endpoint!r}: mode {mode!r} is not octal") from None
    if kind in ("tcp", "tcp6"):
        port = named.get("port") or (positional[0] if positional else "")
        if not (port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"{endpoint!r}: no port")
        host = named.get("interface") or ("::1" if kind == "tcp6" else "127.0.0.1")
        return (f"inet6:{port}@{host}" if ":" in host else f"inet:{port}@{host}"), None, None
    raise ValueError(f"{endpoint!r}: the milter listens on unix:PATH or tcp:PORT:interface=ADDRESS")


def metrics_address(endpoint: str) -> tuple[str, int]:
    """``tcp:9143:interface=127.0.0.1`` → ``("127.0.0.1", 9143)``."""
    kind, positional, named = _endpoint_parts(endpoint)
    port = named.get("port") or (positional[0] if positional else "")
    if kind not in ("tcp", "tcp6") or not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{endpoint!r}: metrics are served on tcp:PORT[:interface=ADDRESS]")
    return named.get("interface") or ("::1" if kind == "tcp6" else "127.0.0.1"), int(port)


class Reloader:
    """SIGHUP → one reload at a time on its own thread; a refused file keeps the old rules."""

    def __init__(self, generations: Generations, log: Callable[[object], None], notify: Callable[[str], Any]) -> None:
        self.generations = generations
        self.log = log
        self.notify = notify
        self._wanted = threading.Event()
        self._stop = False
        self.thread = threading.Thread(target=self._run, name="exmilter-reload", daemon=True)

    def request(self) -> None:
        self._wanted.set()  # several SIGHUPs while one reload runs collapse into one more

    def stop(self) -> None:
        self._stop = True
        self._wanted.set()

    def reload_now(self) -> bool:
        """One reload; True when the new file is in use."""
        g = self.generations
        self.notify(RELOADING)
        self.log(ReloadStarted(g.path))
        before = g.current
        try:
            try:
                candidate = g.build()
            except ConfigError as e:
                g.refused(e.problems)
                return False
            except Exception as e:  # a file that breaks the loader in another way: still refused
                self.log(me.CallbackFailed("RELOAD", "-", f"{type(e).__name__}: {e}"[:400]))
                g.refused()
                return False
            try:
                g.swap(candidate)
            except Exception:
                g.broken(before)
                return False
            return True
        finally:
            self.notify(READY)

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._stop:
                return
            self.reload_now()


def _wait_listening(path: str | None, inet: str, alive: Callable[[], bool], timeout: float = START_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        if path is not None:
            try:
                if stat.S_ISSOCK(os.stat(path).st_mode):
                    return True
            except OSError:
                pass
        else:
            port, _, host = inet.partition(":")[2].partition("@")
            try:
                with socket.create_connection((host, int(port)), timeout=1):
                    return True
            except OSError:
                pass
        time.sleep(0.05)
    return False


def run(
    path: str,
    loaded: Loaded,
    listen: str,
    metrics_endpoint: str | None,
    coverage: str | None,
    *,
    verbose: bool = False,
    stderr: TextIO | None = None,
    tracking_log_path: str | None = None,
    protocol_log_path: str | None = None,
) -> int:
    """Serve until SIGTERM; the exit status (docs/milter.md)."""
    err = stderr or sys.stderr
    try:
        sock, unix_path, mode = libmilter_socket(listen)
        metrics_at = metrics_address(metrics_endpoint) if metrics_endpoint else None
    except ValueError as e:
        print(f"exmilter milter: {e}", file=err)
        return EXIT_REFUSED

    log = StderrSink(err, verbose)

    def notify(message: str) -> Any:
        return sd_notify(message, log=log)

    metrics = MilterMetrics(new_registry())
    generations = Generations(path, loaded, metrics, log)
    sender = CoverageSender(coverage)
    sender.reset()  # a new process: nothing an earlier one registered is covered any more
    logs = loaded.organization.logs
    if tracking_log_path is not None:
        logs = dataclasses.replace(logs, message_tracking_log_path=tracking_log_path)
    if protocol_log_path is not None:
        logs = dataclasses.replace(logs, receive_protocol_log_path=protocol_log_path)
    writers = Writers()  # opened at start: a reload that changes logs: needs a restart (docs/logs.md)
    tracking = open_tracking_log(
        logs,
        loaded.organization.server.fqdn,
        writers,
        lambda where, e: log(LogWriteFailed(TRACKING, where, str(e))),
        prefix=MILTER_PREFIX,
    )
    protocol = open_protocol_log(logs, writers, lambda where, e: log(LogWriteFailed(PROTOCOL, where, str(e))))
    metrics.watch_log_failures(writers.failures_by_log)
    shared = Shared(generations, metrics, sender, log, verbose, tracking, protocol)
    Milter.factory = lambda: ExchangeMilter(shared)
    libmilter.set_flags(libmilter.ADDHDRS | libmilter.CHGHDRS)
    if metrics_at is not None:
        try:
            start_http_server(metrics_at[1], metrics_at[0], registry=metrics.registry)
        except OSError as e:
            print(f"exmilter milter: metrics on {metrics_endpoint}: {e}", file=err)
            return EXIT_START_FAILED
    if unix_path is not None:
        try:
            if stat.S_ISSOCK(os.lstat(unix_path).st_mode):
                os.unlink(unix_path)  # a stale socket: readiness waits for the new one
        except FileNotFoundError:
            pass
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            Milter.runmilter("exmilter", sock, MILTER_SOCKET_TIMEOUT)
        except BaseException as e:  # reported by the main thread
            failure.append(e)

    worker = threading.Thread(target=serve, name="exmilter-libmilter", daemon=True)
    reloader = Reloader(generations, log, notify)
    stopping: list[str] = []

    def on_signal(signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            reloader.request()
        elif not stopping:
            stopping.append(signal.Signals(signum).name)
            notify(STOPPING)
            libmilter.stop()

    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    reloader.thread.start()
    worker.start()
    if not _wait_listening(unix_path, sock, worker.is_alive):
        print(f"exmilter milter: libmilter did not listen on {sock}: {failure[0] if failure else 'timeout'}", file=err)
        return EXIT_START_FAILED
    if unix_path is not None and mode is not None:
        os.chmod(unix_path, mode)
    group = _endpoint_parts(listen)[2].get("group") if unix_path is not None else None
    if unix_path is not None and group:
        try:
            shutil.chown(unix_path, group=group)  # Postfix (group postfix) must reach the socket
        except (OSError, LookupError) as e:
            print(f"exmilter milter: {unix_path}: group {group}: {e}", file=err)
            libmilter.stop()
            return EXIT_START_FAILED
    g = generations.current
    log(me.MilterStarted(sock, g.number, g.source, coverage or ""))
    notify(f"{READY}\nSTATUS=generation {g.number} from {g.source}")
    interval = watchdog_interval()
    watchdog = None
    if interval is not None:  # WatchdogSec= in the unit: pinged only while libmilter answers
        watchdog = MilterWatchdog(
            interval, sock, lambda: negotiate(sock, interval), worker.is_alive, Pinger(notify, log)
        )
        watchdog.start()
    while worker.is_alive():
        worker.join(0.5)  # wakes the main thread so Python runs the signal handlers
    if watchdog is not None:
        watchdog.stop()
    reloader.stop()
    sender.close()
    writers.close()
    if failure and not stopping:
        print(f"exmilter milter: libmilter stopped: {failure[0]}", file=err)
        return EXIT_START_FAILED
    log(me.MilterStopped(stopping[0] if stopping else "libmilter returned"))
    return EXIT_OK
