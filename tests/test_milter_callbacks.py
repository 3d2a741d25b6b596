"""The pymilter layer without an MTA (Milter.testctx.TestCtx): verbatim setreply, fail closed."""

from __future__ import annotations

from collections.abc import Iterator

import Milter
import pytest
from Milter.testctx import TestCtx as MilterTestCtx
from prometheus_client import CollectorRegistry

from exmilter.config import load
from exmilter.milter.callbacks import INTERNAL_ERROR, ExchangeMilter, Shared
from exmilter.milter.coverage import CoverageSender
from exmilter.milter.metrics import MilterMetrics
from exmilter.runtime.generation import Generations
from tests.conftest import EXAMPLE


@pytest.fixture
def shared() -> Iterator[Shared]:
    metrics = MilterMetrics(CollectorRegistry())
    events: list[object] = []
    s = Shared(
        Generations(str(EXAMPLE), load(EXAMPLE), metrics, events.append), metrics, CoverageSender(None), events.append
    )
    old = Milter.factory
    Milter.factory = lambda: ExchangeMilter(s)
    yield s
    Milter.factory = old


def ctx(client: str = "203.0.113.9") -> MilterTestCtx:
    c = MilterTestCtx()
    for k, v in {"{daemon_name}": "*:25", "{client_addr}": client, "{client_port}": "40000"}.items():
        c._setsymval(k, v)
    assert c._connect(ip=client) == Milter.CONTINUE
    return c


def test_relay_refusal_is_set_verbatim(shared: Shared) -> None:
    c = ctx()
    assert c._envfrom("<a@fabrikam.example>") == Milter.CONTINUE
    assert c._envrcpt("<x@gmail.example>") == Milter.REJECT
    assert c._reply == ("550", "5.7.54", "SMTP; Unable to relay recipient in non-accepted domain")
    assert c._envrcpt("<postmaster@labs.local>") == Milter.CONTINUE
    assert (
        shared.metrics.registry.get_sample_value(
            "exmilter_milter_decisions_total",
            {"connector": "EXCH01\\Default Frontend EXCH01", "stage": "RCPT", "code": "550"},
        )
        == 1
    )


def test_an_exception_is_a_temporary_failure_for_the_rest_of_the_session(shared: Shared, monkeypatch) -> None:
    c = ctx()
    assert c._envfrom("<a@fabrikam.example>") == Milter.CONTINUE
    monkeypatch.setattr(c.getpriv().session, "rcpt", lambda r: 1 / 0)
    assert c._envrcpt("<postmaster@labs.local>") == Milter.TEMPFAIL
    assert c._reply == ("451", "4.3.0", INTERNAL_ERROR.text)
    monkeypatch.undo()
    assert c._envrcpt("<postmaster@labs.local>") == Milter.TEMPFAIL  # still failed: never CONTINUE
    assert c._eoh() == Milter.TEMPFAIL
    assert shared.metrics.registry.get_sample_value("exmilter_milter_callback_errors_total", {"stage": "RCPT"}) == 1


def test_a_header_that_breaks_fails_the_message_at_end_of_headers(shared: Shared, monkeypatch) -> None:
    c = ctx()
    c._envfrom("<a@fabrikam.example>")
    c._envrcpt("<postmaster@labs.local>")
    monkeypatch.setattr(c.getpriv().session, "header", lambda n, v: 1 / 0)
    c.getpriv().header("X-Anything", "1")
    assert c._eoh() == Milter.TEMPFAIL
