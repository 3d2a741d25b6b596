"""Delivery outcomes from Postfix's own log: DELIVER / SEND / DEFER / FAIL / DSN tracking events.

Postfix writes what happened to each queued message (``maillog_file``, or syslog/journal);
exmilter reads it and appends the outcome to the message tracking log under the same queue
id, with the message id ``cleanup`` logged for it. Nothing here talks to Postfix.

* :func:`parse_line`: one log line (the ``maillog_file`` form ``Dec 02 14:09:13 host
  postfix/qmgr[5873]: …`` or an RFC 3339 syslog stamp) into its parts;
* :class:`DeliveryTracker`: per queue id, what earlier lines said (message id, sender, size),
  and an :class:`~exmilter.logs.tracking.Outcome` for each delivery line;
* :class:`Follower`: ``tail -F`` of a file (rotation and truncation followed), feeding a tracker.

Which event: ``status=sent`` by ``smtp``/``lmtp`` to another host is SEND, by a local
agent (``local``, ``virtual``, ``pipe``, ``discard``…) DELIVER; ``status=deferred`` is
DEFER; ``bounced``/``expired`` FAIL; ``sender non-delivery notification: <id>`` DSN.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from exmilter.logs.tracking import Outcome

#: The latest a whole-second stamp is taken to mean (see parse_line).
WHOLE_SECOND_BOUND = 0.999

_MONTHS = {
    m: i for i, m in enumerate(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1)
}
_CLASSIC = re.compile(
    r"^(?P<mon>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) (?P<hms>\d\d:\d\d:\d\d)(?P<frac>\.\d{1,9})? (?P<host>\S+) "
    r"(?P<prog>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: (?P<text>.*)$"
)
_ISO = re.compile(r"^(?P<ts>\d{4}-\d\d-\d\dT\S+) (?P<host>\S+) (?P<prog>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: (?P<text>.*)$")
_QID = re.compile(r"^(?P<qid>[0-9A-F]{6,}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,}): (?P<rest>.*)$")
_TO = re.compile(
    r"^to=<(?P<to>[^>]*)>, (?:orig_to=<[^>]*>, )?relay=(?P<relay>\S+?), .*?\bdsn=(?P<dsn>[\d.]+), "
    r"status=(?P<status>\w+)(?: \((?P<detail>.*)\))?$"
)
_FROM = re.compile(r"^from=<(?P<from>[^>]*)>, size=(?P<size>\d+), nrcpt=\d+")
_MSGID = re.compile(r"^message-id=(?P<id>\S*)")
_NDR = re.compile(r"^sender (?:non-delivery|delay|delivery status) notification: (?P<qid>\w+)")
_RELAY = re.compile(r"^(?P<host>[^\[]+)(?:\[(?P<ip>[^\]]+)\])?(?::\d+)?$")

#: Delivery agents that hand mail to another host (the rest deliver it here: DELIVER).
REMOTE_AGENTS = frozenset({"smtp", "lmtp"})
#: Queue ids a tracker remembers (message id, sender, size) before the oldest are forgotten.
MAX_QUEUED = 100_000


@dataclass(frozen=True, slots=True)
class LogLine:
    time: float
    host: str
    program: str  # "postfix/smtp", "postfix-sandbox/qmgr"
    queue_id: str
    text: str  # after "QUEUEID: "

    @property
    def agent(self) -> str:
        return self.program.rpartition("/")[2]


def parse_line(line: str, now: float) -> LogLine | None:
    """A Postfix line with a queue id, or None. A classic stamp has no year: the one that
    puts it at most a day after ``now`` (a December line read in January is last year's)."""
    line = line.rstrip("\r\n")
    m = _CLASSIC.match(line)
    if m is not None:
        month = _MONTHS.get(m["mon"])
        if month is None:
            return None
        year = time.localtime(now).tm_year
        try:
            t = _local(year, month, int(m["day"]), m["hms"])
            if t > now + 86400:
                t = _local(year - 1, month, int(m["day"]), m["hms"])
        except ValueError:
            return None
        if m["frac"]:  # syslog's high-precision stamps: keep them (rows sort by time)
            t += float(m["frac"])
        else:
            # Whole seconds (Postfix's own maillog_file): the event happened within [t, t+1). The
            # time it is read, bounded to that second, keeps a delivery after the RECEIVE row
            # the milter stamped with sub-second time in the same second.
            t = min(max(now, t), t + WHOLE_SECOND_BOUND)
    else:
        m = _ISO.match(line)
        if m is None:
            return None
        try:
            t = datetime.fromisoformat(m["ts"].replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    if "postfix" not in m["prog"]:
        return None
    q = _QID.match(m["text"])
    if q is None:
        return None
    return LogLine(t, m["host"], m["prog"], q["qid"], q["rest"])


def _local(year: int, month: int, day: int, hms: str) -> float:
    h, mi, s = (int(x) for x in hms.split(":"))
    return datetime(year, month, day, h, mi, s).timestamp()  # local time, as syslog writes it


class _Message:
    __slots__ = ("message_id", "sender", "size")

    def __init__(self) -> None:
        self.message_id = ""
        self.sender = ""
        self.size = 0


class DeliveryTracker:
    """Per queue id state from earlier lines, and the outcomes the delivery lines give."""

    def __init__(self, max_queued: int = MAX_QUEUED) -> None:
        self._messages: OrderedDict[str, _Message] = OrderedDict()
        self._max = max_queued

    def _message(self, qid: str) -> _Message:
        m = self._messages.get(qid)
        if m is None:
            m = self._messages[qid] = _Message()
            if len(self._messages) > self._max:
                self._messages.popitem(last=False)
        return m

    def feed(self, line: LogLine) -> Outcome | None:
        text = line.text
        if text.startswith("to=<"):
            t = _TO.match(text)
            if t is None:
                return None
            m = self._message(line.queue_id)
            status = t["status"]
            detail = t["detail"] or ""
            relay = _RELAY.match(t["relay"])
            host = relay["host"] if relay else t["relay"]
            ip = (relay["ip"] or "") if relay else ""
            if status == "sent":
                event = "SEND" if line.agent in REMOTE_AGENTS and host not in ("none", "local") else "DELIVER"
            elif status == "deferred":
                event = "DEFER"
            elif status in ("bounced", "expired"):
                event = "FAIL"
            else:
                return None
            return Outcome(
                time=line.time,
                event=event,
                queue_id=line.queue_id,
                recipients=(t["to"],),
                status=f"{t['dsn']} {status}" + (f" ({detail})" if detail else ""),
                sender=m.sender,
                message_id=m.message_id,
                size=m.size,
                relay="" if host == "none" else host,
                relay_ip=ip,
            )
        if text.startswith("message-id="):
            mid = _MSGID.match(text)
            if mid is not None:
                self._message(line.queue_id).message_id = mid["id"]
            return None
        if text.startswith("from=<"):
            f = _FROM.match(text)
            if f is not None:
                m = self._message(line.queue_id)
                m.sender, m.size = f["from"], int(f["size"])
            return None
        n = _NDR.match(text)
        if n is not None:
            m = self._message(line.queue_id)
            return Outcome(
                time=line.time,
                event="DSN",
                queue_id=line.queue_id,
                recipients=(m.sender,) if m.sender else (),
                status=text,
                sender=m.sender,
                message_id=m.message_id,
                related=n["qid"],
            )
        if text == "removed":
            self._messages.pop(line.queue_id, None)
        return None


def outcomes(lines: Iterator[str], tracker: DeliveryTracker, now: float) -> Iterator[Outcome]:
    for raw in lines:
        parsed = parse_line(raw, now)
        if parsed is not None:
            o = tracker.feed(parsed)
            if o is not None:
                yield o


class Follower:
    """``tail -F`` of a Postfix log: every outcome goes to ``emit`` (e.g. ``TrackingLog.outcome``).

    Starts at the end of the file (``from_start`` reads it whole first), notices rotation (a
    new inode) and truncation, and never raises out of :meth:`run`: an unreadable file is
    retried every ``poll`` seconds.
    """

    def __init__(
        self,
        path: str,
        emit: Callable[[Outcome], object],
        *,
        tracker: DeliveryTracker | None = None,
        from_start: bool = False,
        poll: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.emit = emit
        self.tracker = tracker or DeliveryTracker()
        self.from_start = from_start
        self.poll = poll
        self.clock = clock
        self.stop = threading.Event()
        self.errors = 0

    def run(self) -> None:
        f = None
        inode = None
        pending = ""
        first = True
        while not self.stop.is_set():
            try:
                if f is None:
                    f = open(self.path, encoding="utf-8", errors="replace")  # noqa: SIM115 - kept across polls
                    inode = os.fstat(f.fileno()).st_ino
                    if first and not self.from_start:
                        f.seek(0, os.SEEK_END)
                    first = False
                chunk = f.read()
                if chunk:
                    pending += chunk
                    *complete, pending = pending.split("\n")
                    for o in outcomes(iter(complete), self.tracker, self.clock()):
                        self.emit(o)
                    continue
                st = os.stat(self.path)
                if st.st_ino != inode or st.st_size < f.tell():  # rotated or truncated: start the new file
                    f.close()
                    f = None
                    pending = ""
                    self.from_start = True
                    continue
            except OSError:
                self.errors += 1
                first = False  # a file that appears later is read from its start
                if f is not None:
                    f.close()
                f = None
            self.stop.wait(self.poll)
        if f is not None:
            f.close()

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.run, name="exmilter-maillog", daemon=True)
        t.start()
        return t
