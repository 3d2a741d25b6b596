"""The whole stack on loopback, for trying a configuration and for integration tests.

A private Postfix rendered from the file (every listener moved to 127.0.0.1 and
port + offset, with its original ``policy_context`` so exmilter decides exactly as it
would on the real bindings; :mod:`exmilter.sandbox.instance`), the policy daemon as a
supervised child process (restarted when it dies, :mod:`exmilter.sandbox.supervisor`),
and a pipe(8) transport that files every accepted message into ``STATE/delivered/``
(:mod:`exmilter.sandbox.delivery`). Nothing here touches ``/etc/postfix``, a system
Postfix or the network (no DNS query: :data:`exmilter.sandbox.instance.NO_NETWORK`);
starting needs root (Postfix does).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import exmilter
from exmilter.auth import offers_basic_auth, offers_starttls
from exmilter.config import ConfigError, load
from exmilter.engine import Engine
from exmilter.model import Organization, Right, TlsSettings
from exmilter.postfix.listeners import ListenerLayout, ListenerPlan
from exmilter.postfix.main import main_settings
from exmilter.postfix.master import master_service
from exmilter.postfix.restrictions import DEFAULT_ACTION
from exmilter.sandbox import delivery, outbound
from exmilter.sandbox.certificates import CertificateAuthority
from exmilter.sandbox.deliver import Delivery, read_deliveries
from exmilter.sandbox.dovecot import PACKAGE as DOVECOT_PACKAGE
from exmilter.sandbox.dovecot import DovecotAuth
from exmilter.sandbox.instance import NO_NETWORK, PostfixInstance
from exmilter.sandbox.ports import HOST, free_port, move_listeners, port_free, wait_port
from exmilter.sandbox.supervisor import (
    READY_TIMEOUT,
    ChildError,
    ChildSpec,
    Event,
    Kind,
    RestartPolicy,
    State,
    Supervisor,
    terminate_pid,
)

DEFAULT_OFFSET = 10000
DEFAULT_STATE = Path("/tmp/exmilter-sandbox")
#: What clients get while the policy daemon is down, for the supervisor's messages.
MILTER_DOWN = "Postfix keeps running and answers 451 4.7.1 (milter_default_action=tempfail) from MAIL on"
POLICYD_DOWN = f"Postfix keeps running and answers {DEFAULT_ACTION[:9]} to every client it asks the daemon about"


#: Postfix's TLS manager (entropy and session cache for smtpd's STARTTLS and the smtp client's
#: TLS to next hops), as Debian ships it; one per instance.
TLSMGR_SERVICE = "tlsmgr    unix  - - n 1000? 1 tlsmgr"


def _child_env() -> dict[str, str]:
    """The environment of a daemon child: this checkout's exmilter first on its path."""
    env = dict(os.environ)
    src = str(Path(exmilter.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


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


def _exchange_port(context: str) -> int:
    """The Exchange port of a listener context (``*:587``, ``10.1.1.1:587``, ``[::1]:587``)."""
    return int(context.rpartition(":")[2])


def _traversable(path: Path) -> bool:
    """Postfix (user postfix) and pipe (user nobody) must reach the state directory."""
    return all(os.stat(d).st_mode & 0o001 for d in [path, *path.parents] if d.exists())


def _pid_is_policyd(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"policyd" in cmd and any(b"exmilter" in part for part in cmd)


def _pid_is_milter(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"milter" in cmd and any(b"exmilter" in part for part in cmd)


def describe_load_failure(path: Path | str, error: BaseException) -> str:
    """What to print when the file does not load: every located problem, else the error on one line."""
    if isinstance(error, ConfigError):
        return str(error)
    text = " ".join(str(error).split()) or "no details"
    return f"{path}: cannot be loaded: {type(error).__name__}: {text}"


def _print_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Sandbox:
    """Start/stop the stack; attributes tell tests and benchmarks where everything is.

    Every message for the operator (a reload refused, a daemon that died and was
    restarted, a degraded stack) goes to ``report`` (stderr by default) and is kept in
    :attr:`messages`.
    """

    def __init__(
        self,
        config: Path | str,
        state_dir: Path | str = DEFAULT_STATE,
        port_offset: int = DEFAULT_OFFSET,
        *,
        host: str = HOST,
        python: str = sys.executable,
        policyd_args: tuple[str, ...] = (),
        milter_args: tuple[str, ...] = (),
        restart: RestartPolicy | None = None,
        report: Callable[[str], None] = _print_stderr,
    ) -> None:
        self.config = Path(config).resolve()
        self.state_dir = Path(state_dir).resolve()
        self.port_offset = port_offset
        self.host = host
        self.python = python
        self.policyd_args = policyd_args
        self.milter_args = milter_args
        self.postfix = PostfixInstance(self.state_dir / "postfix")
        self.delivered_dir = self.state_dir / "delivered"
        self.selection_path = self.state_dir / "selection.json"  # the delivery agent's connector list
        self._agent = self.state_dir / "bin" / delivery.AGENT_NAME
        self.policyd_log = self.state_dir / "policyd.log"
        #: Exchange's logs of the sandbox (never the configuration's system paths): docs/logs.md.
        self.protocol_log_dir = self.state_dir / "logs" / "ProtocolLog" / "SmtpReceive"
        self.tracking_log_dir = self.state_dir / "logs" / "MessageTracking"
        self.pid_file = self.state_dir / "policyd.pid"
        self.milter_log = self.state_dir / "milter.log"
        self.milter_pid_file = self.state_dir / "milter.pid"
        self.coverage_path = self.state_dir / "coverage.sock"  # the milter registers its sessions here
        self.milter_port = 0
        self.milter_metrics_port = 0
        self.maillog = self.postfix.maillog
        self.listeners: list[SandboxListener] = []
        self.policy_port = 0
        self.metrics_port = 0
        self.messages: list[str] = []
        self._report = report
        self._messages_lock = threading.Lock()
        self.supervisor = Supervisor(self._on_event, restart)
        self._policyd = self.supervisor.add(self._policyd_spec())
        # STARTTLS and AUTH (docs/authentication.md): a throw-away CA and certificate, and a
        # private Dovecot for the users' test passwords, started when some connector needs them.
        self.tls_dir = self.state_dir / "tls"
        self.dovecot = DovecotAuth(self.state_dir / "dovecot")
        self._dovecot = self.supervisor.add(self.dovecot.spec())
        self.ca: CertificateAuthority | None = None
        self._milter = self.supervisor.add(self._milter_spec())
        self._plans: list[ListenerPlan] = []
        self._layout: ListenerLayout | None = None
        self._routed = False  # Postfix routes through send connectors (docs/send-connectors.md)
        self.org: Organization | None = None

    # -- attributes --------------------------------------------------------------------

    @property
    def policyd_pid(self) -> int | None:
        return self._policyd.pid

    @property
    def dovecot_pid(self) -> int | None:
        """The private Dovecot's PID, None when no connector offers AUTH (it is not started)."""
        return self._dovecot.pid

    @property
    def dovecot_state(self) -> State:
        """RUNNING once Dovecot accepts on its socket; STOPPED when no connector offers AUTH."""
        return self._dovecot.state

    @property
    def ca_file(self) -> Path | None:
        """The throw-away CA's certificate: give it to TLS clients as their trust anchor."""
        return self.ca.cert if self.ca is not None else None

    @property
    def policyd_state(self) -> State:
        """RUNNING, WAITING (dead, restart pending), FAILED (degraded) or STOPPED."""
        return self._policyd.state

    @property
    def degraded(self) -> bool:
        """True while a daemon is down for good (given up on): Postfix fails closed."""
        return any(c.state is State.FAILED for c in self.supervisor.children)

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def milter_metrics_url(self) -> str:
        return f"http://{self.host}:{self.milter_metrics_port}/metrics"

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
        self._layout = ListenerLayout(self.org)
        self._plans = move_listeners(list(self._layout.plans), self.port_offset, self.host)
        if not self._plans:
            raise SandboxError(f"{self.config}: no enabled receive connector, nothing to listen on")
        busy = [p.port for p in self._plans if not port_free(p.port, self.host)]
        if busy:
            raise SandboxError(f"port(s) {', '.join(map(str, busy))} in use on {self.host}; pick another --port-offset")
        self.listeners = [
            SandboxListener(p.context, self.host, p.port, tuple(c.identity for c in p.connectors)) for p in self._plans
        ]
        self._prepare_delivery()
        self._prepare_tls()
        self.policy_port, self.metrics_port = free_port(self.host), free_port(self.host)
        self.milter_port, self.milter_metrics_port = free_port(self.host), free_port(self.host)
        self.start_policyd()
        if self.org.milter.enabled:
            self.start_milter()
        try:
            self._start_dovecot()
            self._write_postfix()
            self.postfix.start()
            for lst in self.listeners:
                if not wait_port(lst.port, 20, self.host):
                    raise SandboxError(f"Postfix did not listen on {lst.address}:\n{self.postfix.maillog_tail()}")
        except BaseException:
            self.stop()
            raise
        self._write_description()
        self.supervisor.watch()

    def stop(self) -> None:
        """Stop supervising, stop Postfix, then the policy daemon (by its PID)."""
        self.supervisor.unwatch()
        with contextlib.suppress(Exception):
            self.postfix.stop()
        self.supervisor.close()

    def _load(self) -> Organization:
        try:
            return load(self.config).organization
        except Exception as e:  # any failure to load is the operator's to fix, never a traceback
            raise SandboxError(describe_load_failure(self.config, e)) from None

    def _stop_stale(self) -> None:
        self.postfix.stop()
        self.dovecot.stop_stale()
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        terminate_pid(pid, _pid_is_policyd)
        self.pid_file.unlink(missing_ok=True)
        try:
            pid = int(self.milter_pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        terminate_pid(pid, _pid_is_milter)
        self.milter_pid_file.unlink(missing_ok=True)

    # -- messages ------------------------------------------------------------------------

    def report(self, message: str) -> None:
        with self._messages_lock:
            self.messages.append(message)
        with contextlib.suppress(Exception):  # a closed stderr must not stop the sandbox
            self._report(message)

    def _on_event(self, event: Event) -> None:
        if event.kind in (Kind.RESTARTED, Kind.RECOVERED):
            with contextlib.suppress(OSError):
                self._write_description()  # the new PID, on disk before anyone reads the message
        self.report(event.message)

    def _write_description(self) -> None:
        tmp = self.state_dir / "sandbox.json.tmp"
        tmp.write_text(json.dumps(self.describe(), indent=2) + "\n")
        os.replace(tmp, self.state_dir / "sandbox.json")

    # -- STARTTLS and AUTH ------------------------------------------------------------------

    def _needs_auth(self) -> bool:
        assert self.org is not None
        return any(offers_basic_auth(c) for c in self.org.receive_connectors if c.enabled)

    def _prepare_tls(self) -> None:
        """One throw-away certificate for every listener, whatever files the configuration
        names (they belong to the production host): the server's and connectors' FQDNs and
        the sandbox's address, signed by a CA made once under the state directory."""
        assert self.org is not None
        if not any(offers_starttls(c) for c in self.org.receive_connectors if c.enabled):
            return
        names = dict.fromkeys(
            n for n in (self.org.server.fqdn, *(c.fqdn for c in self.org.receive_connectors), self.host) if n
        )
        self.ca = CertificateAuthority.create(self.tls_dir)
        cert = self.ca.issue("listeners", list(names))
        self.org = replace(
            self.org,
            tls=TlsSettings(str(cert.cert), str(cert.key)),
            receive_connectors=tuple(
                replace(c, tls_certificate_file=None, tls_key_file=None) for c in self.org.receive_connectors
            ),
        )

    def _start_dovecot(self) -> None:
        if not self._needs_auth():
            return
        if not DovecotAuth.available():
            raise SandboxError(
                f"connectors offer AUTH and the sandbox checks passwords with its own Dovecot: install "
                f"{DOVECOT_PACKAGE} (scripts/install.sh does)"
            )
        assert self.org is not None
        self.dovecot.write(u.name for u in self.org.users)
        try:
            self.supervisor.start(self._dovecot)
        except ChildError as e:
            raise SandboxError(str(e)) from None

    # -- delivery ------------------------------------------------------------------------

    def _prepare_delivery(self) -> None:
        delivery.prepare_delivered(self.delivered_dir)
        self._agent = delivery.install_agent(self.state_dir / "bin")
        self._write_selection()

    def _write_selection(self) -> None:
        assert self.org is not None
        delivery.write_connectors(self.org, self.selection_path)

    def _write_postfix(self) -> None:
        assert self.org is not None and self._layout is not None
        main = self.postfix.base_main(self.org.server.fqdn)
        main.update({s.name: s.value for s in main_settings(self.org)})
        # send connectors: Postfix routes as rendered, to the test next hops (docs/send-connectors.md)
        routed = outbound.sandbox_outbound(self.org, self.state_dir)
        self._routed = routed is not None
        main.update(
            {
                "inet_interfaces": self.host,
                **delivery.transport_settings(),
                # the sandbox's own Dovecot, whatever SASL back end the file names for production
                **(
                    {"smtpd_sasl_type": "dovecot", "smtpd_sasl_path": str(self.dovecot.socket)}
                    if self._needs_auth()
                    else {}
                ),
                **(routed.main if routed else {}),
                **NO_NETWORK,  # last: nothing rendered for production may turn a lookup back on
            }
        )
        endpoint = f"inet:{self.host}:{self.policy_port}"
        milter = f"inet:{self.host}:{self.milter_port}" if self.org.milter.enabled else None
        services = [
            master_service(
                replace(p, extra_options=() if routed else delivery.routed_options(p.context)),
                self.org,
                endpoint,
                self._layout,
                milter=milter,
            )
            for p in self._plans
        ]
        python = delivery.agent_python(self.python)
        services.append(delivery.pipe_service(python, self._agent, self.delivered_dir, self.selection_path))
        services += routed.services if routed else ()
        if self.ca is not None or routed:  # STARTTLS and TLS next hops need the TLS manager, once
            services.append(TLSMGR_SERVICE)
        self.postfix.write(main, "", "\n\n".join(services) + "\n")
        for name, text in (routed.files if routed else {}).items():
            (self.postfix.etc / name).write_text(text)

    # -- policy daemon ---------------------------------------------------------------------

    def _policyd_spec(self) -> ChildSpec:
        """``exmilter policyd`` on the sandbox's ports; ready once both ports accept."""
        cmd = (
            self.python,
            "-m",
            "exmilter.cli",
            "policyd",
            "-c",
            str(self.config),
            "--listen",
            f"tcp:{self.policy_port}:interface={self.host}",
            "--metrics",
            f"tcp:{self.metrics_port}:interface={self.host}",
            "--protocol-log-path",
            str(self.protocol_log_dir),
            "--tracking-log-path",
            str(self.tracking_log_dir),
            "--follow-maillog",
            str(self.maillog),
            "--coverage",
            str(self.coverage_path),
            *self.policyd_args,
        )
        env = _child_env()

        def ready(alive: Callable[[], bool]) -> bool:
            return wait_port(self.policy_port, READY_TIMEOUT, self.host, alive) and wait_port(
                self.metrics_port, READY_TIMEOUT, self.host, alive
            )

        return ChildSpec("policy daemon", cmd, self.policyd_log, self.pid_file, ready, POLICYD_DOWN, env)

    def _milter_spec(self) -> ChildSpec:
        """``exmilter milter`` on the sandbox's ports, registering on the policy daemon's coverage socket."""
        cmd = (
            self.python,
            "-m",
            "exmilter.cli",
            "milter",
            "-c",
            str(self.config),
            "--listen",
            f"tcp:{self.milter_port}:interface={self.host}",
            "--metrics",
            f"tcp:{self.milter_metrics_port}:interface={self.host}",
            "--coverage",
            str(self.coverage_path),
            "--tracking-log-path",
            str(self.tracking_log_dir),
            "--protocol-log-path",
            str(self.protocol_log_dir),
            *self.milter_args,
        )
        env = _child_env()

        def ready(alive: Callable[[], bool]) -> bool:
            return wait_port(self.milter_port, READY_TIMEOUT, self.host, alive)

        return ChildSpec("milter", cmd, self.milter_log, self.milter_pid_file, ready, MILTER_DOWN, env)

    def start_milter(self) -> None:
        """Start ``exmilter milter`` and wait until it accepts (Postfix tempfails meanwhile)."""
        self._milter.spec = self._milter_spec()
        try:
            self.supervisor.start(self._milter)
        except ChildError as e:
            raise SandboxError(str(e)) from None

    @property
    def milter_pid(self) -> int | None:
        return self._milter.pid

    def kill_milter(self) -> None:
        """SIGKILL, as a crash would: Postfix tempfails until the supervisor restarts it."""
        pid = self._milter.pid
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            self._milter.wait_exit()

    def start_policyd(self) -> None:
        """Start ``exmilter policyd`` on the sandbox's ports and wait until it accepts.

        Like ``systemctl start``: a daemon that was given up on gets a fresh start budget.
        """
        self._policyd.spec = self._policyd_spec()  # the ports are chosen by start()
        try:
            self.supervisor.start(self._policyd)
        except ChildError as e:
            raise SandboxError(str(e)) from None

    def stop_policyd(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop the daemon on purpose (like ``systemctl stop``): it stays down until started."""
        self.supervisor.stop(self._policyd, sig, timeout)

    def kill_policyd(self) -> None:
        """SIGKILL, as a crash would: Postfix fails closed until the supervisor restarts it."""
        pid = self._policyd.pid
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            self._policyd.wait_exit()

    def wait_policyd(self, timeout: float = READY_TIMEOUT + 10) -> int:
        """Wait until the daemon runs (after a crash: until the supervisor restarted it); its PID."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self._policyd.pid
            if pid is not None and self._policyd.state is State.RUNNING:
                return pid
            time.sleep(0.05)
        raise SandboxError(f"the policy daemon is not running after {timeout:g} s ({self._policyd.state.value})")

    # -- reload ----------------------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the file: refresh the delivery-side connector table, SIGHUP the daemon.

        Returns False when the file does not load, whatever the reason (a ConfigError, or
        anything else the loader raises): the sandbox and the daemon then keep the rules
        they have, and the reason is reported. A daemon that was given up on (degraded) is
        started again when the file loads.
        """
        try:
            org = load(self.config).organization
        except Exception as e:  # never stop the sandbox over a file: report it, keep the old rules
            self.report(
                f"{describe_load_failure(self.config, e)}\n"
                f"{self.config}: not reloaded; the sandbox and the policy daemon keep the rules they have"
            )
            org = None
        if org is not None:
            self.org = org
            try:
                self._write_selection()
            except OSError as e:
                self.report(f"{self.selection_path}: cannot be written ({e}); delivery keeps the old connector table")
            if self._dovecot.state is State.RUNNING:
                try:
                    self.dovecot.write_users(u.name for u in org.users)  # Dovecot re-reads it
                except OSError as e:
                    self.report(f"{self.dovecot.passwd}: cannot be written ({e}); AUTH keeps the old users")
            self._reroute()
        child = self._policyd
        if child.state is State.FAILED:
            if org is None:
                self.report(f"DEGRADED: the policy daemon stays down until {self.config} loads")
            else:
                try:
                    self.supervisor.start(child)
                except ChildError as e:
                    self.report(f"{e}\nDEGRADED: the policy daemon is still down. {POLICYD_DOWN}.")
        elif child.state is State.RUNNING:
            child.send(signal.SIGHUP)  # it re-reads the file and keeps its rules if it cannot
        if self._milter.state is State.RUNNING:
            self._milter.send(signal.SIGHUP)  # likewise; sessions keep the rules they started with
        if org is not None:
            self.report(f"{self.config} reloaded (the policy daemon re-reads it)")
        return org is not None

    def _reroute(self) -> None:
        """After a reload: Postfix's outbound routing follows the send connectors of the file.

        Listeners keep how they hand mail over (to Postfix's routing, or straight to the
        delivery agent), so adding the first send connector or removing the last one needs
        a restart; the operator is told.
        """
        assert self.org is not None
        wanted = bool(self.org.send_connectors or self.org.mailbox_next_hop)
        if wanted != self._routed:
            self.report(f"{self.config}: send connectors added or removed: restart the sandbox to route by them")
            return
        if not wanted:
            return
        try:
            self._write_postfix()
            self.postfix.reload()
        except Exception as e:  # Postfix keeps routing as before; say why, never stop the sandbox
            self.report(f"{self.config}: send connectors not applied ({type(e).__name__}: {e})")
            return
        self.report(f"{self.config}: send connectors applied (postfix reload)")

    # -- reporting -------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "state_dir": str(self.state_dir),
            "config": str(self.config),
            "listeners": [
                {"context": lst.context, "listen": lst.address, "connectors": list(lst.connectors)}
                for lst in self.listeners
            ],
            "policyd": {
                "listen": f"{self.host}:{self.policy_port}",
                "pid": self.policyd_pid,
                "metrics": self.metrics_url,
                "log": str(self.policyd_log),
            },
            "delivered": str(self.delivered_dir),
            "maillog": str(self.maillog),
            "tls": {"ca": str(self.ca_file) if self.ca_file else None},
            "dovecot": {
                "pid": self.dovecot_pid,
                "socket": str(self.dovecot.socket) if self.dovecot_pid else None,
                "users": [u.name for u in self.org.users] if self.org and self.dovecot_pid else [],
                "password": self.dovecot.password if self.dovecot_pid else None,
                "log": str(self.dovecot.log),
            },
        }

    def auth_swaks_line(self, recipient: str = "someone@gmail.com") -> str:
        """An authenticated relay: STARTTLS, then AUTH as the first user, on the first listener
        where that login from 127.0.0.1 may relay; '' when there is none."""
        assert self.org is not None
        if self.dovecot_pid is None or not self.org.users:
            return ""
        user = self.org.users[0]
        engine = Engine(self.org)
        for lst in self.listeners:
            s = engine.open_session(None, _exchange_port(lst.context), self.host, auth_user=user.name, tls=True)
            if s.authenticated and s.has(Right.SMTPSubmit) and s.has(Right.SMTPAcceptAnyRecipient):
                sender = user.addresses[0] if user.addresses else f"{user.name}@example.com"
                return (
                    f"swaks --server {lst.address} --tls --auth LOGIN --auth-user {user.name} "
                    f"--auth-password {self.dovecot.password} --from {sender} --to {recipient}"
                )
        return ""

    def swaks_line(self, recipient: str | None = None) -> str:
        assert self.org is not None
        lst = next((x for x in self.listeners if x.context.endswith(":25")), self.listeners[0])
        domain = next((d.suffix for d in self.org.accepted_domains if d.domain_type.is_internal), "example.com")
        return f"swaks --server {lst.address} --from sender@example.com --to {recipient or 'postmaster@' + domain}"
