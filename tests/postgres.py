"""A PostgreSQL cluster of a test's own, which the test can stop and start without touching the
machine's: the fault suite (tests/chaos) and the fail-static test (tests/integration) run their
control plane on one."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.support import missing


def postgres_bindir() -> Path | None:
    """Debian's /usr/lib/postgresql/<version>/bin (the newest), else initdb and pg_ctl on PATH."""
    def version(path: str) -> int:
        name = Path(path).parent.name
        return int(name) if name.isdigit() else 0

    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists():
            return Path(d)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    return Path(initdb).resolve().parent if initdb and pg_ctl else None


class PrivatePostgres:
    """A PostgreSQL cluster owned by the test: 127.0.0.1 on a free port, trust authentication
    (loopback only, for this test's processes), its socket and files in a temp dir. Run as root
    (CI), the server runs as the `postgres` user: initdb refuses root."""

    def __init__(self) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            missing("PostgreSQL's initdb and pg_ctl are not installed (Debian package postgresql)")
        self.bindir: Path = bindir  # type: ignore[assignment]
        self.user: str | None = None
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        # Not under pytest's tmp dir: that is 0700 root's when run as root, and the server runs as postgres.
        self.dir = Path(tempfile.mkdtemp(prefix="steering-pg-"))
        if os.geteuid() == 0:
            import pwd

            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(self.dir, ignore_errors=True)
                missing("run as root, PostgreSQL needs an unprivileged user: no `postgres` user (Debian package "
                        "postgresql creates it)")
            self.user = "postgres"
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.data = self.dir / "data"
        self.log_path = self.dir / "postgres.log"

    def _tool(self, tool: str, *args: str, timeout: float = 90) -> None:
        done = subprocess.run([str(self.bindir / tool), *args], cwd=self.dir, user=self.user, capture_output=True,
                              text=True, timeout=timeout)
        if done.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
                                 f"\n{self.log()[-3000:]}")

    def init(self) -> PrivatePostgres:
        self._tool("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        return self

    def start(self) -> None:
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.dir} "
                   "-c fsync=off -c max_connections=200")
        self._tool("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-w", "-t", "60", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._tool("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def url(self, database: str = "steering") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "steering") -> Any:
        import psycopg

        return psycopg.connect(self.url(database), autocommit=True, connect_timeout=3)

    def accepting(self) -> bool:
        try:
            with self.connect() as conn:
                conn.execute("SELECT 1")
            return True
        except Exception:
            return False

    def create_database(self, name: str = "steering") -> None:
        with self.connect("postgres") as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def cleanup(self) -> None:
        if (self.data / "postmaster.pid").exists():
            try:
                self._tool("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")
            except Exception as exc:  # teardown goes on
                print(f"teardown: {exc}", file=sys.stderr)
        shutil.rmtree(self.dir, ignore_errors=True)
