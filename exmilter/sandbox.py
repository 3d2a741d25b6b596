"""The whole stack on loopback, for trying a configuration and for integration tests.

A private Postfix rendered from the file (every listener moved to 127.0.0.1 and
port + offset, with its original ``policy_context`` so exmilter decides exactly as it
would on the real bindings), the policy daemon as a child process, and a pipe(8)
transport that files every accepted message into ``STATE/delivered/``. Nothing here
touches ``/etc/postfix`` or a system Postfix; starting needs root (Postfix does).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from exmilter import deliver as deliver_module
from exmilter.config import ConfigError, load
from exmilter.deliver import Delivery, read_deliveries
from exmilter.model import Organization
from exmilter.postfix.instance import PostfixInstance
from exmilter.postfix.render import ListenerPlan, main_settings, master_service, plan_listeners
from exmilter.values import parse_ip

HOST = "127.0.0.1"
DEFAULT_OFFSET = 10000
DEFAULT_STATE = Path("/tmp/exmilter-sandbox")
#: pipe(8) refuses root and the mail owner; this user writes STATE/delivered/.
DELIVERY_USER = "nobody"
TRANSPORT = "exdeliver"


class SandboxError(RuntimeError):
    """The sandbox cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class SandboxListener:
    context: str  # the Exchange listener exmilter decides for: "*:25", "10.83.4.10:25"
    host: str
    port: int  # where the sandbox's Postfix really listens
    connectors: tuple[str, ...]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def free_port(host: str = HOST) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_free(port: int, host: str = HOST) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def wait_port(port: int, timeout: float, host: str = HOST, alive: object = None) -> bool:
    """True once ``host:port`` accepts; False on timeout or when ``alive()`` turns False."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(alive) and not alive():
            return False
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return True
        time.sleep(0.05)
    return False


def move_listeners(plans: list[ListenerPlan], offset: int, host: str = HOST) -> list[ListenerPlan]:
    """Each listener to ``host:port+offset``; a later listener that collides gets a free port."""
    used: set[int] = set()
    out = []
    for p in plans:
        port = p.listener.port + offset
        if port in used or not 0 < port < 65536:
            port = free_port(host)
            while port in used:
                port = free_port(host)
        used.add(port)
        out.append(p.moved(host, port))
    return out


def selection_table(org: Organization, plans: list[ListenerPlan]) -> dict:
    """Per listener context, candidate ranges in Exchange's order (see exmilter.deliver).

    Smallest range first, the exact binding before the wildcard on a tie, and otherwise in
    configuration order (connector, then binding, then range): the order in which
    :class:`exmilter.selection.ConnectorTable` breaks the ties Exchange's validation would
    refuse, so deliver.py names the connector the policy daemon decided for
    (tests/test_deliver.py holds the two together).
    """
    contexts: dict[str, list] = {}
    for p in plans:
        lst = p.listener
        rows = []
        for c in org.receive_connectors:
            if not c.enabled:
                continue
            for b in c.bindings:
                if b.port != lst.port:
                    continue
                if not b.is_wildcard and (lst.address is None or b.ip != parse_ip(lst.address)):
                    continue
                rows += [
                    (r.size, 0 if not b.is_wildcard else 1, [r.version, r.first, r.last, c.identity])
                    for r in c.remote_ip_ranges
                    if r.version == b.version
                ]
        rows.sort(key=lambda row: (row[0], row[1]))  # stable: configuration order breaks ties
        contexts[p.context] = [row[2] for row in rows]
    return {"contexts": contexts}


def _traversable(path: Path) -> bool:
    """Postfix (user postfix) and pipe (user nobody) must reach the state directory."""
    return all(os.stat(d).st_mode & 0o001 for d in [path, *path.parents] if d.exists())


def _pid_is_policyd(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"policyd" in cmd and any(b"exmilter" in part for part in cmd)


class Sandbox:
    """Start/stop the stack; attributes tell tests and benchmarks where everything is."""

    def __init__(
        self,
        config: Path | str,
        state_dir: Path | str = DEFAULT_STATE,
        port_offset: int = DEFAULT_OFFSET,
        *,
        host: str = HOST,
        python: str = sys.executable,
        policyd_args: tuple[str, ...] = (),
    ) -> None:
        self.config = Path(config).resolve()
        self.state_dir = Path(state_dir).resolve()
        self.port_offset = port_offset
        self.host = host
        self.python = python
        self.policyd_args = policyd_args
        self.postfix = PostfixInstance(self.state_dir / "postfix")
        self.delivered_dir = self.state_dir / "delivered"
        self.selection_path = self.state_dir / "selection.json"
        self.policyd_log = self.state_dir / "policyd.log"
        self.pid_file = self.state_dir / "policyd.pid"
        self.maillog = self.postfix.maillog
        self.listeners: list[SandboxListener] = []
        self.policy_port = 0
        self.metrics_port = 0
        self._policyd: subprocess.Popen[bytes] | None = None
        self._plans: list[ListenerPlan] = []
        self.org: Organization | None = None

    # -- attributes --------------------------------------------------------------------

    @property
    def policyd_pid(self) -> int | None:
        return self._policyd.pid if self._policyd is not None and self._policyd.poll() is None else None

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def ports(self) -> dict[str, int]:
        """Listener context → the port the sandbox's Postfix listens on for it."""
        return {lst.context: lst.port for lst in self.listeners}

    def port(self, context: str) -> int:
        try:
            return self.ports[context]
        except KeyError:
            raise KeyError(f"no listener {context!r}; have {', '.join(self.ports)}") from None

    def deliveries(self) -> list[Delivery]:
        return read_deliveries(self.delivered_dir)

    # -- life cycle --------------------------------------------------------------------

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Stop whatever a previous run left on this state directory, then start afresh."""
        if os.geteuid() != 0:
            raise SandboxError("the sandbox runs a private Postfix, which needs root (try sudo)")
        self.org = self._load()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o755)
        if not _traversable(self.state_dir):
            raise SandboxError(
                f"{self.state_dir}: a parent directory is closed to other users; Postfix and the "
                "delivery user must reach it (use --state-dir under /tmp or /var/tmp)"
            )
        self._stop_stale()
        self._plans = move_listeners(plan_listeners(self.org), self.port_offset, self.host)
        if not self._plans:
            raise SandboxError(f"{self.config}: no enabled receive connector, nothing to listen on")
        busy = [p.port for p in self._plans if not port_free(p.port, self.host)]
        if busy:
            raise SandboxError(f"port(s) {', '.join(map(str, busy))} in use on {self.host}; pick another --port-offset")
        self.listeners = [
            SandboxListener(p.context, self.host, p.port, tuple(c.identity for c in p.connectors)) for p in self._plans
        ]
        self._prepare_delivery()
        self.policy_port, self.metrics_port = free_port(self.host), free_port(self.host)
        self.start_policyd()
        try:
            self._write_postfix()
            self.postfix.start()
            for lst in self.listeners:
                if not wait_port(lst.port, 20, self.host):
                    raise SandboxError(f"Postfix did not listen on {lst.address}:\n{self.postfix.maillog_tail()}")
        except BaseException:
            self.stop()
            raise
        (self.state_dir / "sandbox.json").write_text(json.dumps(self.describe(), indent=2) + "\n")

    def stop(self) -> None:
        """Stop Postfix, then the policy daemon (by its PID)."""
        with contextlib.suppress(Exception):
            self.postfix.stop()
        self.stop_policyd()

    def _load(self) -> Organization:
        try:
            return load(self.config).organization
        except ConfigError as e:
            raise SandboxError(str(e)) from None

    def _stop_stale(self) -> None:
        self.postfix.stop()
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        if _pid_is_policyd(pid):
            _terminate(pid)
        self.pid_file.unlink(missing_ok=True)

    # -- delivery ------------------------------------------------------------------------

    def _prepare_delivery(self) -> None:
        pw = pwd.getpwnam(DELIVERY_USER)
        self.delivered_dir.mkdir(exist_ok=True)
        (self.delivered_dir / ".tmp").mkdir(exist_ok=True)
        for d in (self.delivered_dir, self.delivered_dir / ".tmp"):
            os.chown(d, pw.pw_uid, pw.pw_gid)
            d.chmod(0o755)
        bin_dir = self.state_dir / "bin"
        bin_dir.mkdir(exist_ok=True)
        bin_dir.chmod(0o755)
        # A copy: the delivery user may not be able to read the source tree or the venv.
        shutil.copyfile(deliver_module.__file__, bin_dir / "exmilter-deliver.py")
        (bin_dir / "exmilter-deliver.py").chmod(0o644)
        self._write_selection()

    def _write_selection(self) -> None:
        assert self.org is not None
        tmp = self.selection_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(selection_table(self.org, self._plans)))
        tmp.chmod(0o644)
        os.replace(tmp, self.selection_path)

    def _delivery_python(self) -> str:
        """An interpreter the delivery user can run: the system one unless ours is readable."""
        return "/usr/bin/python3" if Path("/usr/bin/python3").exists() else self.python

    def _write_postfix(self) -> None:
        assert self.org is not None
        main = self.postfix.base_main(self.org.server.fqdn)
        main.update({s.name: s.value for s in main_settings(self.org)})
        main.update({
            "inet_interfaces": self.host,
            "default_transport": TRANSPORT,
            "relay_transport": TRANSPORT,
            "local_transport": TRANSPORT,
            "virtual_transport": TRANSPORT,
            f"{TRANSPORT}_destination_recipient_limit": "1000",
        })
        endpoint = f"inet:{self.host}:{self.policy_port}"
        services = []
        for p in self._plans:
            # content_filter's next hop carries the listener to the delivery agent (${nexthop}).
            routed = replace(p, extra_options=(f"-o content_filter={TRANSPORT}:{p.context}",))
            services.append(master_service(routed, self.org, endpoint))
        script = self.state_dir / "bin" / "exmilter-deliver.py"
        services.append(
            f"{TRANSPORT} unix - n n - - pipe\n"
            f"  user={DELIVERY_USER} null_sender=\n"
            f"  argv={self._delivery_python()} -I {script} --dir={self.delivered_dir}"
            f" --selection={self.selection_path} --sender=${{sender}} --client=${{client_address}}"
            f" --helo=${{client_helo}} --nexthop=${{nexthop}} --queue-id=${{queue_id}} -- ${{recipient}}"
        )
        self.postfix.write(main, "", "\n\n".join(services) + "\n")

    # -- policy daemon ---------------------------------------------------------------------

    def start_policyd(self) -> None:
        """Start ``exmilter policyd`` on the sandbox's ports and wait until it accepts."""
        if self.policyd_pid is not None:
            return
        cmd = [
            self.python, "-m", "exmilter.cli", "policyd", "-c", str(self.config),
            "--listen", f"tcp:{self.policy_port}:interface={self.host}",
            "--metrics", f"tcp:{self.metrics_port}:interface={self.host}",
            *self.policyd_args,
        ]
        env = dict(os.environ)
        src = str(Path(deliver_module.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        log = open(self.policyd_log, "ab")  # noqa: SIM115 - handed to the child
        try:
            self._policyd = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        finally:
            log.close()
        self.pid_file.write_text(f"{self._policyd.pid}\n")
        proc = self._policyd
        if not wait_port(self.policy_port, 30, self.host, alive=lambda: proc.poll() is None):
            self.stop_policyd()
            raise SandboxError(f"the policy daemon did not start; see {self.policyd_log}:\n{self._log_tail()}")
        wait_port(self.metrics_port, 10, self.host, alive=lambda: proc.poll() is None)

    def stop_policyd(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        proc, self._policyd = self._policyd, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.pid_file.unlink(missing_ok=True)

    def kill_policyd(self) -> None:
        """SIGKILL, as a crash would: Postfix must fail closed until restart_policyd()."""
        self.stop_policyd(signal.SIGKILL)

    def restart_policyd(self) -> None:
        self.stop_policyd()
        self.start_policyd()

    def reload(self) -> bool:
        """SIGHUP the daemon (it re-reads the file); refresh the delivery-side connector table.

        Returns False when the file does not load: the daemon then keeps its old rules.
        """
        ok = True
        try:
            self.org = load(self.config).organization
            self._write_selection()
        except ConfigError:
            ok = False
        if self._policyd is not None and self._policyd.poll() is None:
            self._policyd.send_signal(signal.SIGHUP)
        return ok

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.policyd_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- reporting -------------------------------------------------------------------------

    def describe(self) -> dict:
        return {
            "state_dir": str(self.state_dir),
            "config": str(self.config),
            "listeners": [
                {"context": lst.context, "listen": lst.address, "connectors": list(lst.connectors)}
                for lst in self.listeners
            ],
            "policyd": {"listen": f"{self.host}:{self.policy_port}", "pid": self.policyd_pid,
                        "metrics": self.metrics_url, "log": str(self.policyd_log)},
            "delivered": str(self.delivered_dir),
            "maillog": str(self.maillog),
        }

    def swaks_line(self, recipient: str | None = None) -> str:
        assert self.org is not None
        lst = next((x for x in self.listeners if x.context.endswith(":25")), self.listeners[0])
        domain = next((d.suffix for d in self.org.accepted_domains if d.domain_type.is_internal), "example.com")
        return f"swaks --server {lst.address} --from sender@example.com --to {recipient or 'postmaster@' + domain}"


def _terminate(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM one process we started earlier, SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _pid_is_policyd(pid):
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
