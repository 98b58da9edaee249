"""A real HAProxy on loopback, and small Python HTTP backends that answer with their name: what
the HAProxy tests start (and tests/integration, beside the other data planes)."""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import subprocess
import threading
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
