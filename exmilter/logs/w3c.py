"""Exchange's log files (spec §5): W3C-style CSV rows, hourly files, their limits, and reading them back.

Both of Exchange's logs that exmilter writes (the SMTP receive protocol log and the message
tracking log) share one file discipline, implemented once here:

* a header (``#Software``, ``#Version``, ``#Log-type``, ``#Date``, ``#Fields``) at the top of each file;
* one file per UTC hour, ``<PREFIX><yyyyMMddHH>-<n>.LOG``, a new instance ``n`` when the file
  reaches its size limit;
* the directory kept under its size and age limits, oldest files first;
* a row is comma-separated, a field CSV-quoted when it holds a comma, a quote or a line break.

Writing never fails or blocks the caller (issue #15 §5): :class:`HourlyLog` turns every
``OSError`` (unwritable directory, full disk) into a counted, reported failure and tries
again at the next row; :class:`BackgroundLog` moves the writing to a thread behind a bounded
queue, so a slow disk costs the mail path one ``append``. The clock is the caller's:
every row carries the time of its event, and the file it goes to follows from that time.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO, Protocol

from exmilter.limits import LOG_QUEUE_MAX, LOG_WRITE_CHUNK

#: Where a failure to write goes: the daemon logs it and counts it in a metric.
FailureHook = Callable[[str, OSError], None]


@dataclass(frozen=True, slots=True)
class LogFileSettings:
    """Where one log goes and how much of it is kept (spec §5.1/§5.2 defaults in exmilter.limits)."""

    directory: str
    prefix: str  # "RECV", "MSGTRK"
    max_file_size: int
    max_directory_size: int
    max_age_days: int


_last_second: tuple[int, str] = (-1, "")
_last_stamp: tuple[float, str] = (-1.0, "")


def timestamp(when: float) -> str:
    """``when`` (epoch seconds) as Exchange writes it: UTC ``yyyy-MM-ddTHH:mm:ss.fffZ``
    (the seconds part formatted once per second, and the last time's text kept: rows come
    in bursts, a request's rows share one time)."""
    global _last_second, _last_stamp
    stamp = _last_stamp  # one read: another thread may replace it, never half of it
    if stamp[0] == when:
        return stamp[1]
    second, milli = divmod(round(when * 1000), 1000)
    last = _last_second  # one read: another thread may replace it, never half of it
    if last[0] != second:
        last = _last_second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    text = f"{last[1]}.{milli:03d}Z"
    _last_stamp = (when, text)
    return text


def parse_timestamp(text: str) -> float:
    """The inverse of :func:`timestamp` (also accepts the seconds-only and offset forms)."""
    t = text.strip()
    if t.endswith("Z"):
        t = t[:-1] + "+00:00"
    dt = datetime.fromisoformat(t)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def hour_stamp(when: float) -> str:
    """The hour part of a file name: UTC ``yyyyMMddHH``."""
    return time.strftime("%Y%m%d%H", time.gmtime(when))


_NAME = re.compile(r"^(?P<prefix>[A-Z]+?)(?P<hour>\d{10})-(?P<n>\d+)\.LOG$", re.IGNORECASE)


def parse_file_name(name: str) -> tuple[str, str, int] | None:
    """``(prefix, yyyyMMddHH, instance)`` of ``RECV2023011116-1.LOG``, or None for another name."""
    m = _NAME.match(name)
    if m is None:
        return None
    return m["prefix"].upper(), m["hour"], int(m["n"])


def file_hour_start(hour: str) -> float:
    """Epoch seconds at the start of a file's UTC hour (``yyyyMMddHH``)."""
    return datetime.strptime(hour, "%Y%m%d%H").replace(tzinfo=UTC).timestamp()


_NEEDS_QUOTES = frozenset(',"\r\n')


def field(value: str) -> str:
    """One CSV field as Exchange writes it: quoted (quotes doubled) when it holds a comma or a
    quote; a line break, which would start a fake row, becomes a space first."""
    if _NEEDS_QUOTES.isdisjoint(value):
        return value
    if "\r" in value or "\n" in value:
        value = value.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")
        if _NEEDS_QUOTES.isdisjoint(value):
            return value
    return '"' + value.replace('"', '""') + '"'


def row(values: Iterable[str]) -> str:
    """One CSV row with its line end."""
    return ",".join(map(field, values)) + "\r\n"


def header(software_version: str, log_type: str, created: float, fields: Sequence[str]) -> str:
    """A file's header (spec §5.1 "Header"), ``#Date`` the time the file was started."""
    return (
        "#Software: Microsoft Exchange Server\r\n"
        f"#Version: {software_version}\r\n"
        f"#Log-type: {log_type}\r\n"
        f"#Date: {timestamp(created)}\r\n"
        f"#Fields: {','.join(fields)}\r\n"
    )


class HourlyLog:
    """Rows appended to the hour's file in one directory, within Exchange's limits.

    Synchronous and single-threaded (:class:`BackgroundLog` puts it behind a thread). A row
    that cannot be written is dropped and counted in :attr:`failures`; ``on_failure`` hears
    about it (at most once per ``report_interval`` seconds, so a full disk is not one log
    line per row), and the next row tries again from a fresh open.
    """

    def __init__(
        self,
        settings: LogFileSettings,
        make_header: Callable[[float], str],
        *,
        on_failure: FailureHook | None = None,
        report_interval: float = 60.0,
    ) -> None:
        self.settings = settings
        self._make_header = make_header
        self._on_failure = on_failure
        self._report_interval = report_interval
        self._last_report = float("-inf")
        self._file: BinaryIO | None = None
        self._hour = ""
        self._hour_start = self._hour_end = 0.0  # [start, end) of ``_hour``: no strftime per row
        self._instance = 0
        self._size = 0
        self._dir_bytes = 0
        self.failures = 0
        self.written = 0

    # -- writing ---------------------------------------------------------------------------

    def write(self, when: float, text: str) -> bool:
        """Append ``text`` (whole rows) at the file of ``when``'s hour; False if it was lost."""
        return self._append(when, text.encode("utf-8", "surrogateescape"), 1) == 1

    def write_block(self, when: float, data: bytes) -> int:
        """Append ``data``, whole rows of ``when``'s hour, in as few writes as the file size
        limit and ``LOG_WRITE_CHUNK`` allow (cut at row ends); the number of rows written."""
        written = 0
        limit = self.settings.max_file_size
        fresh = limit - len(self._make_header(when).encode("utf-8"))  # room in a new file
        while data:
            first = data.find(b"\r\n") + 2 or len(data)  # the first row's end
            same = self._file is not None and self._hour_start <= when < self._hour_end
            room = limit - self._size if same else fresh
            if room < first:  # not even one more row fits: _append starts a new file
                room = fresh
            room = min(LOG_WRITE_CHUNK, room)
            if len(data) <= room:
                piece, data = data, b""
            else:
                cut = data.rfind(b"\r\n", 0, room) + 2
                if cut < 2:  # a row longer than the room: on its own
                    cut = first
                piece, data = data[:cut], data[cut:]
            written += self._append(when, piece, piece.count(b"\n") or 1)
        return written

    def _append(self, when: float, data: bytes, rows: int) -> int:
        """``data`` (``rows`` whole rows) at ``when``'s file: ``rows`` written, or 0 (counted lost)."""
        try:
            hour = self._hour if self._hour_start <= when < self._hour_end else hour_stamp(when)
            if self._file is None or hour != self._hour or self._size + len(data) > self.settings.max_file_size:
                self._open(hour, when, len(data))
            f = self._file
            assert f is not None
            f.write(data)
            self._size += len(data)
            self._dir_bytes += len(data)
            if self._dir_bytes > self.settings.max_directory_size:
                self._prune(when)
            self.written += rows
            return rows
        except OSError as e:
            self._failed(e, rows)
            return 0

    def flush(self) -> None:
        if self._file is not None:
            try:
                self._file.flush()
            except OSError as e:
                self._failed(e)

    def close(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            try:
                f.close()
            except OSError as e:
                self.failures += 1
                self._report(e)

    def _failed(self, e: OSError, rows: int = 1) -> None:
        self.failures += rows
        f, self._file = self._file, None
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()
        self._report(e)

    def _report(self, e: OSError) -> None:
        now = time.monotonic()
        if self._on_failure is not None and now - self._last_report >= self._report_interval:
            self._last_report = now
            self._on_failure(self.settings.directory, e)

    # -- files -----------------------------------------------------------------------------

    def path(self, hour: str, instance: int) -> str:
        return os.path.join(self.settings.directory, f"{self.settings.prefix}{hour}-{instance}.LOG")

    def _open(self, hour: str, when: float, need: int) -> None:
        self.close()
        s = self.settings
        os.makedirs(s.directory, exist_ok=True)
        if hour != self._hour:
            self._hour = hour
            self._hour_start = when - when % 3600
            self._hour_end = self._hour_start + 3600
            self._instance = max((n for _, h, n in self._files() if h == hour), default=0)
            if self._instance == 0:
                self._instance = 1
        path = self.path(hour, self._instance)
        size = os.path.getsize(path) if os.path.exists(path) else 0
        if size and size + need > s.max_file_size:
            self._instance += 1
            path = self.path(hour, self._instance)
            size = 0
        f = open(path, "ab")  # noqa: SIM115 - kept open across rows, closed by close()
        self._file = f
        self._size = size
        if size == 0:
            head = self._make_header(when).encode("utf-8")
            f.write(head)
            self._size = len(head)
        self._prune(when)

    def _files(self) -> list[tuple[str, str, int]]:
        """``(name, hour, instance)`` of this log's files, oldest first."""
        out = []
        try:
            names = os.listdir(self.settings.directory)
        except FileNotFoundError:
            return []
        for name in names:
            parsed = parse_file_name(name)
            if parsed is not None and parsed[0] == self.settings.prefix:
                out.append((name, parsed[1], parsed[2]))
        out.sort(key=lambda t: (t[1], t[2]))
        return out

    def _prune(self, when: float) -> None:
        """Delete files older than the age limit, then the oldest until the directory fits
        (never the file being written)."""
        s = self.settings
        current = self.path(self._hour, self._instance)
        oldest_kept = when - s.max_age_days * 86400
        sizes: list[tuple[str, int]] = []
        for name, hour, _ in self._files():
            path = os.path.join(s.directory, name)
            if path == current:
                continue
            try:
                if file_hour_start(hour) + 3600 <= oldest_kept:
                    os.unlink(path)
                    continue
                sizes.append((path, os.path.getsize(path)))
            except FileNotFoundError:
                continue
        total = sum(n for _, n in sizes) + self._size
        for path, n in sizes:
            if total <= s.max_directory_size:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            total -= n
        self._dir_bytes = total


class BackgroundLog:
    """An :class:`HourlyLog` written by its own thread: :meth:`write` never waits.

    The caller's row (already formatted) is appended to the current hour's list under a
    lock nobody holds for long (the request path pays a list append); the thread takes the
    lists every ``interval`` seconds, joins and encodes each once and writes it in a few
    ``write`` calls, so ``tail -f`` sees rows within that time. The thread holds the GIL
    only for that join and encode (the write releases it): a daemon's request thread is
    not held up by the log (docs/performance.md). Beyond ``max_queued`` waiting rows (the
    disk is slower than the mail) a row is dropped and counted in ``dropped``.
    """

    def __init__(self, log: HourlyLog, *, max_queued: int = LOG_QUEUE_MAX, interval: float = 0.2) -> None:
        self.log = log
        self.dropped = 0
        self._max = max_queued
        self._hours: list[tuple[float, list[str]]] = []  # (a time in the hour, its rows), in order
        self._rows: list[str] = []  # the last hour's rows: where write() appends
        self._start = self._end = 0.0  # [start, end) of that hour
        self._queued = 0
        self._interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the lists: writers append, the drainer takes them
        self._drainer = threading.Lock()  # one drainer at a time: the thread, flush() or close()
        self._thread = threading.Thread(target=self._run, name=f"exmilter-log-{log.settings.prefix}", daemon=True)
        self._thread.start()

    @property
    def failures(self) -> int:
        return self.log.failures + self.dropped

    def write(self, when: float, text: str) -> bool:
        """Queue ``text`` (whole rows) for ``when``'s file; False if the queue is full (dropped)."""
        with self._lock:
            if self._queued >= self._max:
                self.dropped += 1
                return False
            if not self._start <= when < self._end:  # another hour (or the first row since a drain)
                self._start = when - when % 3600  # UTC hours are whole multiples of 3600 epoch seconds
                self._end = self._start + 3600
                self._rows = []
                self._hours.append((when, self._rows))
            self._rows.append(text)
            self._queued += 1
        return True

    def _drain(self) -> None:
        with self._drainer:
            with self._lock:
                hours, self._hours = self._hours, []
                self._start = self._end = 0.0
                self._queued = 0
            if not hours:
                return
            for when, rows in hours:
                self.log.write_block(when, "".join(rows).encode("utf-8", "surrogateescape"))
            self.log.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._drain()
        self._drain()

    def flush(self) -> None:
        """Write every waiting row now (tests, shutdown)."""
        self._drain()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._drain()
        self.log.close()


class RowSink(Protocol):
    """What the protocol and tracking logs write through (an :class:`HourlyLog`, a
    :class:`BackgroundLog`, or a test's recorder)."""

    def write(self, when: float, text: str) -> bool: ...


# -- reading Exchange's files back ---------------------------------------------------------------


def log_files(paths: Iterable[str], prefix: str | None = None) -> list[str]:
    """Files named on a command line or found in directories, in time order (hour, instance);
    ``prefix`` keeps only that log's files from directories."""
    found: list[tuple[tuple[str, int, str], str]] = []
    for p in paths:
        if os.path.isdir(p):
            for name in os.listdir(p):
                parsed = parse_file_name(name)
                if parsed is not None and (prefix is None or parsed[0].startswith(prefix)):
                    found.append(((parsed[1], parsed[2], name), os.path.join(p, name)))
        elif os.path.exists(p):  # a log not written yet has nothing to read (commands check their arguments)
            parsed = parse_file_name(os.path.basename(p))
            found.append(((parsed[1], parsed[2], p) if parsed else ("", 0, p), p))
    found.sort(key=lambda t: t[0])
    return [p for _, p in found]


def read_rows(path: str) -> Iterator[dict[str, str]]:
    """Each row of an Exchange log file as ``{field: value}``, streaming.

    The ``#Fields:`` line names the columns (a later one, as after Exchange restarts within
    one file, takes over); other ``#`` lines are skipped; quoted fields are CSV's; a row
    shorter than the fields gets empty values.
    """
    names: list[str] = []
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        for line in f:
            if line.startswith("#"):
                if line.startswith("#Fields:"):
                    names = [n.strip() for n in line[len("#Fields:") :].strip().split(",")]
                continue
            if not line.strip() or not names:
                continue
            values = next(csv.reader([line]))
            if len(values) < len(names):
                values += [""] * (len(names) - len(values))
            yield dict(zip(names, values, strict=False))
