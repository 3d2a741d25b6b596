"""``exmilter policyd``: run the Postfix policy daemon until SIGTERM (docs/policyd.md)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, TextIO

from exmilter.commands._common import add_config_option, load_or_report
from exmilter.logsafe import printable_lines

if TYPE_CHECKING:
    from exmilter.metrics import Metrics


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "policyd", help="run the Postfix policy daemon",
        description="Answer Postfix policy requests with Exchange's receive-connector decisions. "
                    "SIGHUP reloads the file (a bad file keeps the running configuration); SIGTERM stops.")
    add_config_option(p)
    p.add_argument("--listen", action="append", metavar="ENDPOINT",
                   help="Twisted endpoint to serve policy requests on, e.g. tcp:10040:interface=127.0.0.1 or "
                        "unix:/run/exmilter/policy.sock:mode=660[:group=postfix]; repeatable; "
                        "replaces policyd.listen from the file")
    p.add_argument("--metrics", metavar="ENDPOINT",
                   help="endpoint for the Prometheus metrics (default: policyd.metrics from the file, "
                        "tcp:9142:interface=127.0.0.1); 'none' disables")
    p.add_argument("-v", "--verbose", action="store_true", help="log every decision, not only refusals")
    p.set_defaults(func=run)


def _endpoint_errors(reactor: Any, descriptions: list[str]) -> list[str]:
    from twisted.internet.endpoints import serverFromString

    from exmilter.policy.service import split_group

    errors = []
    for d in descriptions:
        try:
            serverFromString(reactor, split_group(d)[0])
        except (ValueError, TypeError, KeyError) as e:
            errors.append(f"{d}: not a Twisted server endpoint: {e}")
    return errors


class StderrObserver:
    """The daemon's one log observer: ``TIME [NAMESPACE#LEVEL] TEXT`` lines on a text stream.

    The output is twisted.logger's classic text format (what ``textFileLogObserver`` wrote
    before), but the per-request path is cheap: a set lookup on ``log_level`` instead of a
    filter predicate, the timestamp formatted once per second, and lines published with
    :func:`exmilter.policy.service.log_line` are written as they are (no format string).
    Other events (reloads, warnings, failures with their tracebacks) are rendered by
    Twisted's own formatter, continuation lines indented with a tab. One ``write`` per
    event; stderr is line-buffered, so each line reaches the journal as it is written.

    Whatever an event carries, no control character is written: values from requests are
    escaped where they are formatted (exmilter.logsafe.escape), and this observer escapes
    any that is left (a CR, an ANSI escape in an exception message) as a second guard; a
    newline only ever starts a tab-indented continuation line.
    """

    def __init__(self, stream: TextIO, levels: Collection[object]) -> None:
        from twisted.logger import formatEventAsClassicLogText

        from exmilter.policy.service import TEXT_KEY

        self._write = stream.write
        self._levels = frozenset(levels)
        self._classic = formatEventAsClassicLogText
        self._key = TEXT_KEY
        self._second = -1
        self._stamp = ""

    def _time(self, when: float | None) -> str:
        """Twisted's RFC 3339 local time to the second, formatted once per second."""
        if when is None:
            when = time.time()
        second = int(when)
        if second != self._second:
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(second))
            self._second = second
        return self._stamp

    def __call__(self, event: dict[str, Any]) -> None:
        level = event.get("log_level")
        if level is None or level not in self._levels:
            return
        text = event.get(self._key)
        if text is None:
            line: str | None = self._classic(event, formatTime=self._time)
            if line:
                body = line[:-1]  # Twisted ends it with a newline and indents the others: "\n\t"
                if not body.isprintable():
                    line = "\n\t".join(printable_lines(part) for part in body.split("\n\t")) + "\n"
                self._write(line)
            return
        if not text.isprintable():
            text = printable_lines(text).replace("\n", "\n\t")
        self._write(f"{self._time(event.get('log_time'))} [{event.get('log_namespace', '-')}#{level.name}] {text}\n")


def log_levels(verbose: bool) -> frozenset[Any]:
    """The levels written: info and above, debug too with ``--verbose``."""
    from twisted.logger import LogLevel

    lowest = LogLevel.debug if verbose else LogLevel.info
    return frozenset(lv for lv in LogLevel.iterconstants() if lv >= lowest)


def _start_logging(verbose: bool, stream: TextIO | None = None) -> StderrObserver:
    from twisted.logger import globalLogBeginner

    observer = StderrObserver(stream or sys.stderr, log_levels(verbose))
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    return observer


def _metrics(enabled: bool) -> Metrics:
    """The daemon's metrics: Prometheus on a fresh registry, or :class:`NullMetrics` (no cost)."""
    from exmilter.metrics import NullMetrics, PolicyMetrics

    if not enabled:
        return NullMetrics()
    import prometheus_client
    from prometheus_client import CollectorRegistry

    if hasattr(prometheus_client, "disable_created_metrics"):  # 0.17+; Debian 12 ships 0.16
        prometheus_client.disable_created_metrics()  # *_created series double the output, say nothing here
    return PolicyMetrics(CollectorRegistry())


def run(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return 2
    from twisted.internet import reactor
    from twisted.logger import Logger

    from exmilter.policy.service import Runtime, build, sd_notify

    settings = loaded.organization.policyd
    listen = list(args.listen or settings.listen)
    if args.metrics is None:
        metrics_endpoint = settings.metrics
    else:
        metrics_endpoint = None if args.metrics.strip().lower() == "none" else args.metrics
    errors = _endpoint_errors(reactor, listen + ([metrics_endpoint] if metrics_endpoint else []))
    if errors:
        for e in errors:
            print(e, file=sys.stderr)
        return 2

    _start_logging(args.verbose)
    log = Logger(namespace="exmilter.policyd")
    from exmilter.policy.limits import raise_open_files_limit

    raise_open_files_limit()  # one descriptor per Postfix smtpd process (docs/policyd.md, Limits)
    runtime = Runtime(args.config, loaded, _metrics(metrics_endpoint is not None), notify=sd_notify,
                      verbose=args.verbose)
    daemon = build(reactor, runtime, listen, metrics_endpoint)
    status = {"code": 0}

    def failed(failure: Any) -> None:
        err = failure
        while hasattr(err.value, "subFailure"):  # gatherResults nests FirstError
            err = err.value.subFailure
        log.critical("cannot start: {error}", error=err.getErrorMessage())
        status["code"] = 1
        reactor.stop()

    def stopping() -> Any:
        sd_notify("STOPPING=1")
        return daemon.top.stopService()

    daemon.ready.addErrback(failed)
    reactor.callWhenRunning(daemon.top.startService)
    reactor.addSystemEventTrigger("before", "shutdown", stopping)
    reactor.run()
    return status["code"]
