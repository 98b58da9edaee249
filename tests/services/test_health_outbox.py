"""Transitions leave the shard through a Redis stream and reach the DB through the recorder:
in order per backend, at least once, applied once, and nothing lost when a recording fails.
(A recorder SIGKILLed mid-batch: tests/services/test_health_at_least_once.py.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from steering.health import outbox, store
from steering.health.store import Transition
from steering.health.target import ProbeResult, ProbeTarget
from steering.models import Backend, Change, HealthEvent
from steering.redisconn import sync_client
from steering.services import health as health_service
from steering.tasks import probes
from tests import factories as f
from tests.services.health_support import clean_probe_redis

# Transactional: acknowledgements wait for the commit, as in the recorder's own process.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _clean_redis() -> Iterator[None]:
    clean_probe_redis()
    yield
    clean_probe_redis()


def evidence(result: str) -> dict[str, Any]:
    return {"check": "http", "result": result, "ok_streak": 1, "fail_streak": 0, "rise": 1, "fall": 1}


def flips(b: Backend, *path: str, seq: int = 100) -> list[Transition]:
    """The transitions that walk `b` along `path` (e.g. unknown, up, down), with rising seqs."""
    return [Transition(b.pk, b.pool_id, old, new, evidence(new), seq + i)
            for i, (old, new) in enumerate(zip(path, path[1:], strict=False))]


def ids(batches: list[list[outbox.Entry]]) -> list[int]:
    return [t.backend_id for batch in batches for _, t in batch if t is not None]


def test_an_entry_is_handed_out_again_until_it_is_acknowledged() -> None:
    r = sync_client()
    outbox.ensure_group(r)
    outbox.push(r, [Transition(i, 1, "unknown", "up", evidence("ok"), i) for i in (1, 2, 3, 4)])
    first = next(outbox.read(r, "a", limit=2))
    assert [t.backend_id for _, t in first if t] == [1, 2]
    # Not acknowledged: the same consumer gets them again first, then the rest, in stream order.
    assert ids(list(outbox.read(r, "a", limit=10))) == [1, 2, 3, 4]
    outbox.ack(r, [entry_id for entry_id, _ in first])
    assert ids(list(outbox.read(r, "a", limit=10))) == [3, 4]
    assert outbox.backlog(r) == 2
    t = Transition(7, 3, "up", "down", {"check": "tcp", "error": "статус"}, 12)
    assert Transition.unpack(t.pack()) == t


def test_the_state_change_and_its_outbox_entry_are_one_step() -> None:
    r = sync_client()
    target = ProbeTarget(backend_id=5, pool_id=9, kind="http", address="127.0.0.1", port=1, rise=1, fall=1)
    now = time.time()

    def result(ok: bool, at: float) -> ProbeResult:
        return ProbeResult(5, ok, "ok" if ok else "refused", 1.5, at, at, at + 0.001,
                           status=200 if ok else None, error="" if ok else "connection refused", check="http")

    returned = store.apply_results(r, [result(True, now), result(False, now + 2)], {5: target})
    outbox.ensure_group(r)
    streamed = [t for batch in outbox.read(r, "a", limit=10) for _, t in batch]
    assert streamed == returned                       # what the script returned is what it appended
    up, down = returned
    assert (up.from_health, up.to_health, down.from_health, down.to_health) == ("unknown", "up", "up", "down")
    assert down.seq > up.seq > 0 and down.pool_id == 9
    assert down.evidence["error"] == "connection refused" and down.evidence["fail_streak"] == 1
    assert int(r.hget(store.SEQ, 5)) == down.seq
    # A caller that records its transitions itself appends nothing.
    assert store.apply_results(r, [result(True, now + 4)], {5: target}, outbox=False)[0].seq > down.seq
    assert outbox.backlog(r) == 2


def test_the_recorder_commits_a_backends_transitions_in_order_once_each() -> None:
    b = f.backend()
    r = sync_client()
    outbox.push(r, flips(b, "unknown", "up", "down"))
    assert probes.record_queued(r) == 2
    b.refresh_from_db()
    assert b.health == "down"
    changes = list(Change.objects.filter(object_id=b.pk, action="backend.health").order_by("id"))
    assert [(c.before["health"], c.after["health"]) for c in changes] == [("unknown", "up"), ("up", "down")]
    assert all(c.actor_name == "system:prober" for c in changes)
    assert list(HealthEvent.objects.filter(backend=b).order_by("id").values_list("seq", flat=True)) == [100, 101]
    assert probes.record_queued(r) == 0 and outbox.backlog(r) == 0   # recorded once, not again
    assert r.xlen(outbox.STREAM) == 0                                # acknowledged entries are trimmed


def test_a_transition_delivered_again_changes_nothing() -> None:
    b = f.backend()
    r = sync_client()
    unknown_up, up_down, down_up = flips(b, "unknown", "up", "down", "up")
    outbox.push(r, [unknown_up, up_down, down_up])
    assert probes.record_queued(r) == 3
    # Delivered again (a recorder died before acknowledging): up -> down matches the DB's "up"
    # again, but its seq is older than the one applied, so it is not replayed.
    outbox.push(r, [unknown_up, up_down, down_up])
    assert probes.record_queued(r) == 0
    assert Backend.objects.get(pk=b.pk).health == "up"
    assert Change.objects.filter(object_id=b.pk, action="backend.health").count() == 3


def test_a_transition_whose_from_no_longer_matches_is_skipped() -> None:
    b = f.backend(health="stale")
    r = sync_client()
    outbox.push(r, [Transition(b.pk, b.pool_id, "up", "down", evidence("refused"), 5)])  # the DB moved on
    assert probes.record_queued(r) == 0
    assert Backend.objects.get(pk=b.pk).health == "stale" and outbox.backlog(r) == 0


def test_a_failed_recording_keeps_the_transitions_for_the_next_recorder(monkeypatch: pytest.MonkeyPatch) -> None:
    b = f.backend()
    r = sync_client()
    outbox.push(r, flips(b, "unknown", "up"))
    real = health_service.record_transitions_many

    def broken(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("database restarting")

    monkeypatch.setattr(health_service, "record_transitions_many", broken)
    with pytest.raises(RuntimeError):
        probes.record_queued(r)
    assert outbox.backlog(r) == 1 and Backend.objects.get(pk=b.pk).health == "unknown"
    # Handed back: a recorder in another process may claim it at once, not a lock's lifetime later.
    (held,) = r.xpending_range(outbox.STREAM, outbox.GROUP, min="-", max="+", count=10)
    assert held["time_since_delivered"] >= outbox.LOCK_MS
    monkeypatch.setattr(health_service, "record_transitions_many", real)
    assert probes.record_queued(r) == 1
    assert Backend.objects.get(pk=b.pk).health == "up" and outbox.backlog(r) == 0


def test_entries_a_dead_recorder_held_are_claimed_once_idle_and_go_first() -> None:
    b = f.backend()
    r = sync_client()
    outbox.ensure_group(r)
    outbox.push(r, flips(b, "unknown", "up"))
    next(outbox.read(r, "dead-host:1", limit=10))   # handed out, then its recorder died
    outbox.push(r, flips(b, "up", "down", seq=200))
    assert probes.record_queued(r, claim_idle_ms=60_000) == 0   # not idle long enough to be abandoned
    assert Backend.objects.get(pk=b.pk).health == "unknown"
    time.sleep(0.01)
    # Claimed first, so the backend's order holds: unknown -> up, then up -> down.
    assert probes.record_queued(r, claim_idle_ms=5) == 2
    events = HealthEvent.objects.filter(backend=b).order_by("id").values_list("from_health", "to_health")
    assert list(events) == [("unknown", "up"), ("up", "down")]
    assert outbox.backlog(r) == 0
    assert [c["name"] for c in r.xinfo_consumers(outbox.STREAM, outbox.GROUP)] == [outbox.consumer_name().encode()]


def test_one_drainer_at_a_time() -> None:
    b = f.backend()
    r = sync_client()
    outbox.push(r, flips(b, "unknown", "up"))
    r.set(outbox.LOCK, "1", px=60_000)  # another recorder is draining
    assert probes.record_queued(r) == 0
    assert outbox.backlog(r) == 1  # left for the holder, who looks again before letting go
    r.delete(outbox.LOCK)
    assert probes.record_queued(r) == 1


def test_a_shard_queues_transitions_and_asks_for_one_recorder(monkeypatch: pytest.MonkeyPatch) -> None:
    b = f.backend()
    r = sync_client()
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


def test_the_stale_sweep_records_what_no_recorder_task_took(monkeypatch: pytest.MonkeyPatch) -> None:
    b = f.backend()
    r = sync_client()
    outbox.push(r, flips(b, "unknown", "up"))   # its recorder task was lost with a killed worker
    probes.sweep_stale()
    assert Backend.objects.get(pk=b.pk).health == "up" and outbox.backlog(r) == 0
