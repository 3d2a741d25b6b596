"""The daemons' Exchange log files from the configuration's ``logs:`` section (docs/logs.md).

What a daemon calls at start (a change of ``logs:`` needs a restart)::

    writers = Writers()
    plog = open_protocol_log(org.logs, writers, on_failure)     # None when the path is empty
    tlog = open_tracking_log(org.logs, org.server.fqdn, writers, on_failure)

Both write from their own thread (:class:`~exmilter.logs.w3c.BackgroundLog`); ``on_failure``
is called (rate-limited) with the directory and the ``OSError`` so the daemon can log it and
count it (``exmilter_<component>_log_write_failures_total``); ``close()`` on shutdown.
"""

from __future__ import annotations

from exmilter.logs import protocol as P
from exmilter.logs import tracking as T
from exmilter.logs.w3c import BackgroundLog, FailureHook, HourlyLog, LogFileSettings
from exmilter.model import LogSettings

#: The two logs by the name the failure metric's ``log`` label gives them.
PROTOCOL, TRACKING = "protocol", "tracking"


def protocol_file_settings(s: LogSettings, prefix: str = P.PREFIX) -> LogFileSettings | None:
    """``prefix``: each writing process has its own files (P.PREFIX for the daemon that judges
    the sessions, P.FALLBACK_PREFIX for the policy daemon beside a milter, docs/logs.md)."""
    if not s.receive_protocol_log_path:
        return None
    return LogFileSettings(
        s.receive_protocol_log_path,
        prefix,
        s.receive_protocol_log_max_file_size,
        s.receive_protocol_log_max_directory_size,
        max(1, s.receive_protocol_log_max_age.days),
    )


def tracking_file_settings(s: LogSettings, prefix: str = T.PREFIX) -> LogFileSettings | None:
    """``prefix``: each writing process has its own files (``MSGTRK`` the policy daemon,
    ``MSGTRKMT`` the milter); ``track`` reads every ``MSGTRK*``, as Exchange's own prefixes."""
    if not s.message_tracking_log_enabled or not s.message_tracking_log_path:
        return None
    return LogFileSettings(
        s.message_tracking_log_path,
        prefix,
        s.message_tracking_log_max_file_size,
        s.message_tracking_log_max_directory_size,
        max(1, s.message_tracking_log_max_age.days),
    )


class Writers:
    """The background writers a daemon opened, to flush and close together."""

    def __init__(self) -> None:
        self.logs: list[BackgroundLog] = []
        self._names: list[str] = []

    def open(
        self, settings: LogFileSettings, header: P.HeaderMaker, on_failure: FailureHook | None, name: str
    ) -> BackgroundLog:
        """A background writer of one log; ``name`` (PROTOCOL, TRACKING) labels its failures."""
        w = BackgroundLog(HourlyLog(settings, header, on_failure=on_failure))
        self.logs.append(w)
        self._names.append(name)
        return w

    @property
    def failures(self) -> int:
        return sum(w.failures for w in self.logs)

    def failures_by_log(self) -> dict[str, int]:
        """Rows lost per log (``protocol``, ``tracking``): the metric's samples."""
        out = dict.fromkeys((PROTOCOL, TRACKING), 0)
        for name, w in zip(self._names, self.logs, strict=True):
            out[name] += w.failures
        return out

    def flush(self) -> None:
        for w in self.logs:
            w.flush()

    def close(self) -> None:
        for w in self.logs:
            w.close()
        self.logs.clear()
        self._names.clear()


def open_protocol_log(
    s: LogSettings, writers: Writers, on_failure: FailureHook | None = None, prefix: str = P.PREFIX
) -> P.ProtocolLog | None:
    fs = protocol_file_settings(s, prefix)
    return P.ProtocolLog(writers.open(fs, P.protocol_header, on_failure, PROTOCOL)) if fs else None


def open_tracking_log(
    s: LogSettings,
    server_hostname: str,
    writers: Writers,
    on_failure: FailureHook | None = None,
    prefix: str = T.PREFIX,
) -> T.TrackingLog | None:
    fs = tracking_file_settings(s, prefix)
    return T.TrackingLog(writers.open(fs, T.tracking_header, on_failure, TRACKING), server_hostname) if fs else None
