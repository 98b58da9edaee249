"""The freeze switch: while on, every change through the API is refused (409 `frozen`, naming who
froze and why) except an admin's with a reason; turning it on and off is audited; agents and
reads go on."""

from __future__ import annotations

from typing import Any

from rest_framework.test import APIClient

from steering.models import Backend, Change, Region
from tests import factories as f
from tests.conftest import agent_client

API = "/api/v1"


def freeze(api: APIClient, frozen: bool, reason: str = "change freeze for the holidays") -> Any:
    return api.post(f"{API}/freeze/", {"frozen": frozen, "reason": reason}, format="json")


def drain(api: APIClient, backend: Backend, reason: str = "kernel upgrade") -> Any:
    return api.post(f"{API}/backends/{backend.pk}/drain/", {"reason": reason, "grace_seconds": 5}, format="json")


def test_while_frozen_operators_are_refused_and_told_who_froze_and_why(admin_api: APIClient,
                                                                      operator_api: APIClient) -> None:
    backend = f.fleet(3, capacity_rps=1000, expected_rps=100).backends.first()
    answer = freeze(admin_api, True)
    assert answer.status_code == 200, answer.content
    assert answer.json()["frozen"] is True and answer.json()["by"] == admin_api.user.username

    refused = drain(operator_api, backend)
    assert refused.status_code == 409, refused.content
    body = refused.json()
    assert body["code"] == "frozen"
    assert body["freeze"]["reason"] == "change freeze for the holidays" and body["freeze"]["by"]
    backend.refresh_from_db()
    assert backend.admin_state == "ready"

    assert freeze(admin_api, False, "holidays over").status_code == 200
    assert drain(operator_api, backend).status_code == 202


def test_an_admin_still_acts_with_a_reason_and_only_with_one(admin_api: APIClient) -> None:
    backend = f.fleet(3, capacity_rps=1000, expected_rps=100).backends.first()
    assert freeze(admin_api, True).status_code == 200
    assert drain(admin_api, backend).status_code == 202
    # A topology edit carries its reason in X-Change-Reason.
    data = {"slug": "ap-south", "name": "Asia Pacific (South)", "latitude": 17.0, "longitude": 77.0}
    without = admin_api.post(f"{API}/regions/", data, format="json")
    assert without.status_code == 409 and without.json()["code"] == "frozen"
    assert not Region.objects.filter(slug="ap-south").exists()
    created = admin_api.post(f"{API}/regions/", data, format="json", HTTP_X_CHANGE_REASON="new region, approved")
    assert created.status_code == 201, created.content


def test_turning_it_on_and_off_is_audited_and_refused_twice(admin_api: APIClient) -> None:
    assert freeze(admin_api, True, "incident 4711").status_code == 200
    again = freeze(admin_api, True, "incident 4711")
    assert again.status_code == 409 and again.json()["code"] == "already_frozen"
    assert freeze(admin_api, False, "incident over").status_code == 200
    rows = list(Change.objects.filter(action__startswith="changefreeze.").order_by("pk"))
    assert [(r.action, r.reason, r.actor_name) for r in rows] == [
        ("changefreeze.on", "incident 4711", admin_api.user.username),
        ("changefreeze.off", "incident over", admin_api.user.username)]
    assert rows[0].after["frozen"] is True and rows[1].after["frozen"] is False


def test_only_admins_switch_it_everyone_reads_it_and_bad_input_is_a_400(
        admin_api: APIClient, operator_api: APIClient, viewer_api: APIClient) -> None:
    assert freeze(operator_api, True).status_code == 403
    assert viewer_api.get(f"{API}/freeze/").json()["frozen"] is False
    missing = admin_api.post(f"{API}/freeze/", {"frozen": True}, format="json")
    assert missing.status_code == 400 and "reason" in missing.json()["errors"]
    blank = admin_api.post(f"{API}/freeze/", {"frozen": "sideways", "reason": " "}, format="json")
    assert blank.status_code == 400 and "frozen" in blank.json()["errors"]
    assert not Change.objects.filter(action__startswith="changefreeze.").exists()


def test_agents_and_reads_go_on_while_frozen(admin: Any, admin_api: APIClient, viewer_api: APIClient) -> None:
    pool = f.fleet(2)
    assert freeze(admin_api, True).status_code == 200
    agent = agent_client(admin, pool.pop)
    desired = agent.get(f"{API}/agent/desired/", {"layer": "local"})
    assert desired.status_code == 200
    ack = agent.post(f"{API}/agent/ack/", {"layer": "local", "version": desired.json()["version"]}, format="json")
    assert ack.status_code == 200, ack.content
    assert viewer_api.get(f"{API}/backends/").status_code == 200


def test_a_dry_run_is_not_a_change_and_is_answered_while_frozen(admin_api: APIClient, operator_api: APIClient) -> None:
    backend = f.fleet(3, capacity_rps=1000, expected_rps=100).backends.first()
    assert freeze(admin_api, True).status_code == 200
    preview = operator_api.post(f"{API}/backends/{backend.pk}/drain/",
                                {"reason": "what if", "grace_seconds": 5, "dry_run": True}, format="json")
    assert preview.status_code == 200, preview.content
    assert preview.json()["verdict"] == "safe"
    backend.refresh_from_db()
    assert backend.admin_state == "ready"
