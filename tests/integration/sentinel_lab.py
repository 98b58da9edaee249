"""A Redis Sentinel set on loopback for tests: one primary, one replica and three sentinels
(quorum 2), every one a real `redis-server` (a sentinel is `redis-server CONF --sentinel`) on a
free 127.0.0.1 port, with its files in a temporary directory. The servers ask for a password
(kept in their config files, never on a command line); the sentinels do not."""

from __future__ import annotations

import secrets
import signal
import subprocess
from pathlib import Path
from typing import Any

import redis

from tests.support import free_port, wait_for

MASTER_NAME = "steering"
QUORUM = 2
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


class SentinelLab:
    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.password = secrets.token_urlsafe(16)
        self.primary_port = free_port()
        self.replica_port = free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"sentinel://:{self.password}@{hosts}/{MASTER_NAME}/{db}"

    def _start(self, name: str, lines: list[str], *extra: str) -> None:
        home = self.workdir / name
        home.mkdir(parents=True)
        conf = home / "redis.conf"  # a sentinel rewrites its own config file: a file of its own
        conf.write_text("\n".join([*lines, f"dir {home}", f"logfile {home / 'redis.log'}", ""]))
        conf.chmod(0o600)
        self.procs[name] = subprocess.Popen([self.binary, str(conf), *extra], cwd=home,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def _server_lines(self, port: int) -> list[str]:
        return [f"port {port}", "bind 127.0.0.1", f"requirepass {self.password}", f"masterauth {self.password}",
                'save ""', "appendonly no"]

    def server(self, port: int, db: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, db=db, password=self.password, socket_timeout=2,
                           socket_connect_timeout=2, retry=None)

    def sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2, retry=None,
                           decode_responses=True)

    def start(self, timeout: float = 60.0) -> SentinelLab:
        self._start("primary", self._server_lines(self.primary_port))
        self._start("replica", [*self._server_lines(self.replica_port), f"replicaof 127.0.0.1 {self.primary_port}"])
        for i, port in enumerate(self.sentinel_ports):
            self._start(f"sentinel{i}", [
                f"port {port}", "bind 127.0.0.1",
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.primary_port} {QUORUM}",
                f"sentinel auth-pass {MASTER_NAME} {self.password}",
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
                f"sentinel parallel-syncs {MASTER_NAME} 1",
            ], "--sentinel")
        wait_for(lambda: self._replicating(self.replica_port), "the replica to sync with the primary", timeout,
                 interval=0.1)
        # Each sentinel must know the replica and its two peers, or a failover cannot be voted.
        wait_for(lambda: all(self._sentinel_ready(port) for port in self.sentinel_ports),
                 "the sentinels to find the replica and each other", timeout, interval=0.2)
        return self

    def _call(self, client: redis.Redis, *command: Any) -> Any:
        try:
            return client.execute_command(*command)
        except redis.RedisError:
            return None
        finally:
            client.close()

    def _replicating(self, port: int) -> bool:
        info = self._call(self.server(port), "INFO", "replication")
        return bool(info) and info.get("master_link_status") == "up"

    def _sentinel_ready(self, port: int) -> bool:
        state = self._call(self.sentinel(port), "SENTINEL", "MASTER", MASTER_NAME)
        if not state:
            return False
        fields = dict(zip(state[::2], state[1::2], strict=True)) if isinstance(state, list) else state
        return int(fields.get("num-slaves", 0)) >= 1 and int(fields.get("num-other-sentinels", 0)) >= 2

    def master_ports(self) -> set[int]:
        """The master's port according to each sentinel that answers."""
        ports = set()
        for port in self.sentinel_ports:
            address = self._call(self.sentinel(port), "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
            if address:
                ports.add(int(address[1]))
        return ports

    def kill_primary(self) -> None:
        """SIGKILL the primary: no shutdown, no last write, as a lost host."""
        proc = self.procs["primary"]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def logs(self) -> str:
        out = []
        for name in self.procs:
            log = self.workdir / name / "redis.log"
            if log.exists():
                out.append(f"--- {name}\n" + log.read_text(errors="replace")[-1500:])
        return "\n".join(out)
