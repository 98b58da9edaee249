"""Transitions leave the shard through a Redis outbox and reach the DB through the recorder:
in order per backend, exactly once, and nothing lost when a recording fails."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from steering.health import outbox
from steering.health.store import Transition
from steering.health.target import ProbeResult, ProbeTarget
from steering.models import Backend, Change, HealthEvent
from steering.services import health as health_service
from steering.services.effects import _redis
from steering.tasks import probes
from tests import factories as f
from tests.test_health_support import clean_probe_redis

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _clean_redis() -> Iterator[None]:
    clean_probe_redis()
    yield
    clean_probe_redis()


def evidence(result: str) -> dict[str, Any]:
    return {"check": "http", "result": result, "ok_streak": 1, "fail_streak": 0, "rise": 1, "fall": 1}


def test_entries_keep_their_order_and_a_failed_batch_goes_back_to_the_front() -> None:
    r = _redis()
    first = [Transition(i, 1, "unknown", "up", evidence("ok")) for i in (1, 2, 3)]
    outbox.push(r, first)
    outbox.push(r, [Transition(4, 1, "up", "down", evidence("refused"))])
    taken = outbox.take(r, 2)
    assert [outbox.decode(x).backend_id for x in taken] == [1, 2]
    outbox.give_back(r, taken)
    assert [outbox.decode(x).backend_id for x in outbox.take(r, 10)] == [1, 2, 3, 4]
    assert outbox.pending(r) == 0
    assert outbox.decode(outbox.encode(first[0])) == first[0]


def test_the_recorder_commits_a_backends_transitions_in_order_once_each() -> None:
    b = f.backend()
    r = _redis()
    outbox.push(r, [Transition(b.pk, b.pool_id, "unknown", "up", evidence("ok")),
                    Transition(b.pk, b.pool_id, "up", "down", {**evidence("refused"), "error": "connection refused"})])
    assert probes.record_queued(r) == 2
    b.refresh_from_db()
    assert b.health == "down"
    changes = list(Change.objects.filter(object_id=b.pk, action="backend.health").order_by("id"))
    assert [(c.before["health"], c.after["health"]) for c in changes] == [("unknown", "up"), ("up", "down")]
    assert all(c.actor_name == "system:prober" for c in changes)
    assert HealthEvent.objects.filter(backend=b).count() == 2
    assert probes.record_queued(r) == 0 and outbox.pending(r) == 0   # recorded once, not again


def test_a_failed_recording_keeps_the_transitions_for_the_next_recorder(monkeypatch: pytest.MonkeyPatch) -> None:
    b = f.backend()
    r = _redis()
    outbox.push(r, [Transition(b.pk, b.pool_id, "unknown", "up", evidence("ok"))])
    real = health_service.record_transitions_many

    def broken(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("database restarting")

    monkeypatch.setattr(health_service, "record_transitions_many", broken)
    with pytest.raises(RuntimeError):
        probes.record_queued(r)
    assert outbox.pending(r) == 1 and Backend.objects.get(pk=b.pk).health == "unknown"
    monkeypatch.setattr(health_service, "record_transitions_many", real)
    assert probes.record_queued(r) == 1
    assert Backend.objects.get(pk=b.pk).health == "up"


def test_one_drainer_at_a_time() -> None:
    b = f.backend()
    r = _redis()
    outbox.push(r, [Transition(b.pk, b.pool_id, "unknown", "up", evidence("ok"))])
    r.set(outbox.LOCK, "1", px=60_000)  # another recorder is draining
    assert probes.record_queued(r) == 0
    assert outbox.pending(r) == 1  # left for the holder, who looks again before letting go
    r.delete(outbox.LOCK)
    assert probes.record_queued(r) == 1


def test_a_shard_queues_transitions_and_asks_for_one_recorder(monkeypatch: pytest.MonkeyPatch) -> None:
    b = f.backend()
    r = _redis()
    asked: list[int] = []
    monkeypatch.setattr(probes, "schedule_recorder", lambda: asked.append(1))
    target = ProbeTarget(backend_id=b.pk, pool_id=b.pool_id, kind="http", address="127.0.0.1", port=1,
                         interval=2.0, rise=1, fall=1)
    now = time.time()

    def result(ok: bool, at: float) -> ProbeResult:
        return ProbeResult(backend_id=b.pk, ok=ok, result="ok" if ok else "refused", latency_ms=1.0, due=at,
                           started=at, finished=at + 0.001, status=200 if ok else None)

    assert probes.ingest_deferred(r, [result(True, now)], {b.pk: target}) == 1
    assert probes.ingest_deferred(r, [result(False, now + 2)], {b.pk: target}) == 1
    assert asked == [1]                        # one recorder queued for both batches
    assert Backend.objects.get(pk=b.pk).health == "unknown"   # the shard wrote nothing to the DB
    assert probes.record_queued(r) == 2
    assert Backend.objects.get(pk=b.pk).health == "down"
    assert probes.ingest_deferred(r, [result(True, now + 4)], {b.pk: target}) == 1
    assert asked == [1, 1]                     # the recorder cleared the flag: the next wave asks again
