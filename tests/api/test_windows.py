"""Maintenance that ends by itself: a drain or maintenance with a start ahead (`not_before`) and an
end (`expires_at`). The scheduler starts it (judged again by the guard), returns what it still
holds to service at the end (audited as system:scheduler), and an end can be extended with a reason."""

from __future__ import annotations

import datetime
from typing import Any

from django.utils import timezone
from rest_framework.test import APIClient

from steering.models import Backend, Change, Operation
from steering.services.windows import sweep
from tests import factories as f

API = "/api/v1"


def at(seconds: float) -> datetime.datetime:
    return timezone.now() + datetime.timedelta(seconds=seconds)


def post(api: APIClient, url: str, **body: Any) -> Any:
    return api.post(f"{API}/{url}", {"reason": "kernel upgrade", **body}, format="json")


def test_a_drain_with_an_end_returns_to_service_by_itself_as_the_scheduler(operator_api: APIClient) -> None:
    pool = f.fleet(3, capacity_rps=1000, expected_rps=100)
    backend = pool.backends.first()
    answer = post(operator_api, f"backends/{backend.pk}/drain/", grace_seconds=0, expires_at=at(3600).isoformat())
    assert answer.status_code == 202, answer.content
    op_id = answer.json()["operation"]["id"]
    assert answer.json()["operation"]["expires_at"] is not None
    assert Backend.objects.get(pk=backend.pk).admin_state == "drained"
    assert sweep(now=at(1800)) == {"windows_started": 0, "windows_ended": 0}
    assert sweep(now=at(3601))["windows_ended"] == 1
    assert Backend.objects.get(pk=backend.pk).admin_state == "ready"
    undrain = Change.objects.get(action="backend.undrain", object_id=backend.pk)
    assert undrain.actor_name == "system:scheduler" and f"operation {op_id}" in undrain.reason
    assert Operation.objects.get(pk=op_id).expired_at is not None
    assert Change.objects.filter(action="operation.expire", object_id=op_id).count() == 1
    assert sweep(now=at(7200))["windows_ended"] == 0  # once


def test_a_scheduled_maintenance_starts_at_its_time_and_the_calendar_lists_it(operator_api: APIClient,
                                                                              viewer_api: APIClient) -> None:
    pool = f.fleet(3, capacity_rps=1000, expected_rps=100)
    backend = pool.backends.first()
    answer = post(operator_api, f"backends/{backend.pk}/maintenance/", not_before=at(3600).isoformat(),
                  expires_at=at(7200).isoformat())
    assert answer.status_code == 202, answer.content
    op = answer.json()["operation"]
    assert op["status"] == "scheduled" and Backend.objects.get(pk=backend.pk).admin_state == "ready"
    calendar = viewer_api.get(f"{API}/operations/?window=true").json()["results"]
    assert [o["id"] for o in calendar] == [op["id"]]
    assert Change.objects.get(action="operation.schedule").actor_name == operator_api.user.username
    sweep(now=at(60))
    assert Operation.objects.get(pk=op["id"]).status == "scheduled"
    assert sweep(now=at(3601))["windows_started"] == 1
    assert Backend.objects.get(pk=backend.pk).admin_state == "maint"
    started = Change.objects.get(action="backend.maintenance", object_id=backend.pk)
    assert started.actor_name == "system:scheduler" and started.reason.startswith("scheduled by ")
    assert Operation.objects.get(pk=op["id"]).status in ("succeeded", "running")
    sweep(now=at(7201))
    assert Backend.objects.get(pk=backend.pk).admin_state == "ready"
    assert viewer_api.get(f"{API}/operations/?window=true").json()["results"] == []


def test_a_start_the_guard_refuses_when_it_is_due_fails_and_says_why(operator_api: APIClient) -> None:
    pool = f.fleet(2, capacity_rps=1000, expected_rps=100)
    first, second = pool.backends.order_by("pk")
    op_id = post(operator_api, f"backends/{first.pk}/drain/", not_before=at(600).isoformat()).json()["operation"]["id"]
    Backend.objects.filter(pk=second.pk).update(admin_state="maint")  # meanwhile the other one went away
    sweep(now=at(601))
    op = Operation.objects.get(pk=op_id)
    assert op.status == "failed" and op.result["error"] == "capacity_guard"
    assert op.result["when"] == "at its scheduled start"
    assert Backend.objects.get(pk=first.pk).admin_state == "ready"


def test_an_end_is_extended_with_a_reason_and_only_a_window_still_open(operator_api: APIClient) -> None:
    backend = f.fleet(3, capacity_rps=1000, expected_rps=100).backends.first()
    op_id = post(operator_api, f"backends/{backend.pk}/maintenance/",
                 expires_at=at(600).isoformat()).json()["operation"]["id"]
    extended = post(operator_api, f"operations/{op_id}/extend/", expires_at=at(3600).isoformat(),
                    reason="the upgrade needs longer")
    assert extended.status_code == 200, extended.content
    change = Change.objects.get(action="operation.extend", object_id=op_id)
    assert change.reason == "the upgrade needs longer" and change.before["expires_at"] != change.after["expires_at"]
    sweep(now=at(601))
    assert Backend.objects.get(pk=backend.pk).admin_state == "maint"  # the old end passed: nothing happened
    assert post(operator_api, f"operations/{op_id}/extend/", expires_at=at(-5).isoformat()).status_code == 400
    assert operator_api.post(f"{API}/operations/{op_id}/extend/", {"expires_at": at(900).isoformat()},
                             format="json").status_code == 400  # no reason
    other = post(operator_api, f"backends/{backend.pk}/undrain/").json()["operation"]["id"]
    refused = post(operator_api, f"operations/{other}/extend/", expires_at=at(900).isoformat())
    assert refused.status_code == 409 and refused.json()["code"] == "no_open_window"


def test_an_undrain_before_the_end_closes_the_window(operator_api: APIClient) -> None:
    backend = f.fleet(3, capacity_rps=1000, expected_rps=100).backends.first()
    op_id = post(operator_api, f"backends/{backend.pk}/maintenance/",
                 expires_at=at(600).isoformat()).json()["operation"]["id"]
    assert [o["id"] for o in operator_api.get(f"{API}/operations/?window=true").json()["results"]] == [op_id]
    post(operator_api, f"backends/{backend.pk}/undrain/", reason="done early")
    assert operator_api.get(f"{API}/operations/?window=true").json()["results"] == []
    ended = Change.objects.get(action="operation.expire", object_id=op_id)
    assert ended.actor_name == operator_api.user.username and ended.after["ended"] == "early"
    assert sweep(now=at(601))["windows_ended"] == 0


def test_a_window_returns_only_what_it_still_holds(operator_api: APIClient, admin_api: APIClient) -> None:
    backend = f.fleet(3, capacity_rps=1000, expected_rps=100).backends.first()
    post(operator_api, f"backends/{backend.pk}/maintenance/", expires_at=at(600).isoformat())
    post(admin_api, f"backends/{backend.pk}/undrain/", reason="done early")
    later = post(admin_api, f"backends/{backend.pk}/maintenance/", reason="a second job, no end")
    assert later.status_code == 202, later.content
    sweep(now=at(601))
    assert Backend.objects.get(pk=backend.pk).admin_state == "maint"  # the second maintenance stands
    assert not Change.objects.filter(actor_name="system:scheduler", object_type="backend").exists()


def test_a_scheduled_operation_can_be_aborted_before_it_starts(operator_api: APIClient) -> None:
    backend = f.fleet(3, capacity_rps=1000, expected_rps=100).backends.first()
    op_id = post(operator_api, f"backends/{backend.pk}/drain/", not_before=at(600).isoformat()).json()["operation"]["id"]
    assert post(operator_api, f"operations/{op_id}/abort/", reason="cancelled").status_code == 200
    sweep(now=at(601))
    assert Operation.objects.get(pk=op_id).status == "aborted"
    assert Backend.objects.get(pk=backend.pk).admin_state == "ready"


def test_windows_that_cannot_be_are_400_and_change_nothing(operator_api: APIClient) -> None:
    pool = f.fleet(3, capacity_rps=1000, expected_rps=100)
    backend = pool.backends.first()
    cases = [
        ("backends", backend.pk, {"expires_at": at(-60).isoformat()}, "expires_at"),
        ("backends", backend.pk, {"not_before": at(3600).isoformat(), "expires_at": at(1800).isoformat()}, "expires_at"),
        ("backends", backend.pk, {"not_before": at(40 * 86400).isoformat()}, "not_before"),
        ("backends", backend.pk, {"expires_at": "next tuesday"}, "expires_at"),
        ("pops", pool.pop_id, {"layered": True, "expires_at": at(-60).isoformat()}, "expires_at"),
        ("pops", pool.pop_id, {"layered": True, "not_before": at(600).isoformat(), "expires_at": at(60).isoformat()},
         "expires_at"),
    ]
    for kind, pk, body, field in cases:
        answer = post(operator_api, f"{kind}/{pk}/drain/", **body)
        assert answer.status_code == 400, (body, answer.content)
        errors = answer.json().get("errors") or answer.json()
        assert field in errors, (body, errors)
    assert not Operation.objects.exists()
    assert Backend.objects.get(pk=backend.pk).admin_state == "ready"


def test_the_dashboard_is_told_the_end_to_propose(viewer_api: APIClient, settings: Any) -> None:
    settings.STEERING_UI_DRAIN_EXPIRY_HOURS = 72
    assert viewer_api.get(f"{API}/me/").json()["drain_expiry_hours"] == 72


def test_the_sweeper_task_runs_the_windows_with_its_other_timers(db: Any) -> None:
    from steering.tasks.sweeper import sweep_due

    result = sweep_due()
    assert result["windows_started"] == 0 and result["windows_ended"] == 0 and "drains_completed" in result
