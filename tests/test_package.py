"""The Debian package: built from a clean copy of the tree with Debian's tools
(scripts/build-deb.sh: dpkg-buildpackage, dh-python, lintian clean), then installed with dpkg
into a throw-away root and run there.

The throw-away root is an overlay of the host's / in a private mount namespace (unshare -m):
every write of the installation (the package's files, its system user, the dpkg database,
/run/exmilter) lands in the test's upper directory and disappears with it; the host's own
files, /etc/postfix included, are never written. Inside, the installed command runs under
Debian's python3 with Debian's python3-twisted, -yaml, -prometheus-client, -milter and -idna,
as the exmilter user, and a Postfix-group client gets an answer through /run/exmilter.
Needs root (as the integration tests do).
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: A policy request as Postfix sends it, to the installed daemon, as the postfix user.
CLIENT = (
    "import socket; s = socket.socket(socket.AF_UNIX); s.connect('/run/exmilter/policy.sock'); "
    "s.sendall(b'request=smtpd_access_policy\\nprotocol_state=RCPT\\nclient_address=10.83.4.56\\n"
    "sender=a@labs.local\\nrecipient=x@gmail.com\\ninstance=i1\\npolicy_context=*:25\\n\\n'); "
    "print(s.recv(4096).decode().strip())"
)


def dpkg_deb(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], capture_output=True, text=True, check=True).stdout


def test_package_metadata_and_files(deb, tmp_path):
    depends = dpkg_deb("-f", str(deb), "Depends")
    for package in ("python3-twisted", "python3-yaml", "python3-prometheus-client", "python3-milter", "python3-idna"):
        assert package in depends
    listing = {line.split()[-1]: line.split()[:2] for line in dpkg_deb("-c", str(deb)).splitlines()}
    for path, mode in {
        "./usr/bin/exmilter": "-rwxr-xr-x",
        "./etc/exmilter/exmilter.yaml": "-rw-r--r--",  # 640 root:exmilter by dpkg-statoverride in postinst
        "./lib/systemd/system/exmilter-policyd.service": "-rw-r--r--",
        "./usr/lib/tmpfiles.d/exmilter.conf": "-rw-r--r--",
        "./usr/share/man/man8/exmilter.8.gz": "-rw-r--r--",
        "./usr/share/man/man5/exmilter.yaml.5.gz": "-rw-r--r--",
        "./usr/share/doc/exmilter/operations.md.gz": "-rw-r--r--",
        "./usr/share/doc/exmilter/copyright": "-rw-r--r--",
        "./usr/share/exmilter/monitoring/exmilter-alerts.yml": "-rw-r--r--",
        "./usr/share/exmilter/monitoring/grafana-exmilter.json": "-rw-r--r--",
        "./usr/share/exmilter/systemd/exmilter-policyd.socket": "-rw-r--r--",
        "./usr/lib/python3/dist-packages/exmilter/policy/daemon.py": "-rw-r--r--",
    }.items():
        assert listing.get(path) == [mode, "root/root"], path
    control = tmp_path / "control"
    subprocess.run(["dpkg-deb", "-e", str(deb), str(control)], check=True)
    assert (control / "conffiles").read_text().split() == ["/etc/exmilter/exmilter.yaml"]
    assert not any(".venv" in p or "__pycache__" in p or "dist-packages/tests" in p for p in listing)  # a clean tree


INSTALL = r"""
set -eu
W={work}
mkdir -p $W/upper $W/work $W/merged
mount -t overlay overlay -o lowerdir=/,upperdir=$W/upper,workdir=$W/work $W/merged
mount --rbind /dev $W/merged/dev
mount -t proc proc $W/merged/proc
mount -t tmpfs tmpfs $W/merged/run
mount -t tmpfs tmpfs $W/merged/tmp
cp {deb} $W/merged/tmp/exmilter.deb
inroot() {{ chroot $W/merged "$@"; }}
inroot dpkg -i /tmp/exmilter.deb >$W/dpkg.log 2>&1 || {{ cat $W/dpkg.log; exit 1; }}
echo "stat: $(inroot stat -c '%n %U:%G %a' /etc/exmilter/exmilter.yaml /run/exmilter /usr/bin/exmilter | tr '\n' ';')"
echo "user: $(inroot getent passwd exmilter | cut -d: -f1,6,7)"
echo "enabled: $(inroot readlink /etc/systemd/system/multi-user.target.wants/exmilter-policyd.service)"
as_exmilter() {{ chroot --userspec=exmilter:exmilter --groups=postfix $W/merged "$@"; }}
echo "check: $(as_exmilter /usr/bin/exmilter check -c /etc/exmilter/exmilter.yaml 2>/dev/null | head -1)"
chroot --userspec=exmilter:exmilter --groups=postfix $W/merged \
    /usr/bin/exmilter policyd -c /etc/exmilter/exmilter.yaml --metrics none >$W/policyd.log 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for i in $(seq 300); do
    [ -S $W/merged/run/exmilter/policy.sock ] || ! kill -0 $pid 2>/dev/null && break
    sleep 0.1
done
kill -0 $pid 2>/dev/null || {{ echo "policyd died:"; cat $W/policyd.log; }}
echo "socket: $(inroot stat -c '%U:%G %a' /run/exmilter/policy.sock)"
echo "answer: $(timeout 30 chroot --userspec=postfix:postfix $W/merged /usr/bin/python3 -c "{client}")"
kill $pid; wait $pid || true
if inroot systemd-analyze verify exmilter-policyd.service >$W/analyze.log 2>&1; then
    echo "analyze: ok $(cat $W/analyze.log)"
else
    cat $W/analyze.log
fi
inroot dpkg --purge exmilter >$W/purge.log 2>&1 || cat $W/purge.log
override=$(inroot dpkg-statoverride --list /etc/exmilter/exmilter.yaml || echo none)
echo "purged: $override $(inroot test -e /usr/bin/exmilter && echo left || echo gone)"
"""


def test_install_into_a_throwaway_root(deb, tmp_path):
    for tool in ("unshare", "chroot", "systemd-analyze"):
        assert shutil.which(tool), f"{tool} is missing"
    script = INSTALL.format(work=tmp_path / "root", deb=deb, client=CLIENT)
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    assert out["stat"].split(";") == [
        "/etc/exmilter/exmilter.yaml root:exmilter 640",
        "/run/exmilter exmilter:postfix 2750",
        "/usr/bin/exmilter root:root 755",
        "",
    ]
    assert out["user"] == "exmilter:/nonexistent:/usr/sbin/nologin"
    assert out["enabled"] == "/lib/systemd/system/exmilter-policyd.service"
    assert out["check"].startswith("Identity ")  # exmilter check's connector table: the file loads
    assert out["socket"] == "exmilter:postfix 660"  # the set-group-ID directory gave it group postfix
    assert out["answer"] == "action=OK"  # 10.83.4.56 is the example's SMTP Relay connector: it may relay
    assert out.get("analyze") == "ok ", proc.stdout  # systemd-analyze verify: nothing to say
    assert out["purged"] == "none gone"


def test_wheel_and_sdist_carry_config_units_and_monitoring(tmp_path):
    """pip users get the example configuration, the units, monitoring and the man pages too."""
    text = textwrap.dedent((ROOT / "setup.cfg").read_text())
    for f in (
        "conf/exmilter.yaml",
        "systemd/exmilter-policyd.service",
        "monitoring/exmilter-alerts.yml",
        "monitoring/grafana-exmilter.json",
        "docs/man/exmilter.8",
    ):
        assert f in text and (ROOT / f).is_file(), f
    manifest = (ROOT / "MANIFEST.in").read_text()
    for d in ("conf", "systemd", "monitoring", "docs", "debian"):
        assert f"graft {d}" in manifest


def test_man_page_names_every_command():
    from exmilter.cli import COMMANDS

    page = (ROOT / "docs" / "man" / "exmilter.8").read_text().replace("\\-", "-")
    for module in COMMANDS:
        name = module.rsplit(".", 1)[1].replace("_", "-")
        assert f".B exmilter {name}" in page or f".B {name}\n" in page, name
