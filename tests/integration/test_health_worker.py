"""The real thing: Celery beat + a prefork worker, as `make run` starts them, probing a live
loopback backend and committing its transitions to the test database."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from steering.models import Backend, Change
from tests import factories as f
from tests.services.health_support import backends, clean_probe_redis

pytestmark = pytest.mark.integration


def database_url() -> str:
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(s['NAME']).resolve()}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


@pytest.fixture
def celery_stack() -> Iterator[Callable[[], None]]:
    """Starts beat and a worker against this test's database and Redis; stops them afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="steering-celery-"))
    env = {**os.environ, "DATABASE_URL": database_url(), "REDIS_URL": settings.REDIS_URL,
           "STEERING_VAR_DIR": str(tmp), "DJANGO_SETTINGS_MODULE": "config.settings"}
    procs: list[subprocess.Popen[bytes]] = []
    logs = [tmp / "worker.log", tmp / "beat.log"]

    def start() -> None:
        worker = [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "prefork", "--concurrency", "2",
                  "--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--hostname", "probe-test@%h",
                  "--queues", "celery,probes"]
        beat = [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "WARNING"]
        for cmd, log in zip((worker, beat), logs, strict=True):
            procs.append(subprocess.Popen(cmd, env=env, cwd=settings.BASE_DIR, stdout=log.open("wb"),
                                          stderr=subprocess.STDOUT, start_new_session=True))

    try:
        yield start
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)  # the process group we started: worker and its children
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
        for log in logs:
            if log.exists() and log.stat().st_size:
                print(f"--- {log.name}\n{log.read_text()[-3000:]}")
        shutil.rmtree(tmp, ignore_errors=True)


def wait_for(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


@pytest.mark.django_db(transaction=True)
def test_beat_and_a_worker_probe_a_live_backend_and_commit_its_transitions(celery_stack):
    clean_probe_redis()
    with backends(1) as (server,):
        mon = f.monitor(kind="http", path="/healthz", interval_seconds=1.0, timeout_seconds=0.5, rise=1, fall=2)
        pool = f.pool(monitor=mon, panic_threshold_percent=0)
        b = f.backend(pool, address="127.0.0.1", port=server.port)
        celery_stack()

        def health() -> str:
            return Backend.objects.values_list("health", flat=True).get(pk=b.pk)

        assert wait_for(lambda: health() == "up", 30), "the worker never marked the live backend up"
        server.stop()
        assert wait_for(lambda: health() == "down", 15), "the worker never marked the dead backend down"
    changes = list(Change.objects.filter(object_id=b.pk, action="backend.health").order_by("id"))
    assert [(c.before["health"], c.after["health"]) for c in changes] == [("unknown", "up"), ("up", "down")]
    assert {c.actor_name for c in changes} == {"system:prober"}
    assert len(server.requests) >= 1 and b"GET /healthz" in server.requests[0]
    clean_probe_redis()
