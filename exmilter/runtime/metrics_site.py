"""The metrics page on Twisted web: the exposition of one registry on every path.

The Twisted daemon's way to serve :func:`exmilter.runtime.metrics.exposition`; only a
daemon running a reactor imports this module.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from twisted.web.http import Request
from twisted.web.resource import Resource
from twisted.web.server import Site

from exmilter.runtime.metrics import exposition


class MetricsPage(Resource):
    """The text exposition of one registry, rendered synchronously (it takes microseconds)."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:
        body, content_type = exposition(self.registry)
        request.setHeader(b"Content-Type", content_type.encode())
        return body


class QuietSite(Site):
    """A site that writes no access log: a scrape every 15 s is not worth a line."""

    noisy = False

    def log(self, request: Request) -> None:
        pass


def metrics_site(registry: CollectorRegistry, reactor: Any = None) -> Site:
    """A site answering the exposition on every path (``/metrics`` included); its HTTP
    timeouts run on ``reactor`` (the global one when None)."""
    site = QuietSite(MetricsPage(registry), reactor=reactor)
    site.displayTracebacks = False
    return site
