"""End to end through Postfix: smtp-source against a private Postfix instance.

    .venv/bin/python bench/e2e.py [-m 4000] [-s 20] [-l 1024] [--repeat 1]

One private Postfix 3.7 (postfix-notes §7, via exmilter.sandbox.instance.PostfixInstance
when present: own config, spool, data and log directories under a temporary directory,
on /dev/shm when it exists;
``/etc/postfix`` untouched; chroot off; loopback only) with one smtpd listener per
scenario, all delivering to ``discard:``:

(a) bare        ``smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination``
(b) exmilter    the listener exactly as ``exmilter render-postfix`` writes it
                (exmilter.postfix.master.master_service: ``smtpd_delay_reject=no`` and the
                policy asked at MAIL, RCPT and END-OF-MESSAGE, i.e. 3 requests per message;
                not at EHLO or DATA, where it always answers DUNNO, nor at CONNECT, since the
                default Frontend connector holds every address of *:25), moved to
                127.0.0.1:PORT, reaching the daemon over a unix socket as deployed
                (``policyd.listen`` defaults to ``unix:/run/exmilter/policy.sock``; here
                one in a temporary directory), with one change: no per-source connection limit (every session comes from
                127.0.0.1, standing for many clients, as on the other listeners)
(b') exmilter-rcpt  exmilter asked at RCPT only over TCP, like postfwd below (1 request
                per message), the same daemon process
(c) postfwd     ``check_policy_service { inet:127.0.0.1:P, policy_context=*:25 },
                reject_unauth_destination`` against postfwd1 with the equivalent ruleset
(d) policy+milter  the default rendering: the policy daemon on its unix socket and the milter
                (render-postfix with the milter enabled); the CPU reported is the milter's

``smtp-source -s 20 -m N -l 1024`` sends N one-recipient messages, one SMTP session
each (recipient in an accepted domain, client 127.0.0.1 on the relay connector: every
message is accepted). The figure is N divided by smtp-source's wall time; before each
run the queue is empty, after it the run waits until every message has left the queue,
so runs do not overlap. The scenario order rotates between repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from policyload import cpu_seconds

try:  # helper B's private-instance API; the fallback below does the same by hand
    from exmilter.sandbox.instance import BASE_SERVICES, PostfixInstance
except ImportError:  # pragma: no cover
    PostfixInstance = None  # type: ignore[assignment,misc]
from common import (
    BENCH_CONFIG,
    POSTFWD_RULES,
    PYTHON,
    ROOT,
    free_port,
    policyd_available,
    policyd_cmd,
    postfwd_binary,
    start_policyd,
    start_postfwd,
    stop,
    wait_port,
)

SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"

MASTER_BASE = BASE_SERVICES  # the same services as the sandbox's private instance


class PrivatePostfix:
    """A throw-away Postfix instance with one smtpd listener per scenario.

    ``listeners``: name -> either a ``smtpd_relay_restrictions`` value, or a callable
    ``(port) -> master.cf service text`` for a listener rendered elsewhere.
    """

    def __init__(self, listeners: dict[str, object], main_extra: str = "") -> None:
        # The queue on tmpfs where there is one: every scenario writes and fsyncs the same
        # queue files, and on this machine's virtual disk their latency varied runs of one
        # scenario by ±20 % (CPU partly idle). On a real disk the fsyncs add the same time
        # to every scenario, which moves every ratio to bare Postfix closer to 1.
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        self.dir = Path(tempfile.mkdtemp(prefix="exmilter-bench-postfix-", dir=shm))
        os.chmod(self.dir, 0o755)
        self.ports: dict[str, int] = {}
        services = []
        for name, spec in listeners.items():
            port = free_port()
            self.ports[name] = port
            if callable(spec):
                text = spec(port)
            else:
                text = f"127.0.0.1:{port} inet n - n - - smtpd\n  -o {{ smtpd_relay_restrictions = {spec} }}\n"
            services.append(text.rstrip("\n") + f"\n  -o syslog_name=postfix-{name}\n")
        main = {
            "compatibility_level": "3.6",
            "queue_directory": f"{self.dir}/spool",
            "data_directory": f"{self.dir}/data",
            "maillog_file": f"{self.dir}/log/maillog",
            "maillog_file_prefixes": f"{self.dir}/log",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "myhostname": "mx.bench.test",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "alias_maps": "",
            "alias_database": "",
        }
        tail = (
            f"{main_extra}\n"
            "relay_domains = labs.local, exchangelabs.nl\n"
            "default_transport = discard:\n"
            "relay_transport = discard:\n"
            "local_transport = discard:\n"
            "smtpd_client_connection_count_limit = 0\n"
            "smtpd_client_connection_rate_limit = 0\n"
            "smtpd_client_message_rate_limit = 0\n"
        )
        if PostfixInstance is not None:  # helper B's API (exmilter.sandbox.instance)
            self.instance = PostfixInstance(self.dir)
            main.update(
                {
                    k: v
                    for k, v in self.instance.base_main("mx.bench.test").items()
                    if k in ("queue_directory", "data_directory", "maillog_file", "maillog_file_prefixes")
                }
            )
            self.instance.write(main, tail, "".join(services))
            self.etc = self.instance.etc
        else:
            self.instance = None
            self.etc = self.dir / "etc"
            for sub in ("etc", "spool", "data", "log"):
                (self.dir / sub).mkdir()
            shutil.chown(self.dir / "data", "postfix", "postfix")
            (self.etc / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in main.items()) + tail)
            (self.etc / "master.cf").write_text(MASTER_BASE + "".join(services))

    def postfix(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [POSTFIX, "-c", str(self.etc), *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
        )

    def start(self) -> None:
        if self.instance is not None:
            self.instance.start()
        else:
            r = self.postfix("start")
            if r.returncode != 0:
                raise RuntimeError(f"postfix start failed: {r.stderr.strip()} {self.log_tail()}")
        for port in self.ports.values():
            wait_port(port, 30)

    def stop(self) -> None:
        if self.instance is not None:
            self.instance.stop()
        else:
            self.postfix("stop")
            time.sleep(0.5)

    def queued(self) -> int:
        n = 0
        for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
            d = self.dir / "spool" / sub
            if d.exists():
                for _root, _dirs, files in os.walk(d):
                    n += len(files)
        return n

    def wait_empty(self, timeout: float = 120.0) -> float:
        t0 = time.monotonic()
        while self.queued() and time.monotonic() - t0 < timeout:
            time.sleep(0.05)
        return time.monotonic() - t0

    def log_tail(self, n: int = 20) -> str:
        p = self.dir / "log" / "maillog"
        return "\n".join(p.read_text(errors="replace").splitlines()[-n:]) if p.exists() else ""

    def count_log(self, needle: str) -> int:
        p = self.dir / "log" / "maillog"
        if not p.exists():
            return 0
        with p.open(errors="replace") as fh:
            return sum(1 for line in fh if needle in line)

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def rendered_listener(config_text: str, endpoint: str, milter: str | None = None) -> tuple[object, str] | None:
    """exmilter's own rendering of the ``*:25`` listener, as a ``(port) -> text`` callable,
    and its main.cf settings; None when the renderer is not there. ``endpoint`` is where
    Postfix reaches the daemon, in Postfix's syntax (``unix:/path``, ``inet:host:port``)."""
    try:
        from exmilter.config import loads
        from exmilter.deployment import plan_listeners
        from exmilter.postfix.main import main_settings
        from exmilter.postfix.master import master_service
    except ImportError:
        return None
    org = loads(config_text, "bench.yaml").organization
    plan = next((p for p in plan_listeners(org) if p.context == "*:25"), None)
    if plan is None:
        return None
    settings = "\n".join(f"{st.name} = {st.value}" for st in main_settings(org) if st.name != "relay_domains")
    # The rendered per-source limit (20 for these connectors) would refuse smtp-source's 20
    # sessions from one address whenever a new one beats anvil's count of the one that just
    # ended; the extra -o comes after the rendered ones, and the last -o wins.
    plan = replace(plan, extra_options=("-o smtpd_client_connection_count_limit=0",))
    if milter is None:
        return (lambda port: master_service(plan.moved("127.0.0.1", port), org, endpoint)), settings
    return (lambda port: master_service(plan.moved("127.0.0.1", port), org, endpoint, milter=milter)), settings


def start_policy_and_milter(cfg: Path, work: Path, sock_dir: Path) -> tuple[list[subprocess.Popen], str, str]:
    """``policy + milter`` as rendered by default: a policy daemon with the coverage socket and
    ``exmilter milter`` on loopback TCP; (processes, policy endpoint, milter endpoint)."""
    coverage, policy_sock = sock_dir / "coverage.sock", sock_dir / "policy-m.sock"
    p = free_port()
    procs = []
    with open(work / "policyd-milter.log", "wb") as fh:
        cmd = [*policyd_cmd(cfg, p, (f"unix:{policy_sock}:mode=666",)), "--coverage", str(coverage)]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT))
    wait_port(p, 120, procs[-1])
    with open(work / "milter.log", "wb") as fh:
        milter_sock = sock_dir / "milter.sock"
        cmd = [PYTHON, "-m", "exmilter.cli", "milter", "-c", str(cfg), "--listen", f"unix:{milter_sock}:mode=666"]
        cmd += ["--metrics", "none", "--coverage", str(coverage)]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + 120
    while not milter_sock.exists() and time.monotonic() < deadline and procs[-1].poll() is None:
        time.sleep(0.05)
    time.sleep(0.2)  # the mode is set right after the socket appears
    return procs, f"unix:{policy_sock}", f"unix:{milter_sock}"


def policy_restrictions(port: int) -> str:
    return (
        f"check_policy_service {{ inet:127.0.0.1:{port}, timeout=10s, policy_context=*:25 }}, reject_unauth_destination"
    )


def cpu_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + f[4]
    return sum(f) - idle, sum(f)


def smtp_source(port: int, messages: int, sessions: int, size: int) -> tuple[float, str]:
    cmd = [
        SMTP_SOURCE,
        "-s",
        str(sessions),
        "-m",
        str(messages),
        "-l",
        str(size),
        "-f",
        "bench@sender.example",
        "-t",
        "user@labs.local",
        "-M",
        "client.bench.test",
        f"127.0.0.1:{port}",
    ]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    dt = time.perf_counter() - t0
    out = (r.stdout + r.stderr).strip()
    if r.returncode != 0:
        raise RuntimeError(f"smtp-source failed ({r.returncode}): {out[-500:]}")
    return dt, out


def measure(
    messages: int = 4000, sessions: int = 20, size: int = 1024, repeat: int = 1, workdir: Path | None = None
) -> dict:
    own = workdir is None
    work = Path(workdir or tempfile.mkdtemp(prefix="exmilter-bench-e2e-"))
    work.mkdir(parents=True, exist_ok=True)
    services: dict[str, object] = {}
    listeners = {"bare": "permit_mynetworks, reject_unauth_destination"}
    result: dict = {"messages": messages, "sessions": sessions, "size": size, "rows": []}
    procs = []
    cleanup: list[Path] = []
    try:
        main_extra = ""
        if policyd_available():
            cfg = work / "bench.yaml"
            cfg.write_text(BENCH_CONFIG)
            p = free_port()
            # smtpd runs as the unprivileged mail_owner: a directory it can reach (the work
            # directory's parents may be private), a socket it can open
            sock_dir = Path(tempfile.mkdtemp(prefix="exmilter-bench-policyd-"))
            sock_dir.chmod(0o755)
            cleanup.append(sock_dir)
            sock = sock_dir / "policy.sock"
            procs.append(start_policyd(cfg, p, work / "policyd-e2e.log", also=(f"unix:{sock}:mode=666",)))
            rendered = rendered_listener(BENCH_CONFIG, f"unix:{sock}")
            if rendered is not None:
                listeners["exmilter"], main_extra = rendered
                services["exmilter"] = procs[-1]
            listeners["exmilter-rcpt"] = policy_restrictions(p)
            services["exmilter-rcpt"] = procs[-1]
            if (ROOT / "exmilter" / "milter").is_dir():
                started, policy_at, milter_at = start_policy_and_milter(cfg, work, sock_dir)
                procs += started
                rendered = rendered_listener(BENCH_CONFIG, policy_at, milter_at)
                if rendered is not None:
                    listeners["policy+milter"] = rendered[0]
                    services["policy+milter"] = started[-1]  # the CPU reported is the milter's
        if postfwd_binary():
            rules = work / "postfwd.cf"
            rules.write_text(POSTFWD_RULES)
            p = free_port()
            procs.append(start_postfwd(rules, p, work / "postfwd-e2e.log"))
            services["postfwd"] = procs[-1]
            listeners["postfwd"] = policy_restrictions(p)
        pf = PrivatePostfix(listeners, main_extra)
        try:
            pf.start()
            # warm up every listener (process start, policy connections)
            for name in listeners:
                smtp_source(pf.ports[name], 100, sessions, size)
            pf.wait_empty()
            times: dict[str, list[float]] = {n: [] for n in listeners}
            busy: dict[str, list[float]] = {n: [] for n in listeners}
            policy_cpu: dict[str, list[float]] = {n: [] for n in listeners}
            drains: dict[str, list[float]] = {n: [] for n in listeners}
            names = list(listeners)
            for rep in range(repeat):
                for name in names[rep % len(names) :] + names[: rep % len(names)]:  # rotate the order
                    pf.wait_empty()
                    svc = services.get(name)
                    c0, (b0, t0) = cpu_seconds(svc.pid if svc else None), cpu_busy()
                    dt, _out = smtp_source(pf.ports[name], messages, sessions, size)
                    c1, (b1, t1) = cpu_seconds(svc.pid if svc else None), cpu_busy()
                    drains[name].append(pf.wait_empty() + dt)
                    times[name].append(dt)
                    busy[name].append((b1 - b0) / max(t1 - t0, 1))
                    if c0 is not None and c1 is not None:
                        policy_cpu[name].append((c1 - c0) / messages * 1e6)
                    print(
                        f"  e2e {name:>8}: {messages / dt:7.1f} msg/s ({dt:.2f}s; drained {drains[name][-1]:.2f}s; "
                        f"CPU busy {busy[name][-1]:.0%})",
                        file=sys.stderr,
                    )
            rejects = pf.count_log("reject:")
            sent = pf.count_log("status=sent")
            result["rejects_logged"] = rejects
            result["delivered_logged"] = sent
            result["expected_delivered"] = (messages * repeat + 100) * len(listeners)
        finally:
            pf.stop()
            pf.cleanup()
        bare = None
        for name in listeners:
            ts = sorted(times[name])
            dt = ts[len(ts) // 2]
            mps = messages / dt
            if name == "bare":
                bare = mps
            result["rows"].append(
                {
                    "scenario": name,
                    "seconds": dt,
                    "msg_per_s": mps,
                    "cpu_busy": statistics.median(busy[name]),
                    "policy_cpu_us_per_msg": (statistics.median(policy_cpu[name]) if policy_cpu[name] else None),
                    "drained_s": sorted(drains[name])[len(ts) // 2],
                    "runs_msg_per_s": [round(messages / t) for t in times[name]],
                    "ratio_to_bare": (mps / bare) if bare else None,
                }
            )
    finally:
        for proc in procs:
            stop(proc)
        for d in cleanup:
            shutil.rmtree(d, ignore_errors=True)
        if own:
            shutil.rmtree(work, ignore_errors=True)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--messages", type=int, default=4000)
    ap.add_argument("-s", "--sessions", type=int, default=20)
    ap.add_argument("-l", "--size", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    print(json.dumps(measure(args.messages, args.sessions, args.size, args.repeat), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
