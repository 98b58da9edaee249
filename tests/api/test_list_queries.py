"""List endpoints use a constant number of queries, however many rows they return.

Rows are spread over distinct parents (each backend in its own pool, PoP and region; each pool in
its own PoP) so that a missing select_related/prefetch shows up as a per-row query.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from steering.choices import AdminState, OperationKind, OperationStatus
from steering.models import Change, Operation, PoP
from steering.services import topology
from steering.services.context import Actor
from tests import factories as f

API = "/api/v1"
FEW, MANY = 5, 25


def add_backends(n: int) -> None:
    for i in range(n):
        pool = f.pool(f.pop(f.region()), f.service(), in_panic=bool(i % 2))
        f.backend(pool, admin_state=AdminState.READY if i % 3 else AdminState.DRAINED, slow_start_seconds=30)


def add_pools(n: int) -> None:
    monitor = None
    for i in range(n):
        monitor = f.monitor() if i % 2 else monitor
        f.pool(f.pop(f.region()), f.service(), monitor=monitor)


def add_pops(n: int) -> None:
    for _ in range(n):
        f.pop(f.region())


def add_changes(n: int) -> None:
    # Through the service, so each row is a real audit record with an actor and a related object.
    actor = Actor.system("test")
    for _ in range(n):
        region = f.region()
        topology.do_create(PoP, {"region": region, "slug": f"pop-for-{region.slug}", "name": "x", "city": "Delhi",
                                 "latitude": 28.6, "longitude": 77.2}, actor=actor, reason="query count")


def add_operations(n: int) -> None:
    for i in range(n):
        backend = f.backend()
        Operation.objects.create(
            kind=OperationKind.DRAIN, status=OperationStatus.SUCCEEDED if i % 2 else OperationStatus.RUNNING,
            target_type="backend", target_id=backend.pk, target_repr=backend.path, actor_name="t", source="api",
            reason="query count", params={"impact": {"verdict": "safe"}},
        )


LISTS: dict[str, Callable[[int], None]] = {
    "backends": add_backends,
    "pools": add_pools,
    "pops": add_pops,
    "changes": add_changes,
    "operations": add_operations,
}


def count_queries(client: APIClient, url: str) -> tuple[int, int, list[str]]:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, response.content
    return len(ctx.captured_queries), response.json()["count"], [q["sql"] for q in ctx.captured_queries]


@pytest.mark.parametrize("resource", sorted(LISTS))
def test_it_lists_with_a_constant_number_of_queries(resource: str, viewer_api: APIClient) -> None:
    url = f"{API}/{resource}/"
    # The first request stamps the token's last use; keep that write out of the comparison.
    assert viewer_api.get(f"{API}/me/").status_code == 200
    add = LISTS[resource]

    add(FEW)
    few, few_rows, _ = count_queries(viewer_api, url)
    add(MANY - FEW)
    many, many_rows, sql = count_queries(viewer_api, url)

    assert many_rows > few_rows >= FEW
    assert many == few, f"{resource}: {few} queries for {few_rows} rows, {many} for {many_rows}:\n" + "\n".join(sql)


@pytest.mark.parametrize("resource", sorted(LISTS))
def test_it_lists_in_a_handful_of_queries(resource: str, viewer_api: APIClient,
                                          django_assert_max_num_queries: Any) -> None:
    assert viewer_api.get(f"{API}/me/").status_code == 200
    LISTS[resource](MANY)
    # Auth (token, groups), count, page: 4 today, one spare; a per-row query blows past it.
    with django_assert_max_num_queries(5):
        response = viewer_api.get(f"{API}/{resource}/")
    assert response.status_code == 200
    assert response.json()["count"] >= MANY


def test_it_counts_changes_made_by_the_setup(db: Any) -> None:
    before = Change.objects.count()
    add_changes(2)
    assert Change.objects.count() == before + 2


def add_deliveries(n: int) -> None:
    from steering.models import WebhookDelivery, WebhookSubscription

    # Each delivery to a subscription of its own: its name in the row must not cost a query each.
    for _ in range(n):
        sub = WebhookSubscription.objects.create(name=f"hook-{WebhookSubscription.objects.count()}",
                                                 url="https://hooks.example.net/x", secret="whsec_0123456789abcdef")
        WebhookDelivery.objects.create(subscription=sub, event_type="webhook.test", event_id="evt_x", payload={})


def test_it_lists_webhook_deliveries_with_a_constant_number_of_queries(operator_api: APIClient) -> None:
    url = f"{API}/webhook-deliveries/"
    assert operator_api.get(f"{API}/me/").status_code == 200
    add_deliveries(FEW)
    few, few_rows, _ = count_queries(operator_api, url)
    add_deliveries(MANY - FEW)
    many, many_rows, sql = count_queries(operator_api, url)
    assert many_rows == MANY > few_rows
    assert many == few <= 5, "\n".join(sql)
