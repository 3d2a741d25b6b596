"""A do-nothing policy server answering ``action=DUNNO`` to every request: the ceiling.

    .venv/bin/python bench/ceiling.py --port PORT [--impl epoll|asyncio]

It frames requests exactly (one answer per empty line, pipelining and split reads
handled) and does nothing else, so what the load generator measures against it is the
cost of the loopback round trip, the generator and one minimal Python server.
Two implementations; bench/run.py measures both and uses the faster as the ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import signal
import socket
import sys

DUNNO = b"action=DUNNO\n\n"


def count_requests(buf: bytes) -> tuple[int, bytes]:
    """Complete requests in ``buf`` (a request ends with an empty line) and the rest."""
    n = buf.count(b"\n\n")
    if n == 0:
        return 0, buf
    end = buf.rfind(b"\n\n") + 2
    return n, buf[end:]


def serve_epoll(port: int) -> None:
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(1024)
    ls.setblocking(False)
    ep = select.epoll()
    lfd = ls.fileno()
    ep.register(lfd, select.EPOLLIN)
    conns: dict[int, socket.socket] = {}
    rest: dict[int, bytes] = {}
    poll = ep.poll
    while True:
        for fd, _ev in poll():
            if fd == lfd:
                while True:
                    try:
                        c, _ = ls.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conns[c.fileno()] = c
                    rest[c.fileno()] = b""
                    ep.register(c.fileno(), select.EPOLLIN)
                continue
            c = conns[fd]
            try:
                data = c.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                ep.unregister(fd)
                del conns[fd], rest[fd]
                c.close()
                continue
            r = rest[fd]
            if r:
                data = r + data
            if data.endswith(b"\n\n") and data.count(b"\n\n") == 1:  # the common case
                rest[fd] = b""
                c.send(DUNNO)
                continue
            n, rest[fd] = count_requests(data)
            if n:
                c.sendall(DUNNO * n)


class _Proto(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport
        self.rest = b""
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.rest:
            data = self.rest + data
        n, self.rest = count_requests(data)
        if n:
            self.t.write(DUNNO * n)  # type: ignore[attr-defined]


def serve_asyncio(port: int) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Proto, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--impl", choices=("epoll", "asyncio"), default="epoll")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    (serve_epoll if args.impl == "epoll" else serve_asyncio)(args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
