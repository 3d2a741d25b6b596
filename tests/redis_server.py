"""A private redis-server on a free loopback port for the tests: own directory, no persistence, stopped by PID."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from exmilter.sandbox.ports import HOST, free_port, wait_port

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT = 30.0


class RedisServer:
    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.dir = directory
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--daemonize", "no", "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        if not wait_port(self.port, START_TIMEOUT, alive=lambda: self.proc is not None and self.proc.poll() is None):
            self.stop()
            raise RuntimeError(f"redis-server did not start on {HOST}:{self.port}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None
