"""A dead resolver that counts: proves the sandbox's processes make no DNS query.

The sandbox under test runs in a mount namespace of its own (``unshare --mount``) in
which ``/etc/resolv.conf`` names :data:`TRAP_ADDRESS` as the only nameserver and
``/etc/nsswitch.conf`` sends host lookups to files, then DNS. Every DNS query any of its
processes makes (Postfix's daemons run chroot n, so they read the same files; the
policy daemon and the delivery agent are its children) then reaches :class:`DnsTrap`,
which records it and never answers, as a dead resolver would. The system's files, its
resolver and every other process are untouched: the bind mounts exist only in the
namespace and vanish with its last process. Nothing is preloaded or patched.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

#: A loopback address no resolver uses (systemd-resolved takes 127.0.0.53/54, dnsmasq
#: often 127.0.0.1): all of 127/8 is local on Linux.
TRAP_ADDRESS = "127.83.53.1"
DNS_PORT = 53
#: What the namespace's resolv.conf says: a query waits TIMEOUT seconds for no answer,
#: so a lookup shows as a delay, too.
RESOLVER_TIMEOUT = 2
NSSWITCH = "/etc/nsswitch.conf"


@dataclass(frozen=True)
class Query:
    transport: str  # "udp" or "tcp"
    name: str  # the question's name ("56.0.0.127.in-addr.arpa"), "" if unparsable
    qtype: int  # 12 = PTR, 1 = A, 28 = AAAA, 15 = MX


def parse_question(packet: bytes) -> tuple[str, int]:
    """The first question of a DNS message (RFC 1035 §4.1.2); ("", 0) if it is malformed."""
    labels = []
    i = 12
    try:
        while packet[i]:
            n = packet[i]
            labels.append(packet[i + 1 : i + 1 + n].decode("ascii", "replace"))
            i += 1 + n
        qtype = int.from_bytes(packet[i + 1 : i + 3], "big")
    except IndexError:
        return "", 0
    return ".".join(labels), qtype


class DnsTrap:
    """Listens on TRAP_ADDRESS:53 (UDP and TCP), records every query, answers none."""

    def __init__(self, address: str = TRAP_ADDRESS) -> None:
        self.address = address
        self._queries: list[Query] = []
        self._lock = threading.Lock()
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._udp.bind((address, DNS_PORT))
            self._tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._tcp.bind((address, DNS_PORT))
            self._tcp.listen(16)
        except OSError as e:
            self.close()
            raise RuntimeError(
                f"cannot listen on {address}:{DNS_PORT} ({e}): is a DNS server bound to all addresses? "
                "The no-DNS proof needs this port on one loopback address"
            ) from e
        self._threads = [
            threading.Thread(target=self._serve_udp, daemon=True),
            threading.Thread(target=self._serve_tcp, daemon=True),
        ]
        for t in self._threads:
            t.start()

    @property
    def queries(self) -> list[Query]:
        with self._lock:
            return list(self._queries)

    def _record(self, transport: str, packet: bytes) -> None:
        name, qtype = parse_question(packet)
        with self._lock:
            self._queries.append(Query(transport, name, qtype))

    def _serve_udp(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                packet, _ = self._udp.recvfrom(65535)
                self._record("udp", packet)

    def _serve_tcp(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self._tcp.accept()
                with conn:
                    conn.settimeout(1)
                    data = b""
                    with contextlib.suppress(OSError):
                        data = conn.recv(65535)
                    self._record("tcp", data[2:])  # a two-byte length prefix on TCP

    def write_files(self, directory: Path) -> tuple[Path, Path]:
        """resolv.conf and nsswitch.conf for the namespace, in ``directory``."""
        resolv = directory / "resolv.conf"
        resolv.write_text(f"nameserver {self.address}\noptions timeout:{RESOLVER_TIMEOUT} attempts:1\n")
        nsswitch = directory / "nsswitch.conf"
        # The machine's own, with hosts from files then DNS only: a lookup cannot slip past
        # the trap through nss-resolve (systemd-resolved) or mDNS.
        try:
            lines = Path(NSSWITCH).read_text().splitlines()
        except OSError:
            lines = []
        lines = [x for x in lines if not x.strip().startswith("hosts:")] + ["hosts: files dns"]
        nsswitch.write_text("\n".join(lines) + "\n")
        return resolv, nsswitch

    def close(self) -> None:
        for s in (self._udp, self._tcp):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def __enter__(self) -> DnsTrap:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def in_namespace(resolv: Path, nsswitch: Path, command: list[str]) -> list[str]:
    """``command`` run in a private mount namespace where the two files replace the system's.

    ``unshare`` and ``mount`` are util-linux (essential on Debian); root may create mount
    namespaces. Propagation is private, so the bind mounts never reach the host.
    """
    script = 'mount --bind "$1" /etc/resolv.conf && mount --bind "$2" /etc/nsswitch.conf && shift 2 && exec "$@"'
    return [
        "unshare", "--mount", "--propagation", "private", "--",
        "sh", "-c", script, "sh", str(resolv), str(nsswitch), *command,
    ]  # fmt: skip
