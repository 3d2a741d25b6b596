"""``exmilter check`` and ``exmilter explain`` as an admin runs them (issue acceptance)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from exmilter.cli import main
from tests.conftest import EXAMPLE


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exmilter.cli", *args], capture_output=True, text=True, check=False)


def test_check_example_prints_connectors_and_domains(capsys):
    assert main(["check", "-c", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["Identity", "Bindings", "Enabled"]
    assert "EXCH01\\Default Frontend EXCH01        {[::]:25, 0.0.0.0:25}     True" in out
    assert "EXCH01\\SMTP Relay (EXCH01)            {0.0.0.0:25}              True" in out
    assert "labs.local               labs.local               Authoritative" in out


def test_check_broken_copy_reports_three_located_errors(tmp_path):
    text = EXAMPLE.read_text()
    text = text.replace("    remote_ip_ranges: [10.83.5.0/24]", "    remote_ip_ranges: [10.83.4.56]")
    text = text.replace(
        "    max_recipients_per_message: 20", "    max_recipients_per_message: 20\n    max_recipents: 5"
    )
    text = text.replace("[192.168.1.13,", "[192.168.1.300,")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    proc = run("check", "-c", str(bad))
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert lines == [
        f"{bad}:51:23: Scanner Relay (EXCH01): remote_ip_ranges: identical range 10.83.4.56 conflicts with "
        "10.83.4.56 of connector 'SMTP Relay (EXCH01)' on binding 0.0.0.0:25",
        f"{bad}:60:23: Monitoring (EXCH01): remote_ip_ranges: '192.168.1.300' is not an IP address",
        f"{bad}:66:5: Monitoring (EXCH01): max_recipents: unknown receive connector property",
        f"{bad}: 3 error(s); configuration refused",
    ]


def test_check_missing_file(tmp_path):
    proc = run("check", "-c", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"{tmp_path / 'nope.yaml'}:1:1: file: No such file or directory")


@pytest.mark.parametrize(
    ("client", "connector", "rcpt_reply"),
    [
        (
            "192.168.0.30",
            "EXCH01\\Default Frontend EXCH01",
            "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain",
        ),
        ("10.83.4.56", "EXCH01\\SMTP Relay (EXCH01)", "250 2.1.5 Recipient OK"),
        ("10.83.5.20", "EXCH01\\Scanner Relay (EXCH01)", "250 2.1.5 Recipient OK"),
    ],
)
def test_explain_json_acceptance(client, connector, rcpt_reply):
    proc = run(
        "explain",
        "-c",
        str(EXAMPLE),
        "--client-ip",
        client,
        "--from",
        "test@test.com",
        "--to",
        "someone@gmail.com",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["connector"] == connector
    rcpt = [r for r in result["replies"] if r["stage"] == "RCPT"]
    assert rcpt == [
        {"stage": "RCPT", "reply": rcpt_reply, "code": int(rcpt_reply[:3]), "recipient": "someone@gmail.com"}
    ]
    assert [r["stage"] for r in result["replies"]] == ["CONNECT", "MAIL", "RCPT", "DATA"]


def test_explain_text_shows_candidates_and_permissions(capsys):
    assert (
        main(
            [
                "explain",
                "-c",
                str(EXAMPLE),
                "--client-ip",
                "10.83.4.56",
                "--from",
                "a@labs.local",
                "--to",
                "x@gmail.com",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert " * EXCH01\\SMTP Relay (EXCH01)" in out
    assert "   EXCH01\\Default Frontend EXCH01" in out
    assert "range 10.83.4.56 (1 addresses)" in out
    assert (
        "Session permissions: SMTPSubmit SMTPAcceptAnyRecipient SMTPAcceptAnySender "
        "SMTPAcceptAuthoritativeDomainSender AcceptRoutingHeaders"
    ) in out
    assert "RCPT     [x@gmail.com] 250 2.1.5 Recipient OK" in out


def test_explain_no_connector(capsys):
    assert main(["explain", "-c", str(EXAMPLE), "--client-ip", "10.9.9.9", "--port", "2526", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["connector"] is None
    assert result["replies"] == [{"stage": "CONNECT", "reply": "421 4.3.2 Service not available", "code": 421}]


def test_explain_ipv4_mapped_client(capsys):
    assert main(["explain", "-c", str(EXAMPLE), "--client-ip", "::ffff:10.83.4.56", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["connector"] == "EXCH01\\SMTP Relay (EXCH01)"


def test_explain_rejects_bad_ip():
    proc = run("explain", "-c", str(EXAMPLE), "--client-ip", "10.0.0.300")
    assert proc.returncode == 2
    assert "'10.0.0.300' is not an IP address" in proc.stderr


# --- documented exit statuses on broken files (issue #10 items 3, 11; docs/commands.md) -------------

LOADING_COMMANDS = {
    "check": ["check"],
    "explain": ["explain", "--client-ip", "10.83.4.56"],
    "policyd": ["policyd", "--listen", "tcp:0:interface=127.0.0.1"],
}


def broken_copy(tmp_path, old: str, new: str):
    path = tmp_path / "broken.yaml"
    text = EXAMPLE.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8", errors="surrogatepass")
    return path


@pytest.mark.parametrize("command", LOADING_COMMANDS.values(), ids=list(LOADING_COMMANDS))
@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "# exmilter example configuration",
            "# exmilter\x00example configuration",
            ":1:11: yaml: control character U+0000 (NUL): not allowed in YAML, not even in a comment; delete it",
        ),
        (
            "fqdn: exch01.labs.local",
            "fqdn: exch01\x7f.labs.local",
            ":11:15: yaml: control character U+007F (DEL): not allowed in YAML, not even in a comment; delete it",
        ),
        (
            "\npolicyd:",
            "\npolicyd:\n\ufeff",
            ":75:1: yaml: byte order mark U+FEFF after the start of the file (files joined with cat?): delete it",
        ),
        ("domain: LABS  ", "domain: " + "[" * 10_000, ":12:"),
        ("domain: LABS  ", "domain:\n    " + "- " * 10_000, ":13:129: yaml: lists and mappings nested deeper than 64"),
    ],
    ids=["NUL in a comment", "DEL in a value", "BOM in the middle", "10,000 [", "10,000 -"],
)
def test_a_broken_file_is_refused_with_exit_2_and_located_messages(tmp_path, capsys, command, old, new, expected):
    path = broken_copy(tmp_path, old, new)
    args = [command[0], "-c", str(path), *command[1:]]
    if command[0] == "policyd":  # a daemon: in a process of its own, should it ever start
        proc = subprocess.run(
            [sys.executable, "-m", "exmilter.cli", *args], capture_output=True, text=True, check=False, timeout=60
        )
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    else:
        code = main(args)
        out, err = capsys.readouterr()
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert lines[0].startswith(f"{path}{expected}"), lines[0]
    assert lines[-1] == f"{path}: 1 error(s); configuration refused"
    assert out == ""


def test_check_shows_open_relays_last_and_strict_refuses_them(tmp_path, capsys):
    path = broken_copy(
        tmp_path,
        "    remote_ip_ranges: [10.83.4.56, 10.83.4.60-10.83.4.69]",
        "    remote_ip_ranges: [0.0.0.0/1, 128.0.0.0/1]",  # nested in Default Frontend's: no conflict
    )
    assert main(["check", "-c", str(path)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{path}:41:9: warning: open relay: SMTP Relay (EXCH01): permissions: ANONYMOUS LOGON holds "
        "ms-Exch-SMTP-Accept-Any-Recipient and remote_ip_ranges cover every IPv4 address: anyone can relay mail "
        "through this connector to any domain without logging in; limit remote_ip_ranges to the hosts that must "
        "relay, or remove this entry (Remove-ADPermission)",
        f"{path}: OPEN RELAY: 1 connector(s) above relay mail to any domain for clients that did not log in; "
        "Exchange accepts this and so does exmilter (check --strict refuses it)",
    ]
    assert main(["check", "--strict", "-c", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines()[-1] == f"{path}: 1 warning(s) and --strict; configuration refused"


def test_check_strict_refuses_any_warning(tmp_path, capsys):
    idle = "\n  - {name: Idle, bindings: 0.0.0.0:2599, remote_ip_ranges: 10.1.1.1}"
    groups = "    permission_groups: [ExchangeServers]"
    path = broken_copy(tmp_path, groups, groups + idle)
    assert main(["check", "--strict", "-c", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{path}:54:5: warning: Idle: permission_groups: no permission group or entry: this connector accepts no mail",
        f"{path}: 1 warning(s) and --strict; configuration refused",
    ]
    assert main(["check", "--strict", "-c", str(EXAMPLE)]) == 0
