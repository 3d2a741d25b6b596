"""render-postfix --apply [--dry-run] and verify-postfix on copies of Debian's stock /etc/postfix.

The stock copy is built the way Debian's postinst builds /etc/postfix for an "Internet Site"
(its main.cf.debian and master.cf.dist, then the same postconf -e settings), with the
paths it would read from the host moved into the test's directory (queue, data, aliases,
mailname), so that ``postfix check`` and postconf never touch the system's Postfix.
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess
from pathlib import Path

import pytest

from exmilter.cli import main
from exmilter.config import load
from exmilter.deployment import plan_listeners
from exmilter.postfix.apply import Service, parse_services, plan_edits
from exmilter.postfix.postconf import POSTCONF, POSTFIX
from exmilter.postfix.render import render
from exmilter.postfix.scope import capped, choose, internal
from exmilter.postfix.verify import verify
from tests.conftest import EXAMPLE, ROOT, org_from

#: What Debian 12's postinst sets with postconf -e for "Internet Site" (paths in the test dir).
DEBIAN_INTERNET_SITE = [
    "smtpd_tls_cert_file = /etc/ssl/certs/ssl-cert-snakeoil.pem",
    "smtpd_tls_key_file = /etc/ssl/private/ssl-cert-snakeoil.key",
    "smtpd_tls_security_level = may",
    "smtp_tls_CApath = /etc/ssl/certs",
    "smtp_tls_security_level = may",
    "smtp_tls_session_cache_database = btree:${data_directory}/smtp_scache",
    "smtpd_relay_restrictions = permit_mynetworks permit_sasl_authenticated defer_unauth_destination",
    "myhostname = mx.labs.local",
    "mydestination = $myhostname, mx.labs.local, localhost",
    "relayhost =",
    "mynetworks = 127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128",
    "mailbox_size_limit = 0",
    "recipient_delimiter = +",
    "inet_interfaces = all",
    "inet_protocols = all",
]


def postconf(etc: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([POSTCONF, "-c", str(etc), *args], capture_output=True, text=True, check=True)


def settle(etc: Path) -> None:
    """Set main.cf's and master.cf's time stamps back: Postfix waits ~2 s before reading a
    main.cf written within the last seconds (exmilter.postfix.postconf), which would cost
    each test seconds for nothing."""
    for name in ("main.cf", "master.cf"):
        past = (etc / name).stat().st_mtime - 10
        os.utime(etc / name, (past, past))


def postfix_check(etc: Path) -> str:
    proc = subprocess.run([POSTFIX, "-c", str(etc), "check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


@pytest.fixture
def stock(tmp_path: Path) -> Path:
    """A copy of Debian 12's stock /etc/postfix ("Internet Site") in a temp dir."""
    etc, spool, data = tmp_path / "etc", tmp_path / "spool", tmp_path / "data"
    for d in (etc, spool, data):
        d.mkdir()
    os.chown(data, pwd.getpwnam("postfix").pw_uid, -1)
    (etc / "main.cf").write_text(Path("/usr/share/postfix/main.cf.debian").read_text())
    (etc / "master.cf").write_text(Path("/usr/share/postfix/master.cf.dist").read_text())
    (tmp_path / "aliases").write_text("postmaster: root\n")
    (tmp_path / "mailname").write_text("labs.local\n")
    postconf(
        etc,
        "-e",
        *DEBIAN_INTERNET_SITE,
        f"alias_maps = hash:{tmp_path}/aliases",
        f"alias_database = hash:{tmp_path}/aliases",
        f"myorigin = {tmp_path}/mailname",
        f"queue_directory = {spool}",
        f"data_directory = {data}",
    )
    settle(etc)
    subprocess.run(["/usr/sbin/postalias", "-c", str(etc), str(tmp_path / "aliases")], check=True)
    assert postfix_check(etc) == ""
    return etc


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def apply(capsys, etc: Path, *extra: str) -> tuple[int, str, str]:
    result = cli(capsys, "render-postfix", "-c", str(EXAMPLE), "--apply", "--postfix-dir", str(etc), *extra)
    settle(etc)
    return result


def services_on_ports(etc: Path) -> dict[str, int]:
    """Active inet services by name (postconf -M)."""
    return {s.key: 1 for s in parse_services(postconf(etc, "-M").stdout) if s.type == "inet"}


def line_of(etc: Path, key: str) -> int:
    name, type_ = key.split("/")
    for n, line in enumerate((etc / "master.cf").read_text().splitlines(), 1):
        if re.match(rf"{re.escape(name)}\s+{type_}\s", line):
            return n
    raise AssertionError(f"{key} not in master.cf")


# -- applying --------------------------------------------------------------------------------------


def test_dry_run_shows_the_diff_and_changes_nothing(stock, capsys):
    before = {p.name: p.read_bytes() for p in stock.iterdir()}
    code, out, err = apply(capsys, stock, "--dry-run")
    assert code == 0, err
    assert {p.name: p.read_bytes() for p in stock.iterdir()} == before
    assert f"--- {stock}/master.cf\n" in out
    assert "\n-smtp      inet  n       -       y       -       -       smtpd\n" in out
    assert "\n+#smtp      inet  n       -       y       -       -       smtpd\n" in out
    assert "\n+25         inet  n       -       n       -       100     smtpd\n" in out
    assert "mailbox_size_limit = 0 kept: no stricter than exmilter's" in out
    assert "dry run" in out
    assert "\n# not rendered (internal listeners need --internal; or not in --listener): *:465, *:717, *:2525\n" in out


def test_apply_on_debian_stock(stock, capsys):
    original = {n: (stock / n).read_text() for n in ("main.cf", "master.cf")}
    code, out, err = apply(capsys, stock)
    assert code == 0, out + err
    assert "every smtpd listener asks exmilter, fail-closed" in out
    # postfix check clean; postconf has nothing to warn about (no "overriding earlier entry")
    assert postfix_check(stock) == ""
    for args in (("-n",), ("-M",), ("-P",)):
        assert postconf(stock, *args).stderr == ""
    main_cf = (stock / "main.cf").read_text()
    assert len(re.findall(r"^append_dot_mydomain\b", main_cf, re.M)) == 1  # replaced, not appended again
    assert postconf(stock, "-h", "mailbox_size_limit").stdout.strip() == "0"  # unlimited stays unlimited
    assert postconf(stock, "-h", "allow_percent_hack").stdout.strip() == "no"
    # one service per port: 25 replaces the stock smtp/inet, the internal listeners are absent
    inet = services_on_ports(stock)
    assert "smtp/inet" not in inet and {"25/inet", "587/inet", "2526/inet"} <= set(inet)
    assert not {"465/inet", "717/inet", "2525/inet"} & set(inet)
    # the backup holds the originals
    (backup,) = [p for p in stock.iterdir() if p.name.startswith("exmilter-backup-")]
    assert {n: (backup / n).read_text() for n in original} == original
    assert cli(capsys, "verify-postfix", "--postfix-dir", str(stock))[0] == 0
    # applying again changes nothing
    code, out, _ = apply(capsys, stock)
    assert code == 0 and "nothing to change" in out


def test_reapplying_fewer_listeners_removes_exmilter_services_only(stock, capsys):
    assert apply(capsys, stock)[0] == 0
    code, out, err = apply(capsys, stock, "--listener", "*:25")
    assert code == 0, out + err
    inet = services_on_ports(stock)
    assert "25/inet" in inet and "587/inet" not in inet and "2526/inet" not in inet
    names = {s.name for s in parse_services(postconf(stock, "-M").stdout)}
    assert "exmilter-cleanup-1" in names and "exmilter-cleanup-3" not in names
    assert {"pickup", "cleanup", "qmgr", "smtp", "relay"} <= names  # Postfix's own services untouched
    assert postfix_check(stock) == ""


def test_someone_elses_service_on_a_rendered_port_is_refused(stock, capsys):
    postconf(stock, "-M", "2526/inet = 2526 inet n - y - - smtpd")  # the admin's own, on exmilter's port
    settle(stock)
    before = (stock / "master.cf").read_text()
    code, _, err = apply(capsys, stock)
    assert code == 2
    assert "master.cf service 2526/inet listens on port 2526, which the rendered 2526/inet needs" in err
    assert (stock / "master.cf").read_text() == before
    code, out, err = apply(capsys, stock, "--replace")
    assert code == 0, out + err


def test_nothing_changes_when_postfix_check_refuses_the_result(stock, capsys, monkeypatch):
    import exmilter.postfix.postconf as pc

    original = {p.name: p.read_bytes() for p in stock.iterdir()}
    monkeypatch.setattr(pc, "POSTFIX", "/bin/false")
    code, _, err = apply(capsys, stock)
    assert code == 2 and "false -c" in err
    assert {p.name: p.read_bytes() for p in stock.iterdir()} == original  # no backup either


# -- verify-postfix on five hand-broken copies ------------------------------------------------------


def _sub_in_service(etc: Path, key: str, old: str, new: str) -> None:
    """Replace ``old`` by ``new`` in the lines of one master.cf service."""
    lines = (etc / "master.cf").read_text().splitlines(keepends=True)
    start = line_of(etc, key) - 1
    end = start + 1
    while end < len(lines) and lines[end][:1].isspace():
        end += 1
    block = "".join(lines[start:end])
    assert old in block
    (etc / "master.cf").write_text("".join(lines[:start]) + block.replace(old, new, 1) + "".join(lines[end:]))


def _missing_policy(etc: Path) -> None:
    postconf(etc, "-P", "25/inet/smtpd_relay_restrictions=permit_mynetworks,reject_unauth_destination")


def _dunno_default(etc: Path) -> None:
    _sub_in_service(etc, "25/inet", "default_action = 451 4.3.5 Server configuration problem", "default_action = DUNNO")


def _policy_after_permit(etc: Path) -> None:
    _sub_in_service(
        etc,
        "25/inet",
        "{smtpd_relay_restrictions=$exmilter_policy",
        "{smtpd_relay_restrictions=permit_mynetworks, $exmilter_policy",
    )


def _missing_milter(etc: Path) -> None:
    postconf(etc, "-P", "587/inet/smtpd_milters=inet:127.0.0.1:10042", "2526/inet/smtpd_milters=inet:127.0.0.1:10042")


def _duplicate_port(etc: Path) -> None:
    postconf(etc, "-M", "smtp/inet = smtp inet n - y - - smtpd")


@pytest.mark.parametrize(
    ("breaks", "key", "problem"),
    [
        (_missing_policy, "25/inet", "policy missing: no exmilter check_policy_service at RCPT"),
        (
            _dunno_default,
            "25/inet",
            "default action not temporary: when exmilter cannot be asked Postfix answers 'DUNNO'",
        ),
        (_policy_after_permit, "25/inet", "policy after permit: permit_mynetworks comes before exmilter's check"),
        (_missing_milter, "25/inet", "milter missing: inet:127.0.0.1:10042 not in smtpd_milters"),
        (_duplicate_port, "smtp/inet", "duplicate port: smtp/inet and 25/inet"),
    ],
    ids=["missing-policy", "default-action-dunno", "policy-after-permit", "missing-milter", "duplicate-port"],
)
def test_verify_fails_on_a_broken_copy_with_the_offending_line(stock, capsys, breaks, key, problem):
    assert apply(capsys, stock)[0] == 0
    breaks(stock)
    settle(stock)
    assert postfix_check(stock) == ""  # Postfix's own check sees nothing wrong
    code, out, _ = cli(capsys, "verify-postfix", "--postfix-dir", str(stock))
    assert code == 1
    expected = f"{stock}/master.cf:{line_of(stock, key)}: {key}: {problem}"
    assert [line for line in out.splitlines() if line.startswith(expected)], out
    assert (
        out.splitlines()[-1]
        == f"{stock}: {len(out.splitlines()) - 1} problem(s): a listener could relay without exmilter's answer"
    )


def test_verify_reports_the_stock_configuration(stock, capsys):
    code, out, _ = cli(capsys, "verify-postfix", "--postfix-dir", str(stock))
    assert code == 1
    assert out.startswith(f"{stock}/main.cf:")  # smtpd_relay_restrictions, inherited from main.cf
    assert "smtp/inet: policy missing" in out


def test_verify_an_unreadable_directory(tmp_path, capsys):
    code, _, err = cli(capsys, "verify-postfix", "--postfix-dir", str(tmp_path))
    assert code == 2 and "not a Postfix configuration directory" in err


# -- the pure parts -------------------------------------------------------------------------------

SMTPD = Service("25", "inet", "25 inet n - n - 100 smtpd")
CHECK = "check_policy_service { unix:/p, { default_action = %s }, policy_context=*:25 }"


@pytest.mark.parametrize(
    ("action", "ok"),
    [
        ("451 4.3.5 Server configuration problem", True),
        ("450 try later", True),
        ("DEFER", True),
        ("defer_if_permit", True),
        ("DUNNO", False),
        ("OK", False),
        ("REJECT", False),
        ("550 5.7.1 no", False),
    ],
)
def test_default_action_must_be_temporary(action, ok):
    params = {"25/inet": {"exmilter_policy": CHECK % action, "smtpd_relay_restrictions": "$exmilter_policy, defer"}}
    findings = verify({}, [SMTPD], params)
    assert (findings == []) is ok, findings


def test_default_action_from_main_cf_when_the_check_has_none():
    params = {"25/inet": {"smtpd_relay_restrictions": "check_policy_service { unix:/p, policy_context=x }, defer"}}
    assert verify({}, [SMTPD], params) == []  # Postfix's default: 451 4.3.5
    main_cf = "smtpd_policy_service_default_action = DUNNO\n"
    (finding,) = verify({"smtpd_policy_service_default_action": "DUNNO"}, [SMTPD], params, main_text=main_cf)
    assert (finding.file, finding.line) == ("main.cf", 1) and "not temporary" in finding.problem


def test_a_dunno_must_not_fall_through_to_accept():
    for relay, bad in [("$p", "nothing after"), ("$p, permit", "permit after"), ("$p, defer", None)]:
        params = {
            "25/inet": {"p": "check_policy_service { unix:/p, policy_context=x }", "smtpd_relay_restrictions": relay}
        }
        findings = verify({}, [SMTPD], params)
        assert (bad is None and findings == []) or (findings and bad in findings[0].problem), (relay, findings)


def test_postscreen_pass_services_are_listeners_too():
    passed = Service("smtpd", "pass", "smtpd pass - - y - - smtpd")
    (finding,) = verify({"smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination"}, [passed], {})
    assert finding.service == "smtpd/pass" and "policy missing" in finding.problem


def test_no_stricter_limits_are_kept_when_more_permissive():
    edits = plan_edits(
        [("mailbox_size_limit", "51200000"), ("message_size_limit", "41523609"), ("smtpd_timeout", "300s")],
        "",
        {"mailbox_size_limit": "0", "message_size_limit": "10240000", "smtpd_timeout": "10m"},
        [],
        {},
    )
    assert edits.main == [("message_size_limit", "41523609")]
    assert len(edits.kept) == 2


# -- which listeners, how many processes -----------------------------------------------------------


def test_internal_listeners_only_on_request():
    org = org_from("default_connectors: true\naccepted_domains: [labs.local]\n")
    plans = plan_listeners(org)
    server = org.server.name
    assert [p.context for p in plans if internal(p, server)] == ["*:465", "*:717", "*:2525"]
    assert [p.context for p in choose(plans, server)] == ["*:25", "*:587"]
    assert [p.context for p in choose(plans, server, include_internal=True)] == [p.context for p in plans]
    assert [p.context for p in choose(plans, server, only=["*:2525"])] == ["*:2525"]
    with pytest.raises(ValueError, match=r"no listener \*:26; the configuration has \*:25"):
        choose(plans, server, only=["*:26"])


def test_an_admins_connector_is_never_internal():
    """Custom connectors default to HubTransport in Exchange; relay clients use them all the same."""
    org = org_from(
        "receive_connectors:\n"
        "  - {name: Relay, bindings: 0.0.0.0:2526, remote_ip_ranges: 10.0.0.5, transport_role: HubTransport}\n"
        "  - {name: Partners, usage: Internal, bindings: 0.0.0.0:2527, remote_ip_ranges: 10.0.0.6}\n"
    )
    assert [p.context for p in choose(plan_listeners(org), org.server.name)] == ["*:2526", "*:2527"]


def test_process_limit_formula():
    org = org_from("default_connectors: true\naccepted_domains: [labs.local]\n")
    rendered = render(org)
    assert "\n25 inet n - n - 100 smtpd\n" in rendered.master  # min(15,000, 100)
    assert rendered.descriptors == 2 * 100 + 64
    exchange = render(org, process_limit=0)
    assert "\n25 inet n - n - 5000 smtpd\n" in exchange.master  # Exchange's sum, uncapped
    small = render(org, process_limit=20000)
    assert "\n25 inet n - n - 5000 smtpd\n" in small.master  # a cap above the sum changes nothing
    from exmilter.postfix.listeners import ConnectionLimits

    assert capped(ConnectionLimits(20, 0), 100).total == 100  # unlimited becomes the process limit
    assert capped(ConnectionLimits(20, 50), 100).total == 50


def test_apply_brings_the_send_connectors_tables_and_settings(stock, capsys):
    """--apply carries the outbound side too: the transport and TLS policy tables beside
    main.cf, the settings naming them, the per-connector services; postfix check stays clean."""
    config = ROOT / "tests" / "data" / "send-connectors.yaml"
    code, out, err = cli(
        capsys, "render-postfix", "-c", str(config), "--apply", "--internal", "--postfix-dir", str(stock)
    )
    settle(stock)
    assert code == 0, out + err
    assert postfix_check(stock) == ""
    rendered = render(load(config).organization)
    assert {n: (stock / n).read_text() for n in rendered.files} == rendered.files
    assert postconf(stock, "-h", "transport_maps").stdout.strip() == "texthash:${config_directory}/exmilter_transport"
    services = {s.key for s in parse_services(postconf(stock, "-M").stdout)}
    assert {line.split()[0] + "/unix" for line in rendered.master.splitlines() if " unix " in line} <= services
    code, out, err = cli(
        capsys, "render-postfix", "-c", str(config), "--apply", "--internal", "--postfix-dir", str(stock)
    )
    assert code == 0 and "nothing to change" in out, out + err


def test_apply_writes_limit_nofile_dropins_sized_from_the_process_limits(stock, tmp_path, capsys):
    """LimitNOFILE = max(65536, P + max(10 % of P, 10) + 64), P the rendered maxproc sum;
    shown in the dry run, written by --apply, --limit-nofile overrides it."""
    from exmilter.postfix.dropins import limit_nofile

    assert [limit_nofile(p) for p in (0, 300, 59000, 60000, 100000)] == [65536, 65536, 65536, 66064, 110064]
    etc = stock
    units = tmp_path / "systemd"
    base = ["render-postfix", "-c", str(EXAMPLE), "--apply", "--postfix-dir", str(etc), "--systemd-dir", str(units)]
    policyd = units / "exmilter-policyd.service.d" / "limits.conf"
    milter = units / "exmilter-milter.service.d" / "limits.conf"
    _, dry, _ = cli(capsys, *base, "--dry-run")
    assert f"+++ {policyd}" in dry and "+LimitNOFILE=65536\n" in dry  # 3 listeners × 100: the floor
    assert not policyd.exists()
    cli(capsys, *base)
    text = (
        '# Written by exmilter render-postfix --apply (docs/render-postfix.md, "Descriptor limits"):\n'
        "# the rendered smtpd listeners allow 300 processes, each with one connection here.\n"
        "# LimitNOFILE = max(65536, 300 + max(10 % of 300, 10) + 64)\n"
        "[Service]\nLimitNOFILE=65536\n"
    )
    assert policyd.read_text() == milter.read_text() == text
    _, again, _ = cli(capsys, *base, "--limit-nofile", "200000")
    assert "+LimitNOFILE=200000" in again
    assert milter.read_text().endswith("# LimitNOFILE = given with --limit-nofile\n[Service]\nLimitNOFILE=200000\n")
