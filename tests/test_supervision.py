"""The README's production install under a real systemd: issue #16's acceptance.

A throw-away root boots Debian's own /lib/systemd/systemd as PID 1 the way systemd-nspawn
starts a container: new mount, PID, network (loopback only), UTS, IPC and cgroup
namespaces, ``container=`` in the environment, a fresh /dev, /proc, read-only /sys with
the ``name=systemd`` and cgroup2 hierarchies of a cgroup made for the test, and tmpfs /run
and /tmp. The root file system is an overlay of the host's / (as in tests/test_package.py):
every write lands in the test's upper directory, the host's /etc/postfix and the running
host are never touched. Inside, Postfix is configured as Debian's "Internet Site", then
the README's "Production install" commands run as written (apt-get install of the built
package, exmilter check, render-postfix --apply --dry-run and --apply, verify-postfix,
systemctl), and the test checks what systemd says: the units are active, ordered before
postfix@-.service, an SMTP client on 127.0.0.1:25 gets Exchange's verbatim replies, a
refused file fails ``systemctl reload`` and is an error in the journal while the daemons
keep their rules, and the milter's watchdog makes systemd restart a milter that stopped
answering.

Differences from a fresh Debian 12 host, all in the overlay: the base image's
/usr/sbin/policy-rc.d (a Docker-style "start no services" hook) is removed, and
systemd-sysctl and systemd-modules-load are masked (kernel settings are not namespaced).
This machine's hard open-files limit is 20000 and it lacks CAP_SYS_RESOURCE, so systemd
clamps the units' LimitNOFILE to 20000 when it starts them (the configured value is what
``systemctl show`` reports). Needs root, like the other integration tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration

#: The namespaces' root: mounts made before systemd starts (run by ``unshare``, as PID 1 of
#: the new PID namespace; ``exec`` makes systemd that PID 1).
BOOT = r"""
set -eu
W={work}
ip link set lo up  # the only interface of the new network namespace
M=$W/merged
mount -t overlay overlay -o lowerdir=/,upperdir=$W/upper,workdir=$W/work $M
mount -t tmpfs -o mode=755 tmpfs $M/dev
for d in null zero full random urandom tty; do touch $M/dev/$d; mount --bind /dev/$d $M/dev/$d; done
mkdir $M/dev/pts $M/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts $M/dev/pts
ln -s pts/ptmx $M/dev/ptmx
ln -s /proc/self/fd $M/dev/fd
mount -t tmpfs tmpfs $M/dev/shm
mount -t proc proc $M/proc
mount --bind $M/proc/sys $M/proc/sys
mount -o remount,bind,ro $M/proc/sys
mount -t sysfs -o ro sysfs $M/sys
mount -t tmpfs -o mode=755 tmpfs $M/sys/fs/cgroup
mkdir $M/sys/fs/cgroup/systemd $M/sys/fs/cgroup/unified
mount -t cgroup -o none,name=systemd cgroup $M/sys/fs/cgroup/systemd
mount -t cgroup2 cgroup2 $M/sys/fs/cgroup/unified
mount -t tmpfs tmpfs $M/run
mount -t tmpfs tmpfs $M/tmp
# Postfix installed as Debian's "Internet Site" (its debconf answers), as on the host
# before it boots: the image's policy-rc.d keeps the postinst from starting anything yet.
printf 'postfix postfix/main_mailer_type select Internet Site\npostfix postfix/mailname string mx.example.test\n' |
    chroot $M debconf-set-selections
DEBIAN_FRONTEND=noninteractive chroot $M dpkg-reconfigure -f noninteractive postfix >$W/postfix.log 2>&1 ||
    {{ cat $W/postfix.log; exit 1; }}
rm -f $M/usr/sbin/policy-rc.d
mkdir -p $M/etc/systemd/system $M/root/exmilter/dist
ln -sf /dev/null $M/etc/systemd/system/systemd-sysctl.service
ln -sf /dev/null $M/etc/systemd/system/systemd-modules-load.service
cat > $M/etc/systemd/system/exmilter-test.target <<'EOF'
[Unit]
Description=exmilter supervision test (the system's basic services and Postfix)
Requires=sysinit.target
After=sysinit.target
Wants=postfix.service
AllowIsolate=yes
EOF
cp {deb} $M/root/exmilter/dist/
exec chroot $M /usr/bin/env -i container=exmilter-test /lib/systemd/systemd --unit=exmilter-test.target
"""

#: An SMTP session from 127.0.0.1 to Postfix on port 25, run inside the namespaces.
SMTP = r"""
import smtplib
s = smtplib.SMTP("127.0.0.1", 25, timeout=60)
s.ehlo("app.example.com")
s.mail("app@example.com")
for rcpt in ("x@gmail.com", "user@labs.local"):
    code, text = s.rcpt(rcpt)
    print(rcpt, code, text.decode())
s.quit()
"""

#: One value of the policy daemon's metrics (127.0.0.1:9142, policyd.metrics of the example).
METRIC = r"""
import sys, urllib.request
body = urllib.request.urlopen("http://127.0.0.1:%s/", timeout=30).read().decode()
print(next(line.split()[1] for line in body.splitlines() if line.startswith(sys.argv[1] + " ")))
"""


class Booted:
    """systemd as PID 1 of fresh namespaces over an overlay of /; ``run`` enters them."""

    def __init__(self, work: Path, deb: Path) -> None:
        self.work = work
        for d in ("upper", "work", "merged"):
            (work / d).mkdir(parents=True)
        # systemd manages the cgroup it starts in: one of the test's own in both hierarchies,
        # which the cgroup namespace then shows as its root.
        self.cgroups = [Path(f"/sys/fs/cgroup/{h}/exmilter-test-{os.getpid()}") for h in ("systemd", "unified")]
        for cg in self.cgroups:
            cg.mkdir()
        script = BOOT.format(work=work, deb=deb)
        cgroups = self.cgroups

        def enter_cgroups() -> None:
            for cg in cgroups:
                (cg / "cgroup.procs").write_text(str(os.getpid()))

        self.log = (work / "boot.log").open("w")
        self.unshare = subprocess.Popen(
            ["unshare", "-m", "-p", "-n", "-u", "-i", "-C", "--fork", "--propagation", "private", "sh", "-c", script],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=enter_cgroups,
        )
        self.pid = 0
        try:
            self.pid = self._pid1()
        except BaseException:
            self.stop()
            raise

    def _pid1(self) -> int:
        """The host PID of the namespaces' PID 1 (unshare's only child), once it is systemd."""
        end = time.monotonic() + 30
        children = Path(f"/proc/{self.unshare.pid}/task/{self.unshare.pid}/children")
        while time.monotonic() < end:
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = int(children.read_text().split()[0])
                if Path(f"/proc/{pid}/comm").read_text() == "systemd\n":
                    return pid
            assert self.unshare.poll() is None, (self.work / "boot.log").read_text()
            time.sleep(0.05)
        raise AssertionError("systemd did not start: " + (self.work / "boot.log").read_text())

    def run(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``command`` (sh) inside every namespace and the root, in the checkout's directory."""
        return subprocess.run(
            ["nsenter", "-t", str(self.pid), "-a", "-r", "-w", "sh", "-c", f"cd /root/exmilter && {command}"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def out(self, command: str) -> str:
        proc = self.run(command)
        assert proc.returncode == 0, (command, proc.stdout, proc.stderr)
        return proc.stdout.strip()

    def show(self, unit: str, *props: str) -> dict[str, str]:
        text = self.out(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props))
        return dict(line.split("=", 1) for line in text.splitlines())

    def stop(self) -> None:
        """Kill the PID 1 we started (the kernel ends the rest of its PID namespace); the
        mount namespace and its mounts go with its last process; the cgroups are removed."""
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        else:
            self.unshare.kill()  # systemd never started: unshare (ours) is all there is
        self.unshare.wait(timeout=60)
        self.log.close()
        for cg in self.cgroups:
            for d in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                d.rmdir()
            cg.rmdir()


@pytest.fixture
def booted(deb: Path, tmp_path: Path) -> Iterator[Booted]:
    for tool in ("unshare", "nsenter", "chroot", "ip", "/lib/systemd/systemd"):
        assert shutil.which(tool), f"{tool} is missing"
    system = Booted(tmp_path / "root", deb)
    try:
        yield system
    finally:
        system.stop()
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()  # nothing left mounted
    shutil.rmtree(tmp_path / "root")


def wait_for(predicate, deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.2)


def test_production_install_under_systemd(booted: Booted, deb: Path) -> None:
    b = booted
    wait_for(lambda: b.run("test -S /run/systemd/private").returncode == 0)  # systemd's own bus is up
    state = b.run("systemctl is-system-running --wait").stdout.strip()
    assert state == "running", b.out("systemctl --failed --no-legend --plain")
    assert b.out("systemctl is-active systemd-journald.service") == "active"
    assert b.out("systemctl is-active postfix.service postfix@-.service").split() == ["active", "active"]
    stock_main = b.out("cat /etc/postfix/main.cf")

    # The README's "Production install", command by command.
    b.out(f"apt-get install -y ./dist/{deb.name}")
    units = ["exmilter-policyd.service", "exmilter-milter.service"]
    assert b.out("systemctl is-enabled " + " ".join(units)).split() == ["enabled", "enabled"]
    b.out("exmilter check -c /etc/exmilter/exmilter.yaml && systemctl restart exmilter-policyd")
    dry = b.out("exmilter render-postfix --apply --dry-run")
    assert "# dry run: /etc/postfix not changed" in dry
    assert "+    -o smtpd_milters=unix:/run/exmilter/milter.sock" in dry
    assert "+++ /etc/systemd/system/exmilter-policyd.service.d/limits.conf" in dry
    assert "+LimitNOFILE=65536" in dry
    assert b.out("ls -d /etc/postfix/exmilter-backup-* 2>/dev/null || true") == ""
    assert b.out("cat /etc/postfix/main.cf") == stock_main
    applied = b.out("exmilter render-postfix --apply && exmilter verify-postfix")
    b.out("systemctl daemon-reload && systemctl restart exmilter-policyd exmilter-milter && systemctl reload postfix")
    assert "/etc/postfix: every smtpd listener asks exmilter at RCPT, fail-closed" in applied
    (backup,) = b.out("ls -d /etc/postfix/exmilter-backup-*").split()
    assert b.out(f"ls {backup}").split() == ["main.cf", "master.cf"]
    assert b.out(f"cat {backup}/main.cf") == stock_main
    for u in units:
        shown = b.show(u, "LimitNOFILE", "DropInPaths")
        assert shown == {"LimitNOFILE": "65536", "DropInPaths": f"/etc/systemd/system/{u}.d/limits.conf"}
    assert b.out("cat /etc/postfix/main.cf") != stock_main

    # Supervision: all active, and a start in one transaction puts the exmilter units first.
    every = [*units, "postfix@-.service"]
    assert b.out("systemctl is-active " + " ".join(every)).split() == ["active"] * 3
    after = b.show("postfix@-.service", "After")["After"].split()
    assert set(units) <= set(after)
    # One transaction, as at boot (separate "systemctl start"s may run one before the next is queued).
    b.out(
        "printf '[Unit]\\nWants=%s\\n' '" + " ".join(every) + "' > /etc/systemd/system/exmilter-mail.target"
        " && systemctl daemon-reload && systemctl stop " + " ".join(every) + " && systemctl start exmilter-mail.target"
    )
    assert b.out("systemctl is-active " + " ".join(every)).split() == ["active"] * 3
    times = {
        u: b.show(u, "InactiveExitTimestampMonotonic", "ActiveEnterTimestampMonotonic", "MainPID", "NRestarts")
        for u in every
    }
    postfix_starts = int(times["postfix@-.service"]["InactiveExitTimestampMonotonic"])
    for u in units:
        assert 0 < int(times[u]["ActiveEnterTimestampMonotonic"]) <= postfix_starts, times
    assert b.show("exmilter-milter.service", "WatchdogUSec")["WatchdogUSec"] == "30s"
    assert b.show("exmilter-policyd.service", "WatchdogUSec")["WatchdogUSec"] == "30s"

    # Exchange's verbatim replies through Postfix, the policy daemon and the milter.
    smtp = b.out(f"python3 -c '{SMTP}'").splitlines()
    assert smtp == [
        "x@gmail.com 550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain",
        "user@labs.local 250 2.1.5 Ok",
    ]

    # A refused file: both reloads fail, nobody is signalled, the old rules keep answering.
    good = b.out("cat /etc/exmilter/exmilter.yaml")
    lines = len(good.splitlines())
    b.out("echo 'bogus: 1' >> /etc/exmilter/exmilter.yaml")
    for u in units:
        assert b.run(f"systemctl reload {u}").returncode == 1, u
    assert b.out("systemctl is-active " + " ".join(every)).split() == ["active"] * 3
    for u in units:
        assert b.show(u, "MainPID")["MainPID"] == times[u]["MainPID"], u
    assert b.out(f"python3 -c '{METRIC % 9142}' exmilter_config_generation") == "1.0"
    assert b.out(f"python3 -c '{METRIC % 9142}' exmilter_config_reloads_total") == "0.0"
    assert b.out(f"python3 -c '{SMTP}'").splitlines() == smtp
    refused = f"/etc/exmilter/exmilter.yaml:{lines + 1}:1: bogus: unknown key"
    for u in units:
        errors = b.out(f"journalctl -p err -u {u} -o cat --no-pager")
        assert any(line.startswith(refused) for line in errors.splitlines()), errors
        assert "/etc/exmilter/exmilter.yaml: 1 error(s); configuration refused" in errors.splitlines()
        assert any(line.startswith(f"Reload failed for {u}") for line in errors.splitlines()), errors
    # The file fixed: both reloads succeed and the daemon runs generation 2.
    b.out("sed -i '$d' /etc/exmilter/exmilter.yaml")
    for u in units:
        assert b.run(f"systemctl reload {u}").returncode == 0, u
    wait_for(lambda: b.out(f"python3 -c '{METRIC % 9142}' exmilter_config_generation") == "2.0")
    wait_for(lambda: b.out(f"python3 -c '{METRIC % 9143}' exmilter_config_generation") == "2.0")

    # The milter's watchdog under systemd (a shorter WatchdogSec in a runtime drop-in): a
    # milter whose socket is gone stops pinging and systemd restarts it.
    b.out(
        "mkdir -p /run/systemd/system/exmilter-milter.service.d && printf '[Service]\\nWatchdogSec=2s\\n' "
        "> /run/systemd/system/exmilter-milter.service.d/watchdog.conf && systemctl daemon-reload && "
        "systemctl restart exmilter-milter"
    )
    first = b.show("exmilter-milter.service", "MainPID")["MainPID"]
    time.sleep(3)  # longer than WatchdogSec: the pings keep it alive
    assert b.show("exmilter-milter.service", "MainPID", "NRestarts") == {"MainPID": first, "NRestarts": "0"}
    b.out("rm /run/exmilter/milter.sock")
    wait_for(lambda: b.show("exmilter-milter.service", "NRestarts")["NRestarts"] == "1")
    wait_for(lambda: b.run("systemctl is-active exmilter-milter.service").stdout.strip() == "active")
    assert b.show("exmilter-milter.service", "MainPID")["MainPID"] != first
    log = b.out("journalctl -u exmilter-milter -o cat --no-pager")
    assert "exmilter-milter.service: Watchdog timeout (limit 2s)!" in log
    assert "watchdog: unix:/run/exmilter/milter.sock does not answer ([Errno 2] No such file or directory)" in log
