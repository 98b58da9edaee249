"""Weights (steering.services.weights): set at once, or ramped as a canary 0 -> 5 -> 25 -> 100 in
steps, pausing itself when health degrades."""

from __future__ import annotations

import datetime

from django.utils import timezone

from steering.models import Backend, Change, Operation
from steering.services.context import Actor
from steering.services.weights import advance_ramps, do_set_weight, plan_ramp
from tests import factories as f


def later(seconds: float) -> datetime.datetime:
    return timezone.now() + datetime.timedelta(seconds=seconds)


def canary(api, backend, **extra):
    body = {"reason": "canary 1.5.0", "weight": 100, "steps": [5, 25, 100], "step_seconds": 60, **extra}
    return api.post(f"/api/v1/backends/{backend.pk}/weight/", body, format="json")


def test_plan_ramp_spreads_a_linear_ramp_and_ends_at_the_target():
    assert plan_ramp(0, 100, ramp_seconds=50) == ([10, 20, 30, 40, 50, 60, 70, 80, 90, 100], 5)
    assert plan_ramp(100, 0, ramp_seconds=3) == ([67, 33, 0], 1)
    assert plan_ramp(0, 100, steps=[5, 25], step_seconds=30) == ([5, 25, 100], 30)


def test_it_walks_a_canary_through_its_steps(operator_api):
    pool = f.fleet(4, capacity_rps=100000)
    b = pool.backends.first()
    Backend.objects.filter(pk=b.pk).update(weight=0)
    r = canary(operator_api, b)
    assert r.status_code == 202, r.content
    op = r.json()["operation"]
    assert op["status"] == "running" and op["progress"]["step"] == 1
    assert [s["status"] for s in op["steps"]] == ["done", "next", "pending"]
    b.refresh_from_db()
    assert b.weight == 5
    assert advance_ramps(later(1)) == 0  # not due yet
    assert advance_ramps(later(61)) == 1
    b.refresh_from_db()
    assert b.weight == 25
    assert advance_ramps(later(122)) == 1
    b.refresh_from_db()
    assert b.weight == 100
    done = Operation.objects.get(pk=op["id"])
    assert done.status == "succeeded" and done.progress["percent"] == 100
    weights = list(Change.objects.filter(action="backend.weight", object_id=b.pk).order_by("id").values_list("after__weight", flat=True))
    assert weights == [5, 25, 100]


def test_it_pauses_when_health_degrades_and_resumes_when_healthy(operator_api):
    pool = f.fleet(4, capacity_rps=100000)
    b = pool.backends.first()
    Backend.objects.filter(pk=b.pk).update(weight=0)
    op_id = canary(operator_api, b).json()["operation"]["id"]
    Backend.objects.filter(pk=b.pk).update(health="down")
    assert advance_ramps(later(1)) == 1
    op = Operation.objects.get(pk=op_id)
    assert op.status == "paused"
    assert op.result["paused_because"] == "backend health went down"
    pause = Change.objects.get(action="operation.pause", object_id=op_id)
    assert pause.actor_name == "system:sweeper"
    b.refresh_from_db()
    assert b.weight == 5  # held where it was
    refused = operator_api.post(f"/api/v1/operations/{op_id}/resume/", {"reason": "looks fine"}, format="json")
    assert refused.status_code == 409 and refused.json()["code"] == "unhealthy"
    Backend.objects.filter(pk=b.pk).update(health="up")
    r = operator_api.post(f"/api/v1/operations/{op_id}/resume/", {"reason": "fixed the config"}, format="json")
    assert r.status_code == 200 and r.json()["status"] == "running"
    advance_ramps(later(1))
    b.refresh_from_db()
    assert b.weight == 25


def test_abort_rolls_a_ramp_back_to_where_it_started(operator_api):
    pool = f.fleet(4, capacity_rps=100000)
    b = pool.backends.first()
    Backend.objects.filter(pk=b.pk).update(weight=0)
    op_id = canary(operator_api, b).json()["operation"]["id"]
    advance_ramps(later(61))
    r = operator_api.post(f"/api/v1/operations/{op_id}/abort/", {"reason": "5xx rate up"}, format="json")
    assert r.status_code == 200 and r.json()["status"] == "aborted"
    b.refresh_from_db()
    assert b.weight == 0
    assert advance_ramps(later(500)) == 0


def test_it_refuses_a_second_ramp_on_the_same_backend(operator_api):
    b = f.fleet(4, capacity_rps=100000).backends.first()
    assert canary(operator_api, b).status_code == 202
    r = canary(operator_api, b, weight=50)
    assert r.status_code == 409 and r.json()["code"] == "ramp_in_progress"


def test_a_dry_run_shows_the_plan(operator_api):
    b = f.fleet(4, capacity_rps=100000).backends.first()
    r = operator_api.post(f"/api/v1/backends/{b.pk}/weight/", {"reason": "x", "weight": 10, "ramp_seconds": 90, "dry_run": True},
                          format="json")
    assert r.status_code == 200
    plan = r.json()["plan"]
    assert plan["steps"][-1] == 10 and plan["step_seconds"] == 9
    assert not Operation.objects.exists()


def test_a_paused_ramp_stays_on_the_map_however_many_operations_follow(operator_api, viewer_api):
    pool = f.fleet(4, capacity_rps=100000)
    b, other = pool.backends.order_by("pk")[:2]
    Backend.objects.filter(pk=b.pk).update(weight=0)
    op_id = canary(operator_api, b).json()["operation"]["id"]
    Backend.objects.filter(pk=b.pk).update(health="down")
    assert advance_ramps(later(1)) == 1
    assert Operation.objects.get(pk=op_id).status == "paused"
    for weight in range(101, 122):  # more newer operations than the map lists finished ones
        do_set_weight(other, actor=Actor.system("test"), reason="tune", weight=weight)
    r = viewer_api.get("/api/v1/topology/")
    assert r.status_code == 200
    listed = {o["id"]: o["status"] for o in r.json()["operations"]}
    assert listed.get(op_id) == "paused"  # the operator must still find it to resume or abort it
    assert len(listed) == 21


def test_it_sets_a_weight_and_the_effective_weight_follows(operator_api):
    pool = f.fleet(4)
    b = pool.backends.first()
    r = operator_api.post(f"/api/v1/backends/{b.pk}/weight/", {"reason": "canary", "weight": 25}, format="json")
    assert r.status_code == 202
    assert operator_api.get(f"/api/v1/backends/{b.pk}/").json()["effective_weight"] == 25
