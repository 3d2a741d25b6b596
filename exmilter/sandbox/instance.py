"""A private Postfix instance under one directory (postfix-notes §7).

Everything it owns (config, queue, data, logs) lives under ``root``; it is controlled
with ``postfix -c ROOT/etc`` and so never touches ``/etc/postfix`` or a running system
Postfix. postfix(1) is the superuser's command: starting, like ``postfix check``, needs root.
The sandbox runs one; :func:`check_rendered` writes rendered text into one only to have
``postfix check`` judge it.

The instance is for trying configurations and for tests, so it never touches the network:
:data:`NO_NETWORK` turns off every name lookup Postfix would make on its own, and
:data:`BASE_SERVICES` holds no smtp or lmtp client that could resolve a next hop
(docs/sandbox.md, "No network").
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

_SEARCH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
POSTFIX = shutil.which("postfix", path=_SEARCH) or "/usr/sbin/postfix"
POSTCONF = shutil.which("postconf", path=_SEARCH) or "/usr/sbin/postconf"
#: ``myhostname`` of an instance that only checks rendered text.
CHECK_HOSTNAME = "mx.test"

#: The Postfix services an instance needs besides its smtpd listeners, all chroot n.
BASE_SERVICES = """\
pickup    unix  n - n 60  1 pickup
cleanup   unix  n - n -   0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n -   - trivial-rewrite
bounce    unix  - - n -   0 bounce
defer     unix  - - n -   0 bounce
trace     unix  - - n -   0 bounce
verify    unix  - - n -   1 verify
proxymap  unix  - - n -   - proxymap
showq     unix  n - n -   - showq
error     unix  - - n -   - error
retry     unix  - - n -   - error
discard   unix  - - n -   - discard
anvil     unix  - - n -   1 anvil
scache    unix  - - n -   1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


#: main.cf settings that keep the instance off the network (postfix-notes §9). Postfix's
#: defaults look up every client's name (a PTR query, then a forward query to verify it:
#: DNS traffic off the machine and a banner that waits for the resolver) and let the
#: smtp/lmtp clients ask DNS for MX and address records.
NO_NETWORK: dict[str, str] = {
    "smtpd_peername_lookup": "no",  # clients are "unknown[127.0.0.x]": no PTR, no forward check
    "smtp_dns_support_level": "disabled",  # no MX/A lookups, should an smtp client ever run
    "lmtp_dns_support_level": "disabled",  # likewise for lmtp
    "dnssec_probe": "",  # never probe the resolver for DNSSEC
    "relayhost": "",  # no smarthost to resolve: every transport is local (the sandbox's pipe)
    "inet_protocols": "ipv4",  # the instance listens on 127.0.0.1 only; no AAAA anywhere
    "append_dot_mydomain": "no",  # a rewrite, not a lookup: bare host names are not qualified with $mydomain
}


class PostfixError(RuntimeError):
    """A postfix command failed; the message carries its output and the maillog's tail."""


class PostfixInstance:
    """Directories, configuration files and the ``postfix -c`` life cycle of one instance."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self.etc = self.root / "etc"
        self.spool = self.root / "spool"
        self.data = self.root / "data"
        self.log_dir = self.root / "log"
        self.maillog = self.log_dir / "maillog"

    def base_main(self, myhostname: str) -> dict[str, str]:
        """Settings that keep the instance private and offline (literal paths: no $ expansion surprises)."""
        return {
            "compatibility_level": "3.6",
            "queue_directory": str(self.spool),
            "data_directory": str(self.data),
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.log_dir),
            "inet_interfaces": "127.0.0.1",
            "myhostname": myhostname,  # given, so Postfix never derives it from the host
            "mydestination": "",
            "mynetworks": "127.0.0.1/32",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
            **NO_NETWORK,
        }

    def prepare(self) -> None:
        """Create the directories with the ownership Postfix insists on."""
        for d in (self.etc, self.spool, self.data, self.log_dir):
            d.mkdir(parents=True, exist_ok=True)
        pw = pwd.getpwnam("postfix")
        os.chown(self.data, pw.pw_uid, pw.pw_gid)

    def write(self, main: dict[str, str], main_extra: str, services: str) -> None:
        """Write main.cf (settings, then extra text) and master.cf (base services + ours)."""
        self.prepare()
        text = "".join(f"{k} = {v}\n".replace(" \n", "\n") for k, v in main.items())
        _atomic_write(self.etc / "main.cf", text + "\n" + main_extra)
        _atomic_write(self.etc / "master.cf", BASE_SERVICES + "\n" + services)

    def _postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [POSTFIX, "-c", str(self.etc), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and proc.returncode != 0:
            raise PostfixError(
                f"postfix -c {self.etc} {' '.join(args)} failed ({proc.returncode}):\n"
                f"{proc.stdout}{proc.stderr}\n--- maillog tail ---\n{self.maillog_tail()}"
            )
        return proc

    def running(self) -> bool:
        # No master.pid: no master ever ran on this queue. Asking ``postfix status`` then
        # costs a second or more (a fatal error on a missing queue directory sleeps 1 s
        # before exiting), twice per sandbox start.
        if not (self.spool / "pid" / "master.pid").exists():
            return False
        return self._postfix("status", check=False).returncode == 0

    def check(self) -> list[str]:
        """``postfix check``: what it printed, each line once (nothing when all is well, else its
        warnings, which postconf repeats per service); raises :class:`PostfixError` when it fails."""
        proc = self._postfix("check")
        return list(dict.fromkeys(line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()))

    def postconf(self, *args: str) -> str:
        """``postconf -c ETC ARGS``'s output (``-P``: the services' -o settings, ``-F``: their
        fields, ``-h NAME``: one value); raises :class:`PostfixError` when it fails."""
        proc = subprocess.run(
            [POSTCONF, "-c", str(self.etc), *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
        )
        if proc.returncode != 0:
            raise PostfixError(f"postconf -c {self.etc} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc.stdout

    def start(self) -> None:
        """Start, first stopping a stale instance left on this directory."""
        if self.running():
            self.stop()
        self._postfix("start")

    def reload(self) -> None:
        """``postfix reload``: the running instance re-reads main.cf, master.cf and its tables."""
        self._postfix("reload")

    def stop(self, timeout: float = 20.0) -> None:
        """``postfix stop`` and wait until the master has gone (its pid file is released)."""
        if not self.running():
            return
        self._postfix("stop", check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.running():
            time.sleep(0.1)
        if self.running():
            self._postfix("abort", check=False)

    def maillog_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.maillog.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no maillog)"

    def maillog_text(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except OSError:
            return ""


def check_rendered(
    root: Path | str, main_cf: str, master_cf: str, files: dict[str, str] | None = None
) -> tuple[PostfixInstance, list[str]]:
    """Have ``postfix check`` judge rendered text: a private instance under ``root`` whose
    main.cf is the offline base settings followed by ``main_cf`` (a later line wins, as when
    appended to a real main.cf) and whose master.cf is :data:`BASE_SERVICES` followed by
    ``master_cf``. Returns the instance (for :meth:`PostfixInstance.postconf`) and what
    ``postfix check`` printed (an empty list when it has nothing to say); raises
    :class:`PostfixError` when it fails. Needs root; starts nothing. ``files`` are tables
    written beside main.cf (name -> text), as ``render-postfix -o`` writes them.
    """
    instance = PostfixInstance(root)
    instance.write(instance.base_main(CHECK_HOSTNAME), main_cf, master_cf)
    for name, text in (files or {}).items():
        _atomic_write(instance.etc / name, text)
    return instance, instance.check()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
