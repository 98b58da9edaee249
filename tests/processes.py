"""Real Celery worker and beat processes, and the web process, against the test database and Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from django.conf import settings
from django.db import connection

from tests.support import ROOT

# What runstack and docker-compose use too: no waiting for neighbours at start.
WORKER_FAST_START = ["--without-mingle", "--without-gossip"]


def stop_process_group(proc: subprocess.Popen, timeout: float = 15.0) -> None:  # type: ignore[type-arg]
    """SIGTERM the process group, SIGKILL it if it has not gone within `timeout`."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def database_url_for_subprocess() -> str:
    """The URL of the database this test is using (the test DB, not the configured one)."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    user = s.get("USER") or ""
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{s.get('HOST') or '127.0.0.1'}:{s.get('PORT') or 5432}/{s['NAME']}"


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    # As in-process tests (conftest): drains complete in the model alone unless a test runs the
    # data planes' agents and asks for their confirmation (STEERING_DATAPLANE_CONFIRM="1").
    env.setdefault("STEERING_DATAPLANE_CONFIRM", "0")
    env.setdefault("STEERING_CHANGE_WAIT_SECONDS", "0")  # as in-process tests: actions in quick succession
    env.setdefault("STEERING_LOCAL_SECRET_KEY", "1")  # the test's own install, however pytest was started
    env.update(DATABASE_URL=database_url_for_subprocess(), REDIS_URL=settings.REDIS_URL,
               DJANGO_SETTINGS_MODULE="config.settings", PYTHONUNBUFFERED="1")
    env.update(extra)  # a test may give its processes a Redis of their own (one it stops)
    return env


class CeleryProcess:
    """`celery -A config worker|beat`, started in its own process group so it can be SIGKILLed whole."""

    def __init__(self, role: str, log_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.role = role
        self.log_path = log_dir / f"celery-{role}-{time.monotonic_ns()}.log"
        cmd = [sys.executable, "-m", "celery", "-A", "config", role, "--loglevel", "INFO", *args]
        if role == "worker":
            cmd += WORKER_FAST_START
            if "--queues" not in args and "-Q" not in args:
                cmd += ["--queues", "celery,probes"]  # the timers' queue and the probe shards' (settings)
        self._log = open(self.log_path, "wb")  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(**(env or {})), stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        """SIGKILL the whole process group: no cleanup, no acks, as a crashed host would."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._log.close()

    def stop(self) -> None:
        stop_process_group(self.proc)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class WebProcess:
    """The real ASGI app (`uvicorn config.asgi:application`) on a free loopback port, against the
    test database and Redis; `stop()` then `start()` keeps the port (a control-plane outage).

    The one definition of a test's web process: tests/conftest.py's `web` fixture starts one per
    test; the data-plane labs (tests/dataplane/*/lab.py) subclass it. `env` is added to the
    process's environment (LOG_LEVEL included, WARNING unless given); `uvicorn_args` go on its
    command line; `stop_timeout` is how long a stop waits before SIGKILL (long-polls in flight
    hold uvicorn's graceful shutdown)."""

    def __init__(self, log_dir: Path, *, port: int | None = None, stop_timeout: float = 15.0,
                 uvicorn_args: Sequence[str] = (), **env: str) -> None:
        from tests.support import free_port

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"uvicorn-{self.port}.log"
        self.env = env
        self.stop_timeout = stop_timeout
        self.uvicorn_args = tuple(uvicorn_args)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> WebProcess:
        import urllib.request

        log = open(self.log_path, "ab")  # noqa: SIM115  (the child holds it; ours is closed below)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
                 "--port", str(self.port), "--lifespan", "off", "--no-access-log", *self.uvicorn_args],
                cwd=ROOT, env=subprocess_env(**{"LOG_LEVEL": "WARNING", **self.env}), stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"uvicorn exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as r:  # noqa: S310 (loopback)
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"uvicorn did not answer /healthz within {timeout} s:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc, timeout=self.stop_timeout)
            self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


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
    one log across its restarts (the fault suite and the fail-static test start them)."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name, self.argv, self.log_path = name, argv, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Agent:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "steering.agents", *self.argv], cwd=ROOT,
                                         env=agent_env(), stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        kill_group(self.proc)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (what systemd sends), SIGKILL after `timeout`."""
        if self.proc is not None:
            stop_process_group(self.proc, timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def restored(self) -> int:
        """How many times it started from the state kept on disk (steering.agents.contract.Follower.restore)."""
        return self.log().count("restored version")
