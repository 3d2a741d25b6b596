"""Coverage registration: the milter's datagrams, the policy daemon's set, and the one hook in
the decider (docs/milter.md, "Who judges which stage")."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from exmilter.config import load
from exmilter.coverage import CoveredSessions, Notice, SessionKey, decode, encode
from exmilter.engine import Engine
from exmilter.milter.coverage import CoverageSender
from exmilter.policy.coverage import CoverageReceiver
from exmilter.policy.decide import Decider
from exmilter.policy.metrics import NullMetrics
from exmilter.policy.reload import Runtime
from tests.conftest import EXAMPLE, FakeClock, org_from
from tests.policy_fixtures import CONNECTORS, req

KEY = SessionKey("*:25", "203.0.113.9", "40000")
RELAY_DENIED = "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain"


def test_datagrams_round_trip_and_garbage_is_ignored():
    assert decode(encode(True, KEY)) == Notice(True, KEY)
    assert decode(encode(False, KEY)) == Notice(False, KEY)
    assert decode(b"*") == Notice(False, None)
    for bad in (b"", b"+ *:25 1.2.3.4", b"? *:25 1.2.3.4 1", b"+ *:25 1.2.3.4 x", b"+ " + b"x" * 300 + b" a 1"):
        assert decode(bad) is None


def test_the_set_is_bounded_expires_and_resets():
    s = CoveredSessions(max_sessions=2, ttl=10)
    keys = [SessionKey("*:25", "10.0.0.1", str(p)) for p in (1, 2, 3)]
    for k in keys:
        s.apply(Notice(True, k), 0)
    assert len(s) == 2 and not s.covers(keys[0], 1) and s.covers(keys[2], 1)
    assert not s.covers(keys[2], 10)  # expired
    s.apply(Notice(True, keys[1]), 20)
    s.apply(Notice(False, keys[1]), 21)
    assert not s.covers(keys[1], 21)
    s.apply(Notice(True, keys[1]), 22)
    s.apply(Notice(False, None), 23)
    assert len(s) == 0


class Covered:
    def __init__(self, *keys: SessionKey) -> None:
        self.keys = set(keys)

    def covers(self, context: str, client: str, port: str) -> bool:
        return SessionKey(context, client, port) in self.keys


@pytest.mark.parametrize(
    ("covered", "stage", "action"),
    [
        (True, "MAIL", "DUNNO"),
        (True, "RCPT", "OK"),  # Postfix's relay permission; the milter refuses verbatim
        (True, "END-OF-MESSAGE", "DUNNO"),
        (False, "RCPT", RELAY_DENIED),  # not the milter's: the policy daemon judges (wrapped)
    ],
)
def test_the_decider_skips_only_sessions_the_milter_registered(covered, stage, action):
    engine = Engine(org_from(CONNECTORS), clock=FakeClock())
    d = Decider(FakeClock(), coverage=Covered(KEY) if covered else Covered())
    r = req(stage, sender="a@fabrikam.example", recipient="x@gmail.example", size="10")
    assert d.decide(engine, r).action == action


def test_a_registration_of_another_session_covers_nothing():
    engine = Engine(org_from(CONNECTORS), clock=FakeClock())
    d = Decider(FakeClock(), coverage=Covered(SessionKey("*:25", "203.0.113.9", "40001")))
    assert d.decide(engine, req("RCPT", recipient="x@gmail.example")).action == RELAY_DENIED


def test_sender_to_receiver_over_a_real_socket(tmp_path: Path):
    path = str(tmp_path / "coverage.sock")
    receiver = CoverageReceiver(path)
    sender = CoverageSender(path)
    try:
        assert sender.register(KEY)
        assert receiver.covers(*_fields(KEY))
        assert sender.withdraw(KEY)
        assert not receiver.covers(*_fields(KEY))
        sender.register(KEY)
        sender.reset()  # a restarted milter voids what the dead one registered
        assert not receiver.covers(*_fields(KEY))
    finally:
        sender.close()
        receiver.close()


def test_a_policy_daemon_that_is_down_costs_the_milter_nothing(tmp_path: Path):
    sender = CoverageSender(str(tmp_path / "nobody-listens.sock"))
    assert not sender.register(KEY) and sender.failures == 1
    assert not CoverageSender(None).register(KEY)


def test_a_stale_socket_file_is_replaced(tmp_path: Path):
    path = tmp_path / "coverage.sock"
    old = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    old.bind(str(path))
    old.close()
    CoverageReceiver(str(path)).close()


def test_runtime_keeps_an_injected_empty_decider():
    """Regression: ``decider or Decider()`` dropped an injected decider (empty is falsy) and with it the coverage."""
    d = Decider(coverage=Covered())
    assert Runtime(str(EXAMPLE), load(EXAMPLE), NullMetrics(), decider=d).decider is d


def _fields(k: SessionKey) -> tuple[str, str, str]:
    return k.context, k.client, k.port


def test_check_and_render_say_what_policy_only_gives_up(tmp_path: Path, capsys):
    from exmilter.cli import main

    text = EXAMPLE.read_text().replace("milter:\n  enabled: true", "milter:\n  enabled: false")
    path = tmp_path / "policy-only.yaml"
    path.write_text(text)
    assert main(["check", "-c", str(path)]) == 0
    assert "policy only (milter.enabled: false)" in capsys.readouterr().out
    assert main(["render-postfix", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "smtpd_milters" not in out and "no header firewall" in out
    assert main(["render-postfix", "-c", str(EXAMPLE)]) == 0
    assert "smtpd_milters=unix:/run/exmilter/milter.sock" in capsys.readouterr().out
