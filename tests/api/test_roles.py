"""Who may do what: every write endpoint × every persona, plus reads, token scoping and session CSRF.

The matrix is built from the router, so a write endpoint added later without a case here fails
`test_it_has_a_case_for_every_write_endpoint` instead of going untested.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import models
from django.utils import timezone
from rest_framework.test import APIClient

from steering.api.urls import router
from steering.choices import AdminState, Health, OperationStatus
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
    SafetyRule,
    Service,
    WebhookDelivery,
    WebhookSubscription,
)
from steering.services.actions import do_drain, do_maintenance
from steering.services.context import Actor
from steering.services.tokens import do_create_token
from steering.services.webhooks import do_create_webhook
from steering.services.weights import advance_ramp, do_set_weight
from tests import factories as f
from tests.conftest import make_user, token_client

API = "/api/v1"
SAFE_METHODS = {"get", "head", "options"}
CRUD_WRITES = ("create", "update", "partial_update", "destroy")

# The contract (README: Roles), written down independently of the views' own `required_roles`:
# operators act on traffic; everything else that writes is an admin's.
OPERATOR_WRITES = {"drain", "undrain", "maintenance", "weight", "abort", "resume", "extend", "withdraw", "announce",
                   "redeliver"}

PERSONAS = ("anonymous", "nobody", "viewer", "operator", "admin")
RANK = {"anonymous": 0, "nobody": 0, "viewer": 1, "operator": 2, "admin": 3}

# Everything a write could touch; compared before and after a refused request.
WATCHED: tuple[type[models.Model], ...] = (
    Region, PoP, Service, VIP, AnycastPrefix, ClientNetwork, Monitor, Pool, Backend, Operation, ApiToken,
    WebhookSubscription, WebhookDelivery,
)


def discover_write_endpoints() -> list[tuple[str, str]]:
    """(router prefix, action) for every write the router exposes."""
    found: list[tuple[str, str]] = []
    for prefix, viewset, _basename in router.registry:
        for action in CRUD_WRITES:
            if hasattr(viewset, action):
                found.append((prefix, action))
        for extra in viewset.get_extra_actions():
            if set(extra.mapping) - SAFE_METHODS:
                found.append((prefix, extra.__name__))
    return found


def discover_list_endpoints() -> list[str]:
    urls: list[str] = []
    for prefix, viewset, _basename in router.registry:
        if hasattr(viewset, "list"):
            urls.append(f"{API}/{prefix}/")
        for extra in viewset.get_extra_actions():
            if not extra.detail and "get" in extra.mapping:
                urls.append(f"{API}/{prefix}/{extra.url_path}/")
    return [*urls, f"{API}/topology/", f"{API}/me/", f"{API}/states/"]


WRITE_ENDPOINTS = discover_write_endpoints()
LIST_ENDPOINTS = discover_list_endpoints()
ADMIN_ONLY_READS = {f"{API}/tokens/", f"{API}/changes/verify/", f"{API}/webhooks/"}
# Reads an operator may make and a viewer may not: the webhooks' delivery log (what was sent where).
OPERATOR_READS = {f"{API}/webhook-deliveries/"}


def needed_role(action: str) -> str:
    return "operator" if action in OPERATOR_WRITES else "admin"


def may(persona: str, action: str) -> bool:
    return RANK[persona] >= RANK[needed_role(action)]


# --- the world the requests act on ---------------------------------------------------------


@dataclass
class World:
    service: Service
    region: Region
    pop: PoP
    pool: Pool
    backup_pool: Pool
    other_region: Region
    other_pop: PoP
    other_pool: Pool

    @property
    def backend(self) -> Backend:
        return self.pool.backends.order_by("pk").first()  # type: ignore[return-value]


def build_world() -> World:
    """Two regions serving one service with plenty of headroom, so the capacity guard never refuses:
    a backend's share goes to its pool mates, a pool's to its backup pool, a PoP's or region's to the
    other region's PoP."""
    service = f.service()
    region = f.region()
    pop = f.pop(region)
    backup_pool = f.pool(pop, service, expected_rps=0)
    pool = f.pool(pop, service, expected_rps=100, backup_pool=backup_pool)
    other_region = f.region()
    other_pop = f.pop(other_region)
    other_pool = f.pool(other_pop, service, expected_rps=100)
    for p in (pool, backup_pool, other_pool):
        for _ in range(4):
            f.backend(p, capacity_rps=10_000)
    return World(service, region, pop, pool, backup_pool, other_region, other_pop, other_pool)


@dataclass
class Case:
    method: str
    url: str
    body: Any
    model: type[models.Model]
    ok_status: int
    pk: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _crud_case(prefix: str, action: str, model: type[models.Model], make: Callable[[], models.Model],
               create_body: Callable[[], dict[str, Any]], put_body: Callable[[models.Model], dict[str, Any]],
               patch_body: dict[str, Any], make_deletable: Callable[[], models.Model] | None = None) -> Case:
    if action == "create":
        return Case("post", f"{API}/{prefix}/", create_body(), model, 201)
    if action == "update":
        obj = make()
        return Case("put", f"{API}/{prefix}/{obj.pk}/", put_body(obj), model, 200, obj.pk)
    if action == "partial_update":
        obj = make()
        return Case("patch", f"{API}/{prefix}/{obj.pk}/", patch_body, model, 200, obj.pk)
    if action == "destroy":
        obj = (make_deletable or make)()
        return Case("delete", f"{API}/{prefix}/{obj.pk}/", None, model, 204, obj.pk)
    raise KeyError(action)


def _region_case(action: str) -> Case:
    return _crud_case(
        "regions", action, Region, f.region,
        lambda: {"slug": "new-region", "name": "New region", "latitude": 1.5, "longitude": 2.5},
        lambda o: {"slug": o.slug, "name": "Renamed", "latitude": 3.0, "longitude": 4.0},
        {"name": "Renamed"},
    )


def _pop_case(action: str) -> Case:
    def create() -> dict[str, Any]:
        return {"region": f.region().pk, "slug": "newpop", "name": "New PoP", "city": "Pune",
                "latitude": 18.5, "longitude": 73.8}

    return _crud_case(
        "pops", action, PoP, f.pop, create,
        lambda o: {"region": o.region_id, "slug": o.slug, "name": "Renamed", "city": "Chennai",
                   "latitude": 13.0, "longitude": 80.2},
        {"city": "Chennai"},
    )


def _service_case(action: str) -> Case:
    return _crud_case(
        "services", action, Service, f.service,
        lambda: {"slug": "new-svc", "fqdn": "new-svc.example.net"},
        lambda o: {"slug": o.slug, "fqdn": o.fqdn, "ttl": 60},
        {"ttl": 60},
    )


def _vip_case(action: str) -> Case:
    return _crud_case(
        "vips", action, VIP, f.vip,
        lambda: {"service": f.service().pk, "region": f.region().pk, "address": "192.0.2.250"},
        lambda o: {"service": o.service_id, "region": o.region_id, "address": o.address, "weight": 50},
        {"weight": 50},
    )


def _prefix_case(action: str) -> Case:
    return _crud_case(
        "prefixes", action, AnycastPrefix, f.prefix,
        lambda: {"prefix": "203.0.113.0/24"},
        lambda o: {"prefix": o.prefix, "description": "edge"},
        {"description": "edge"},
    )


def _client_network_case(action: str) -> Case:
    return _crud_case(
        "client-networks", action, ClientNetwork, f.client_network,
        lambda: {"cidr": "198.19.0.0/24", "region": f.region().pk},
        lambda o: {"cidr": o.cidr, "region": o.region_id, "description": "resolvers"},
        {"description": "resolvers"},
    )


def _monitor_case(action: str) -> Case:
    return _crud_case(
        "monitors", action, Monitor, f.monitor,
        lambda: {"slug": "new-mon", "kind": "tcp"},
        lambda o: {"slug": o.slug, "kind": "tcp", "rise": 3},
        {"rise": 3},
    )


def _safety_rule_case(action: str) -> Case:
    def make(**kw: Any) -> SafetyRule:
        return SafetyRule.objects.create(slug=f"rule-{SafetyRule.objects.count() + 1}", kind="max_pool_out_percent",
                                         threshold=50, **kw)

    return _crud_case(
        "safety-rules", action, SafetyRule, make,
        lambda: {"slug": "half-a-pool", "kind": "max_pool_out_percent", "threshold": 50},
        lambda o: {"slug": o.slug, "kind": o.kind, "threshold": 25},
        {"threshold": 25},
    )


def _webhook(name: str = "") -> WebhookSubscription:
    sub, _secret = do_create_webhook({"name": name or f"hook-{WebhookSubscription.objects.count() + 1}",
                                      "url": "https://hooks.example.net/steering"}, actor=Actor.system("test"))
    return sub


def _webhook_case(action: str) -> Case:
    return _crud_case(
        "webhooks", action, WebhookSubscription, _webhook,
        lambda: {"name": "oncall", "url": "https://hooks.example.net/oncall", "events": ["operation.failed"]},
        lambda o: {"name": o.name, "url": "https://hooks.example.net/other", "format": "slack"},
        {"enabled": False},
    )


def _webhook_test_case() -> Case:
    sub = _webhook("pinged")
    return Case("post", f"{API}/webhooks/{sub.pk}/test/", {}, WebhookSubscription, 202, sub.pk)


def _redeliver_case() -> Case:
    """A dead letter: every try failed."""
    sub = _webhook("dead-end")
    delivery = WebhookDelivery.objects.create(subscription=sub, event_type="webhook.test", event_id="evt_dead",
                                              payload={"summary": "x"}, status="dead", attempts=8)
    return Case("post", f"{API}/webhook-deliveries/{delivery.pk}/redeliver/", {}, WebhookDelivery, 202, delivery.pk)


def _pool_case(action: str) -> Case:
    def create() -> dict[str, Any]:
        return {"pop": f.pop().pk, "service": f.service().pk, "slug": "new-pool"}

    return _crud_case(
        "pools", action, Pool, f.pool, create,
        lambda o: {"pop": o.pop_id, "service": o.service_id, "slug": o.slug, "rule_priority": 50},
        {"rule_priority": 50},
    )


def _backend_case(action: str) -> Case:
    def create() -> dict[str, Any]:
        return {"pool": f.pool().pk, "name": "new-app", "address": "127.0.0.99", "port": 8080}

    return _crud_case(
        "backends", action, Backend, f.backend, create,
        lambda o: {"pool": o.pool_id, "name": o.name, "address": o.address, "port": 9090},
        {"port": 9090},
    )


def _action_case(prefix: str, action: str) -> Case:
    world = build_world()
    target = {"backends": world.backend, "pools": world.pool, "pops": world.pop, "regions": world.region}[prefix]
    body: dict[str, Any] = {"reason": "role matrix"}
    if action == "drain":
        body["grace_seconds"] = 30
    elif action == "undrain":
        # Something under the target must be out of service for an undrain to have work to do.
        Backend.objects.filter(pk=world.backend.pk).update(admin_state=AdminState.DRAINED)
    elif action == "weight":
        body["weight"] = 50
    elif action == "announce":
        PoP.objects.filter(pk=world.pop.pk).update(announce="withdraw")
    return Case("post", f"{API}/{prefix}/{target.pk}/{action}/", body, type(target), 202, target.pk)


def _abort_case() -> Case:
    world = build_world()
    op, _ = do_drain(world.backend, actor=Actor.system("test"), reason="setup", grace_seconds=300)
    assert op is not None and op.status == OperationStatus.RUNNING
    return Case("post", f"{API}/operations/{op.pk}/abort/", {"reason": "role matrix"}, Operation, 200, op.pk)


def _resume_case() -> Case:
    """A weight ramp paused by the sweeper when its backend went down, and the backend healthy again."""
    world = build_world()
    backend = world.backend
    op, _ = do_set_weight(backend, actor=Actor.system("test"), reason="setup", weight=50, ramp_seconds=60)
    assert op is not None and op.status == OperationStatus.RUNNING
    Backend.objects.filter(pk=backend.pk).update(health=Health.DOWN)
    assert advance_ramp(op.pk) == "paused"
    Backend.objects.filter(pk=backend.pk).update(health=Health.UP)
    return Case("post", f"{API}/operations/{op.pk}/resume/", {"reason": "role matrix"}, Operation, 200, op.pk)


def _extend_case() -> Case:
    """A maintenance window still open: its end moves."""
    world = build_world()
    end = timezone.now() + datetime.timedelta(hours=1)
    op, _ = do_maintenance(world.backend, actor=Actor.system("test"), reason="setup", expires_at=end)
    assert op is not None
    later = (end + datetime.timedelta(hours=1)).isoformat()
    return Case("post", f"{API}/operations/{op.pk}/extend/", {"reason": "role matrix", "expires_at": later},
                Operation, 200, op.pk)


def _token_case(action: str) -> Case:
    if action == "create":
        return Case("post", f"{API}/tokens/", {"name": "ci-pipeline", "role": "viewer"}, ApiToken, 201)
    if action == "destroy":
        owner = make_user("tess-tokenholder", "operator")
        token, _raw = do_create_token(owner, name="deploy", role="operator", actor=Actor.system("test"))
        return Case("delete", f"{API}/tokens/{token.pk}/", None, ApiToken, 200, token.pk)
    raise KeyError(action)


CRUD_CASES: dict[str, Callable[[str], Case]] = {
    "regions": _region_case,
    "pops": _pop_case,
    "services": _service_case,
    "vips": _vip_case,
    "prefixes": _prefix_case,
    "client-networks": _client_network_case,
    "monitors": _monitor_case,
    "pools": _pool_case,
    "backends": _backend_case,
    "tokens": _token_case,
    "safety-rules": _safety_rule_case,
    "webhooks": _webhook_case,
}
ACTION_PREFIXES = {"backends", "pools", "pops", "regions"}


def make_case(prefix: str, action: str) -> Case:
    if action in CRUD_WRITES:
        return CRUD_CASES[prefix](action)
    if action == "abort" and prefix == "operations":
        return _abort_case()
    if action == "resume" and prefix == "operations":
        return _resume_case()
    if action == "extend" and prefix == "operations":
        return _extend_case()
    if action == "test" and prefix == "webhooks":
        return _webhook_test_case()
    if action == "redeliver" and prefix == "webhook-deliveries":
        return _redeliver_case()
    if action in OPERATOR_WRITES and prefix in ACTION_PREFIXES:
        return _action_case(prefix, action)
    raise KeyError(f"no role-matrix case for {prefix} {action}")


# --- clients per persona ------------------------------------------------------------------


def client_for(persona: str, request: pytest.FixtureRequest) -> APIClient:
    if persona == "anonymous":
        return request.getfixturevalue("anon_api")  # type: ignore[no-any-return]
    if persona == "nobody":
        # A signed-in user in no role group: a token cannot be issued to them, so a session it is.
        client = APIClient()
        client.force_login(request.getfixturevalue("nobody"))
        return client
    return request.getfixturevalue(f"{persona}_api")  # type: ignore[no-any-return]


def fingerprint() -> dict[str, Any]:
    """Every watched row (minus token last-use bookkeeping) and the audit log's size and head."""
    rows: dict[str, Any] = {}
    for model in WATCHED:
        values = list(model.objects.order_by("pk").values())
        for row in values:
            row.pop("last_used_at", None)
        rows[model._meta.label] = values
    rows["changes"] = (Change.objects.count(), Change.objects.order_by("-id").values_list("id", flat=True).first())
    return rows


def send(client: APIClient, case: Case) -> Any:
    return getattr(client, case.method)(case.url, case.body, format="json", **case.headers)


# --- the matrix ----------------------------------------------------------------------------


def test_it_has_a_case_for_every_write_endpoint(db: Any) -> None:
    expected_actions = {"create", "update", "partial_update", "destroy", "drain", "undrain", "maintenance",
                        "weight", "abort", "resume", "extend", "withdraw", "announce", "test", "redeliver"}
    assert {action for _prefix, action in WRITE_ENDPOINTS} == expected_actions
    # Every action a view exposes is one the contract names (no unreviewed write slipped in).
    for prefix, action in WRITE_ENDPOINTS:
        case = make_case(prefix, action)
        assert case.url.startswith(f"{API}/{prefix}/")
    assert ("tokens", "create") in WRITE_ENDPOINTS and ("tokens", "destroy") in WRITE_ENDPOINTS
    assert ("changes", "create") not in WRITE_ENDPOINTS, "the audit log must not be writable"


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize(("prefix", "action"), WRITE_ENDPOINTS, ids=[f"{p}-{a}" for p, a in WRITE_ENDPOINTS])
def test_it_lets_only_the_right_roles_write(
    prefix: str, action: str, persona: str, request: pytest.FixtureRequest, db: Any
) -> None:
    client = client_for(persona, request)
    case = make_case(prefix, action)
    before = fingerprint()
    model_count = case.model.objects.count()

    response = send(client, case)

    if may(persona, action):
        assert response.status_code == case.ok_status, (persona, case.url, response.content)
        assert Change.objects.count() > before["changes"][0], "an allowed write is audited"
        return
    expected = 401 if persona == "anonymous" else 403
    assert response.status_code == expected, (persona, case.url, response.content)
    body = response.json()
    assert body["code"] in ("not_authenticated", "permission_denied", "authentication_failed"), body
    if persona != "anonymous":
        assert needed_role(action) in body["detail"], body
    assert case.model.objects.count() == model_count
    if case.pk is not None:
        assert case.model.objects.filter(pk=case.pk).exists()
    assert fingerprint() == before, "a refused write changed something"


# --- reads ---------------------------------------------------------------------------------


@pytest.mark.parametrize("url", LIST_ENDPOINTS)
def test_it_lets_a_viewer_read_every_list(url: str, viewer_api: APIClient) -> None:
    build_world()
    response = viewer_api.get(url)
    if url in ADMIN_ONLY_READS | OPERATOR_READS:
        assert response.status_code == 403, response.content
    else:
        assert response.status_code == 200, (url, response.content)


@pytest.mark.parametrize("url", LIST_ENDPOINTS)
@pytest.mark.parametrize("persona", ["anonymous", "nobody"])
def test_it_refuses_reads_without_a_role(url: str, persona: str, request: pytest.FixtureRequest, db: Any) -> None:
    build_world()
    response = client_for(persona, request).get(url)
    assert response.status_code == (401 if persona == "anonymous" else 403), (url, response.content)
    assert "results" not in response.json()


def test_it_lists_the_topology_list_endpoints_it_checks() -> None:
    for name in ("backends", "pools", "pops", "regions", "services", "vips", "prefixes", "client-networks",
                 "monitors", "operations", "changes", "tokens", "safety-rules", "webhooks", "webhook-deliveries"):
        assert f"{API}/{name}/" in LIST_ENDPOINTS


@pytest.mark.parametrize(("persona", "status"), [("viewer", 403), ("operator", 403), ("admin", 200)])
def test_it_shows_tokens_to_admins_only(persona: str, status: int, request: pytest.FixtureRequest) -> None:
    client = client_for(persona, request)
    listing = client.get(f"{API}/tokens/")
    assert listing.status_code == status, listing.content
    own = ApiToken.objects.filter(user=client.user).first()  # type: ignore[attr-defined]
    detail = client.get(f"{API}/tokens/{own.pk}/")
    assert detail.status_code == status, detail.content
    if status == 200:
        assert {t["name"] for t in listing.json()["results"]} >= {own.name}
        assert "digest" not in listing.json()["results"][0]


@pytest.mark.parametrize(("persona", "hooks", "deliveries"),
                         [("viewer", 403, 403), ("operator", 403, 200), ("admin", 200, 200)])
def test_it_shows_webhooks_to_admins_and_their_deliveries_to_operators_never_a_secret(
        persona: str, hooks: int, deliveries: int, request: pytest.FixtureRequest) -> None:
    client = client_for(persona, request)
    sub = _webhook("secretive")
    WebhookDelivery.objects.create(subscription=sub, event_type="webhook.test", event_id="evt_1", payload={})
    urls = {f"{API}/webhooks/": hooks, f"{API}/webhooks/{sub.pk}/": hooks,
            f"{API}/webhooks/{sub.pk}/deliveries/": deliveries, f"{API}/webhook-deliveries/": deliveries}
    for url, expected in urls.items():
        response = client.get(url)
        assert response.status_code == expected, (url, response.content)
        assert sub.secret not in response.content.decode()
    assert sub.secret.startswith("whsec_")


# --- token scoping -------------------------------------------------------------------------


def test_it_lets_a_viewer_scoped_token_of_an_admin_act_only_as_a_viewer(admin: User) -> None:
    world = build_world()
    client = token_client(admin, role="viewer")

    me = client.get(f"{API}/me/")
    assert me.status_code == 200
    assert me.json() == {"username": admin.username, "role": "viewer", "auth": "token",
                         "drain_expiry_hours": settings.STEERING_UI_DRAIN_EXPIRY_HOURS}
    assert client.get(f"{API}/backends/").status_code == 200

    before = fingerprint()
    drain = client.post(f"{API}/backends/{world.backend.pk}/drain/", {"reason": "x", "grace_seconds": 30}, format="json")
    create = client.post(f"{API}/regions/", {"slug": "sneaky", "name": "Sneaky", "latitude": 0, "longitude": 0},
                         format="json")
    tokens = client.get(f"{API}/tokens/")
    issue = client.post(f"{API}/tokens/", {"name": "escalate", "role": "admin"}, format="json")

    assert drain.status_code == 403, drain.content
    assert create.status_code == 403, create.content
    assert tokens.status_code == 403, tokens.content
    assert issue.status_code == 403, issue.content
    assert "you have viewer" in drain.json()["detail"]
    assert fingerprint() == before


def test_it_lets_an_operator_scoped_token_of_an_admin_drain_but_not_edit(admin: User) -> None:
    world = build_world()
    client = token_client(admin, role="operator")
    edit = client.patch(f"{API}/backends/{world.backend.pk}/", {"port": 9090}, format="json")
    assert edit.status_code == 403, edit.content
    drain = client.post(f"{API}/backends/{world.backend.pk}/drain/", {"reason": "x", "grace_seconds": 30}, format="json")
    assert drain.status_code == 202, drain.content


def test_it_stops_a_token_when_its_owner_loses_the_role(db: Any) -> None:
    world = build_world()
    user = make_user("olga-former-operator", "operator")
    client = token_client(user)
    user.groups.remove(Group.objects.get(name="operator"))
    before = fingerprint()

    response = client.post(f"{API}/backends/{world.backend.pk}/drain/", {"reason": "x", "grace_seconds": 30},
                           format="json")

    assert response.status_code == 403, response.content
    assert client.get(f"{API}/backends/").status_code == 403
    assert fingerprint() == before


def test_it_refuses_a_revoked_token(operator_api: APIClient) -> None:
    world = build_world()
    token = ApiToken.objects.get(user=operator_api.user)  # type: ignore[attr-defined]
    ApiToken.objects.filter(pk=token.pk).update(revoked_at=token.created_at)
    before = fingerprint()
    response = operator_api.post(f"{API}/backends/{world.backend.pk}/drain/", {"reason": "x", "grace_seconds": 30},
                                 format="json")
    assert response.status_code == 401, response.content
    assert fingerprint() == before


# --- session auth and CSRF -----------------------------------------------------------------


def test_it_requires_the_csrf_token_for_a_session_write(operator: User) -> None:
    world = build_world()
    backend = world.backend
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(operator)
    url = f"{API}/backends/{backend.pk}/drain/"
    body = {"reason": "deploy from the dashboard", "grace_seconds": 30}
    before = fingerprint()

    refused = client.post(url, body, format="json")

    assert refused.status_code == 403, refused.content
    assert "CSRF" in refused.json()["detail"]
    assert fingerprint() == before

    page = client.get("/")
    assert page.status_code in (200, 503)
    csrf = client.cookies["csrftoken"].value
    assert csrf

    accepted = client.post(url, body, format="json", HTTP_X_CSRFTOKEN=csrf)

    assert accepted.status_code == 202, accepted.content
    backend.refresh_from_db()
    assert backend.admin_state == AdminState.DRAINING
    change = Change.objects.get(action="backend.drain", object_id=backend.pk)
    assert change.source == "ui"
    assert change.actor_name == operator.username
    assert accepted.json()["operation"]["source"] == "ui"


def test_it_still_applies_roles_to_a_session_with_a_valid_csrf_token(viewer: User) -> None:
    world = build_world()
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(viewer)
    client.get("/")
    csrf = client.cookies["csrftoken"].value
    before = fingerprint()
    response = client.post(f"{API}/backends/{world.backend.pk}/drain/", {"reason": "x", "grace_seconds": 30},
                           format="json", HTTP_X_CSRFTOKEN=csrf)
    assert response.status_code == 403, response.content
    assert "operator" in response.json()["detail"]
    assert fingerprint() == before
