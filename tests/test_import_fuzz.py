"""The issue's attack on ``import-exchange``, kept: 2,000 seeded mutated runbooks through the CLI.

Each case must end with a documented exit status, no traceback, every message located
(FILE:LINE inside the file it names), a written configuration that loads, and within
:data:`~tests.runbook_mutations.DEADLINE_S`. A hang is killed by the watchdog and fails
the test (tests/runbook_mutations.py). Takes about 20 s on two idle cores.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest

from tests import runbook_mutations as fuzz


def test_two_thousand_mutated_runbooks(capsys: pytest.CaptureFixture[str]) -> None:
    outcomes = fuzz.run_all()
    with capsys.disabled():
        print(f"\nimport-exchange fuzz: {fuzz.summary(outcomes)}")
    assert [o.index for o in outcomes] == list(range(fuzz.CASES))
    by_index = {c.index: c for c in fuzz.cases()}
    failed = [
        f"case {o.index} ({by_index[o.index].what[:120]}): rc={o.rc} {o.seconds:.1f} s: {'; '.join(o.problems)[:300]}"
        for o in outcomes
        if o.problems or o.crashed or o.hung
    ]
    assert failed == []
    assert max(o.seconds for o in outcomes) < fuzz.DEADLINE_S
    assert {o.rc for o in outcomes} == {0, 2}  # both outcomes are exercised


def test_the_mutations_cover_what_the_issue_lists() -> None:
    """Byte flips, controls, BOMs at line starts, cat of two BOM files, unbalanced text, long lines, bombs."""
    kinds: Counter[str] = Counter()
    for case in fuzz.cases():
        for step in (
            "flip",
            "control",
            "bom@",
            "cat+",
            "dup",
            "delete",
            "swap",
            "insert",
            "long",
            "truncate",
            "expand",
            "repeat",
            "(stdin)",
        ):
            kinds[step] += step in case.what
        kinds["387"] += "x387@" in case.what
    assert min(kinds.values()) >= 40, kinds
    assert list(fuzz.cases(n=50)) == list(fuzz.cases(n=50))  # seeded: the same cases every run


def test_a_hung_case_is_killed_and_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """The watchdog: the suite goes on past a case that never ends, and that case fails."""
    monkeypatch.setitem(os.environ, fuzz.HANG_CASE_ENV, "1")
    outcomes = fuzz.run_all(n=4, deadline=1.0)
    assert [(o.index, o.hung) for o in outcomes] == [(0, False), (1, True), (2, False), (3, False)]
    assert outcomes[1].problems == ["no answer within 1 s"]
    assert all(o.rc in fuzz.EXIT_CODES for o in outcomes if not o.hung)
