"""Drain (steering.services.actions, steering.services.drains): a backend, a pool or a PoP taken out
as one operation, the capacity guard with its force and dry run, the backup pool, and undrain.

Elsewhere: the timers (deadline, grace, the sweeper) in test_drain_timers.py, maintenance in
test_maintenance.py, weights in test_weights.py, abort and ?wait in test_operations.py."""

from __future__ import annotations

import datetime

from django.utils import timezone

from steering.models import Backend, Change, Operation
from steering.services.operations import sweep_due
from tests import factories as f


def drain(api, obj_path, **body):
    return api.post(f"/api/v1/{obj_path}/drain/", {"reason": "deploy 1.4.2", **body}, format="json")


def test_it_refuses_a_drain_the_survivors_cannot_absorb(operator_api):
    # 4 backends of 1000 rps carrying 3000 rps: losing one puts 1000 on each survivor (ok);
    # losing one at 3600 rps puts 1200 on each (over capacity).
    pool = f.fleet(4, capacity_rps=1000, expected_rps=3600)
    b = pool.backends.first()
    before = Change.objects.count()
    r = drain(operator_api, f"backends/{b.pk}")
    assert r.status_code == 409
    body = r.json()
    assert body["code"] == "capacity_guard"
    assert body["impact"]["verdict"] == "overload"
    survivors = [row for row in body["impact"]["receivers"] if row["overloaded"]]
    assert len(survivors) == 3 and survivors[0]["load_after_rps"] == 1200.0
    b.refresh_from_db()
    assert b.admin_state == "ready"
    assert Change.objects.count() == before


def test_it_lets_force_override_the_guard_only_with_its_own_reason(operator_api):
    pool = f.fleet(4, capacity_rps=1000, expected_rps=3600)
    b = pool.backends.first()
    assert drain(operator_api, f"backends/{b.pk}", force=True).status_code == 400
    r = drain(operator_api, f"backends/{b.pk}", force=True, force_reason="kernel CVE, accept the risk")
    assert r.status_code == 202
    assert r.json()["operation"]["forced"] is True
    change = Change.objects.get(action="backend.drain", object_id=b.pk)
    assert change.forced is True


def test_it_answers_a_dry_run_with_the_impact_and_changes_nothing(operator_api):
    pool = f.fleet(5, capacity_rps=20000, expected_rps=50000)
    b = pool.backends.first()
    r = drain(operator_api, f"backends/{b.pk}", dry_run=True)
    assert r.status_code == 200
    impact = r.json()
    # 5 nodes at 10k each, one removed: the survivors take 12.5k each (+25%).
    assert impact["moved_rps"] == 10000.0
    assert {row["load_after_rps"] for row in impact["receivers"]} == {12500.0}
    assert impact["basis"] == "configured"
    b.refresh_from_db()
    assert b.admin_state == "ready"
    assert not Operation.objects.exists()


def test_it_shows_the_impact_on_get(viewer_api):
    pool = f.fleet(2, capacity_rps=1000, expected_rps=1500)
    r = viewer_api.get(f"/api/v1/pools/{pool.pk}/impact/?action=drain")
    assert r.status_code == 200
    assert r.json()["verdict"] == "outage"  # no backup pool: 1500 rps with nowhere to go


def test_it_sends_a_drained_pools_traffic_to_its_backup_pool(operator_api):
    primary = f.fleet(2, capacity_rps=1000, expected_rps=800)
    backup = f.fleet(2, capacity_rps=1000, expected_rps=0, pop=primary.pop, service=primary.service)
    primary.backup_pool = backup
    primary.save()
    r = operator_api.get(f"/api/v1/pools/{primary.pk}/impact/?action=drain")
    assert r.json()["verdict"] == "safe"
    assert r.json()["receivers"][0]["name"] == str(backup)


def test_it_drains_a_whole_pool_as_one_operation(operator_api):
    pool = f.fleet(3)
    backup = f.fleet(3, pop=pool.pop, service=pool.service, expected_rps=0)
    pool.backup_pool = backup
    pool.save()
    r = drain(operator_api, f"pools/{pool.pk}", grace_seconds=10)
    assert r.status_code == 202
    op_id = r.json()["operation"]["id"]
    assert set(pool.backends.values_list("admin_state", flat=True)) == {"draining"}
    assert set(pool.backends.values_list("operation_id", flat=True)) == {op_id}
    pool.refresh_from_db()
    assert pool.admin_state == "draining"
    sweep_due(now=timezone.now() + datetime.timedelta(seconds=11))
    assert set(pool.backends.values_list("admin_state", flat=True)) == {"drained"}
    pool.refresh_from_db()
    assert pool.admin_state == "drained"
    op = Operation.objects.get(pk=op_id)
    assert op.status == "succeeded"
    assert op.progress["backends_left"] == 0 and op.progress["backends_total"] == 3


def test_it_drains_a_pop_and_marks_the_pop_drained_when_done(operator_api):
    region = f.region()
    pop_a, pop_b = f.pop(region), f.pop(region)
    svc = f.service()
    f.fleet(2, pop=pop_a, service=svc, expected_rps=500)
    f.fleet(2, pop=pop_b, service=svc, expected_rps=500)
    r = drain(operator_api, f"pops/{pop_a.pk}", grace_seconds=5)
    assert r.status_code == 202, r.content
    pop_a.refresh_from_db()
    assert pop_a.admin_state == "draining"
    sweep_due(now=timezone.now() + datetime.timedelta(seconds=6))
    pop_a.refresh_from_db()
    assert pop_a.admin_state == "drained"
    assert Backend.objects.filter(pool__pop=pop_b, admin_state="ready").count() == 2


def test_it_refuses_to_drain_what_is_already_draining(operator_api):
    pool = f.fleet(4)
    b = pool.backends.first()
    assert drain(operator_api, f"backends/{b.pk}").status_code == 202
    r = drain(operator_api, f"backends/{b.pk}")
    assert r.status_code == 409
    assert r.json()["code"] == "already_draining"
    assert Change.objects.filter(action="backend.drain").count() == 1


def test_it_undrains_with_slow_start_and_aborts_the_running_drain(operator_api):
    pool = f.fleet(4)
    b = pool.backends.first()
    b.slow_start_seconds = 60
    b.save()
    drain_op = drain(operator_api, f"backends/{b.pk}").json()["operation"]["id"]
    r = operator_api.post(f"/api/v1/backends/{b.pk}/undrain/", {"reason": "rollback"}, format="json")
    assert r.status_code == 202
    b.refresh_from_db()
    assert b.admin_state == "ready" and b.ready_since is not None
    assert Operation.objects.get(pk=drain_op).status == "aborted"
    detail = operator_api.get(f"/api/v1/backends/{b.pk}/").json()
    assert 1 <= detail["effective_weight"] < 100
    assert "slow start" in detail["effective_weight_reason"]
