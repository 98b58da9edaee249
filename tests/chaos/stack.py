"""The chaos suite's stack, every piece real and on 127.0.0.1, in temp dirs the test removes:

- `PrivatePostgres` (tests.postgres): a cluster of its own (initdb + pg_ctl, trust auth, a free
  port), so the test can stop and start it without touching the machine's PostgreSQL;
- `Server`: a small HTTP backend answering its name, which can hold a request open (a session
  HAProxy counts, so a drain runs to its deadline instead of ending early on 0 sessions), and can
  stop and start again on its port (ground truth for health transitions);
- `Agent` (tests.processes), `HAProxy`: the agents (`python -m steering.agents ...`, no database
  or Redis in their environment) and HAProxy itself, each in its own process group;
- `Api`, `Traffic`: HTTP clients that record every answer with its time.

The stack's web process, workers and beat are tests.processes' WebProcess and CeleryProcess with
the private database and Redis in their environment. PrivatePostgres and Agent live in modules
the integration tests share, and are imported here under their old names.
"""
from __future__ import annotations

import http.server
import json
import random
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.postgres import PrivatePostgres as PrivatePostgres  # re-exported: the suite imports it from here
from tests.processes import Agent as Agent  # re-exported
from tests.processes import kill_group as kill_group  # re-exported
from tests.processes import stop_process_group

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
