"""``Get-MessageTrackingLog`` over exmilter's tracking files: filters, a fast scan, Exchange's table.

Fast on a month of logs without an index, by three cuts before any CSV is parsed:

1. files: a file name carries its UTC hour, so files outside ``--start``/``--end`` are not opened;
2. needles: a filter on an address, message id, queue id, event or connector is searched as
   bytes in the whole file (case-insensitively), and only the lines it hits are looked at;
3. time: a row starts with its ISO timestamp, compared as text.

Only the rows that survive are parsed and checked exactly (docs/logs.md, docs/performance.md).
"""

from __future__ import annotations

import csv
import heapq
import itertools
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from exmilter.logs import tracking as T
from exmilter.logs.w3c import file_hour_start, log_files, parse_file_name, timestamp

_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_when(text: str, now: float) -> float:
    """``-10m``/``-2h``/``-1d``/``-30s`` before ``now``, or an absolute ISO date and time
    (``2023-01-11``, ``2023-01-11T16:00``, ``2023-01-11 16:00:04Z``); without a zone it is
    local time, as ``Get-Date`` is. Raises ValueError with what is accepted."""
    t = text.strip()
    m = _RELATIVE.match(t)
    if m:
        return now - float(m[1]) * _UNITS[m[2]]
    try:
        iso = t[:-1] + "+00:00" if t.endswith("Z") else t
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        raise ValueError(f"{text!r}: expected -10m, -2h, -1d, -30s or a date and time like 2023-01-11T16:00") from None


@dataclass(frozen=True, slots=True)
class TrackingFilter:
    """What ``exmilter track`` asks for; every given condition must hold (as Exchange's)."""

    start: float | None = None
    end: float | None = None
    sender: str | None = None
    recipients: tuple[str, ...] = ()  # any of them among the row's recipients
    event_id: str | None = None
    message_id: str | None = None
    connector: str | None = None  # SERVER\Name or Name
    queue_id: str | None = None

    def needles(self) -> list[bytes]:
        """Lower-case literals each matching row must contain (the most selective first)."""
        out = []
        for v in (self.message_id, self.queue_id, self.sender, self.connector, self.event_id):
            if v:
                out.append(v.strip("<>").lower().encode())
        if len(self.recipients) == 1:
            out.append(self.recipients[0].lower().encode())
        return out

    def matches(self, r: dict[str, str]) -> bool:
        if self.event_id and r.get("event-id", "").upper() != self.event_id.upper():
            return False
        if self.sender and r.get("sender-address", "").lower() != self.sender.lower():
            return False
        if self.recipients:
            have = {a.lower() for a in r.get("recipient-address", "").split(";")}
            if not any(x.lower() in have for x in self.recipients):
                return False
        if self.message_id and r.get("message-id", "").strip("<>").lower() != self.message_id.strip("<>").lower():
            return False
        if self.queue_id and r.get("internal-message-id", "").lower() != self.queue_id.lower():
            return False
        if self.connector:
            cid = r.get("connector-id", "").lower()
            want = self.connector.lower()
            if cid != want and cid.rpartition("\\")[2] != want:
                return False
        return True


def _in_hours(path: str, start: float | None, end: float | None) -> bool:
    import os

    parsed = parse_file_name(os.path.basename(path))
    if parsed is None:
        return True
    begin = file_hour_start(parsed[1])
    return (start is None or begin + 3600 > start) and (end is None or begin <= end)


def _candidate_lines(data: bytes, needles: Sequence[bytes]) -> Iterator[bytes]:
    """The lines of ``data`` (not ``#`` lines) that contain every needle, case-insensitively."""
    if not needles:
        for line in data.split(b"\n"):
            if line and not line.startswith(b"#"):
                yield line
        return
    low = data.lower()
    first, rest = needles[0], needles[1:]
    pos = 0
    last_start = -1
    while True:
        i = low.find(first, pos)
        if i < 0:
            return
        s = low.rfind(b"\n", 0, i) + 1
        e = low.find(b"\n", i)
        if e < 0:
            e = len(low)
        pos = e + 1
        if s == last_start:
            continue
        last_start = s
        line = low[s:e]
        if line.startswith(b"#") or any(n not in line for n in rest):
            continue
        yield data[s:e]


def search(paths: Iterable[str], flt: TrackingFilter) -> Iterator[dict[str, str]]:
    """Rows of the tracking files under ``paths`` (files or directories) that match ``flt``, in
    time order: the files of one hour (the policy daemon's ``MSGTRK``, the milter's ``MSGTRKMT``)
    are merged by their rows' time, so a message's RECEIVE comes before its delivery."""
    scan = _Scan(flt)
    for _, group in itertools.groupby(log_files(paths, prefix=T.PREFIX), key=_hour_of):
        files = [p for p in group if _in_hours(p, flt.start, flt.end)]
        if len(files) == 1:
            yield from scan.rows(files[0])
        elif files:
            yield from heapq.merge(*(scan.rows(p) for p in files), key=_row_time)


def _hour_of(path: str) -> str:
    parsed = parse_file_name(os.path.basename(path))
    return parsed[1] if parsed is not None else path


def _row_time(row: dict[str, str]) -> str:
    return row.get("date-time", "")


class _Scan:
    """One filter's byte needles and time bounds, computed once for every file searched."""

    def __init__(self, flt: TrackingFilter) -> None:
        self.flt = flt
        self.start_text = timestamp(flt.start) if flt.start is not None else None
        self.end_text = timestamp(flt.end) if flt.end is not None else None
        self.needles = flt.needles()

    def rows(self, path: str) -> Iterator[dict[str, str]]:
        """The matching rows of one file, in the file's order."""
        start_text, end_text, flt = self.start_text, self.end_text, self.flt
        with open(path, "rb") as f:
            data = f.read()
        names = list(T.FIELDS)
        for line in data.split(b"\n", 8)[:8]:  # the header is at the top: its own field list if any
            if line.startswith(b"#Fields:"):
                names = line[8:].decode("utf-8", "replace").strip().split(",")
        for raw in _candidate_lines(data, self.needles):
            stamp = raw[:24].decode("ascii", "replace")
            if (start_text is not None and stamp < start_text) or (end_text is not None and stamp > end_text):
                continue
            values = next(csv.reader([raw.decode("utf-8", "replace").rstrip("\r")]))
            r = dict(zip(names, values, strict=False))
            if flt.matches(r):
                yield r


# -- output ------------------------------------------------------------------------------------------

#: The table's columns: Exchange's default view (EventId, Source, Sender, Recipients,
#: MessageSubject) plus what a Postfix admin joins on and what the seeds check.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("Timestamp", "date-time"),
    ("EventId", "event-id"),
    ("Source", "source"),
    ("QueueId", "internal-message-id"),
    ("ConnectorId", "connector-id"),
    ("MessageInfo", "message-info"),
    ("Sender", "sender-address"),
    ("Recipients", "recipient-address"),
    ("MessageSubject", "message-subject"),
)


def table(rows: Iterable[dict[str, str]]) -> Iterator[str]:
    """Rows as aligned text columns (computed over all rows, so this keeps them in memory)."""
    data = [[r.get(k, "").replace(";", ", ") for _, k in COLUMNS] for r in rows]
    return aligned([h for h, _ in COLUMNS], data)


#: The summary's columns: one row per message (queue id), its RECEIVE and its last event.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "Received",
    "QueueId",
    "ConnectorId",
    "MessageInfo",
    "Sender",
    "Recipients",
    "FinalEvent",
    "FinalStatus",
    "MessageId",
)


def summary(rows: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    """One entry per queue id, in order of first appearance: what RECEIVE said (connector,
    message-info, sender, recipients) and the last event seen with its status; the message id
    from whichever row has one (a policy-written RECEIVE has none; Postfix's cleanup line does)."""
    out: dict[str, dict[str, str]] = {}
    for r in rows:
        qid = r.get("internal-message-id", "")
        if not qid:
            continue
        m = out.get(qid)
        if m is None:
            m = out[qid] = dict.fromkeys(SUMMARY_COLUMNS, "")
            m["QueueId"] = qid
        if r.get("event-id") == "RECEIVE":
            m["Received"] = r.get("date-time", "")
            m["ConnectorId"] = r.get("connector-id", "")
            m["MessageInfo"] = r.get("message-info", "")
            m["Recipients"] = r.get("recipient-address", "").replace(";", ", ")
        else:
            m["FinalEvent"] = r.get("event-id", "")
            m["FinalStatus"] = r.get("recipient-status", "")
        m["Sender"] = m["Sender"] or r.get("sender-address", "")
        m["MessageId"] = m["MessageId"] or r.get("message-id", "")
        if not m["FinalEvent"]:
            m["FinalEvent"] = r.get("event-id", "")
    return list(out.values())


def aligned(heads: Sequence[str], data: Sequence[Sequence[str]]) -> Iterator[str]:
    widths = [max([len(h)] + [len(row[i]) for row in data]) for i, h in enumerate(heads)]
    yield " ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip()
    yield " ".join("-" * w for w in widths)
    for row in data:
        yield " ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()


def now() -> float:
    return time.time()
