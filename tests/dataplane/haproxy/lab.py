"""A real HAProxy on loopback, and small Python HTTP backends that answer with their name: what
the HAProxy tests start (and tests/integration, beside the other data planes)."""

from __future__ import annotations

import http.client
import http.server
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from steering.dataplane.haproxy.desired import pop_spec
from steering.dataplane.haproxy.render import render, write_config
from steering.dataplane.haproxy.runtime import Runtime
from steering.models import PoP
from tests.processes import stop_process_group
from tests.support import free_port, wait_for


def haproxy_binary() -> str:
    """HAProxy is a real dependency here (ARCHITECTURE.md §6): missing it fails, in CI and outside."""
    found = shutil.which("haproxy") or (shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin"))
    if found is None:
        pytest.fail("haproxy is not installed: apt-get install -y haproxy (HAProxy 2.6 or later)")
    return found


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # HAProxy resets its idle keep-alive connections when it stops: not a test failure


@dataclass
class NameServer:
    """An HTTP backend on 127.0.0.1 that answers its name; /slow holds the answer until released."""

    name: str
    port: int = 0
    hits: int = 0
    in_flight: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    _server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> NameServer:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                owner.hits += 1
                if self.path.startswith("/slow"):
                    owner.in_flight += 1
                    owner.release.wait(30)
                    owner.in_flight -= 1
                body = owner.name.encode()
                self.send_response(500 if self.path.startswith("/fail") else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class HAProxy:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.socket = str(workdir / "admin.sock")
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = free_port()

    def write(self, pop: PoP) -> Path:
        spec = pop_spec(pop)
        rendered = render(spec, socket_path=self.socket, binds={s.slug: ("127.0.0.1", self.port) for s in spec.services})
        cfg = self.workdir / "haproxy.cfg"
        write_config(rendered, str(cfg), haproxy=haproxy_binary())
        return cfg

    def reload(self, pop: PoP) -> None:
        """Re-render and reload the master (-W): a new worker takes the listeners over."""
        assert self.proc is not None
        self.write(pop)
        loads = self._loads()
        os.kill(self.proc.pid, signal.SIGUSR2)
        wait_for(lambda: self._loads() > loads and self._ready(), "the reloaded worker")

    def _loads(self) -> int:
        self.log.flush()
        return (self.workdir / "haproxy.log").read_text(errors="replace").count("Loading success.")

    def start(self, pop: PoP | None = None, *, text: str | None = None) -> HAProxy:
        if pop is not None:
            cfg = self.write(pop)
        else:
            cfg = self.workdir / "haproxy.cfg"
            cfg.write_text(text or "")
        self.log = open(self.workdir / "haproxy.log", "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen([haproxy_binary(), "-W", "-db", "-f", str(cfg)], stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self._ready, "HAProxy's admin socket")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"haproxy exited: {(self.workdir / 'haproxy.log').read_text()}")
        try:
            return bool(Runtime(self.socket).backends())
        except Exception:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc, timeout=10)
            self.log.close()

    @property
    def runtime(self) -> Runtime:
        return Runtime(self.socket)

    def get(self, path: str = "/") -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
                return str(r.read().decode())
        except urllib.error.HTTPError as e:
            return str(e.read().decode())

    def spread(self, n: int, path: str = "/") -> Counter[str]:
        return Counter(self.get(path) for _ in range(n))


# One backend process: HTTP/1.1 keep-alive on 127.0.0.1, answers its name; "fail R" on stdin makes
# it answer 503 to that share of requests. Each answer is written whole, in one write.
BACKEND = r"""
import asyncio, sys
name, port = sys.argv[1], int(sys.argv[2])
state = {"fail": 0.0, "n": 0}
async def handle(reader, writer):
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            state["n"] += 1
            n, r = state["n"], state["fail"]
            bad = r > 0 and int(n * r) != int((n - 1) * r)
            body = name.encode()
            status = b"503 Service Unavailable" if bad else b"200 OK"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()
async def control():
    loop = asyncio.get_running_loop()
    r = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(r), sys.stdin)
    while line := await r.readline():
        words = line.split()
        if words and words[0] == b"fail":
            state["fail"] = float(words[1])
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", port, reuse_address=True)
    print("ready", flush=True)
    await asyncio.wait_for(control(), timeout=120)  # never outlives the test
asyncio.run(main())
"""


class BackendProcess:
    def __init__(self, name: str, port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()  # a port of its own, or the one a killed predecessor had
        self.proc = subprocess.Popen([sys.executable, "-c", BACKEND, name, str(self.port)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, start_new_session=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == b"ready"

    def fail(self, share: float) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"fail {share}\n".encode())
        self.proc.stdin.flush()

    def kill(self) -> None:
        """SIGKILL, as a crashed process dies: no goodbye, open connections reset by the kernel."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            stop_process_group(self.proc, timeout=5)


@dataclass
class Load:
    """Steady GETs through HAProxy from `threads` keep-alive clients; stops by itself."""

    port: int
    threads: int = 6
    pause: float = 0.004
    max_seconds: float = 60.0
    results: Counter[str] = field(default_factory=Counter)
    stop_event: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                key = "ok" if response.status == 200 else str(response.status)
            except (OSError, http.client.HTTPException) as exc:
                key = f"error:{type(exc).__name__}"
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            with self._lock:
                self.results[key] += 1
            time.sleep(self.pause)
        conn.close()

    def start(self) -> Load:
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> Counter[str]:
        self.stop_event.set()
        for t in self._threads:
            t.join(15)
        return self.results

    def sent(self) -> int:
        with self._lock:
            return sum(self.results.values())
