"""Drain timers: the sweeper completes a drain at its deadline (once, however many sweepers race),
the grace the deadline comes from (given, the pool's default, or measured from live session
figures), and drains that finish early when sessions reach zero.

A real Celery beat and worker keeping these timers across a SIGKILL:
tests/integration/test_timer_durability.py."""

from __future__ import annotations

import datetime
import threading
import time

import pytest
from django.db import connection
from django.utils import timezone

from steering import redis_keys
from steering.dataplane.stats import BackendStats, write_backend_stats
from steering.models import Change, Operation
from steering.redisconn import sync_client
from steering.services.actions import do_drain
from steering.services.context import Actor
from steering.services.operations import sweep_due
from tests import factories as f


@pytest.fixture(autouse=True)
def _clean_stats():
    yield
    client = sync_client()
    for key in client.scan_iter(redis_keys.BACKEND_STATS.format(id="*")):
        client.delete(key)


def drain(api, target, **body):
    """POST a drain; `target` is a backend, or an API path such as f"pools/{pool.pk}"."""
    path = target if isinstance(target, str) else f"backends/{target.pk}"
    return api.post(f"/api/v1/{path}/drain/", {"reason": "deploy", **body}, format="json")


def test_it_drains_then_the_sweeper_completes_at_the_deadline(operator_api):
    pool = f.fleet(4)
    b = pool.backends.first()
    r = drain(operator_api, f"backends/{b.pk}", grace_seconds=30)
    assert r.status_code == 202
    op = r.json()["operation"]
    assert r["Location"] == f"/api/v1/operations/{op['id']}/"
    b.refresh_from_db()
    assert b.admin_state == "draining"
    assert b.drain_deadline is not None
    assert sweep_due(now=timezone.now())["drains_completed"] == 0  # not due yet
    later = b.drain_deadline + datetime.timedelta(milliseconds=1)
    assert sweep_due(now=later)["drains_completed"] == 1
    b.refresh_from_db()
    assert b.admin_state == "drained"
    assert Operation.objects.get(pk=op["id"]).status == "succeeded"
    # A second sweep finds nothing: completion is audited exactly once.
    assert sweep_due(now=later)["drains_completed"] == 0
    assert Change.objects.filter(action="backend.drained", object_id=b.pk).count() == 1


def test_it_uses_the_pool_default_grace_when_none_is_given(operator_api):
    pool = f.fleet(4, default_grace_seconds=120)
    b = pool.backends.first()
    op = drain(operator_api, f"backends/{b.pk}").json()["operation"]
    b.refresh_from_db()
    span = (b.drain_deadline - b.drain_started_at).total_seconds()
    assert span == 120
    params = Operation.objects.get(pk=op["id"]).params
    assert params["grace_basis"] == "default"
    assert params["grace_derivation"].startswith("pool")


def test_it_completes_at_once_with_zero_grace(operator_api):
    pool = f.fleet(4)
    b = pool.backends.first()
    r = drain(operator_api, f"backends/{b.pk}", grace_seconds=0)
    assert r.status_code == 202
    b.refresh_from_db()
    assert b.admin_state == "drained"
    assert Operation.objects.get(pk=r.json()["operation"]["id"]).status == "succeeded"


def test_it_suggests_grace_from_sessions_and_completion_rate(operator_api):
    b = f.fleet(4, default_grace_seconds=30).backends.first()
    write_backend_stats(b.pk, BackendStats(sessions=2400, completion_rate=80.0, session_rate=50.0, updated_at=time.time()))
    dry = drain(operator_api, b, dry_run=True).json()
    assert dry["grace"]["seconds"] == 45  # 2,400 / 80 = 30 s, + 15 s buffer
    assert dry["grace"]["basis"] == "measured"
    assert "2400 sessions / 80 per s = 30 s, + 15 s buffer" in dry["grace"]["derivation"]
    op = drain(operator_api, b).json()["operation"]
    params = Operation.objects.get(pk=op["id"]).params
    assert params["grace_seconds"] == 45 and params["grace_basis"] == "measured"


def test_it_falls_back_to_the_default_without_fresh_figures(operator_api):
    b = f.fleet(4, default_grace_seconds=30).backends.first()
    write_backend_stats(b.pk, BackendStats(sessions=2400, completion_rate=80.0, session_rate=0, updated_at=time.time() - 60))
    grace = drain(operator_api, b, dry_run=True).json()["grace"]
    assert grace == {"seconds": 30, "basis": "default", "derivation": grace["derivation"]}
    assert "no live session figures" in grace["derivation"]


def test_a_given_grace_wins_and_shows_the_suggestion(operator_api):
    b = f.fleet(4).backends.first()
    write_backend_stats(b.pk, BackendStats(sessions=100, completion_rate=10.0, session_rate=0, updated_at=time.time()))
    grace = drain(operator_api, b, dry_run=True, grace_seconds=5).json()["grace"]
    assert grace["seconds"] == 5 and grace["basis"] == "given"
    assert grace["suggested"]["seconds"] == 25


def test_it_completes_early_when_sessions_reach_zero(operator_api):
    b = f.fleet(4).backends.first()
    op_id = drain(operator_api, b, grace_seconds=600).json()["operation"]["id"]
    b.refresh_from_db()
    # Still serving its sessions: nothing happens.
    write_backend_stats(b.pk, BackendStats(sessions=12, completion_rate=3.0, session_rate=0, updated_at=time.time()))
    assert sweep_due()["drains_completed"] == 0
    write_backend_stats(b.pk, BackendStats(sessions=0, completion_rate=3.0, session_rate=0, updated_at=time.time()))
    result = sweep_due()
    assert result["drains_completed_early"] == 1
    b.refresh_from_db()
    assert b.admin_state == "drained"
    assert Operation.objects.get(pk=op_id).status == "succeeded"
    change = Change.objects.get(action="backend.drained", object_id=b.pk)
    assert change.reason == "sessions reached zero before the deadline"


def test_a_zero_sampled_before_the_drain_began_does_not_end_it(operator_api):
    b = f.fleet(4).backends.first()
    write_backend_stats(b.pk, BackendStats(sessions=0, completion_rate=1.0, session_rate=0, updated_at=time.time() - 1))
    drain(operator_api, b, grace_seconds=600)
    assert sweep_due()["drains_completed"] == 0
    b.refresh_from_db()
    assert b.admin_state == "draining"


@pytest.mark.django_db(transaction=True)
def test_it_completes_each_drain_once_when_sweepers_race():
    import datetime

    from django.utils import timezone

    from steering.services.operations import sweep_due

    pool = f.fleet(6, capacity_rps=100000)
    for b in list(pool.backends.all())[:3]:
        do_drain(b, actor=Actor(name="alice", source="api"), reason="race", grace_seconds=1)
    later = timezone.now() + datetime.timedelta(seconds=2)
    barrier = threading.Barrier(3)
    totals: list[int] = []

    def sweep() -> None:
        barrier.wait(timeout=5)
        try:
            totals.append(sweep_due(now=later)["drains_completed"])
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sum(totals) == 3
    assert Change.objects.filter(action="backend.drained").count() == 3
