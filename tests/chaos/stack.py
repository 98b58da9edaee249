"""The chaos suite's stack, every piece real and on 127.0.0.1, in temp dirs the test removes:

- `PrivatePostgres`: a cluster of its own (initdb + pg_ctl, trust auth, a free port), so the test
  can stop and start it without touching the machine's PostgreSQL;
- `Server`: a small HTTP backend answering its name, which can hold a request open (a session
  HAProxy counts, so a drain runs to its deadline instead of ending early on 0 sessions), and can
  stop and start again on its port (ground truth for health transitions);
- `Agent`, `HAProxy`: the agents (`python -m steering.agents ...`, no database or Redis in their
  environment) and HAProxy itself, each in its own process group;
- `Api`, `Traffic`: HTTP clients that record every answer with its time.

The stack's web process, workers and beat are tests.processes' WebProcess and CeleryProcess with
the private database and Redis in their environment.
"""

from __future__ import annotations

import glob
import http.server
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.processes import ROOT, stop_process_group
from tests.support import missing

# --- PostgreSQL ----------------------------------------------------------------------------------


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
        self.dir = Path(tempfile.mkdtemp(prefix="steering-chaos-pg-"))
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


# --- backends --------------------------------------------------------------------------------------

HOLD_MAX_SECONDS = 55.0  # under HAProxy's `timeout server` (60 s, render.DEFAULT_TIMEOUTS)


def fixed_port() -> int:
    """A free port below the kernel's ephemeral range: while a backend is stopped, no process on the
    machine binds its port by asking for any free one, and no probe's own source port can be it."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below the ephemeral range")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.open_sockets: set[socket.socket] = set()
        self.guard = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.guard:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.guard:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a connection cut by stop() or by HAProxy is not a test failure


class Server:
    """An HTTP backend on 127.0.0.1 answering its name. `stop()` closes the listener and every
    open connection (as a dead process would); `start()` listens again on the same port. While
    `holding`, a GET /hold stays open until `release` is set: a session HAProxy counts."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = fixed_port()
        self.holding = False
        self.held = 0
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._server: _Server | None = None

    def start(self) -> Server:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                if self.path.startswith("/hold") and owner.holding:
                    with owner._lock:
                        owner.held += 1
                    owner.release.wait(HOLD_MAX_SECONDS)
                    with owner._lock:
                        owner.held -= 1
                body = owner.name.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", self.port), Handler)
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, name=f"backend-{self.name}", daemon=True).start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with server.guard:
            for sock in list(server.open_sockets):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    @property
    def running(self) -> bool:
        return self._server is not None


def hold_session(frontend: str, server: Server, timeout: float = 30.0) -> None:
    """Open one long request through HAProxy that lands on `server` and stays open: GET /hold
    through the frontend until one lands there (elsewhere it is answered at once)."""
    server.release.clear()
    server.holding = True
    deadline = time.monotonic() + timeout

    def get() -> None:
        try:
            with urllib.request.urlopen(f"{frontend}/hold", timeout=HOLD_MAX_SECONDS + 10) as r:  # noqa: S310
                r.read()
        except OSError:
            pass

    try:
        while server.held < 1:
            if time.monotonic() > deadline:
                raise AssertionError(f"no request through HAProxy reached {server.name} to hold a session")
            thread = threading.Thread(target=get, name=f"hold-{server.name}", daemon=True)
            thread.start()
            thread.join(0.3)
    finally:
        server.holding = False


# --- processes ---------------------------------------------------------------------------------------


def agent_env() -> dict[str, str]:
    """What an agent host has: no database URL, no Redis URL, no Django settings."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    env.update(PYTHONUNBUFFERED="1", LOG_LEVEL="INFO")
    return env


def kill_group(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL a process group (no cleanup, as a crashed host would) and reap it."""
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class Agent:
    """One agent process (`python -m steering.agents ...`) in its own process group, appending to
    one log across its restarts."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name, self.argv, self.log_path = name, argv, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Agent:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "steering.agents", *self.argv], cwd=ROOT,
                                         env=agent_env(), stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        return self

    def kill(self) -> None:
        kill_group(self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc, timeout=5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class HAProxy:
    """HAProxy in master-worker mode on the config the seed rendered; it outlives its agent, as on
    a PoP host where the init system runs it."""

    def __init__(self, config: Path, socket_path: str, log_path: Path) -> None:
        self.config, self.socket, self.log_path = config, socket_path, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, binary: str) -> HAProxy:
        from steering.dataplane.haproxy.runtime import Runtime

        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([binary, "-W", "-db", "-f", str(self.config)], stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"haproxy exited: {self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                if Runtime(self.socket).backends():
                    return self
            except Exception:
                time.sleep(0.05)
        raise AssertionError("HAProxy's admin socket did not answer within 30 s")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc, timeout=10)


# --- clients that keep what they saw ----------------------------------------------------------------


@dataclass
class Call:
    start: float        # unix time the request was sent
    end: float          # unix time the answer (or the error) came
    method: str
    path: str
    status: int | None  # None: no HTTP answer (refused, reset, timed out)
    error: str = ""


class Api:
    """The REST API with the operator's token; every request and its answer recorded."""

    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base, token
        self.calls: list[Call] = []
        self._lock = threading.Lock()

    def request(self, method: str, path: str, body: dict[str, Any] | None = None, *, timeout: float = 45.0,
                headers: dict[str, str] | None = None) -> tuple[int | None, Any]:
        all_headers = {"Authorization": f"Bearer {self.token}", **({"Content-Type": "application/json"} if body else {}),
                       **(headers or {})}
        request = urllib.request.Request(f"{self.base}{path}", method=method, headers=all_headers,
                                         data=json.dumps(body).encode() if body is not None else None)
        start = time.time()
        status: int | None = None
        payload: Any = None
        error = ""
        try:
            with urllib.request.urlopen(request, timeout=timeout) as r:  # noqa: S310 (loopback)
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except (OSError, ValueError) as exc:
            raw, error = b"", f"{type(exc).__name__}: {exc}"
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw[:200].decode(errors="replace")
        with self._lock:
            self.calls.append(Call(start, time.time(), method, path, status, error))
        return status, payload

    def get(self, path: str, **kw: Any) -> tuple[int | None, Any]:
        return self.request("GET", path, **kw)

    def act(self, path: str, body: dict[str, Any], key: str, *, give_up_after: float = 90.0) -> tuple[int, Any]:
        """POST an action with an Idempotency-Key, retrying (same key) while there is no answer or
        a 503: a retry returns the first answer and changes nothing, so it is done exactly once."""
        deadline = time.monotonic() + give_up_after
        while True:
            status, payload = self.request("POST", path, body, headers={"Idempotency-Key": key})
            if status is not None and status != 503:
                return status, payload
            if time.monotonic() > deadline:
                raise AssertionError(f"POST {path} got no answer in {give_up_after:g} s (last: {status} {payload})")
            time.sleep(0.5)


@dataclass
class Loop:
    """Run `check` every `interval` in a thread until stopped (or `max_seconds`); each outcome kept
    with its time (None: fine, else what went wrong)."""

    name: str
    check: Any
    interval: float
    max_seconds: float = 600.0
    outcomes: list[tuple[float, str | None]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            started = time.time()
            try:
                error = self.check()
            except Exception as exc:  # a failed request is an outcome, never a dead thread
                error = f"{type(exc).__name__}: {exc}"
            self.outcomes.append((started, error))
            self._stop.wait(max(0.0, self.interval - (time.time() - started)))

    def start(self) -> Loop:
        self._thread = threading.Thread(target=self._run, name=f"loop-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def between(self, start: float, end: float) -> tuple[int, int]:
        inside = [e for t, e in self.outcomes if start <= t <= end]
        return len(inside), sum(1 for e in inside if e is not None)


def http_get(url: str, timeout: float = 10.0) -> str | None:
    """One GET through HAProxy: None when a backend answered 200, else what went wrong."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (loopback)
            r.read()
            return None if r.status == 200 else f"HTTP {r.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
