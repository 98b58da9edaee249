"""The engine end to end against real loopback backends and real Redis, driven directly:
schedule, probe, count in Redis, and (on a transition only) an audited write to the DB."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from steering.health import store
from steering.models import Backend, Change, HealthEvent, Pool
from steering.redisconn import sync_client
from steering.representation import represent
from steering.services.context import Actor
from steering.tasks import probes
from tests import factories as f
from tests.services.health_support import Backend as Server
from tests.services.health_support import backends, clean_probe_redis, free_port


@pytest.fixture(autouse=True)
def _clean_redis() -> Iterator[None]:
    clean_probe_redis()
    yield
    clean_probe_redis()


class Clock:
    """Due times for successive probe rounds: one interval apart, as the schedule would hand out."""

    def __init__(self) -> None:
        self.t = time.time() - 1000

    def round(self, *backend_ids: int) -> None:
        self.t += 1.0
        probes.run_shard([[bid, self.t] for bid in backend_ids], inline=True)


def monitored_pool(n_ports: list[int], *, panic_threshold_percent: int = 50, **monitor_kw) -> Pool:
    mon = f.monitor(**{"kind": "http", "path": "/healthz", "interval_seconds": 1.0, "timeout_seconds": 0.5,
                       "rise": 2, "fall": 3, **monitor_kw})
    pool = f.pool(monitor=mon, panic_threshold_percent=panic_threshold_percent)
    for port in n_ports:
        f.backend(pool, address="127.0.0.1", port=port)
    probes.sync(sync_client(), force=True)
    return pool


def health(pk: int) -> str:
    return Backend.objects.get(pk=pk).health


def test_a_backend_that_dies_goes_down_after_fall_and_comes_back_after_rise(db):
    with backends(1) as (server,):
        pool = monitored_pool([server.port])
        b = pool.backends.get()
        clock = Clock()
        clock.round(b.pk)
        assert health(b.pk) == "unknown"  # 1 of rise 2
        clock.round(b.pk)
        assert health(b.pk) == "up"
        server.stop()  # the process dies: connections are refused
        clock.round(b.pk)
        clock.round(b.pk)
        assert health(b.pk) == "up"  # 2 of fall 3
        clock.round(b.pk)
        assert health(b.pk) == "down"
        server.start()
        clock.round(b.pk)
        assert health(b.pk) == "down"
        clock.round(b.pk)
        assert health(b.pk) == "up"
    events = list(HealthEvent.objects.filter(backend=b).order_by("id").values_list("from_health", "to_health"))
    assert events == [("unknown", "up"), ("up", "down"), ("down", "up")]
    down = HealthEvent.objects.get(backend=b, to_health="down")
    assert down.evidence["result"] == "refused" and down.evidence["fail_streak"] == 3 and "latency_ms" in down.evidence
    changes = Change.objects.filter(object_type="backend", object_id=b.pk, action="backend.health").order_by("id")
    assert changes.count() == 3
    assert {c.actor_name for c in changes} == {"system:prober"} and {c.source for c in changes} == {"system"}
    assert changes[1].before["health"] == "up" and changes[1].after["health"] == "down"
    assert "3 consecutive failed http checks" in changes[1].reason


def test_each_transition_writes_one_change_and_publishes_one_delta(db, django_capture_on_commit_callbacks,
                                                                   monkeypatch):
    published: list[tuple[int, list]] = []
    monkeypatch.setattr("steering.services.effects.publish_after_commit", lambda v, d: published.append((v, d)))
    with backends(1) as (server,):
        # Panic off: a one-backend pool going down would otherwise also (rightly) enter panic.
        pool = monitored_pool([server.port], rise=1, fall=1, panic_threshold_percent=0)
        b = pool.backends.get()
        clock = Clock()
        before = Change.objects.count()
        with django_capture_on_commit_callbacks(execute=True):
            clock.round(b.pk)  # unknown -> up
        with django_capture_on_commit_callbacks(execute=True):
            clock.round(b.pk)  # still up: nothing written, nothing sent
        server.mode = "503"
        with django_capture_on_commit_callbacks(execute=True):
            clock.round(b.pk)  # up -> down
    assert Change.objects.count() - before == 2
    assert len(published) == 2
    for _version, deltas in published:
        assert {(d["type"], d["id"]) for d in deltas} == {("backend", b.pk)}
    assert published[1][0] == published[0][0] + 1


def test_wrong_status_and_body_mismatch_take_a_backend_down_as_configured(db):
    with backends(2) as (wrong_status, wrong_body):
        wrong_status.mode, wrong_body.mode = "503", "body"
        mon = f.monitor(kind="http", body_match="healthy", interval_seconds=1.0, timeout_seconds=0.5, fall=2)
        pool = f.pool(monitor=mon, panic_threshold_percent=0)
        a = f.backend(pool, address="127.0.0.1", port=wrong_status.port)
        c = f.backend(pool, address="127.0.0.1", port=wrong_body.port)
        probes.sync(sync_client(), force=True)
        clock = Clock()
        clock.round(a.pk, c.pk)
        clock.round(a.pk, c.pk)
    assert health(a.pk) == health(c.pk) == "down"
    assert HealthEvent.objects.get(backend=a).evidence["status"] == 503
    assert HealthEvent.objects.get(backend=c).evidence["result"] == "body"
    assert not Pool.objects.get(pk=pool.pk).in_panic  # threshold 0 disables panic


def test_a_backend_outside_the_allowlist_is_never_probed_and_records_why(db):
    mon = f.monitor(kind="tcp", interval_seconds=1.0, timeout_seconds=0.5, fall=1)
    pool = f.pool(monitor=mon, panic_threshold_percent=0)
    outside = f.backend(pool, address="192.0.2.7", port=80)  # written past the service's own refusal
    probes.sync(sync_client(), force=True)
    Clock().round(outside.pk)
    assert health(outside.pk) == "down"
    _, samples = store.read_state(sync_client(), outside.pk)
    assert samples[0]["result"] == "allowlist" and "outside the probe allowlist" in samples[0]["detail"]


def test_a_pool_without_a_monitor_is_not_probed(db):
    pool = f.pool(monitor=None)
    f.backend(pool)
    with_monitor = monitored_pool([free_port()])
    probes.sync(sync_client(), force=True)
    scheduled = {int(x) for x in sync_client().zrange(store.DUE, 0, -1)}
    assert scheduled == set(with_monitor.backends.values_list("pk", flat=True))


def test_a_stopped_prober_makes_backends_stale_not_down(db):
    with backends(1) as (server,):
        pool = monitored_pool([server.port])
        b = pool.backends.get()
        clock = Clock()
        clock.round(b.pk)
        clock.round(b.pk)
    assert health(b.pk) == "up"
    # The prober stops: no results. Two intervals later nothing happens; after three, stale.
    last = store.read_state(sync_client(), b.pk)[0].last_time
    assert probes.sweep_stale(now=last + 2.5) == []
    assert probes.sweep_stale(now=last + 3.5) == [b.pk]
    b.refresh_from_db()
    assert b.health == "stale"
    change = Change.objects.filter(object_id=b.pk, action="backend.health").latest("id")
    assert change.actor_name == "system:prober" and change.after["health"] == "stale"
    assert represent(b)["effective_weight"] == b.weight  # stale keeps serving: no evidence of failure
    assert probes.sweep_stale(now=last + 10) == []  # marked once, not on every sweep


def test_most_of_a_pool_failing_at_once_is_panic_and_keeps_it_in_steering(db):
    with backends(4) as servers:
        pool = monitored_pool([s.port for s in servers], rise=1, fall=2)
        ids = list(pool.backends.order_by("pk").values_list("pk", flat=True))
        clock = Clock()
        clock.round(*ids)
        assert set(Backend.objects.filter(pool=pool).values_list("health", flat=True)) == {"up"}
        for s in servers[:3]:
            s.stop()  # three of four at once: suspect the prober
        clock.round(*ids)
        clock.round(*ids)
        pool.refresh_from_db()
        assert pool.in_panic
        down = list(Backend.objects.filter(pool=pool, health="down").select_related("pool"))
        assert len(down) == 3  # health is recorded as measured...
        assert all(represent(b)["effective_weight"] > 0 for b in down)  # ...but nobody leaves steering
        panic = Change.objects.get(object_type="pool", object_id=pool.pk, action="pool.panic")
        assert panic.actor_name == "system:prober" and "3 of 4" in panic.reason
        for s in servers[:3]:
            s.start()
        clock.round(*ids)
    pool.refresh_from_db()
    assert not pool.in_panic
    assert Change.objects.filter(object_type="pool", object_id=pool.pk, action="pool.panic_end").count() == 1
    assert set(Backend.objects.filter(pool=pool).values_list("health", flat=True)) == {"up"}


def test_a_pool_in_panic_that_loses_its_monitor_leaves_panic(db):
    from steering.services.topology import do_update

    with backends(4) as servers:
        pool = monitored_pool([s.port for s in servers], rise=1, fall=1)
        ids = list(pool.backends.order_by("pk").values_list("pk", flat=True))
        clock = Clock()
        clock.round(*ids)
        for s in servers[:3]:
            s.stop()
        clock.round(*ids)
        pool.refresh_from_db()
        assert pool.in_panic
        do_update(pool, {"monitor": None}, actor=Actor.system("test"), reason="monitor retired")
        probes.sweep_stale(now=time.time())
    pool.refresh_from_db()
    assert not pool.in_panic
    end = Change.objects.get(object_type="pool", object_id=pool.pk, action="pool.panic_end")
    assert "no monitor" in end.reason


def test_one_backend_down_in_a_big_pool_is_pulled_not_panic(db):
    with backends(4) as servers:
        pool = monitored_pool([s.port for s in servers], rise=1, fall=1)
        ids = list(pool.backends.order_by("pk").values_list("pk", flat=True))
        clock = Clock()
        clock.round(*ids)
        servers[0].stop()
        clock.round(*ids)
    pool.refresh_from_db()
    assert not pool.in_panic
    down = Backend.objects.select_related("pool").get(pool=pool, health="down")
    assert represent(down)["effective_weight"] == 0


def test_claims_never_hand_one_backend_to_two_workers(db):
    r = sync_client()
    targets = [store.ProbeTarget(backend_id=i, pool_id=1, kind="tcp", address="127.0.0.1", port=1, interval=2.0)
               for i in range(1, 1001)]
    now = time.time()
    store.sync_schedule(r, targets, now=now)
    first = store.claim(r, horizon=now + 1.0, now=now)
    second = store.claim(r, horizon=now + 1.0, now=now)
    assert second == []  # all rescheduled one interval on
    assert 350 < len(first) < 650  # about half of them fall in the first half of a 2 s interval
    third = store.claim(r, horizon=now + 3.0, now=now + 2.0)
    assert {bid for bid, _ in first} <= {bid for bid, _ in third}
    assert all(due > now + 1.0 for bid, due in third if bid in dict(first))


def test_the_tick_syncs_claims_and_dispatches_bounded_shards(db, settings):
    settings.STEERING_PROBE_SHARD_SIZE = 3
    pool = monitored_pool([free_port() for _ in range(7)], interval_seconds=1.0)
    shards: list[list[list[float]]] = []
    claimed = probes.tick(now=time.time() + 5, dispatch=shards.append)
    assert claimed == 7 and [len(s) for s in shards] == [3, 3, 1]
    assert sorted(int(bid) for s in shards for bid, _ in s) == sorted(pool.backends.values_list("pk", flat=True))
    # Removing a backend (or the pool's monitor) takes it off the schedule at the next sync.
    gone = pool.backends.first()
    Backend.objects.filter(pk=gone.pk).delete()
    probes.sync(sync_client(), force=True)
    assert gone.pk not in {int(x) for x in sync_client().zrange(store.DUE, 0, -1)}


def test_samples_endpoint_shows_recent_results_and_counters(db, viewer_api):
    with backends(1) as (server,):
        pool = monitored_pool([server.port])
        b = pool.backends.get()
        clock = Clock()
        for _ in range(3):
            clock.round(b.pk)
    r = viewer_api.get(f"/api/v1/backends/{b.pk}/samples/")
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["probed"] and body["health"] == "up"
    assert len(body["samples"]) == 3 and body["samples"][0]["ok"] and body["samples"][0]["detail"] == "200"
    assert body["counters"]["ok_streak"] == 3 and body["counters"]["rise"] == 2
    assert body["events"][0]["to_health"] == "up"


def test_metrics_are_public_counts_without_secrets(db, anon_api):
    with backends(1) as (server,):
        pool = monitored_pool([server.port])
        clock = Clock()
        clock.round(pool.backends.get().pk)
    r = anon_api.get("/metrics")
    assert r.status_code == 200
    text = r.content.decode()
    assert 'steering_probes_total{result="ok"} 1.0' in text
    assert "steering_probe_latency_seconds_bucket" in text and "steering_probe_lag_seconds_count" in text
    assert 'steering_backends{health="unknown"}' in text and "steering_pools_in_panic" in text
    assert "redis://" not in text and "127.0.0.1" not in text and "SECRET" not in text.upper()


def test_a_shard_through_the_worker_path_leaves_the_db_to_the_recorder(transactional_db, monkeypatch):
    from steering.health import outbox

    asked: list[int] = []
    monkeypatch.setattr(probes, "schedule_recorder", lambda: asked.append(1))
    server = Server().start()
    try:
        pool = monitored_pool([server.port], rise=1)
        b = pool.backends.get()
        probes.run_shard([[b.pk, time.time()]])  # the Celery task's path: uvloop + the sink thread
    finally:
        server.shutdown()
    assert health(b.pk) == "unknown" and asked == [1]  # queued, and one recorder asked for
    assert outbox.backlog(sync_client()) == 1
    assert probes.record_probe_transitions() == 1  # the recorder task, as a worker runs it
    assert health(b.pk) == "up"
