"""``exmilter policyd``: run the Postfix policy daemon until SIGTERM (docs/policyd.md)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from exmilter.commands._common import add_config_option, load_or_report


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


def _start_logging(verbose: bool) -> None:
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    level = LogLevel.debug if verbose else LogLevel.info
    observer = FilteringLogObserver(textFileLogObserver(sys.stderr), [LogLevelFilterPredicate(level)])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def run(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return 2
    import prometheus_client
    from prometheus_client import CollectorRegistry
    from twisted.internet import reactor
    from twisted.logger import Logger

    from exmilter.metrics import PolicyMetrics
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
    if hasattr(prometheus_client, "disable_created_metrics"):  # 0.17+; Debian 12 ships 0.16
        prometheus_client.disable_created_metrics()  # *_created series double the output, say nothing here
    log = Logger(namespace="exmilter.policyd")
    runtime = Runtime(args.config, loaded, PolicyMetrics(CollectorRegistry()), notify=sd_notify,
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
