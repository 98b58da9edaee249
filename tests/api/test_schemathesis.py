"""Generated requests against the app's own OpenAPI schema: whatever the input, never a 5xx.

The schema is fetched from /api/schema/ through the WSGI app in-process; requests go the same way,
inside the test's database transaction, authenticated as an admin with a Bearer token made in the
test. Each operation gets a bounded, derandomized run (same examples every time, so CI is stable):
positive and negative cases, with `{id}` both generated and pinned to a seeded object so detail
routes reach real rows, not only 404s.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.test import APIClient
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from config.wsgi import application
from steering.models import Change, SafetyRule, WebhookDelivery
from steering.services.actions import do_drain, do_maintenance
from steering.services.context import Actor
from steering.services.tokens import do_create_token
from steering.services.webhooks import do_create_webhook
from tests import factories as f
from tests.conftest import make_user

SCHEMA = schemathesis.openapi.from_wsgi("/api/schema/", application)
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
MAX_EXAMPLES = 25


@pytest.fixture
def in_process_requests(settings: Any) -> Iterator[None]:
    """Serve requests through the real WSGI handler without it closing the test's DB connection at
    request end (Django's test client does the same), and keep `?wait=` short."""
    settings.STEERING_MAX_WAIT_SECONDS = 1
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


def seed() -> dict[str, int]:
    """A small fleet with one of everything; returns an existing id per router prefix."""
    service = f.service(anycast_prefix=f.prefix())
    region = f.region()
    pop = f.pop(region)
    backup = f.pool(pop, service, expected_rps=0)
    pool = f.pool(pop, service, expected_rps=100, backup_pool=backup, monitor=f.monitor())
    other_pop = f.pop(f.region())
    other_pool = f.pool(other_pop, service, expected_rps=100)
    for p in (pool, backup, other_pool):
        for _ in range(3):
            f.backend(p, capacity_rps=10_000)
    backends = list(pool.backends.order_by("pk"))
    system = Actor.system("seed")
    drain, _ = do_drain(backends[0], actor=system, reason="seed", grace_seconds=600)
    do_maintenance(backends[1], actor=system, reason="seed")
    holder = make_user("sam-seeded", "operator")
    token, _raw = do_create_token(holder, name="seeded", role="operator", actor=system)
    assert drain is not None
    # Deliveries are recorded, never sent: no worker runs here and the test's transaction never commits.
    hook, _secret = do_create_webhook({"name": "seeded", "url": "https://hooks.example.net/steering"}, actor=system)
    dead = WebhookDelivery.objects.create(subscription=hook, event_type="webhook.test", event_id="evt_seed",
                                          payload={"summary": "seed"}, status="dead", attempts=8)
    return {
        "regions": region.pk, "pops": pop.pk, "services": service.pk, "vips": f.vip(service, region).pk,
        "prefixes": service.anycast_prefix_id, "client-networks": f.client_network(region).pk,
        "monitors": pool.monitor_id, "pools": pool.pk, "backends": backends[2].pk, "operations": drain.pk,
        "changes": Change.objects.order_by("pk").values_list("pk", flat=True).first(),
        "tokens": token.pk,
        "safety-rules": SafetyRule.objects.create(slug="half", kind="max_pool_out_percent", pool=pool,
                                                  threshold=50).pk,
        "webhooks": hook.pk, "webhook-deliveries": dead.pk,
    }


def _prefix(path: str) -> str:
    return path.split("/")[3]


def strategy_for(operation: Any, ids: dict[str, int]) -> Any:
    strategies = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        strategies.append(operation.as_strategy(generation_mode=mode))
        if "{id}" in operation.path:
            strategies.append(operation.as_strategy(generation_mode=mode,
                                                    path_parameters={"id": ids[_prefix(operation.path)]}))
    return st.one_of(strategies)


@pytest.mark.schemathesis
@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_it_never_answers_a_generated_request_with_a_server_error(operation: Any, db: Any,
                                                                  in_process_requests: None) -> None:
    ids = seed()
    admin = make_user("ada-fuzz-admin", "admin")
    _token, raw = do_create_token(admin, name="fuzz", role="admin", actor=Actor.system("test"))
    headers = {"Authorization": f"Bearer {raw}"}
    statuses: list[int] = []

    @hypothesis_settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                         phases=[Phase.explicit, Phase.generate, Phase.shrink],
                         suppress_health_check=list(HealthCheck))
    @given(case=strategy_for(operation, ids))
    def run(case: schemathesis.Case) -> None:
        # Each request in a savepoint, as each runs in its own transaction in production: one the
        # database refused (a DataError, answered 400) must not abort the next request's queries.
        with transaction.atomic():
            response = case.call(headers=headers)
        statuses.append(response.status_code)
        case.validate_response(response, checks=[not_a_server_error])

    run()
    assert statuses, f"no request was sent for {operation.label}"
    assert max(statuses) < 500
    # The admin token really authenticated: the run tested the endpoint, not the auth wall.
    assert any(status not in (401, 403) for status in statuses), statuses


# --- the schema and the docs -------------------------------------------------------------------


def test_it_serves_an_openapi_3_document_with_the_actions(anon_api: APIClient) -> None:
    response = anon_api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    doc = response.json()
    assert str(doc["openapi"]).startswith("3.")
    paths = doc["paths"]
    for target in ("backends", "pools", "pops", "regions"):
        for action in ("drain", "undrain", "maintenance", "impact"):
            assert f"/api/v1/{target}/{{id}}/{action}/" in paths, (target, action)
    assert "post" in paths["/api/v1/backends/{id}/drain/"]
    assert "/api/v1/backends/{id}/weight/" in paths
    assert "/api/v1/operations/{id}/abort/" in paths
    assert "/api/v1/topology/" in paths
    assert "bearerAuth" in doc["components"]["securitySchemes"]


def test_it_documents_every_operation_schemathesis_exercises() -> None:
    labels = {op.label for op in OPERATIONS}
    assert len(labels) == len(OPERATIONS) >= 80
    assert "POST /api/v1/backends/{id}/drain/" in labels
    assert "DELETE /api/v1/tokens/{id}/" in labels


def test_it_serves_api_docs_with_local_assets_only(anon_api: APIClient) -> None:
    response = anon_api.get("/api/docs/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assets = re.findall(r"""<(?:script|link)\b[^>]*?\b(?:src|href)=["']([^"']+)["']""", html)
    assert assets, html
    for url in assets:
        # Local only: the bundled assets, or the docs page's own script (the split view keeps
        # script out of the page, for the Content-Security-Policy).
        assert url.startswith("/static/") or url.startswith("/api/docs/?script"), url
        assert "cdn" not in url.lower() and "://" not in url and not url.startswith("//"), url
    assert "https://" not in " ".join(assets)
    assert "cdn.jsdelivr" not in html and "unpkg.com" not in html
