"""The reconcile: DB health is compared with the probe state in Redis and repaired through the
service path (audited as system:reconciler), so even a transition that never reached the DB
heals; what the outbox still holds is recorded by the prober's path first, not repaired."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from django.conf import settings

from steering.health import outbox, store
from steering.health.state import CheckState
from steering.health.target import ProbeResult
from steering.models import Backend, Change, HealthEvent, Pool
from steering.redisconn import sync_client
from steering.tasks import probes
from tests import factories as f
from tests.services.health_support import clean_probe_redis

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _clean_redis() -> Iterator[None]:
    clean_probe_redis()
    yield
    clean_probe_redis()


class Fleet:
    """A monitored pool of `n` backends on the schedule, driven with results made here (no network)."""

    def __init__(self, n: int = 3) -> None:
        mon = f.monitor(kind="http", interval_seconds=2.0, timeout_seconds=1.0, rise=1, fall=1)
        self.pool = f.pool(monitor=mon, panic_threshold_percent=0)
        self.ids = [f.backend(self.pool, address="127.0.0.1", port=20000 + i).pk for i in range(n)]
        self.r = sync_client()
        probes.sync(self.r, force=True)
        self.targets = store.load_targets(self.r, self.ids)
        self.due = time.time()

    def results(self, ok: bool, *ids: int, outbox: bool = True) -> list[store.Transition]:
        self.due += 0.001  # each round answers a later slot
        batch = [ProbeResult(bid, ok, "ok" if ok else "refused", 1.0, self.due, self.due, time.time(),
                             status=200 if ok else None, error="" if ok else "connection refused", check="http")
                 for bid in ids]
        return store.apply_results(self.r, batch, self.targets, outbox=outbox)


def health(pk: int) -> str:
    return Backend.objects.get(pk=pk).health


def health_changes(pk: int) -> list[Change]:
    return list(Change.objects.filter(object_type="backend", object_id=pk, action="backend.health").order_by("id"))


def test_a_state_changed_in_redis_with_no_outbox_entry_is_repaired_once() -> None:
    fleet = Fleet()
    fleet.results(True, *fleet.ids)
    assert probes.record_queued(fleet.r) == 3
    a, b, c = fleet.ids
    # By hand: the prober's state for `a` says down now; nothing went to the outbox.
    now = time.time()
    fleet.r.set(store.state_key(a), CheckState("down", 0, 3, now, now).encode())
    assert outbox.backlog(fleet.r) == 0 and health(a) == "up"

    assert probes.reconcile() == 1
    assert health(a) == "down" and health(b) == health(c) == "up"
    repair = health_changes(a)[-1]
    assert repair.actor_name == "system:reconciler" and repair.source == "system"
    assert (repair.before["health"], repair.after["health"]) == ("up", "down")
    assert "never reached the database" in repair.reason
    event = HealthEvent.objects.filter(backend_id=a).latest("id")
    assert (event.from_health, event.to_health, event.evidence["check"]) == ("up", "down", "reconcile")

    changes_before = Change.objects.count()
    assert probes.reconcile() == 0          # in agreement now: a second reconcile writes nothing
    assert Change.objects.count() == changes_before


def test_a_transition_whose_outbox_entry_never_happened_heals() -> None:
    fleet = Fleet(2)
    fleet.results(True, *fleet.ids)
    probes.record_queued(fleet.r)
    lost, kept = fleet.ids
    (transition,) = fleet.results(False, lost, outbox=False)  # the state moved, its entry was lost
    assert transition.to_health == "down" and outbox.backlog(fleet.r) == 0
    assert probes.reconcile() == 1
    assert health(lost) == "down" and health(kept) == "up"
    event = HealthEvent.objects.filter(backend_id=lost).latest("id")
    assert event.seq == transition.seq      # the repair states the seq it saw...
    fleet.r.xadd(outbox.STREAM, {outbox.FIELD: transition.pack()})
    assert probes.record_queued(fleet.r) == 0   # ...so the lost entry, should it turn up, changes nothing
    assert len(health_changes(lost)) == 2


def test_what_the_outbox_holds_is_recorded_by_the_prober_not_repaired() -> None:
    fleet = Fleet(2)
    fleet.results(True, *fleet.ids)
    probes.record_queued(fleet.r)
    fleet.results(False, fleet.ids[0])     # queued, its recorder task not run yet
    assert outbox.backlog(fleet.r) == 1
    assert probes.reconcile() == 0
    assert health(fleet.ids[0]) == "down" and outbox.backlog(fleet.r) == 0
    assert health_changes(fleet.ids[0])[-1].actor_name == "system:prober"


def test_old_and_unknown_states_are_left_to_the_stale_sweep() -> None:
    fleet = Fleet(2)
    old, unknown = fleet.ids
    long_ago = time.time() - 3600
    fleet.r.set(store.state_key(old), CheckState("down", 0, 3, long_ago, long_ago).encode())
    fleet.r.set(store.state_key(unknown), CheckState("unknown", 1, 0, time.time(), time.time()).encode())
    Backend.objects.filter(pk__in=fleet.ids).update(health="up")
    assert probes.reconcile() == 0
    assert health(old) == health(unknown) == "up"


def test_a_repair_re_decides_the_pools_panic_as_the_reconciler() -> None:
    fleet = Fleet(2)
    Pool.objects.filter(pk=fleet.pool.pk).update(panic_threshold_percent=50)
    fleet.results(True, *fleet.ids)
    probes.record_queued(fleet.r)
    fleet.results(False, *fleet.ids, outbox=False)
    assert probes.reconcile() == 2
    panic = Change.objects.get(object_type="pool", object_id=fleet.pool.pk, action="pool.panic")
    assert panic.actor_name == "system:reconciler"


def test_the_reconcile_waits_while_the_recorder_lock_is_held() -> None:
    fleet = Fleet(1)
    fleet.results(True, *fleet.ids, outbox=False)
    fleet.r.set(outbox.LOCK, "another recorder", px=60_000)
    assert probes.reconcile(lock_wait=0.2) is None
    fleet.r.delete(outbox.LOCK)
    assert probes.reconcile() == 1


def test_the_reconcile_runs_on_the_beat_every_configured_interval() -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["probe-reconcile"]
    assert entry["task"] == probes.probe_reconcile.name == "steering.probe_reconcile"
    assert entry["schedule"] == settings.STEERING_HEALTH_RECONCILE_SECONDS == 30
