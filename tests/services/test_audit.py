"""One audit test per action: the Change rows an action writes, and only those.

Every action goes through the API with an X-Request-ID, so the rows it wrote are exactly the
rows carrying that request id (setup writes the ORM directly, and the personas' tokens are
issued by `system:test` with no request id).
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from steering.models import ApiToken, Backend, Change, Operation, Pool, Region
from steering.models.tokens import hash_token
from steering.services import actions
from steering.services.context import Actor
from steering.services.operations import sweep_due
from tests import factories as f
from tests.conftest import token_client

pytestmark = pytest.mark.django_db

RID = "req-abc-123"


def rows(request_id: str = RID) -> list[Change]:
    return list(Change.objects.filter(request_id=request_id).order_by("id"))


def only(request_id: str = RID, **filters: Any) -> Change:
    found = list(Change.objects.filter(request_id=request_id, **filters))
    assert len(found) == 1, [(c.action, c.object_type, c.object_id) for c in found]
    return found[0]


def post(client: APIClient, url: str, body: dict[str, Any], request_id: str = RID, **headers: str) -> Any:
    return client.post(url, body, format="json", HTTP_X_REQUEST_ID=request_id, **headers)


def assert_by(change: Change, user: Any, source: str = "api") -> None:
    assert change.actor_id == user.pk
    assert change.actor_name == user.username
    assert change.source == source
    assert change.request_id == RID


def pool_with_backup(backends: int) -> Pool:
    """A pool whose traffic has somewhere to go when the whole pool drains: its backup pool."""
    pool = f.fleet(backends)
    backup = f.pool(pool.pop, pool.service)
    f.backend(backup, capacity_rps=10000)
    pool.backup_pool = backup
    pool.save(update_fields=["backup_pool"])
    return pool


def system_drain(target: Any, **kw: Any) -> Operation:
    op, _ = actions.do_drain(target, actor=Actor.system("setup"), reason="setup drain", **kw)
    assert op is not None
    return op


# --- topology (admin) -----------------------------------------------------------------------


def test_it_audits_creating_a_region(admin_api, admin):
    r = post(admin_api, "/api/v1/regions/", {"slug": "eu-north", "name": "Europe (North)", "latitude": 59.3,
                                              "longitude": 18.1}, HTTP_X_CHANGE_REASON="new region for Stockholm")
    assert r.status_code == 201, r.content
    assert r["X-Request-ID"] == RID
    region = Region.objects.get(slug="eu-north")
    change = only()
    assert_by(change, admin)
    assert change.action == "region.create"
    assert change.reason == "new region for Stockholm"
    assert (change.object_type, change.object_id, change.object_repr) == ("region", region.pk, "eu-north")
    assert change.before is None
    assert change.after["slug"] == "eu-north"
    assert change.after["latitude"] == 59.3
    assert change.after["admin_state"] == "ready"
    assert change.operation_id is None
    assert change.forced is False


def test_it_audits_updating_a_region(admin_api, admin):
    region = f.region(slug="eu-north", name="Europe North")
    r = admin_api.patch(f"/api/v1/regions/{region.pk}/", {"name": "Europe (Nordics)"}, format="json",
                        HTTP_X_REQUEST_ID=RID, HTTP_X_CHANGE_REASON="rename per naming guide")
    assert r.status_code == 200, r.content
    assert r["X-Request-ID"] == RID
    change = only()
    assert_by(change, admin)
    assert change.action == "region.update"
    assert change.reason == "rename per naming guide"
    assert (change.object_type, change.object_id) == ("region", region.pk)
    assert change.before["name"] == "Europe North"
    assert change.after["name"] == "Europe (Nordics)"
    assert change.after["revision"] == change.before["revision"] + 1


def test_it_audits_deleting_a_region(admin_api, admin):
    region = f.region(slug="eu-gone", name="Going away")
    pk = region.pk
    r = admin_api.delete(f"/api/v1/regions/{pk}/", HTTP_X_REQUEST_ID=RID, HTTP_X_CHANGE_REASON="region closed")
    assert r.status_code == 204, r.content
    assert r["X-Request-ID"] == RID
    assert not Region.objects.filter(pk=pk).exists()
    change = only()
    assert_by(change, admin)
    assert change.action == "region.delete"
    assert change.reason == "region closed"
    # The history outlives the object: type, id and repr are copies, not a foreign key.
    assert (change.object_type, change.object_id, change.object_repr) == ("region", pk, "eu-gone")
    assert change.before["slug"] == "eu-gone"
    assert change.after is None


# --- backend actions ------------------------------------------------------------------------


def test_it_audits_a_backend_drain(operator_api, operator):
    pool = f.fleet(4)
    b = pool.backends.first()
    r = post(operator_api, f"/api/v1/backends/{b.pk}/drain/", {"reason": "deploy 1.4.2", "grace_seconds": 30})
    assert r.status_code == 202, r.content
    assert r["X-Request-ID"] == RID
    op = Operation.objects.get(pk=r.json()["operation"]["id"])
    change = only()
    assert_by(change, operator)
    assert change.action == "backend.drain"
    assert change.reason == "deploy 1.4.2"
    assert (change.object_type, change.object_id, change.object_repr) == ("backend", b.pk, b.name)
    assert (change.related_type, change.related_id, change.related_repr) == ("pool", pool.pk, str(pool))
    assert change.operation_id == op.pk
    assert change.before["admin_state"] == "ready"
    assert change.before["drain_deadline"] is None
    assert change.after["admin_state"] == "draining"
    assert change.after["operation_id"] == op.pk
    deadline = datetime.datetime.fromisoformat(change.after["drain_deadline"])
    assert deadline == op.deadline
    started = datetime.datetime.fromisoformat(change.after["drain_started_at"])
    assert deadline - started == datetime.timedelta(seconds=30)
    assert change.forced is False
    assert (op.actor_id, op.source, op.request_id, op.reason) == (operator.pk, "api", RID, "deploy 1.4.2")


def test_it_audits_drain_completion_by_the_sweeper(operator_api):
    pool = f.fleet(4)
    b = pool.backends.first()
    r = post(operator_api, f"/api/v1/backends/{b.pk}/drain/", {"reason": "deploy", "grace_seconds": 30})
    assert r.status_code == 202, r.content
    op = Operation.objects.get(pk=r.json()["operation"]["id"])
    before_sweep = Change.objects.count()

    result = sweep_due(now=op.deadline + datetime.timedelta(seconds=1))

    assert result["drains_completed"] == 1
    new = list(Change.objects.order_by("id")[before_sweep:])
    assert [c.action for c in new] == ["backend.drained"]
    change = new[0]
    assert change.actor_id is None
    assert change.actor_name == "system:sweeper"
    assert change.source == "system"
    assert change.reason == "drain deadline reached"
    assert change.operation_id == op.pk
    assert (change.object_type, change.object_id, change.related_type, change.related_id) == ("backend", b.pk, "pool", pool.pk)
    assert change.before["admin_state"] == "draining"
    assert change.before["drain_deadline"] is not None
    assert change.after["admin_state"] == "drained"
    assert change.after["drain_deadline"] is None
    op.refresh_from_db()
    assert op.status == "succeeded"


def test_it_audits_a_pool_drain_completion_by_the_sweeper():
    pool = pool_with_backup(3)
    op = system_drain(pool, grace_seconds=10)
    before_sweep = Change.objects.count()

    sweep_due(now=op.deadline + datetime.timedelta(seconds=1))

    new = list(Change.objects.order_by("id")[before_sweep:])
    assert sorted(c.action for c in new) == ["backend.drained"] * 3 + ["pool.drained"]
    assert {c.actor_name for c in new} == {"system:sweeper"}
    assert {c.operation_id for c in new} == {op.pk}
    pool_change = next(c for c in new if c.object_type == "pool")
    assert pool_change.object_id == pool.pk
    assert (pool_change.before["admin_state"], pool_change.after["admin_state"]) == ("draining", "drained")
    pool.refresh_from_db()
    assert pool.admin_state == "drained"


def test_it_audits_an_undrain(operator_api, operator):
    pool = f.fleet(4)
    b = pool.backends.first()
    drain_op = system_drain(b, grace_seconds=60)
    r = post(operator_api, f"/api/v1/backends/{b.pk}/undrain/", {"reason": "deploy rolled back"})
    assert r.status_code == 202, r.content
    assert r["X-Request-ID"] == RID
    op = Operation.objects.get(pk=r.json()["operation"]["id"])
    change = only(action="backend.undrain")
    assert_by(change, operator)
    assert change.reason == "deploy rolled back"
    assert (change.object_type, change.object_id, change.related_type, change.related_id) == ("backend", b.pk, "pool", pool.pk)
    assert change.operation_id == op.pk
    assert change.before["admin_state"] == "draining"
    assert change.before["drain_deadline"] is not None
    assert change.before["operation_id"] == drain_op.pk
    assert change.after["admin_state"] == "ready"
    assert change.after["drain_deadline"] is None
    assert change.after["ready_since"] is not None
    assert change.after["operation_id"] == op.pk
    drain_op.refresh_from_db()
    assert drain_op.status == "aborted"
    # The drain it interrupted ends audited too, saying what superseded it.
    aborted = only(action="operation.abort")
    assert_by(aborted, operator)
    assert (aborted.object_type, aborted.object_id) == ("operation", drain_op.pk)
    assert aborted.after["result"]["superseded_by"] == op.pk


def test_it_audits_maintenance(operator_api, operator):
    pool = f.fleet(4)
    b = pool.backends.first()
    r = post(operator_api, f"/api/v1/backends/{b.pk}/maintenance/", {"reason": "replace disk"})
    assert r.status_code == 202, r.content
    assert r["X-Request-ID"] == RID
    op = Operation.objects.get(pk=r.json()["operation"]["id"])
    assert (op.kind, op.status) == ("maintenance", "succeeded")
    change = only()
    assert_by(change, operator)
    assert change.action == "backend.maintenance"
    assert change.reason == "replace disk"
    assert (change.object_type, change.object_id, change.related_type, change.related_id) == ("backend", b.pk, "pool", pool.pk)
    assert change.operation_id == op.pk
    assert (change.before["admin_state"], change.after["admin_state"]) == ("ready", "maint")


def test_it_audits_a_weight_change(operator_api, operator):
    pool = f.fleet(4)
    b = pool.backends.first()
    r = post(operator_api, f"/api/v1/backends/{b.pk}/weight/", {"reason": "canary at half", "weight": 50})
    assert r.status_code == 202, r.content
    assert r["X-Request-ID"] == RID
    op = Operation.objects.get(pk=r.json()["operation"]["id"])
    assert op.kind == "weight"
    change = only()
    assert_by(change, operator)
    assert change.action == "backend.weight"
    assert change.reason == "canary at half"
    assert (change.object_type, change.object_id, change.related_type, change.related_id) == ("backend", b.pk, "pool", pool.pk)
    assert change.operation_id == op.pk
    assert (change.before["weight"], change.after["weight"]) == (100, 50)
    assert change.before["admin_state"] == change.after["admin_state"] == "ready"


# --- aggregate actions ----------------------------------------------------------------------


def test_it_audits_a_pool_drain_as_one_operation(operator_api, operator):
    pool = pool_with_backup(4)
    r = post(operator_api, f"/api/v1/pools/{pool.pk}/drain/", {"reason": "move pool to new rack", "grace_seconds": 20})
    assert r.status_code == 202, r.content
    assert r["X-Request-ID"] == RID
    op_id = r.json()["operation"]["id"]
    assert Operation.objects.count() == 1
    changes = rows()
    assert sorted(c.action for c in changes) == ["backend.drain"] * 4 + ["pool.drain"]
    for change in changes:
        assert_by(change, operator)
        assert change.operation_id == op_id
        assert change.reason == "move pool to new rack"
    backend_changes = [c for c in changes if c.object_type == "backend"]
    assert {c.object_id for c in backend_changes} == set(pool.backends.values_list("pk", flat=True))
    assert {(c.related_type, c.related_id) for c in backend_changes} == {("pool", pool.pk)}
    assert all((c.before["admin_state"], c.after["admin_state"]) == ("ready", "draining") for c in backend_changes)
    pool_change = next(c for c in changes if c.object_type == "pool")
    assert pool_change.object_id == pool.pk
    assert (pool_change.before["admin_state"], pool_change.after["admin_state"]) == ("ready", "draining")
    # One action, one state version: the whole drain is one delta.
    assert len({c.version for c in changes}) == 1


def _two_sites(split_regions: bool) -> tuple[Any, Any, Any]:
    """Two PoPs serving one service, each able to carry both PoPs' load."""
    svc = f.service()
    r1 = f.region()
    r2 = f.region() if split_regions else r1
    pop_a, pop_b = f.pop(r1), f.pop(r2)
    for p in (pop_a, pop_b):
        pl = f.pool(p, svc, expected_rps=1000)
        for _ in range(2):
            f.backend(pl, capacity_rps=2000)
    return pop_a, pop_b, r1


def test_it_audits_a_pop_drain(operator_api, operator):
    pop_a, _, _ = _two_sites(split_regions=False)
    r = post(operator_api, f"/api/v1/pops/{pop_a.pk}/drain/", {"reason": "fibre cut at bom1", "grace_seconds": 20})
    assert r.status_code == 202, r.content
    op_id = r.json()["operation"]["id"]
    changes = rows()
    assert sorted(c.action for c in changes) == ["backend.drain"] * 2 + ["pop.drain"]
    assert {c.operation_id for c in changes} == {op_id}
    assert {c.object_id for c in changes if c.object_type == "backend"} == set(
        Backend.objects.filter(pool__pop=pop_a).values_list("pk", flat=True))
    pop_change = next(c for c in changes if c.object_type == "pop")
    assert_by(pop_change, operator)
    assert (pop_change.object_id, pop_change.object_repr) == (pop_a.pk, pop_a.slug)
    assert (pop_change.before["admin_state"], pop_change.after["admin_state"]) == ("ready", "draining")


def test_it_audits_a_region_drain(operator_api, operator):
    _, _, region = _two_sites(split_regions=True)
    r = post(operator_api, f"/api/v1/regions/{region.pk}/drain/", {"reason": "region evacuation drill", "grace_seconds": 20})
    assert r.status_code == 202, r.content
    op_id = r.json()["operation"]["id"]
    changes = rows()
    assert sorted(c.action for c in changes) == ["backend.drain"] * 2 + ["region.drain"]
    assert {c.operation_id for c in changes} == {op_id}
    assert {c.object_id for c in changes if c.object_type == "backend"} == set(
        Backend.objects.filter(pool__pop__region=region).values_list("pk", flat=True))
    region_change = next(c for c in changes if c.object_type == "region")
    assert_by(region_change, operator)
    assert region_change.object_id == region.pk
    assert (region_change.before["admin_state"], region_change.after["admin_state"]) == ("ready", "draining")


def test_it_audits_aborting_an_operation(operator_api, operator):
    pool = pool_with_backup(3)
    op = system_drain(pool, grace_seconds=300)
    r = post(operator_api, f"/api/v1/operations/{op.pk}/abort/", {"reason": "wrong pool"})
    assert r.status_code == 200, r.content
    assert r["X-Request-ID"] == RID
    assert r.json()["status"] == "aborted"
    changes = rows()
    assert sorted(c.action for c in changes if c.object_type != "pool") == ["backend.undrain"] * 3 + ["operation.abort"]
    (pool_change,) = [c for c in changes if c.object_type == "pool"]
    # An abort returns the pool to service: the same action an undrain writes.
    assert pool_change.action == "pool.undrain"
    assert (pool_change.object_id, pool_change.before["admin_state"], pool_change.after["admin_state"]) == (
        pool.pk, "draining", "ready")
    for change in changes:
        assert_by(change, operator)
        assert change.operation_id == op.pk
        assert change.reason == "wrong pool"
    for change in (c for c in changes if c.object_type == "backend"):
        assert (change.before["admin_state"], change.after["admin_state"]) == ("draining", "ready")
        assert change.after["drain_deadline"] is None
        assert (change.related_type, change.related_id) == ("pool", pool.pk)
    abort = next(c for c in changes if c.action == "operation.abort")
    assert (abort.object_type, abort.object_id) == ("operation", op.pk)
    assert abort.before == {"status": "running"}
    assert abort.after["status"] == "aborted"
    assert set(pool.backends.values_list("admin_state", flat=True)) == {"ready"}


def test_it_audits_a_forced_drain_past_the_capacity_guard(operator_api, operator):
    pool = f.fleet(2, capacity_rps=1000, expected_rps=2000)  # one survivor cannot carry 2000 req/s
    b = pool.backends.first()
    r = post(operator_api, f"/api/v1/backends/{b.pk}/drain/",
             {"reason": "kernel panic loop", "force": True, "force_reason": "box is dead anyway, INC-4411"})
    assert r.status_code == 202, r.content
    op = Operation.objects.get(pk=r.json()["operation"]["id"])
    assert op.forced is True
    change = only()
    assert_by(change, operator)
    assert change.action == "backend.drain"
    assert change.forced is True
    assert change.operation_id == op.pk
    assert "kernel panic loop" in change.reason


def test_it_keeps_the_force_reason_in_the_audit_log(operator_api):
    """ARCHITECTURE.md §5: past the guard only with `force` and a reason, audited. The audit log is the
    Change table (append-only, exported to CSV), so the force reason must be in the Change row."""
    pool = f.fleet(2, capacity_rps=1000, expected_rps=2000)
    b = pool.backends.first()
    r = post(operator_api, f"/api/v1/backends/{b.pk}/drain/",
             {"reason": "kernel panic loop", "force": True, "force_reason": "box is dead anyway, INC-4411"})
    assert r.status_code == 202, r.content
    change = only()
    assert change.reason == "kernel panic loop"
    assert change.force_reason == "box is dead anyway, INC-4411"


# --- tokens ---------------------------------------------------------------------------------


def test_it_audits_creating_a_token_without_its_secret(admin_api, admin, operator):
    # Only a superuser issues tokens for someone else (tests/api/test_tokens_auth.py has the refusal).
    admin.is_superuser = True
    admin.save(update_fields=["is_superuser"])
    r = post(admin_api, "/api/v1/tokens/", {"name": "deploy-pipeline", "role": "operator", "user": operator.username},
             HTTP_X_CHANGE_REASON="CI needs to drain during deploys")
    assert r.status_code == 201, r.content
    assert r["X-Request-ID"] == RID
    raw = r.json()["token"]
    token = ApiToken.objects.get(pk=r.json()["id"])
    change = only()
    assert_by(change, admin)
    assert change.action == "token.create"
    assert change.reason == "CI needs to drain during deploys"
    assert (change.object_type, change.object_id) == ("apitoken", token.pk)
    # The actor (admin) and the owner (operator) are both on the row.
    assert (change.related_type, change.related_id) == ("user", operator.pk)
    assert (change.after["user"], change.after["user_id"]) == (operator.username, operator.pk)
    assert change.before is None
    assert change.after["name"] == "deploy-pipeline"
    assert change.after["role"] == "operator"
    everything = json.dumps([change.before, change.after, change.object_repr, change.related_repr, change.reason])
    assert raw not in everything
    assert hash_token(raw) not in everything
    assert "digest" not in change.after


def test_it_audits_revoking_a_token_without_its_secret(admin_api, admin, operator):
    client = token_client(operator)
    token = ApiToken.objects.get(digest=hash_token(client.raw_token))
    r = admin_api.delete(f"/api/v1/tokens/{token.pk}/", HTTP_X_REQUEST_ID=RID, HTTP_X_CHANGE_REASON="laptop stolen")
    assert r.status_code == 200, r.content
    assert r["X-Request-ID"] == RID
    change = only()
    assert_by(change, admin)
    assert change.action == "token.revoke"
    assert change.reason == "laptop stolen"
    assert (change.object_type, change.object_id, change.related_id) == ("apitoken", token.pk, operator.pk)
    assert change.before["revoked_at"] is None
    assert change.after["revoked_at"] is not None
    everything = json.dumps([change.before, change.after, change.object_repr])
    assert client.raw_token not in everything
    assert token.digest not in everything
    # And the token stops working.
    assert client.get("/api/v1/regions/").status_code in (401, 403)


# --- where the change came from ---------------------------------------------------------------


def test_it_records_source_api_and_the_token_whatever_the_client_says_it_is(operator):
    # Before: a token request saying "steerctl" (X-Steering-Client or User-Agent) was recorded as cli.
    # A client can say anything about itself, so the source now follows how it authenticated.
    pool = f.fleet(4)
    b = pool.backends.first()
    cli = token_client(operator, HTTP_X_STEERING_CLIENT="steerctl", HTTP_USER_AGENT="steerctl/0.3")
    token = ApiToken.objects.get(digest=hash_token(cli.raw_token))
    r = post(cli, f"/api/v1/backends/{b.pk}/drain/", {"reason": "deploy", "grace_seconds": 30})
    assert r.status_code == 202, r.content
    change = only()
    assert_by(change, operator, source="api")
    assert (change.token_id, change.token_name) == (token.pk, token.name)
    assert Operation.objects.get(pk=r.json()["operation"]["id"]).source == "api"


def test_it_records_source_ui_for_a_dashboard_session(operator):
    pool = f.fleet(4)
    b = pool.backends.first()
    browser = APIClient()
    browser.force_login(operator)
    r = post(browser, f"/api/v1/backends/{b.pk}/drain/", {"reason": "deploy", "grace_seconds": 30},
             HTTP_X_STEERING_CLIENT="steerctl")
    assert r.status_code == 202, r.content
    change = only()
    assert_by(change, operator, source="ui")
    assert (change.token_id, change.token_name) == (None, "")


# --- refusals write nothing ---------------------------------------------------------------------


def test_it_writes_no_change_when_the_capacity_guard_refuses(operator_api):
    pool = f.fleet(2, capacity_rps=1000, expected_rps=2000)
    b = pool.backends.first()
    changes_before = Change.objects.count()
    r = post(operator_api, f"/api/v1/backends/{b.pk}/drain/", {"reason": "deploy"})
    assert r.status_code == 409, r.content
    assert r.json()["code"] == "capacity_guard"
    assert r["X-Request-ID"] == RID
    assert Change.objects.count() == changes_before
    assert Operation.objects.count() == 0
    b.refresh_from_db()
    assert b.admin_state == "ready"


def test_it_writes_no_change_for_bad_input(operator_api):
    pool = f.fleet(4)
    b = pool.backends.first()
    changes_before = Change.objects.count()
    no_reason = post(operator_api, f"/api/v1/backends/{b.pk}/drain/", {"reason": "   "})
    bad_weight = post(operator_api, f"/api/v1/backends/{b.pk}/weight/", {"reason": "x", "weight": 999})
    assert no_reason.status_code == 400, no_reason.content
    assert bad_weight.status_code == 400, bad_weight.content
    assert Change.objects.count() == changes_before
    assert Operation.objects.count() == 0


def test_it_writes_no_change_when_a_forced_drain_lacks_a_force_reason(operator_api):
    pool = f.fleet(2, capacity_rps=1000, expected_rps=2000)
    b = pool.backends.first()
    changes_before = Change.objects.count()
    r = post(operator_api, f"/api/v1/backends/{b.pk}/drain/", {"reason": "deploy", "force": True})
    assert r.status_code == 400, r.content
    assert "force_reason" in r.json()["errors"]
    assert Change.objects.count() == changes_before
    assert Operation.objects.count() == 0


# --- after commit -------------------------------------------------------------------------------


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, list[dict[str, Any]]]]:
    calls: list[tuple[int, list[dict[str, Any]]]] = []
    monkeypatch.setattr("steering.services.effects.publish_after_commit",
                        lambda version, deltas: calls.append((version, list(deltas))))
    return calls


def test_it_publishes_once_per_action_only_after_commit(operator_api, published, django_capture_on_commit_callbacks):
    pool = f.fleet(4)
    first, second = list(pool.backends.order_by("pk"))[:2]
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        r1 = post(operator_api, f"/api/v1/backends/{first.pk}/drain/", {"reason": "deploy", "grace_seconds": 30},
                  request_id="req-one")
        r2 = post(operator_api, f"/api/v1/backends/{second.pk}/weight/", {"reason": "canary", "weight": 50},
                  request_id="req-two")
        assert (r1.status_code, r2.status_code) == (202, 202)
        # Still inside the transaction: nothing has been sent yet.
        assert published == []
    assert len(callbacks) == 2
    drain_change = only("req-one")
    weight_change = only("req-two")
    assert [v for v, _ in published] == [drain_change.version, weight_change.version]
    assert weight_change.version > drain_change.version
    deltas = [(d["op"], d["type"], d["id"]) for d in published[0][1]]
    assert ("upsert", "backend", first.pk) in deltas
    assert ("upsert", "operation", drain_change.operation_id) in deltas


def test_it_publishes_nothing_for_a_refused_action(operator_api, published, django_capture_on_commit_callbacks):
    pool = f.fleet(2, capacity_rps=1000, expected_rps=2000)
    b = pool.backends.first()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        r = post(operator_api, f"/api/v1/backends/{b.pk}/drain/", {"reason": "deploy"})
    assert r.status_code == 409
    assert callbacks == []
    assert published == []


def test_it_puts_a_sweeper_completion_in_its_own_publish(published, django_capture_on_commit_callbacks):
    pool = f.fleet(4)
    b = pool.backends.first()
    op = system_drain(b, grace_seconds=5)
    with django_capture_on_commit_callbacks(execute=True):
        sweep_due(now=timezone.now() + datetime.timedelta(seconds=6))
    drained = Change.objects.get(action="backend.drained", object_id=b.pk)
    assert [v for v, _ in published] == [drained.version]
    assert drained.operation_id == op.pk


def test_it_never_lets_a_pool_change_its_own_admin_state_by_plain_edit(admin_api):
    """admin_state moves only by actions (audited as such), never by a PATCH."""
    pool = f.fleet(2)
    changes_before = Change.objects.count()
    r = admin_api.patch(f"/api/v1/pools/{pool.pk}/", {"admin_state": "drained"}, format="json")
    assert r.status_code == 400, r.content
    assert Change.objects.count() == changes_before
    assert Pool.objects.get(pk=pool.pk).admin_state == "ready"


def test_audit_actions_come_from_one_table_and_an_improvised_one_is_refused(db) -> None:
    from django.db import transaction

    from steering.choices import LEGACY_CHANGE_ACTIONS, ChangeAction
    from steering.services.audit import ChangeSet

    pool = f.pool()
    with pytest.raises(ValueError, match="not an audit action"), transaction.atomic():
        ChangeSet(Actor.system("test")).record("pool.maint", pool, before=None, after={})
    assert not Change.objects.filter(action="pool.maint").exists()
    # Sites and backends share verbs: the maintenance of anything is "<type>.maintenance".
    assert {"backend.maintenance", "pop.maintenance", "pool.maintenance", "region.maintenance"} <= set(ChangeAction.values)
    assert not LEGACY_CHANGE_ACTIONS & set(ChangeAction.values)
