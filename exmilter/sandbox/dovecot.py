"""The sandbox's own Dovecot auth service: Postfix's SASL back end for AUTH (issue #13).

Never the system Dovecot: its own configuration, ``base_dir``, state, log and PID under
``STATE/dovecot``, no mail protocol at all (``protocols =``), and one client socket that
only the ``postfix`` user may use. Its password database is a passwd-file generated from
the configuration's ``users:`` with one test password each (:data:`SANDBOX_PASSWORD`
unless given), so an AUTH in the sandbox behaves as in production: Dovecot says whether
the password is right, Postfix tells exmilter who logged in. The sandbox supervises it
like the policy daemon (started in the foreground, stopped by its PID).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from exmilter.sandbox.supervisor import READY_TIMEOUT, ChildSpec, terminate_pid

DOVECOT = shutil.which("dovecot", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") or "/usr/sbin/dovecot"
#: Every configured user's password in the sandbox (docs/sandbox.md, docs/authentication.md).
SANDBOX_PASSWORD = "sandbox-password"
#: What clients see while Dovecot is down (for the supervisor's messages).
DOVECOT_DOWN = (
    "Postfix drops every connection at the EHLO that would offer AUTH (smtpd: 'fatal: no SASL "
    "authentication mechanisms'): clients of those listeners retry later, nothing is accepted or lost"
)
#: The user Dovecot's auth process runs as (Debian's default_internal_user).
AUTH_USER = "dovecot"
#: The Debian package that provides :data:`DOVECOT` (scripts/install.sh installs it).
PACKAGE = "dovecot-core"


class DovecotAuth:
    """Files and child process of one private Dovecot auth service under ``directory``."""

    def __init__(self, directory: Path | str, password: str = SANDBOX_PASSWORD) -> None:
        self.directory = Path(directory).resolve()
        self.password = password
        self.config = self.directory / "dovecot.conf"
        self.passwd = self.directory / "passwd"
        self.socket = self.directory / "sock" / "auth-client"
        self.log = self.directory / "dovecot.log"
        self.pid_file = self.directory / "dovecot.pid"

    @staticmethod
    def available() -> bool:
        return os.access(DOVECOT, os.X_OK)

    def write(self, logins: Iterable[str]) -> None:
        """The configuration and the password file (rewritten on reload: Dovecot re-reads a
        passwd-file whose modification time changed)."""
        for d in (self.directory, self.directory / "run", self.directory / "state", self.socket.parent):
            d.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o755)
        self.write_users(logins)
        d = self.directory
        self.config.write_text(
            "# exmilter sandbox: a private Dovecot that only checks passwords for Postfix's AUTH.\n"
            f"base_dir = {d / 'run'}\n"
            f"state_dir = {d / 'state'}\n"
            "instance_name = exmilter-sandbox\n"
            "protocols =\n"
            "listen = 127.0.0.1\n"  # nothing listens on it: no protocol has a service
            "ssl = no\n"
            f"log_path = {self.log}\n"
            "auth_mechanisms = plain login\n"
            "disable_plaintext_auth = no\n"  # Postfix decides when AUTH is offered (TLS or not)
            "auth_username_format = %u\n"
            "passdb {\n  driver = passwd-file\n"
            f"  args = {self.passwd}\n}}\n"
            "userdb {\n  driver = static\n  args = uid=nobody gid=nogroup home=/nonexistent\n}\n"
            # Failed logins answer at once: the sandbox's tests try wrong passwords on purpose,
            # and exmilter documents AuthTarpitInterval as not emulated (docs/authentication.md).
            "auth_failure_delay = 0\n"
            "service anvil {\n  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n}\n"
            "service auth {\n"
            f"  unix_listener {self.socket} {{\n    mode = 0660\n    user = postfix\n    group = postfix\n  }}\n"
            "}\n"
        )

    def write_users(self, logins: Iterable[str]) -> None:
        """One ``login:{PLAIN}password`` line per user, readable by Dovecot's auth process
        (it runs as the ``dovecot`` user) and nobody else."""
        lines = [f"{_login(login)}:{{PLAIN}}{self.password}::::::\n" for login in logins]
        tmp = self.passwd.with_name("passwd.tmp")
        tmp.write_text("".join(lines))
        tmp.chmod(0o640)
        try:
            pw = pwd.getpwnam(AUTH_USER)
        except KeyError:  # no such user: Dovecot's package was not installed the Debian way
            tmp.chmod(0o644)
        else:
            os.chown(tmp, 0, pw.pw_gid)
        os.replace(tmp, self.passwd)

    def spec(self) -> ChildSpec:
        """Dovecot in the foreground (``-F``); ready once its client socket exists."""
        sock = self.socket

        def ready(alive: Callable[[], bool]) -> bool:
            deadline = time.monotonic() + READY_TIMEOUT
            while time.monotonic() < deadline and alive():
                if _accepts(sock):  # a stale socket file of a killed Dovecot does not count
                    return True
                time.sleep(0.05)
            return False

        return ChildSpec(
            "dovecot auth", (DOVECOT, "-F", "-c", str(self.config)), self.log, self.pid_file, ready, DOVECOT_DOWN
        )

    def stop_stale(self) -> None:
        """Stop a Dovecot a previous run left on this directory (only if its command line is ours)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        config = str(self.config).encode()

        def ours(p: int) -> bool:
            try:
                cmd = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
            except OSError:
                return False
            return any(part.endswith(b"dovecot") for part in cmd[:1]) and config in cmd

        terminate_pid(pid, ours)
        self.pid_file.unlink(missing_ok=True)
        self.socket.unlink(missing_ok=True)


def _accepts(path: Path) -> bool:
    """Does a Unix socket at ``path`` accept connections (root may connect whatever its mode)?"""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def _login(login: str) -> str:
    """A passwd-file user field: no ``:`` or line break can get in (the loader allows any text)."""
    return "".join(ch for ch in login if ch not in ":\r\n")
