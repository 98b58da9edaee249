"""A recorder SIGKILLed mid-batch loses no transition and records none twice.

A real recorder process (steering.tasks.probes.record_queued, as the recorder task runs it) works
against the real Redis and the test database. It is caught in the middle of a batch on purpose:
it takes a batch while the test holds the database, then Redis stops taking writes (CLIENT PAUSE
WRITE: its acknowledgements cannot land) and the database is let go, so it commits a first round
of the batch; then it is SIGKILLed. At that point some transitions are committed but not
acknowledged, some were handed to it but not committed, and some were never handed out. Another
recorder then claims what the dead one held and records the rest: every transition is in the
database exactly once, in order.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction

from config.embedded import PrivateRedis
from steering.health import outbox, store
from steering.health.target import ProbeResult
from steering.models import Backend, Change, HealthEvent, Pool
from steering.redisconn import sync_client
from steering.tasks import probes
from tests import factories as f
from tests.processes import ROOT, subprocess_env
from tests.support import wait_for

pytestmark = pytest.mark.integration

BACKENDS, POOLS = 120, 4
LIMIT = BACKENDS * 3 // 2   # a batch: the first wave and half the second (rounds: one per wave)
LOCK_MS = 2000              # the killed recorder's lock expires soon after it dies
RECORDER = """
import sys
import django
django.setup()
from steering.redisconn import sync_client
from steering.tasks import probes
probes.record_queued(sync_client(), limit=int(sys.argv[1]), lock_ms=int(sys.argv[2]))
"""


@pytest.fixture
def private_redis(settings: Any) -> Iterator[Any]:
    """A Redis of this test's own (for the test and the recorder process): CLIENT PAUSE stops a
    whole server, and must not stall anyone else's."""
    server = PrivateRedis().start()
    settings.REDIS_URL = server.url   # sync_client() and subprocess_env() follow it
    try:
        yield sync_client()
    finally:
        server.stop()


class HoldTheDatabase(threading.Thread):
    """A transaction holding the pools' rows (PostgreSQL) or the write lock (SQLite: IMMEDIATE),
    so a recorder that took a batch waits in its first transaction until `release()`."""

    def __init__(self, pool_ids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pool_ids = pool_ids
        self.holding = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        try:
            with transaction.atomic():
                list(Pool.objects.select_for_update().filter(pk__in=self.pool_ids))
                self.holding.set()
                self.done.wait(120)
        finally:
            connection.close()

    def release(self) -> None:
        self.done.set()
        self.join(30)


def held_by(r: Any, consumer: str) -> int:
    summary = r.xpending(outbox.STREAM, outbox.GROUP)
    return sum(int(c["pending"]) for c in summary["consumers"] if c["name"].decode() == consumer)


@pytest.mark.django_db(transaction=True)
def test_a_recorder_killed_mid_batch_loses_nothing_and_records_nothing_twice(tmp_path: Path, private_redis: Any) -> None:
    r = private_redis
    mon = f.monitor(kind="http", interval_seconds=2.0, timeout_seconds=1.0, rise=1, fall=1)
    pools = [f.pool(monitor=mon, panic_threshold_percent=0) for _ in range(POOLS)]
    ids = [f.backend(pools[i % POOLS], address="127.0.0.1", port=30000 + i).pk for i in range(BACKENDS)]
    probes.sync(r, force=True)
    targets = store.load_targets(r, ids)
    due = time.time()
    for ok in (True, False, True):  # three waves through the real Lua step: up, down, up again
        due += 2.0
        store.apply_results(r, [ProbeResult(bid, ok, "ok" if ok else "refused", 1.0, due, due, due + 0.001,
                                            status=200 if ok else None, check="http") for bid in ids], targets)
    assert outbox.backlog(r) == 3 * BACKENDS
    outbox.ensure_group(r)  # what the recorder does first; here so the test can watch the group from the start

    hold = HoldTheDatabase([p.pk for p in pools])
    hold.start()
    assert hold.holding.wait(30)
    log = open(tmp_path / "recorder.log", "wb")  # noqa: SIM115  (closed below)
    recorder = subprocess.Popen([sys.executable, "-c", RECORDER, str(LIMIT), str(LOCK_MS)], cwd=ROOT,
                                env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    dead = ""
    try:
        dead = wait_for(lambda: next((c["name"].decode() for c in r.xinfo_consumers(outbox.STREAM, outbox.GROUP)
                                      if c["pending"]), ""), "the recorder to take a batch", timeout=60)
        assert held_by(r, dead) == LIMIT
        r.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")   # its acknowledgements cannot land now
        try:
            hold.release()
            wait_for(lambda: HealthEvent.objects.filter(backend_id__in=ids).exists(), "a first round committed",
                     timeout=60)
            os.killpg(recorder.pid, signal.SIGKILL)
            recorder.wait(30)
        finally:
            r.execute_command("CLIENT", "UNPAUSE")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nthe recorder's output:\n{(tmp_path / 'recorder.log').read_text()[-3000:]}") from exc
    finally:
        if recorder.poll() is None:
            os.killpg(recorder.pid, signal.SIGKILL)
            recorder.wait(30)
        hold.release()
        log.close()
    committed = HealthEvent.objects.filter(backend_id__in=ids).count()
    print(f"at the kill: {committed} of {3 * BACKENDS} committed, {held_by(r, dead)} held unacknowledged, "
          f"{outbox.undelivered(r)} never handed out")
    assert 0 < committed < 3 * BACKENDS
    assert held_by(r, dead) == LIMIT            # nothing it committed was acknowledged: all come back
    assert outbox.undelivered(r) == 3 * BACKENDS - LIMIT

    # Another recorder: it waits for the dead one's lock to expire, claims what it held, records the rest.
    wait_for(lambda: outbox.backlog(r) == 0, "another recorder to drain the outbox", timeout=60, interval=0.2,
             step=lambda: probes.record_queued(r, lock_ms=LOCK_MS, claim_idle_ms=LOCK_MS))

    expected = [("unknown", "up"), ("up", "down"), ("down", "up")]
    for bid in ids:
        events = list(HealthEvent.objects.filter(backend_id=bid).order_by("id").values_list("from_health", "to_health",
                                                                                              "seq"))
        assert [(a, b) for a, b, _ in events] == expected, f"backend {bid}: {events}"
        seqs = [s for _, _, s in events]
        assert seqs == sorted(set(seqs)), f"backend {bid}: seqs {seqs}"
    assert Change.objects.filter(object_id__in=ids, action="backend.health").count() == 3 * BACKENDS
    assert set(Backend.objects.filter(pk__in=ids).values_list("health", flat=True)) == {"up"}
    assert dead not in {c["name"].decode() for c in r.xinfo_consumers(outbox.STREAM, outbox.GROUP)}
