"""The sandbox's pipe(8) delivery agent: atomic files, connector lookup, never a lost message."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from exmilter import deliver
from exmilter.deliver import EX_TEMPFAIL, connector_for, read_deliveries

SELECTION = {"contexts": {"*:25": [[4, 0x7F000038, 0x7F000038, "S\\Relay"], [4, 0, 2**32 - 1, "S\\Default"]]}}


def test_connector_for_picks_the_first_range_holding_the_client() -> None:
    assert connector_for(SELECTION, "*:25", "127.0.0.56") == "S\\Relay"
    assert connector_for(SELECTION, "*:25", "::ffff:127.0.0.57") == "S\\Default"
    assert connector_for(SELECTION, "*:2526", "127.0.0.56") == ""
    assert connector_for(SELECTION, "*:25", "not-an-ip") == ""


def test_one_file_per_message_with_envelope_and_content(tmp_path: Path, monkeypatch) -> None:
    content = b"Subject: hi\n\nbody \xff\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(content)))
    rc = deliver.main(["--dir", str(tmp_path), "--sender=", "--client=127.0.0.9", "--nexthop=*:25",
                       "--queue-id=ABC", "--", "a@x.test", "-b@x.test"])
    assert rc == 0
    [d] = read_deliveries(tmp_path)
    assert (d.sender, d.recipients, d.client, d.content) == ("", ["a@x.test", "-b@x.test"], "127.0.0.9", content)
    assert d.envelope["listener"] == "*:25" and d.envelope["queue_id"] == "ABC"
    assert list((tmp_path / ".tmp").iterdir()) == []


def test_failure_is_a_temporary_error(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-I", deliver.__file__, "--dir", str(tmp_path / "missing"), "--", "a@x"],
                          input=b"x", capture_output=True)
    assert proc.returncode == EX_TEMPFAIL
    assert b"exmilter-deliver:" in proc.stderr
    usage = subprocess.run([sys.executable, "-I", deliver.__file__], input=b"x", capture_output=True)
    assert usage.returncode == EX_TEMPFAIL
