"""ETag / If-None-Match / If-Match (412 when stale), and Idempotency-Key replays."""

from __future__ import annotations

from steering.models import Change, Operation, Region
from tests import factories as f


def test_it_sets_an_etag_and_answers_304_when_unchanged(viewer_api):
    region = f.region()
    r = viewer_api.get(f"/api/v1/regions/{region.pk}/")
    etag = r["ETag"]
    assert etag == f'"region-{region.pk}-r1"'
    assert viewer_api.get(f"/api/v1/regions/{region.pk}/", HTTP_IF_NONE_MATCH=etag).status_code == 304


def test_it_sets_content_etags_on_lists_and_the_topology(viewer_api):
    f.fleet(2)
    first = viewer_api.get("/api/v1/backends/")
    assert first.has_header("ETag")
    assert viewer_api.get("/api/v1/backends/", HTTP_IF_NONE_MATCH=first["ETag"]).status_code == 304


def test_it_refuses_a_stale_write_with_412_and_changes_nothing(admin_api):
    region = f.region(name="old")
    etag = admin_api.get(f"/api/v1/regions/{region.pk}/")["ETag"]
    ok = admin_api.patch(f"/api/v1/regions/{region.pk}/", {"name": "first"}, format="json", HTTP_IF_MATCH=etag)
    assert ok.status_code == 200
    assert ok["ETag"] == f'"region-{region.pk}-r2"'
    stale = admin_api.patch(f"/api/v1/regions/{region.pk}/", {"name": "second"}, format="json", HTTP_IF_MATCH=etag)
    assert stale.status_code == 412
    assert stale.json()["code"] == "stale"
    assert Region.objects.get(pk=region.pk).name == "first"
    assert Change.objects.filter(action="region.update").count() == 1


def test_it_checks_if_match_on_actions_and_delete(operator_api, admin_api):
    b = f.fleet(4).backends.first()
    wrong = f'"backend-{b.pk}-r99"'
    r = operator_api.post(f"/api/v1/backends/{b.pk}/drain/", {"reason": "x"}, format="json", HTTP_IF_MATCH=wrong)
    assert r.status_code == 412
    b.refresh_from_db()
    assert b.admin_state == "ready"
    region = f.region()
    assert admin_api.delete(f"/api/v1/regions/{region.pk}/", HTTP_IF_MATCH=f'"region-{region.pk}-r7"').status_code == 412
    assert Region.objects.filter(pk=region.pk).exists()
    right = operator_api.get(f"/api/v1/backends/{b.pk}/")["ETag"]
    assert operator_api.post(f"/api/v1/backends/{b.pk}/drain/", {"reason": "x"}, format="json",
                             HTTP_IF_MATCH=right).status_code == 202


def test_it_refuses_an_etag_of_another_object(admin_api):
    a, other = f.region(), f.region()
    r = admin_api.patch(f"/api/v1/regions/{a.pk}/", {"name": "x"}, format="json", HTTP_IF_MATCH=f'"region-{other.pk}-r1"')
    assert r.status_code == 412


def test_it_replays_the_first_answer_for_a_retried_idempotency_key(operator_api):
    b = f.fleet(4).backends.first()
    body = {"reason": "deploy", "grace_seconds": 60}
    first = operator_api.post(f"/api/v1/backends/{b.pk}/drain/", body, format="json", HTTP_IDEMPOTENCY_KEY="deploy-42")
    again = operator_api.post(f"/api/v1/backends/{b.pk}/drain/", body, format="json", HTTP_IDEMPOTENCY_KEY="deploy-42")
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert Operation.objects.count() == 1
    assert Change.objects.filter(action="backend.drain").count() == 1


def test_it_refuses_a_reused_key_with_a_different_body(operator_api):
    b = f.fleet(4).backends.first()
    operator_api.post(f"/api/v1/backends/{b.pk}/drain/", {"reason": "a"}, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    r = operator_api.post(f"/api/v1/backends/{b.pk}/drain/", {"reason": "b"}, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    assert r.status_code == 422
    assert r.json()["code"] == "idempotency_key_reused"


def test_it_does_not_store_a_refusal_so_a_fixed_retry_can_succeed(operator_api):
    pool = f.fleet(4, capacity_rps=1000, expected_rps=3600)
    b = pool.backends.first()
    body = {"reason": "deploy"}
    assert operator_api.post(f"/api/v1/backends/{b.pk}/drain/", body, format="json", HTTP_IDEMPOTENCY_KEY="k2").status_code == 409
    pool.expected_rps = 1000
    pool.save()
    assert operator_api.post(f"/api/v1/backends/{b.pk}/drain/", body, format="json", HTTP_IDEMPOTENCY_KEY="k2").status_code == 202


def test_it_rejects_a_malformed_idempotency_key(operator_api):
    b = f.fleet(4).backends.first()
    r = operator_api.post(f"/api/v1/backends/{b.pk}/drain/", {"reason": "a"}, format="json", HTTP_IDEMPOTENCY_KEY="x" * 200)
    assert r.status_code == 400
    b.refresh_from_db()
    assert b.admin_state == "ready"
