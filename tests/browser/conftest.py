"""Real-browser harness: the real ASGI app (uvicorn, HTTP + WebSocket) on a free loopback port
against the test database, Debian's Chromium driven by Playwright, one screenshot per test.

Playwright's sync API runs an asyncio loop in the test's thread, and Django refuses ORM calls
where a loop runs; rather than switching that safety off (DJANGO_ALLOW_ASYNC_UNSAFE), tests seed
their data before the browser starts and do any later ORM work through `orm(...)`, which runs it
on a thread of its own (the tests are transactional, so every connection sees the same data).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.conf import settings
from django.db import connections, transaction

from tests.processes import ROOT, CeleryProcess, stop_process_group, subprocess_env
from tests.support import missing

T = TypeVar("T")

CHROMIUM = os.environ.get("STEERING_CHROMIUM", "/usr/bin/chromium")
VIEWPORT = {"width": 1280, "height": 800}
# Generous: the machine may be shared and busy; every wait polls, none is a timed assertion.
UI_TIMEOUT_MS = 30_000
SERVER_START_SECONDS = 90


def artifacts_dir() -> Path:
    path = Path(os.environ.get("STEERING_ARTIFACTS_DIR") or ROOT / "var" / "artifacts" / "browser")
    path.mkdir(parents=True, exist_ok=True)
    return path



@pytest.fixture(autouse=True)
def _fast_password_hashing() -> None:
    """Overrides the suite's MD5 hasher: the server subprocess checks passwords with the
    configured (default) hashers, so users made here must be stored that way."""


@pytest.fixture(scope="session")
def chromium() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing("the playwright Python package is not installed (pip install -r requirements-dev.txt)")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        missing(f"Chromium not found at {CHROMIUM} (apt-get install chromium, or set STEERING_CHROMIUM)")
    return CHROMIUM


@pytest.fixture(scope="session")
def frontend_dist() -> Path:
    dist = Path(settings.FRONTEND_DIST)
    if not (dist / "index.html").exists():
        if shutil.which("npm") is None:
            missing("frontend/dist is not built and npm is missing: run `make frontend`")
        build = subprocess.run(["make", "frontend"], cwd=ROOT, capture_output=True, text=True, timeout=600)
        if build.returncode != 0 or not (dist / "index.html").exists():
            pytest.fail(f"`make frontend` failed:\n{build.stdout[-2000:]}\n{build.stderr[-2000:]}", pytrace=False)
    return dist


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_http_ok(url: str, proc: subprocess.Popen[bytes], log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310  (loopback, our own server)
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"the server did not answer {url} within {seconds:.0f} s:\n"
                        f"{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)


def built_index() -> str:
    index = Path(settings.FRONTEND_DIST) / "index.html"
    return index.read_text(errors="replace") if index.exists() else ""


@dataclass
class LiveServer:
    """`uvicorn config.asgi:application` as a subprocess; restart() keeps the port."""

    var_dir: Path
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    collected: str = ""  # the dist/index.html the collected static files belong to

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.var_dir / "uvicorn.log"

    def env(self) -> dict[str, str]:
        # Its own var dir (static files); the database and Redis are the test's.
        return subprocess_env(STEERING_VAR_DIR=str(self.var_dir), LOG_LEVEL="WARNING")

    def collectstatic(self) -> None:
        self.collected = built_index()
        done = subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT,
                              env=self.env(), capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            pytest.fail(f"collectstatic failed:\n{done.stderr[-3000:]}", pytrace=False)

    def start(self) -> None:
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"\n=== start {self.starts}\n".encode())
        log.flush()
        cmd = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", self.host,
               "--port", str(self.port), "--lifespan", "off", "--no-access-log"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        wait_http_ok(f"{self.url}/healthz", self.proc, self.log_path, SERVER_START_SECONDS)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc)
            self.proc = None

    def restart(self, *, between: Callable[[], Any] = lambda: None) -> None:
        """Stop, run `between` while no server is up, start again on the same port."""
        self.stop()
        between()
        self.start()

    def refresh_if_rebuilt(self) -> None:
        """The server serves collected static files (whitenoise, as in production) but reads
        dist/index.html per request: after a rebuild of the frontend, collect and restart."""
        if built_index() != self.collected:
            self.stop()
            self.collectstatic()
            self.start()

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


@pytest.fixture(scope="session")
def asgi_server(django_db_setup: Any, frontend_dist: Path, chromium: str,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(var_dir=tmp_path_factory.mktemp("browser-server"))
    server.collectstatic()
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Orm:
    """Runs ORM calls on one thread of its own, away from Playwright's event loop."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="orm")

    def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self._pool.submit(fn, *args, **kwargs).result()

    def close(self) -> None:
        self._pool.submit(connections.close_all).result()
        self._pool.shutdown()


@pytest.fixture
def orm() -> Iterator[Orm]:
    runner = Orm()
    try:
        yield runner
    finally:
        runner.close()


@pytest.fixture
def open_page(request: pytest.FixtureRequest, asgi_server: LiveServer, chromium: str) -> Iterator[Callable[[], Any]]:
    """Call it once the test's data is in place: starts Playwright and Chromium and returns a page
    whose relative URLs go to the live server. A screenshot and the console log are kept."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)
    state: dict[str, Any] = {}
    console: list[str] = []

    def start() -> Any:
        assert "page" not in state, "open_page() is called once per test"
        asgi_server.refresh_if_rebuilt()
        state["pw"] = sync_playwright().start()
        state["browser"] = state["pw"].chromium.launch(executable_path=chromium, headless=True)
        context = state["browser"].new_context(viewport=VIEWPORT, base_url=asgi_server.url)
        context.set_default_timeout(UI_TIMEOUT_MS)
        page = context.new_page()
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        state["page"] = page
        return page

    try:
        yield start
    finally:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid.split("::", 1)[-1])
        out = artifacts_dir()
        try:
            if "page" in state:
                state["page"].screenshot(path=str(out / f"{name}.png"), full_page=False)
        finally:
            (out / f"{name}.console.txt").write_text("\n".join(console) + "\n")
            (out / f"{name}.server.txt").write_text(asgi_server.log_tail(20000))
            if "browser" in state:
                state["browser"].close()
            if "pw" in state:
                state["pw"].stop()


def login(page: Any, username: str, password: str) -> None:
    """Through the Django login form, as a person would: the dashboard redirects there first."""
    from playwright.sync_api import expect

    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.locator("[data-testid=map]")).to_be_visible()  # the dashboard is up and listening
    page.evaluate("window.__steeringNoReload = true")  # gone if the page ever reloads


def assert_not_reloaded(page: Any) -> None:
    assert page.evaluate("window.__steeringNoReload === true"), "the page reloaded"


def password_of(username: str) -> str:
    return f"{username}-pass-123"  # tests/conftest.py make_user


def seed_demo() -> dict[str, int]:
    from steering.management.commands.seed_demo import seed
    from steering.services.context import Actor

    with transaction.atomic():
        return seed(Actor.system("demo"))


def clean_redis_state() -> None:
    """Probe schedule, counters and the sweep heartbeat: a flushed database must not meet them."""
    from tests.services.health_support import clean_probe_redis

    clean_probe_redis()


@dataclass
class Stack:
    worker: CeleryProcess
    beat: CeleryProcess

    def logs(self) -> str:
        return f"--- worker\n{self.worker.log()[-3000:]}\n--- beat\n{self.beat.log()[-3000:]}"


@pytest.fixture
def celery_stack(tmp_path: Path) -> Iterator[Callable[[], Stack]]:
    """Starts a Celery worker and beat (timers and probing) when called; waits for the first sweep."""
    from steering.redis_keys import SWEEP_HEARTBEAT
    from steering.redisconn import sync_client

    started: list[Stack] = []

    def start() -> Stack:
        clean_redis_state()
        sync_client().delete(SWEEP_HEARTBEAT)
        stack = Stack(worker=CeleryProcess("worker", tmp_path, "--concurrency", "2", "--hostname", "browser@%h"),
                      beat=CeleryProcess("beat", tmp_path))
        started.append(stack)
        deadline = time.monotonic() + 90
        while sync_client().get(SWEEP_HEARTBEAT) is None:
            if time.monotonic() > deadline:
                pytest.fail(f"no sweep within 90 s\n{stack.logs()}")
            time.sleep(0.2)
        return stack

    try:
        yield start
    finally:
        for stack in started:
            stack.worker.stop()
            stack.beat.stop()
        clean_redis_state()


@pytest.fixture
def demo_backends(tmp_path: Path) -> Iterator[Callable[[], None]]:
    """`manage.py demo_backends` (what `make run` starts): real listeners for the demo fleet."""
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        log = (tmp_path / "demo-backends.log").open("wb")
        procs.append(subprocess.Popen([sys.executable, "manage.py", "demo_backends"], cwd=ROOT, env=subprocess_env(),
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        log.close()

    try:
        yield start
    finally:
        for proc in procs:
            stop_process_group(proc)
