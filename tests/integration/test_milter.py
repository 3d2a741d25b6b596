"""The milter in a real Postfix (issue #12's acceptance): verbatim replies, the header
firewall and AuthAs stamps, end-of-headers checks, from several 127.0.0.x clients."""

from __future__ import annotations

import json
import re
import shlex
import smtplib
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from exmilter.logs.w3c import log_files, read_rows
from exmilter.sandbox import Sandbox
from tests.integration.conftest import CONFIG
from tests.integration.helpers import HOST, free_offset, metric, wait_counted, wait_delivered

RELAY_DENIED = "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain"


@pytest.fixture(scope="module")
def milter_sandbox(config_path: Path) -> Iterator[Sandbox]:
    """integration.yaml (conf/exmilter.yaml on loopback) with the milter enabled, as rendered by default."""
    base = config_path.parent / "milter"
    base.mkdir(exist_ok=True)
    base.chmod(0o755)
    path = base / "exmilter.yaml"
    path.write_text(CONFIG.read_text(encoding="utf-8").replace("  enabled: false", "  enabled: true"))
    with Sandbox(path, base / "state", free_offset(path)) as sb:
        yield sb


def transaction(sb: Sandbox, source: str, sender: str, rcpt: str, raw: bytes) -> tuple[str, str]:
    """(RCPT reply, final reply) of one transaction on *:25 from ``source``."""
    s = smtplib.SMTP(HOST, sb.port("*:25"), source_address=(source, 0), timeout=60)
    try:
        s.ehlo("client.test")
        code, msg = s.mail(sender)
        assert code == 250, msg
        code, msg = s.rcpt(rcpt)
        rcpt_reply = f"{code} {msg.decode()}"
        if code != 250:
            return rcpt_reply, ""
        try:
            code, msg = s.data(raw)
        except smtplib.SMTPDataError as e:
            err = e.smtp_error
            code, msg = e.smtp_code, err if isinstance(err, bytes) else err.encode()
        return rcpt_reply, f"{code} {msg.decode()}"
    finally:
        try:
            s.quit()
        except (smtplib.SMTPException, OSError):
            s.close()


def raw(headers: list[tuple[str, str]], body: str = "hello\r\n") -> bytes:
    return ("".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n" + body).encode()


BASE = [("From", "a@fabrikam.example"), ("To", "postmaster@labs.local"), ("Subject", "milter test")]


def test_relay_refusal_is_exchange_text_byte_for_byte(milter_sandbox: Sandbox) -> None:
    rcpt, _ = transaction(milter_sandbox, "127.0.0.1", "a@fabrikam.example", "x@gmail.example", raw(BASE))
    assert rcpt == RELAY_DENIED


def test_sessions_that_end_before_mail_do_not_crowd_out_registrations(milter_sandbox: Sandbox) -> None:
    """Regression: the coverage socket queues 10 datagrams (net.unix.max_dgram_qlen); the
    policy daemon drained it only on requests, so 15 sessions closed before MAIL made the
    next registration fail and its RCPT refusal came wrapped by Postfix."""
    for i in range(15):
        s = smtplib.SMTP(HOST, milter_sandbox.port("*:25"), source_address=(f"127.0.3.{i + 1}", 0), timeout=30)
        s.quit()
    time.sleep(0.5)  # every withdrawal sent
    rcpt, _ = transaction(milter_sandbox, "127.0.3.99", "a@fabrikam.example", "x@gmail.example", raw(BASE))
    assert rcpt == RELAY_DENIED


def test_forged_organization_headers_are_stripped_and_anonymous_is_stamped(milter_sandbox: Sandbox) -> None:
    forged = [
        *BASE,
        ("X-MS-Exchange-Organization-AuthAs", "Internal"),
        ("X-MS-Exchange-Organization-AuthSource", "evil.example"),
        ("x-ms-exchange-organization-scl", "-1"),
    ]
    rcpt, final = transaction(milter_sandbox, "127.0.0.2", "a@fabrikam.example", "postmaster@labs.local", raw(forged))
    assert rcpt.startswith("250") and final.startswith("250"), (rcpt, final)
    d = wait_delivered(milter_sandbox, final.rsplit(" ", 1)[-1])
    text = d.content.decode()
    assert "AuthAs: Internal" not in text and "evil.example" not in text and "scl: -1" not in text.lower()
    assert "X-MS-Exchange-Organization-AuthAs: Anonymous" in text
    assert "X-MS-Exchange-Organization-AuthSource: exch01.labs.local" in text


def test_externally_secured_is_stamped_internal(milter_sandbox: Sandbox) -> None:
    rcpt, final = transaction(
        milter_sandbox,
        "127.0.5.9",
        "scanner@labs.local",
        "someone@gmail.example",
        raw([("From", "scanner@labs.local")]),
    )
    assert rcpt.startswith("250") and final.startswith("250"), (rcpt, final)
    text = wait_delivered(milter_sandbox, final.rsplit(" ", 1)[-1]).content.decode()
    assert "X-MS-Exchange-Organization-AuthAs: Internal" in text
    assert "X-MS-Exchange-Organization-AuthMechanism: 10" in text


def test_61_received_headers_are_a_mail_loop(milter_sandbox: Sandbox) -> None:
    hops = [("Received", f"from h{i}.example by relay{i}.example; Sat, 25 Mar 2023 08:00:00 +0000") for i in range(61)]
    _, final = transaction(milter_sandbox, "127.0.0.3", "a@fabrikam.example", "postmaster@labs.local", raw(hops + BASE))
    assert final == "554 5.4.6 Hop count exceeded - possible mail loop"


def test_header_block_over_max_header_size(milter_sandbox: Sandbox) -> None:
    pad = [(f"X-Pad-{i}", "x" * 990) for i in range(300)]  # ~300 KB > 256 KB
    _, final = transaction(milter_sandbox, "127.0.0.4", "a@fabrikam.example", "postmaster@labs.local", raw(BASE + pad))
    assert final == "552 5.3.4 Header size exceeds fixed maximum size"


def test_killing_the_milter_and_the_policy_daemon_loses_nothing_and_relays_nothing(milter_sandbox: Sandbox) -> None:
    """~20 clients, a bounded run; SIGKILL of the milter, of the policy daemon, then of both.
    Every accepted message is delivered, no external recipient is ever accepted from a
    client without relay rights, and traffic resumes after the supervisor's restarts."""
    import threading

    from tests.integration.helpers import Outcome, send

    sb = milter_sandbox
    port = sb.port("*:25")
    outcomes: list[tuple[str, Outcome]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        source = f"127.0.1.{n + 1}"
        while not stop.is_set():
            for rcpt in ("postmaster@labs.local", "x@gmail.example"):
                o = send(port, source, "a@fabrikam.example", [rcpt], timeout=60)
                with lock:
                    outcomes.append((rcpt, o))

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(20)]
    for t in threads:
        t.start()

    def both() -> None:
        sb.kill_milter()
        sb.kill_policyd()

    for kill in (sb.kill_milter, sb.kill_policyd, both):
        kill()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (sb.milter_pid and sb.policyd_pid):
            time.sleep(0.1)
        time.sleep(1.5)
    sb.wait_policyd()
    stop.set()
    for t in threads:
        t.join(120)
    queued = [o for r, o in outcomes if o.stage == "queued"]
    relayed = [o for r, o in outcomes if r == "x@gmail.example" and o.stage == "queued"]
    assert relayed == []
    for o in queued:
        wait_delivered(sb, o.queue_id, timeout=60)
    assert len(queued) > 0
    after = send(port, "127.0.1.99", "a@fabrikam.example", ["postmaster@labs.local"])
    deadline = time.monotonic() + 30
    while after.stage != "queued" and time.monotonic() < deadline:
        time.sleep(0.5)
        after = send(port, "127.0.1.99", "a@fabrikam.example", ["postmaster@labs.local"])
    assert after.stage == "queued", after
    print(
        f"failure matrix: {len(outcomes)} transactions, {len(queued)} accepted and delivered, "
        f"{sum(1 for _, o in outcomes if 400 <= o.code < 500)} 4xx, "
        f"{sum(1 for _, o in outcomes if o.code >= 500)} 5xx, 0 lost, 0 relayed"
    )


def test_a_milter_stopped_beyond_postfix_timeout_fails_temporarily_and_relays_nothing(
    milter_sandbox: Sandbox,
) -> None:
    """SIGSTOP of the milter for longer than Postfix's milter timeout, 4 clients sending:
    temporary failures (milter_default_action = tempfail), nothing wrongly relayed, every
    accepted message delivered, and traffic back once it continues."""
    import os
    import signal
    import threading

    from exmilter.limits import POSTFIX_MILTER_COMMAND_TIMEOUT
    from tests.integration.helpers import Outcome, send

    sb = milter_sandbox
    port = sb.port("*:25")
    pid = sb.milter_pid
    assert pid is not None
    outcomes: list[tuple[str, Outcome]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        while not stop.is_set():
            for rcpt in ("postmaster@labs.local", "x@gmail.example"):
                o = send(
                    port, f"127.0.2.{n + 1}", "a@fabrikam.example", [rcpt], timeout=4 * POSTFIX_MILTER_COMMAND_TIMEOUT
                )
                with lock:
                    outcomes.append((rcpt, o))

    os.kill(pid, signal.SIGSTOP)
    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(4)]
    try:
        for t in threads:
            t.start()
        time.sleep(POSTFIX_MILTER_COMMAND_TIMEOUT + 5)
    finally:
        os.kill(pid, signal.SIGCONT)
    stop.set()
    for t in threads:
        t.join(4 * POSTFIX_MILTER_COMMAND_TIMEOUT)
    during = list(outcomes)
    assert any(400 <= o.code < 500 for _, o in during), during  # the timeout: a temporary failure
    assert [o for r, o in during if r == "x@gmail.example" and o.stage == "queued"] == []
    for o in (o for _, o in during if o.stage == "queued"):
        wait_delivered(sb, o.queue_id, timeout=60)
    after = send(port, "127.0.2.99", "a@fabrikam.example", ["postmaster@labs.local"])
    deadline = time.monotonic() + 60
    while after.stage != "queued" and time.monotonic() < deadline:
        time.sleep(0.5)
        after = send(port, "127.0.2.99", "a@fabrikam.example", ["postmaster@labs.local"])
    assert after.stage == "queued", after


def test_acceptance_on_the_shipped_example(config_path: Path) -> None:
    """Issue #12's acceptance on conf/exmilter.yaml itself: the verbatim 5.7.54 from 127.0.0.1,
    and a forged AuthAs: Internal replaced by AuthAs: Anonymous in the delivered file."""
    base = config_path.parent / "example"
    base.mkdir(exist_ok=True)
    base.chmod(0o755)
    path = base / "exmilter.yaml"
    path.write_text((Path(__file__).resolve().parents[2] / "conf" / "exmilter.yaml").read_text(encoding="utf-8"))
    with Sandbox(path, base / "state", free_offset(path)) as sb:
        rcpt, _ = transaction(sb, "127.0.0.1", "test@test.com", "someone@gmail.com", raw(BASE))
        assert rcpt == RELAY_DENIED
        forged = [*BASE, ("X-MS-Exchange-Organization-AuthAs", "Internal")]
        rcpt, final = transaction(sb, "127.0.0.1", "test@test.com", "postmaster@labs.local", raw(forged))
        assert final.startswith("250"), (rcpt, final)
        qid = final.rsplit(" ", 1)[-1]
        delivered = wait_delivered(sb, qid)
        text = delivered.content.decode()
        assert "AuthAs: Internal" not in text
        assert "X-MS-Exchange-Organization-AuthAs: Anonymous" in text
        # issue #15 with the milter deployed: the milter writes the RECEIVE row of the session
        # it covers (the policy daemon answers those without deciding), with what only it sees
        receive = wait_tracked(sb, qid, "RECEIVE")
        assert f"message-id: {receive['message-id']}".lower() in text.lower()  # as delivered
        assert receive["message-subject"] == "milter test"
        assert receive["connector-id"] == delivered.connector
        assert (receive["sender-address"], receive["recipient-address"]) == ("test@test.com", "postmaster@labs.local")
        assert (receive["message-info"], receive["directionality"]) == ("00A:", "Incoming")


def wait_tracked(sb: Sandbox, queue_id: str, event: str, timeout: float = 30.0) -> dict[str, str]:
    """The tracking row of ``event`` for ``queue_id`` (rows are written off the mail path)."""
    from exmilter.logs.query import TrackingFilter, search

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = [
            r for r in search([str(sb.tracking_log_dir)], TrackingFilter()) if r.get("internal-message-id") == queue_id
        ]
        found = [r for r in rows if r.get("event-id") == event]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no {event} row for {queue_id} in {sb.tracking_log_dir}")


# -- issue #15 with the milter deployed: the protocol log of the sessions it judges ----------------


def session_rows(sb: Sandbox, rcpt: str, timeout: float = 20.0) -> list[dict[str, str]]:
    """The protocol-log rows of the session that sent ``RCPT TO:<rcpt>``, once it has ended
    (rows are written off the mail path, within a fraction of a second)."""
    deadline = time.monotonic() + timeout
    while True:
        files = log_files([str(sb.protocol_log_dir)], "RECV") if sb.protocol_log_dir.exists() else []
        rows = [r for f in files for r in read_rows(f)]
        sid = next((r["session-id"] for r in rows if r["data"] == f"RCPT TO:<{rcpt}>"), None)
        mine = [r for r in rows if r["session-id"] == sid]
        if mine and mine[-1]["event"] == "-":
            return mine
        if time.monotonic() > deadline:
            raise AssertionError(f"no ended protocol-log session for {rcpt} in {sb.protocol_log_dir}")
        time.sleep(0.1)


def test_the_milter_writes_the_protocol_log_and_it_replays_without_difference(milter_sandbox: Sandbox) -> None:
    from exmilter.config import load
    from exmilter.engine import Engine
    from exmilter.logs.replay import replay

    sb = milter_sandbox
    refused_rcpt = f"t-{uuid.uuid4().hex[:12]}@gmail.example"
    rcpt, _ = transaction(sb, "127.0.0.20", "a@fabrikam.example", refused_rcpt, raw(BASE))
    assert rcpt == RELAY_DENIED
    rows = session_rows(sb, refused_rcpt)
    assert {r["connector-id"] for r in rows} == {"EXCH01\\Default Frontend EXCH01"}
    assert rows[0]["local-endpoint"] == "127.0.0.1:25"  # the binding's port, not the sandbox's moved one
    assert rows[0]["remote-endpoint"].startswith("127.0.0.20:")
    assert [(r["event"], r["data"], r["context"]) for r in rows] == [
        ("+", "", ""),
        (
            "*",
            "SMTPSubmit SMTPAcceptAnySender SMTPAcceptAuthoritativeDomainSender AcceptRoutingHeaders",
            "Set Session Permissions",
        ),
        (">", rows[2]["data"], ""),  # the banner exmilter gives (checked below)
        ("<", "EHLO client.test", ""),
        ("<", "MAIL FROM:<a@fabrikam.example>", ""),
        (">", "250 2.1.0 Sender OK", ""),
        ("<", f"RCPT TO:<{refused_rcpt}>", ""),
        (">", RELAY_DENIED, ""),
        ("-", "", "Remote"),
    ]
    assert rows[2]["data"] == "220 exch01.labs.local Microsoft ESMTP MAIL Service ready"
    name = next(
        Path(f).name for f in log_files([str(sb.protocol_log_dir)]) if rows[0]["session-id"] in Path(f).read_text()
    )
    assert re.fullmatch(r"RECV\d{10}-\d+\.LOG", name), name  # the milter's are Exchange's own names

    accepted_rcpt = f"t-{uuid.uuid4().hex[:12]}@labs.local"
    mid = f"<{uuid.uuid4().hex}@app.example>"
    _, final = transaction(sb, "127.0.0.21", "a@fabrikam.example", accepted_rcpt, raw([*BASE, ("Message-ID", mid)]))
    assert final.startswith("250 2.0.0 Ok: queued as "), final
    qid = final.rsplit(" ", 1)[1]
    rows = session_rows(sb, accepted_rcpt)
    said = [(r["event"], r["data"]) for r in rows]
    assert said[-5:] == [
        ("<", "DATA"),
        (">", "354 Start mail input; end with <CRLF>.<CRLF>"),
        ("*", f"receiving message with InternetMessageId {mid}"),
        (">", "250 2.6.0 Queued mail for delivery"),
        ("-", ""),
    ]
    receive = wait_tracked(sb, qid, "RECEIVE")
    sid, start, n = receive["source-context"].split(";")
    assert (sid, start, n) == (rows[0]["session-id"], rows[0]["date-time"], "1")  # one session, both logs
    deliver = wait_tracked(sb, qid, "DELIVER")
    assert (deliver["message-id"], receive["message-id"]) == (mid, mid)
    wait_delivered(sb, qid)

    report = replay(Engine(load(sb.config).organization), [str(sb.protocol_log_dir)])
    assert report.sessions >= 2 and report.differing == [], report.differing[:3]


def test_unwritable_protocol_log_with_the_milter_loses_rows_not_mail(config_path: Path) -> None:
    base = config_path.parent / "milter-unwritable"
    base.mkdir(exist_ok=True)
    base.chmod(0o755)
    blocker = base / "not-a-directory"
    blocker.write_text("a file where the log directory should be\n")
    path = base / "exmilter.yaml"
    path.write_text(CONFIG.read_text(encoding="utf-8").replace("  enabled: false", "  enabled: true"))
    broken = ("--protocol-log-path", str(blocker / "SmtpReceive"))
    with Sandbox(path, base / "state", free_offset(path), policyd_args=broken, milter_args=broken) as sb:
        rcpt, final = transaction(sb, "127.0.0.20", "a@fabrikam.example", "postmaster@labs.local", raw(BASE))
        assert final.startswith("250 2.0.0 Ok: queued as "), (rcpt, final)
        wait_delivered(sb, final.rsplit(" ", 1)[1])
        rcpt, _ = transaction(sb, "127.0.0.20", "a@fabrikam.example", "x@gmail.example", raw(BASE))
        assert rcpt == RELAY_DENIED
        wait_counted(sb, "exmilter_milter_log_write_failures_total", url=sb.milter_metrics_url, log="protocol")
        assert metric(sb, "exmilter_milter_log_write_failures_total", url=sb.milter_metrics_url, log="tracking") == 0
        assert "[exmilter.milter#error] cannot write the protocol log in" in sb.milter_log.read_text()


README = Path(__file__).resolve().parents[2] / "README.md"


def readme_commands(prefix: str) -> list[list[str]]:
    """The README's first-session commands starting with ``prefix`` (``$ swaks``), joined
    across backslash continuations and split as the shell would."""
    text = README.read_text(encoding="utf-8").split("## A first session", 1)[1].split("\n## ", 1)[0]
    commands, pending = [], ""
    for line in text.splitlines():
        if pending or line.startswith(f"$ {prefix}"):
            pending += line.removeprefix("$ ").rstrip("\\").strip() + " "
            if not line.rstrip().endswith("\\"):
                commands.append(shlex.split(pending))
                pending = ""
    return commands


def test_readme_first_session_is_tracked_and_protocol_logged(config_path: Path, capsys) -> None:
    """Issue #15's acceptance: after the README's swaks lines (run as written, on the ports the
    sandbox moved), the README's ``exmilter track --start -10m`` lists each accepted message
    with connector, message-info, sender, recipients and its final event, and the protocol
    log of the relay connector (Default Frontend) is in Exchange's format with the 5.7.54."""
    from exmilter import cli

    base = config_path.parent / "readme"
    base.mkdir(exist_ok=True)
    base.chmod(0o755)
    path = base / "exmilter.yaml"
    path.write_text((README.parent / "conf" / "exmilter.yaml").read_text(encoding="utf-8"))
    swaks = readme_commands("swaks")
    assert len(swaks) == 4, swaks
    with Sandbox(path, base / "state", free_offset(path)) as sb:
        queued = []
        for argv in swaks:
            i = argv.index("--server") + 1
            exchange_port = int(argv[i].rsplit(":", 1)[1]) - 10000  # README: port + 10000
            argv[i] = f"{HOST}:{sb.port(f'*:{exchange_port}')}"
            out = subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout
            if "someone@gmail.com" in argv and "--auth" not in argv:
                assert f"<** {RELAY_DENIED}" in out, out
                continue
            m = re.search(r"<[-~]  250 2\.0\.0 Ok: queued as (\w+)", out)
            assert m, out
            queued.append(m[1])
        for qid in queued:
            wait_delivered(sb, qid)
            wait_tracked(sb, qid, "DELIVER")

        (track,) = readme_commands(".venv/bin/exmilter track")
        args = track[1:]
        args[args.index("--path") + 1] = str(sb.tracking_log_dir)
        capsys.readouterr()
        assert cli.main(args) == 0
        table = capsys.readouterr().out.splitlines()
        assert table[0].split() == [
            "Timestamp", "EventId", "Source", "QueueId", "ConnectorId", "MessageInfo", "Sender", "Recipients",
            "MessageSubject",
        ]  # fmt: skip
        for qid in queued:
            events = [line.split()[1] for line in table[2:] if qid in line]
            assert events == ["RECEIVE", "DELIVER"], (qid, table)
        assert cli.main([*args, "--summary", "--json"]) == 0
        messages = {m["QueueId"]: m for m in map(json.loads, capsys.readouterr().out.splitlines())}
        got = [
            (messages[q]["ConnectorId"], messages[q]["MessageInfo"], messages[q]["Sender"], messages[q]["Recipients"])
            for q in queued
        ]
        assert got == [
            ("EXCH01\\Default Frontend EXCH01", "00A:", "test@test.com", "adam.wally@labs.local"),
            ("EXCH01\\Default Frontend EXCH01", "00A:", "test@test.com", "adam.wally@labs.local"),
            ("EXCH01\\Client Frontend EXCH01", "06I:", "svc-mailer@labs.local", "someone@gmail.com"),
        ]
        assert {messages[q]["FinalEvent"] for q in queued} == {"DELIVER"}

        files = log_files([str(sb.protocol_log_dir)])
        assert [re.fullmatch(r"RECV\d{10}-1\.LOG", Path(f).name) is not None for f in files] == [True], files
        text = Path(files[0]).read_bytes().decode("utf-8")
        assert text.startswith(
            "#Software: Microsoft Exchange Server\r\n#Version: 15.0.0.0\r\n#Log-type: SMTP Receive Protocol Log\r\n"
        )
        assert "\r\n#Fields: date-time,connector-id,session-id,sequence-number,local-endpoint,remote-endpoint," in text
        rows = session_rows(sb, "someone@gmail.com")
        assert rows[0]["connector-id"] == "EXCH01\\Default Frontend EXCH01"
        assert [(r["event"], r["data"]) for r in rows[-3:]] == [
            ("<", "RCPT TO:<someone@gmail.com>"),
            (">", RELAY_DENIED),
            ("-", ""),
        ]
