"""Policy load generator: C persistent connections, one outstanding RCPT request each.

    .venv/bin/python bench/policyload.py --port PORT [-c 20] [-d 3] [-n COUNT] [--warmup 0.5]

Like Postfix's smtpd processes, every connection sends one request, waits for the
answer, and sends the next on the same connection. The requests carry what Postfix
3.7 sends at RCPT (postfix-notes §1.2) in its order; ``client_address`` and
``recipient`` cycle so that relay-allowed (OK) and relay-denied (550 5.7.54) answers
both occur, and ``instance`` is unique per request (a re-sent request would be answered
from exmilter's idempotency cache, which would flatter it).

One thread, one ``epoll`` object, non-blocking sockets, requests pre-rendered except the
instance counter: the generator's own cost is about 10 µs per request, which the ceiling
server (bench/ceiling.py) makes visible.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

# Client populations: (client_address, client_name, recipient) triples.
_RELAY_CLIENTS = ["10.83.4.56"] + [f"10.83.4.{i}" for i in range(60, 70)] + [f"10.83.5.{i}" for i in range(1, 40)]
_OUTSIDE_CLIENTS = [f"203.0.113.{i}" for i in range(1, 120)] + [f"198.51.100.{i}" for i in range(1, 120)]
_EXTERNAL_RCPTS = ["someone@gmail.com", "ceo@partner.example.com", "list@lists.example.org"]
_INTERNAL_RCPTS = ["alice@labs.local", "bob@exchangelabs.nl", "helpdesk@it.branch.exchangelabs.nl"]


def request_templates(
    server_address: str = "10.83.4.10", server_port: int = 25, context: str = "*:25"
) -> list[tuple[bytes, bytes, str]]:
    """(before instance, after instance, expected class) for one cycle of requests.

    Expected classes: ``OK`` (relay client, or internal recipient) and ``550`` (outside
    client, external recipient), roughly one third denied.
    """
    out = []
    n_relay, n_out = len(_RELAY_CLIENTS), len(_OUTSIDE_CLIENTS)
    for i in range(600):
        kind = i % 3
        if kind == 0:  # relay host sending anywhere -> OK
            client = _RELAY_CLIENTS[i % n_relay]
            rcpt = _EXTERNAL_RCPTS[i % len(_EXTERNAL_RCPTS)]
            expect = "OK"
        elif kind == 1:  # anyone sending to an accepted domain -> OK
            client = _OUTSIDE_CLIENTS[i % n_out]
            rcpt = _INTERNAL_RCPTS[i % len(_INTERNAL_RCPTS)]
            expect = "OK"
        else:  # outside host relaying -> 550 5.7.54
            client = _OUTSIDE_CLIENTS[(i * 7) % n_out]
            rcpt = _EXTERNAL_RCPTS[i % len(_EXTERNAL_RCPTS)]
            expect = "550"
        name = "unknown" if i % 5 == 0 else f"host{i}.example.net"
        before = (
            "request=smtpd_access_policy\n"
            "protocol_state=RCPT\n"
            "protocol_name=ESMTP\n"
            f"helo_name=mail{i % 50}.example.net\n"
            f"queue_id={'' if i % 2 else f'4Q{i:08X}'}\n"
            f"sender=sender{i % 97}@example.net\n"
            f"recipient={rcpt}\n"
            "recipient_count=0\n"
            f"client_address={client}\n"
            f"client_name={name}\n"
            f"client_port={40000 + i}\n"
            f"reverse_client_name={name}\n"
            f"server_address={server_address}\n"
            f"server_port={server_port}\n"
            "instance="
        ).encode()
        after = (
            "\n"
            "sasl_method=\n"
            "sasl_username=\n"
            "sasl_sender=\n"
            f"size={1024 + i}\n"
            "ccert_subject=\n"
            "ccert_issuer=\n"
            "ccert_fingerprint=\n"
            "ccert_pubkey_fingerprint=\n"
            "encryption_protocol=\n"
            "encryption_cipher=\n"
            "encryption_keysize=0\n"
            "etrn_domain=\n"
            "stress=\n"
            f"policy_context={context}\n"
            "\n"
        ).encode()
        out.append((before, after, expect))
    return out


@dataclass
class Result:
    connections: int
    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    actions: dict = field(default_factory=dict)
    mismatches: int = 0
    errors: int = 0
    server_cpu_us: float | None = None  # server CPU time (user+sys) per answered request
    note: str = ""

    def line(self) -> str:
        acts = ", ".join(f"{k}:{v}" for k, v in sorted(self.actions.items()))
        cpu = f"  cpu {self.server_cpu_us:5.1f} µs/req" if self.server_cpu_us is not None else ""
        return (
            f"C={self.connections:<3} {self.rps:9.0f} req/s  p50 {self.p50_ms:6.3f} ms"
            f"  p99 {self.p99_ms:6.3f} ms{cpu}"
            f"  n={self.requests} [{acts}] mismatches={self.mismatches} errors={self.errors} {self.note}"
        )


def _pct(sorted_ns: list[int], q: float) -> float:
    if not sorted_ns:
        return 0.0
    i = min(len(sorted_ns) - 1, max(0, round(q * (len(sorted_ns) - 1))))
    return sorted_ns[i] / 1e6


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of ``pid`` so far (children it waited for excluded)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(
    port: int,
    connections: int,
    duration: float = 3.0,
    warmup: float = 0.5,
    count: int = 0,
    host: str = "127.0.0.1",
    check: bool = True,
    pid: int | None = None,
) -> Result:
    """Load ``host:port`` for ``warmup + duration`` seconds (or until ``count`` requests).

    With ``pid`` (the server's process), also report its CPU time per answered request.
    """
    templates = request_templates()
    ntpl = len(templates)
    pre = [t[0] for t in templates]
    post = [t[1] for t in templates]
    expect = [t[2] for t in templates]
    ep = select.epoll()
    socks: dict[int, socket.socket] = {}
    sent_at: dict[int, int] = {}
    which: dict[int, int] = {}
    bufs: dict[int, bytes] = {}
    # instance: unique per request across runs, like Postfix's pid.sec.usec.counter
    seq = int.from_bytes(os.urandom(6), "big") << 24
    perf = time.perf_counter_ns
    res = Result(connections)
    for _ in range(connections):
        s = socket.create_connection((host, port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        fd = s.fileno()
        socks[fd] = s
        bufs[fd] = b""
        ep.register(fd, select.EPOLLIN)
    lat: list[int] = []
    actions: Counter = Counter()
    mismatches = 0
    errors = 0
    t_start = perf()
    t_measure = t_start + int(warmup * 1e9)
    t_end = t_measure + int(duration * 1e9)
    measuring = warmup <= 0
    cpu0 = cpu_seconds(pid)
    for fd, s in socks.items():
        k = seq % ntpl
        which[fd] = k
        sent_at[fd] = perf()
        s.send(pre[k] + b"%x" % seq + post[k])
        seq += 1
    open_conns = len(socks)
    stopping = False
    done = 0
    poll = ep.poll
    while open_conns:
        events = poll(1.0)
        if not events:
            now = perf()
            if now > t_end + 5_000_000_000:
                res.note = f"timed out waiting for {open_conns} answers"
                break
            continue
        now = perf()
        if not measuring and now >= t_measure:
            measuring = True
            lat.clear()
            actions.clear()
            mismatches = errors = done = 0
            t_measure = now
            cpu0 = cpu_seconds(pid)
        if not stopping and (now >= t_end or (count and done >= count)):
            stopping = True
            t_stop = now
            cpu1 = cpu_seconds(pid)
        for fd, _ev in events:
            s = socks[fd]
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                errors += 1
                ep.unregister(fd)
                open_conns -= 1
                continue
            buf = bufs[fd]
            if buf:
                data = buf + data
            if not data.endswith(b"\n\n"):
                bufs[fd] = data
                continue
            bufs[fd] = b""
            lat.append(now - sent_at[fd])
            done += 1
            if check:
                a = data[7:10]
                act = "OK" if a == b"OK\n" else a.decode("ascii", "replace")
                if act == "DUN":
                    act = "DUNNO"
                actions[act] += 1
                if not data.startswith(b"action="):
                    errors += 1
                elif act in ("OK", "550") and act != expect[which[fd]]:
                    mismatches += 1
            if stopping:
                ep.unregister(fd)
                open_conns -= 1
                continue
            k = seq % ntpl
            which[fd] = k
            sent_at[fd] = perf()
            s.send(pre[k] + b"%x" % seq + post[k])
            seq += 1
    if not stopping:
        t_stop = perf()
        cpu1 = cpu_seconds(pid)
    if cpu0 is not None and cpu1 is not None and done:
        res.server_cpu_us = (cpu1 - cpu0) / done * 1e6
    ep.close()
    for s in socks.values():
        s.close()
    elapsed = (t_stop - t_measure) / 1e9
    lat.sort()
    res.requests = done
    res.seconds = elapsed
    res.rps = done / elapsed if elapsed > 0 else 0.0
    res.p50_ms = _pct(lat, 0.50)
    res.p99_ms = _pct(lat, 0.99)
    res.max_ms = lat[-1] / 1e6 if lat else 0.0
    res.actions = dict(actions)
    res.mismatches = mismatches
    res.errors = errors
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("-c", "--connections", type=int, action="append")
    ap.add_argument("-d", "--duration", type=float, default=3.0)
    ap.add_argument("-n", "--count", type=int, default=0, help="stop after this many measured requests")
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--pid", type=int, help="the server's PID, to report its CPU time per request")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    for c in args.connections or [1, 20, 100]:
        r = run(args.port, c, args.duration, args.warmup, args.count, args.host, pid=args.pid)
        print(json.dumps(asdict(r)) if args.json else r.line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
