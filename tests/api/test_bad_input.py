"""Bad input gets a 400 naming the field (412 for a bad If-Match), and changes nothing.

Every case also checks the audit log and the rows it could have touched are exactly as before,
so a half-applied change (a row written, then an error) fails here too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import models
from django.forms.models import model_to_dict
from rest_framework.test import APIClient

from steering.choices import AdminState
from steering.models import (
    VIP,
    AnycastPrefix,
    ApiToken,
    Backend,
    Change,
    ClientNetwork,
    Monitor,
    Operation,
    Pool,
    PoP,
    Region,
    Service,
)
from tests import factories as f

API = "/api/v1"
WATCHED: tuple[type[models.Model], ...] = (
    Region, PoP, Service, VIP, AnycastPrefix, ClientNetwork, Monitor, Pool, Backend, Operation, ApiToken,
)


def fingerprint() -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for model in WATCHED:
        values = list(model.objects.order_by("pk").values())
        for row in values:
            row.pop("last_used_at", None)  # token bookkeeping on use, not a change
        rows[model._meta.label] = values
    rows["changes"] = Change.objects.count()
    return rows


def assert_refused(response: Any, field: str, *, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) >= {"code", "detail"}, body
    if status == 400:
        assert body["code"] == "invalid", body
        assert field in body["errors"], body
        messages = body["errors"][field]
        if isinstance(messages, dict):  # a list field's items: {index: [msgs]}, DRF's nested shape
            messages = [m for item in messages.values() for m in item]
        assert isinstance(messages, list) and messages and all(isinstance(m, str) and m for m in messages), body
    return body  # type: ignore[no-any-return]


# --- create: a valid body, then one bad field ----------------------------------------------


def _region_body() -> dict[str, Any]:
    return {"slug": "new-region", "name": "New region", "latitude": 12.9, "longitude": 77.6}


def _backend_body() -> dict[str, Any]:
    return {"pool": f.pool().pk, "name": "new-app", "address": "127.0.0.42", "port": 8080, "weight": 100}


def _prefix_body() -> dict[str, Any]:
    return {"prefix": "203.0.113.0/24"}


def _client_network_body() -> dict[str, Any]:
    return {"cidr": "198.19.0.0/24", "region": f.region().pk}


def _monitor_body() -> dict[str, Any]:
    return {"slug": "new-mon", "kind": "http", "path": "/healthz", "interval_seconds": 2.0, "timeout_seconds": 1.0}


def _service_body() -> dict[str, Any]:
    return {"slug": "new-svc", "fqdn": "new-svc.example.net", "ttl": 30}


def _vip_body() -> dict[str, Any]:
    return {"service": f.service().pk, "region": f.region().pk, "address": "192.0.2.10", "weight": 100}


def _pop_body() -> dict[str, Any]:
    return {"region": f.region().pk, "slug": "newpop", "name": "New PoP", "city": "Pune",
            "latitude": 18.5, "longitude": 73.8}


def _token_body() -> dict[str, Any]:
    return {"name": "ci-pipeline", "role": "viewer"}


BODIES: dict[str, tuple[Callable[[], dict[str, Any]], type[models.Model]]] = {
    "regions": (_region_body, Region),
    "pops": (_pop_body, PoP),
    "backends": (_backend_body, Backend),
    "prefixes": (_prefix_body, AnycastPrefix),
    "client-networks": (_client_network_body, ClientNetwork),
    "monitors": (_monitor_body, Monitor),
    "services": (_service_body, Service),
    "vips": (_vip_body, VIP),
    "tokens": (_token_body, ApiToken),
}

BAD_CREATES = [
    # (resource, bad fields, the field the error must name)
    ("backends", {"weight": -1}, "weight"),
    ("backends", {"weight": 257}, "weight"),
    ("backends", {"weight": "heavy"}, "weight"),
    ("backends", {"weight": 10**20}, "weight"),
    ("backends", {"port": 0}, "port"),
    ("backends", {"port": 65536}, "port"),
    ("backends", {"port": 10**20}, "port"),
    ("backends", {"address": "300.1.1.1"}, "address"),
    ("backends", {"address": "not an address!"}, "address"),
    ("backends", {"address": "::zz"}, "address"),
    ("backends", {"address": ""}, "address"),
    # Data only: validated against the probe allowlist, never contacted.
    ("backends", {"address": "198.51.100.7"}, "address"),
    ("backends", {"address": "2001:db8::1"}, "address"),
    ("backends", {"pool": 987654}, "pool"),
    ("backends", {"name": "has spaces"}, "name"),
    ("backends", {"admin_state": "drained"}, "admin_state"),
    ("backends", {"health": "up"}, "health"),
    ("backends", {"colour": "red"}, "colour"),
    ("prefixes", {"prefix": "198.51.100.0/33"}, "prefix"),
    ("prefixes", {"prefix": "198.51.100.1/24"}, "prefix"),
    ("prefixes", {"prefix": "banana"}, "prefix"),
    ("prefixes", {"prefix": "198.51.100.0"}, "prefix"),
    ("client-networks", {"cidr": "198.19.0.0/40"}, "cidr"),
    ("client-networks", {"cidr": "198.19.0.1/24"}, "cidr"),
    ("client-networks", {"cidr": "resolvers"}, "cidr"),
    ("client-networks", {"cidr": "2001:db8::/129"}, "cidr"),
    ("regions", {"latitude": 91}, "latitude"),
    ("regions", {"latitude": -90.5}, "latitude"),
    ("regions", {"longitude": -181}, "longitude"),
    ("regions", {"longitude": 180.01}, "longitude"),
    ("regions", {"latitude": "north"}, "latitude"),
    ("regions", {"admin_state": "maint"}, "admin_state"),
    ("pops", {"latitude": 91}, "latitude"),
    ("pops", {"longitude": -181}, "longitude"),
    ("pops", {"announce": "withdraw"}, "announce"),
    ("monitors", {"interval_seconds": 0.5, "timeout_seconds": 0.1}, "interval_seconds"),
    ("monitors", {"interval_seconds": 2.0, "timeout_seconds": 5.0}, "timeout_seconds"),
    ("monitors", {"expected_status": "700"}, "expected_status"),
    ("monitors", {"expected_status": "abc"}, "expected_status"),
    ("monitors", {"expected_status": "399-200"}, "expected_status"),
    ("monitors", {"path": "healthz"}, "path"),
    ("monitors", {"rise": 0}, "rise"),
    ("services", {"ttl": 0}, "ttl"),
    ("services", {"ttl": 86401}, "ttl"),
    ("services", {"fqdn": "no_underscores_allowed.example"}, "fqdn"),
    ("services", {"fqdn": "localhost"}, "fqdn"),
    ("services", {"fqdn": "-bad-.example.net"}, "fqdn"),
    ("services", {"port": 0}, "port"),
    ("services", {"dns_policy": "random"}, "dns_policy"),
    ("vips", {"address": "192.0.2.300"}, "address"),
    ("vips", {"weight": 257}, "weight"),
    ("tokens", {"role": "superuser"}, "role"),
    ("tokens", {"expires_in_days": 0}, "expires_in_days"),
    ("tokens", {"name": ""}, "name"),
    ("tokens", {"user": "no-such-user"}, "user"),
]


@pytest.mark.parametrize("resource", sorted(BODIES))
def test_it_accepts_the_valid_body_each_bad_case_starts_from(resource: str, admin_api: APIClient) -> None:
    make_body, model = BODIES[resource]
    count = model.objects.count()
    response = admin_api.post(f"{API}/{resource}/", make_body(), format="json")
    assert response.status_code == 201, response.content
    assert model.objects.count() == count + 1


@pytest.mark.parametrize(("resource", "bad", "field"), BAD_CREATES,
                         ids=[f"{r}-{'-'.join(f'{k}={v!r}' for k, v in b.items())}" for r, b, _ in BAD_CREATES])
def test_it_refuses_a_bad_create_with_field_errors(resource: str, bad: dict[str, Any], field: str,
                                                   admin_api: APIClient) -> None:
    make_body, model = BODIES[resource]
    body = {**make_body(), **bad}
    before = fingerprint()

    response = admin_api.post(f"{API}/{resource}/", body, format="json")

    assert_refused(response, field)
    assert fingerprint() == before


def test_it_names_unknown_fields(admin_api: APIClient) -> None:
    before = fingerprint()
    response = admin_api.post(f"{API}/regions/", {**_region_body(), "colour": "red"}, format="json")
    body = assert_refused(response, "colour")
    assert body["errors"]["colour"] == ["Unknown field."]
    assert fingerprint() == before


def test_it_explains_that_admin_state_changes_through_actions(admin_api: APIClient) -> None:
    body = {**_backend_body(), "admin_state": "drained"}
    before = fingerprint()
    response = admin_api.post(f"{API}/backends/", body, format="json")
    refused = assert_refused(response, "admin_state")
    assert "drain" in refused["errors"]["admin_state"][0]
    assert fingerprint() == before


@pytest.mark.parametrize("address", ["198.51.100.7", "2001:db8::1", "203.0.113.9"])
def test_it_refuses_a_backend_outside_the_probe_allowlist_and_says_why(address: str, admin_api: APIClient) -> None:
    body = {**_backend_body(), "address": address}
    before = fingerprint()
    response = admin_api.post(f"{API}/backends/", body, format="json")
    refused = assert_refused(response, "address")
    assert "allowlist" in refused["errors"]["address"][0]
    assert fingerprint() == before


@pytest.mark.parametrize("resource", ["regions", "backends", "tokens"])
def test_it_refuses_a_json_list_instead_of_an_object(resource: str, admin_api: APIClient) -> None:
    make_body, _model = BODIES[resource]
    body = [make_body()]
    before = fingerprint()
    response = admin_api.post(f"{API}/{resource}/", body, format="json")
    assert_refused(response, "non_field_errors")
    assert fingerprint() == before


@pytest.mark.parametrize("payload", [b"{", b'{"slug": "x",}', b"\xff\xfe", b'"just a string"', b"NaN", b"null"])
def test_it_refuses_malformed_json_without_a_500(payload: bytes, admin_api: APIClient) -> None:
    before = fingerprint()
    response = admin_api.generic("POST", f"{API}/regions/", payload, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] in ("parse_error", "invalid")
    assert fingerprint() == before


def test_it_refuses_a_form_encoded_body_with_415(admin_api: APIClient) -> None:
    before = fingerprint()
    response = admin_api.post(f"{API}/regions/", "slug=x&name=y", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415, response.content
    assert fingerprint() == before


# --- uniqueness and cross-object rules -----------------------------------------------------


def test_it_refuses_a_duplicate_slug(admin_api: APIClient) -> None:
    existing = f.region()
    before = fingerprint()
    response = admin_api.post(f"{API}/regions/", {**_region_body(), "slug": existing.slug}, format="json")
    assert_refused(response, "slug")
    assert fingerprint() == before


def test_it_refuses_a_duplicate_pool_slug_in_the_same_pop(admin_api: APIClient) -> None:
    existing = f.pool()
    before = fingerprint()
    response = admin_api.post(f"{API}/pools/", {"pop": existing.pop_id, "service": existing.service_id,
                                                "slug": existing.slug}, format="json")
    assert response.status_code == 400, response.content
    errors = response.json()["errors"]
    assert "non_field_errors" in errors or "slug" in errors, errors
    assert fingerprint() == before


def test_it_refuses_a_duplicate_backend_endpoint_in_a_pool(admin_api: APIClient) -> None:
    existing = f.backend()
    before = fingerprint()
    response = admin_api.post(f"{API}/backends/", {"pool": existing.pool_id, "name": "twin",
                                                   "address": existing.address, "port": existing.port}, format="json")
    assert response.status_code == 400, response.content
    assert "non_field_errors" in response.json()["errors"], response.json()
    assert fingerprint() == before


def test_it_refuses_a_backup_pool_in_another_pop(admin_api: APIClient) -> None:
    service = f.service()
    elsewhere = f.pool(f.pop(), service)
    here = f.pop()
    before = fingerprint()
    response = admin_api.post(f"{API}/pools/", {"pop": here.pk, "service": service.pk, "slug": "web",
                                                "backup_pool": elsewhere.pk}, format="json")
    body = assert_refused(response, "backup_pool")
    assert "same PoP" in body["errors"]["backup_pool"][0]
    assert fingerprint() == before


def test_it_refuses_a_backup_pool_in_another_pop_on_patch(admin_api: APIClient) -> None:
    service = f.service()
    pool = f.pool(f.pop(), service)
    elsewhere = f.pool(f.pop(), service)
    before = fingerprint()
    response = admin_api.patch(f"{API}/pools/{pool.pk}/", {"backup_pool": elsewhere.pk}, format="json")
    assert_refused(response, "backup_pool")
    pool.refresh_from_db()
    assert pool.backup_pool_id is None
    assert fingerprint() == before


def test_it_refuses_a_pool_as_its_own_backup(admin_api: APIClient) -> None:
    pool = f.pool()
    before = fingerprint()
    response = admin_api.patch(f"{API}/pools/{pool.pk}/", {"backup_pool": pool.pk}, format="json")
    assert_refused(response, "backup_pool")
    assert fingerprint() == before


def test_it_refuses_an_l4_pool_with_an_l7_match(admin_api: APIClient) -> None:
    pop, service = f.pop(), f.service()
    before = fingerprint()
    response = admin_api.post(f"{API}/pools/", {"pop": pop.pk, "service": service.pk, "slug": "tcp",
                                                "mode": "l4", "match_path_prefix": "/payments"}, format="json")
    assert_refused(response, "mode")
    assert fingerprint() == before


def test_it_refuses_moving_a_backup_pool_away_from_the_pool_it_backs(admin_api: APIClient) -> None:
    """The same-PoP rule must hold from both ends: moving the backup pool breaks it just as well."""
    service = f.service()
    here, elsewhere = f.pop(), f.pop()
    backup = f.pool(here, service)
    primary = f.pool(here, service, backup_pool=backup)
    before = fingerprint()

    response = admin_api.patch(f"{API}/pools/{backup.pk}/", {"pop": elsewhere.pk}, format="json")

    assert response.status_code == 400, response.content
    errors = response.json()["errors"]
    assert "pop" in errors or "backup_pool" in errors or "non_field_errors" in errors, errors
    backup.refresh_from_db()
    primary.refresh_from_db()
    assert backup.pop_id == primary.pop_id == here.pk
    assert fingerprint() == before


# Ids far beyond any row (and beyond a 64-bit integer) are input like any other: 400 or an empty page.
HUGE = 10**20
FILTER_URLS = [
    f"{API}/backends/?pool={HUGE}",
    f"{API}/backends/?pop={HUGE}",
    f"{API}/backends/?region={HUGE}",
    f"{API}/backends/?service={HUGE}",
    f"{API}/backends/?port={HUGE}",
    f"{API}/pools/?pop={HUGE}",
    f"{API}/pools/?region={HUGE}",
    f"{API}/pops/?region={HUGE}",
    f"{API}/vips/?service={HUGE}",
    f"{API}/changes/?object_id={HUGE}",
    f"{API}/changes/?involving_type=backend&involving_id={HUGE}",
    f"{API}/operations/?target_id={HUGE}",
    f"{API}/backends/{HUGE}/",
]


@pytest.mark.parametrize("url", FILTER_URLS)
def test_it_answers_out_of_range_ids_in_filters_without_a_500(url: str, viewer_api: APIClient) -> None:
    f.fleet(2)
    viewer_api.raise_request_exception = False  # see the status a real client would get

    response = viewer_api.get(url)

    assert response.status_code in (200, 400, 404), (url, response.status_code, response.content[:300])
    if response.status_code == 200:
        assert response.json()["count"] == 0
    elif response.status_code == 400:
        field = url.split("?")[1].split("=")[0]
        assert field in response.json()["errors"], response.json()


# --- patches leave the object as it was -----------------------------------------------------


BAD_PATCHES: list[tuple[str, Callable[[], models.Model], dict[str, Any], str]] = [
    ("backends", f.backend, {"weight": 300}, "weight"),
    ("backends", f.backend, {"weight": "heavy"}, "weight"),
    ("backends", f.backend, {"port": 0}, "port"),
    ("backends", f.backend, {"address": "300.1.1.1"}, "address"),
    ("backends", f.backend, {"address": "198.51.100.7"}, "address"),
    ("backends", f.backend, {"admin_state": "maint"}, "admin_state"),
    ("backends", f.backend, {"health": "down"}, "health"),
    ("backends", f.backend, {"drain_deadline": "2030-01-01T00:00:00Z"}, "drain_deadline"),
    ("backends", f.backend, {"colour": "red"}, "colour"),
    ("regions", f.region, {"latitude": 91}, "latitude"),
    ("regions", f.region, {"admin_state": "drained"}, "admin_state"),
    ("pops", f.pop, {"announce": "withdraw"}, "announce"),
    ("pools", f.pool, {"in_panic": True}, "in_panic"),
    ("monitors", f.monitor, {"timeout_seconds": 5.0}, "timeout_seconds"),
    ("monitors", f.monitor, {"interval_seconds": 0.5}, "interval_seconds"),
    ("monitors", f.monitor, {"expected_status": "700"}, "expected_status"),
    ("services", f.service, {"fqdn": "localhost"}, "fqdn"),
    ("services", f.service, {"ttl": 0}, "ttl"),
    ("prefixes", f.prefix, {"prefix": "banana"}, "prefix"),
    ("client-networks", f.client_network, {"cidr": "198.18.0.1/24"}, "cidr"),
    ("vips", f.vip, {"weight": -1}, "weight"),
]


@pytest.mark.parametrize(("resource", "make", "bad", "field"), BAD_PATCHES,
                         ids=[f"{r}-{'-'.join(b)}" for r, _m, b, _f in BAD_PATCHES])
def test_it_refuses_a_bad_patch_and_leaves_the_object_alone(
    resource: str, make: Callable[[], models.Model], bad: dict[str, Any], field: str, admin_api: APIClient
) -> None:
    obj = make()
    as_it_was = model_to_dict(obj)
    before = fingerprint()

    response = admin_api.patch(f"{API}/{resource}/{obj.pk}/", bad, format="json")

    assert_refused(response, field)
    obj.refresh_from_db()
    assert model_to_dict(obj) == as_it_was
    assert fingerprint() == before


def test_it_refuses_a_list_body_on_patch(admin_api: APIClient) -> None:
    backend = f.backend()
    before = fingerprint()
    response = admin_api.patch(f"{API}/backends/{backend.pk}/", [{"port": 9090}], format="json")
    assert_refused(response, "non_field_errors")
    assert fingerprint() == before


# --- actions --------------------------------------------------------------------------------


@pytest.fixture
def fleet_backend(db: Any) -> Backend:
    pool = f.fleet(4, capacity_rps=10_000, expected_rps=100)
    return pool.backends.order_by("pk").first()  # type: ignore[return-value]


BAD_ACTIONS = [
    ("drain", {"reason": "", "grace_seconds": 30}, "reason"),
    ("drain", {"reason": "   ", "grace_seconds": 30}, "reason"),
    ("drain", {"grace_seconds": 30}, "reason"),
    ("drain", {"reason": "x", "grace_seconds": -5}, "grace_seconds"),
    ("drain", {"reason": "x", "grace_seconds": "soon"}, "grace_seconds"),
    ("drain", {"reason": "x", "grace_seconds": 86401}, "grace_seconds"),
    ("drain", {"reason": "x", "force": "maybe"}, "force"),
    ("drain", {"reason": "x", "colour": "red"}, "colour"),
    ("drain", {"reason": "x" * 1001}, "reason"),
    ("undrain", {"reason": ""}, "reason"),
    ("maintenance", {"reason": ""}, "reason"),
    ("maintenance", {"reason": "x", "dry_run": "perhaps"}, "dry_run"),
    ("weight", {"reason": "x", "weight": 300}, "weight"),
    ("weight", {"reason": "x", "weight": -1}, "weight"),
    ("weight", {"reason": "x", "weight": "heavy"}, "weight"),
    ("weight", {"reason": "x"}, "weight"),
    ("weight", {"reason": "", "weight": 50}, "reason"),
    ("weight", {"reason": "x", "weight": 50, "ramp_seconds": -1}, "ramp_seconds"),
    ("weight", {"reason": "x", "weight": 50, "ramp_seconds": 86401}, "ramp_seconds"),
    ("weight", {"reason": "x", "weight": 50, "steps": [5, 300]}, "steps"),
    ("weight", {"reason": "x", "weight": 50, "steps": []}, "steps"),
    ("weight", {"reason": "x", "weight": 50, "steps": "5,25"}, "steps"),
]


@pytest.mark.parametrize(("action", "bad", "field"), BAD_ACTIONS,
                         ids=[f"{a}-{'-'.join(b)}-{fld}" for a, b, fld in BAD_ACTIONS])
def test_it_refuses_a_bad_action_body(action: str, bad: dict[str, Any], field: str, fleet_backend: Backend,
                                      operator_api: APIClient) -> None:
    if action == "undrain":
        Backend.objects.filter(pk=fleet_backend.pk).update(admin_state=AdminState.DRAINED)
    as_it_was = model_to_dict(Backend.objects.get(pk=fleet_backend.pk))
    before = fingerprint()

    response = operator_api.post(f"{API}/backends/{fleet_backend.pk}/{action}/", bad, format="json")

    assert_refused(response, field)
    assert model_to_dict(Backend.objects.get(pk=fleet_backend.pk)) == as_it_was
    assert fingerprint() == before


@pytest.mark.parametrize("action", ["drain", "undrain", "maintenance", "weight"])
def test_it_refuses_a_list_body_on_an_action(action: str, fleet_backend: Backend, operator_api: APIClient) -> None:
    before = fingerprint()
    response = operator_api.post(f"{API}/backends/{fleet_backend.pk}/{action}/", [{"reason": "x"}], format="json")
    assert_refused(response, "non_field_errors")
    assert fingerprint() == before


def test_it_refuses_an_abort_without_a_reason(fleet_backend: Backend, operator_api: APIClient) -> None:
    started = operator_api.post(f"{API}/backends/{fleet_backend.pk}/drain/", {"reason": "x", "grace_seconds": 300},
                                format="json")
    assert started.status_code == 202, started.content
    op_id = started.json()["operation"]["id"]
    before = fingerprint()
    response = operator_api.post(f"{API}/operations/{op_id}/abort/", {"reason": ""}, format="json")
    assert_refused(response, "reason")
    assert Operation.objects.get(pk=op_id).status == "running"
    assert fingerprint() == before


def test_it_refuses_a_bad_impact_query(fleet_backend: Backend, viewer_api: APIClient) -> None:
    response = viewer_api.get(f"{API}/backends/{fleet_backend.pk}/impact/", {"action": "explode"})
    assert_refused(response, "action")


@pytest.mark.parametrize("wait", ["soon", "-1", "100000"])
def test_it_refuses_a_bad_wait(wait: str, fleet_backend: Backend, viewer_api: APIClient) -> None:
    op = Operation.objects.create(kind="drain", target_type="backend", target_id=fleet_backend.pk,
                                  target_repr="x", actor_name="t", source="api", reason="x", status="succeeded")
    response = viewer_api.get(f"{API}/operations/{op.pk}/", {"wait": wait})
    assert_refused(response, "wait")


def test_it_refuses_a_bad_idempotency_key(fleet_backend: Backend, operator_api: APIClient) -> None:
    before = fingerprint()
    response = operator_api.post(f"{API}/backends/{fleet_backend.pk}/drain/", {"reason": "x", "grace_seconds": 30},
                                 format="json", HTTP_IDEMPOTENCY_KEY="has spaces and / slashes")
    assert_refused(response, "Idempotency-Key")
    assert fingerprint() == before


# --- If-Match ---------------------------------------------------------------------------------


@pytest.mark.parametrize("if_match", ["garbage", '"backend-1-rX"', "W/", '"region-1-r1"', '""', "\"backend-999999-r1\""])
def test_it_answers_412_not_500_for_a_garbage_if_match_on_patch(if_match: str, admin_api: APIClient) -> None:
    backend = f.backend()
    as_it_was = model_to_dict(backend)
    before = fingerprint()

    response = admin_api.patch(f"{API}/backends/{backend.pk}/", {"port": 9090}, format="json", HTTP_IF_MATCH=if_match)

    body = assert_refused(response, "", status=412)
    assert body["code"] == "stale"
    backend.refresh_from_db()
    assert model_to_dict(backend) == as_it_was
    assert fingerprint() == before


def test_it_answers_412_for_a_stale_if_match_on_patch(admin_api: APIClient) -> None:
    backend = f.backend()
    etag = admin_api.get(f"{API}/backends/{backend.pk}/")["ETag"]
    assert admin_api.patch(f"{API}/backends/{backend.pk}/", {"port": 9090}, format="json",
                           HTTP_IF_MATCH=etag).status_code == 200
    before = fingerprint()

    response = admin_api.patch(f"{API}/backends/{backend.pk}/", {"port": 9191}, format="json", HTTP_IF_MATCH=etag)

    assert_refused(response, "", status=412)
    backend.refresh_from_db()
    assert backend.port == 9090
    assert fingerprint() == before


@pytest.mark.parametrize("method", ["put", "delete"])
def test_it_answers_412_for_a_garbage_if_match_on_put_and_delete(method: str, admin_api: APIClient) -> None:
    region = f.region()
    before = fingerprint()
    body = {"slug": region.slug, "name": "Renamed", "latitude": 1.0, "longitude": 1.0} if method == "put" else None
    response = getattr(admin_api, method)(f"{API}/regions/{region.pk}/", body, format="json", HTTP_IF_MATCH="garbage")
    assert_refused(response, "", status=412)
    assert fingerprint() == before


@pytest.mark.parametrize("action", ["drain", "maintenance", "weight"])
def test_it_answers_412_for_a_garbage_if_match_on_an_action(action: str, fleet_backend: Backend,
                                                             operator_api: APIClient) -> None:
    body = {"reason": "x", "weight": 50} if action == "weight" else {"reason": "x"}
    before = fingerprint()
    response = operator_api.post(f"{API}/backends/{fleet_backend.pk}/{action}/", body, format="json",
                                 HTTP_IF_MATCH="garbage")
    assert_refused(response, "", status=412)
    assert fingerprint() == before


def test_it_answers_a_malformed_address_filter_with_400(viewer_api):
    r = viewer_api.get("/api/v1/vips/", {"address": "Å\U000f1104\U000d43c7ì"})
    assert r.status_code == 400
    assert "address" in r.json()["errors"]
    assert viewer_api.get("/api/v1/vips/", {"address": "192.0.2.10"}).status_code == 200
