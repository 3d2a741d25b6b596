"""Configuration generations: the one in use, and how a reload replaces it.

A :class:`Generation` is one loaded file and the engine built from it. A reload builds the
next one off the request path (:meth:`Generations.build`, blocking: it reads and validates
the file) and swaps it in with one assignment (:meth:`Generations.swap`), so a request or a
session always sees one whole configuration. A refused file changes nothing: every located
problem is logged at error severity, the old generation stays, the failure is counted.

No threads and no reactor here: the policy daemon runs :meth:`~Generations.build` with
``deferToThread`` and the rest on its reactor (exmilter.policy.reload); a threaded daemon
calls the same methods from one reload thread at a time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from exmilter.config import Loaded, loads
from exmilter.config.reader import read_file
from exmilter.engine import Clock, Engine
from exmilter.logs.events import (
    ConfigWarning,
    EventSink,
    GenerationInUse,
    GenerationKept,
    ReloadLoaded,
    ReloadRefused,
)
from exmilter.model import Organization
from exmilter.runtime.fingerprint import config_fingerprint, file_fingerprint
from exmilter.runtime.metrics import ReloadMetrics


@dataclass(frozen=True)
class Generation:
    """One loaded configuration and the engine built from it; ``number`` counts from 1."""

    number: int
    org: Organization
    engine: Engine
    source: str  # the file it came from
    fingerprint: str = ""  # exmilter.runtime.fingerprint of the file's bytes as loaded ("" unknown)


@dataclass(frozen=True)
class Candidate:
    """A file loaded and its engine built, not yet in use."""

    loaded: Loaded
    engine: Engine
    fingerprint: str = ""


class Generations:
    """The generation in use (``current``), the next one's build, the swap and its reporting.

    Calls must not overlap (one reload at a time); reading ``current`` is safe from any
    thread at any time.
    """

    def __init__(
        self, path: str, loaded: Loaded, metrics: ReloadMetrics, log: EventSink, *, clock: Clock = time.monotonic
    ) -> None:
        self.path = path
        self.metrics = metrics
        self.log = log
        self.clock = clock
        org = loaded.organization
        # The first file was loaded by the command; hashed again here (it is read once at start).
        self.current = Generation(1, org, Engine(org, clock=clock), org.source or path, file_fingerprint(path))
        metrics.config_loaded(1, self.current.source, fingerprint=self.current.fingerprint)
        #: Whether the last load succeeded: a refused reload drains the node (exmilter.policy.health).
        self.last_load_ok = True

    def build(self) -> Candidate:
        """Load the file and build its engine: blocking, raises :class:`ConfigError` for a
        refused file (and anything else for a bug). Touches nothing in use."""
        text = read_file(self.path)  # the bytes loaded are the bytes fingerprinted
        loaded = loads(text, self.path)
        # The message-rate windows belong to the clients, not to the file: keep them.
        engine = Engine(loaded.organization, clock=self.clock, rate_limiter=self.current.engine.rate_limiter)
        return Candidate(loaded, engine, config_fingerprint(text))

    def swap(self, candidate: Candidate) -> Generation:
        """Put ``candidate`` in use as the next generation, then report it."""
        for w in candidate.loaded.warnings:
            self.log(ConfigWarning(str(w)))
        org = candidate.loaded.organization
        new = Generation(self.current.number + 1, org, candidate.engine, org.source or self.path, candidate.fingerprint)
        # The atomic swap: requests read self.current once each. Everything above may fail
        # and leaves the old generation in place; below is only reporting.
        self.current = new
        self.last_load_ok = True
        self.metrics.reload_result(True)
        self.metrics.config_loaded(new.number, new.source, fingerprint=new.fingerprint)
        self.log(ReloadLoaded(new.number, self.path, len(org.receive_connectors)))
        return new

    def refused(self, problems: Sequence[object] = ()) -> None:
        """A reload failed before the swap: ``problems`` of a refused file (each logged at
        error severity; none for an unexpected error, which the caller logs with its
        traceback). The generation in use stays."""
        self.last_load_ok = False
        self.metrics.reload_result(False)
        for p in problems:
            self.log(ReloadRefused(str(p)))
        self.log(GenerationKept(self.current.number))

    def broken(self, before: Generation) -> None:
        """A reload raised where it should not (a bug, logged by the caller): count it and
        say which generation is in use, ``before`` or the new one if the swap happened."""
        self.metrics.reload_result(False)
        if self.current is before:
            self.log(GenerationKept(before.number))
        else:  # the swap happened, the reporting after it failed
            self.log(GenerationInUse(self.current.number))
