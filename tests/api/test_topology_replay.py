"""`GET /api/v1/topology/?at=`: the fleet as it was at a past instant, rebuilt from the audit log.

Real changes go through the API (drain, weight, maintenance, undrain, a backend created and
deleted, a pool edited) and health transitions through the prober's own store and recorder; after
each one the live topology is captured with the instant. Each instant replayed must give back the
picture that was live then, object by object and field by field.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from steering.health.target import ProbeResult, ProbeTarget
from steering.models import Backend, Change, HealthEvent, Pool
from steering.redisconn import sync_client
from steering.services.actions import do_drain
from steering.services.context import Actor
from steering.tasks import probes
from tests import factories as f
from tests.services.health_support import clean_probe_redis

API = "/api/v1"
# Every list of the picture but operations, compared row by row (operations: by id and status).
COMPARED = ["regions", "pops", "services", "vips", "prefixes", "client_networks", "monitors", "pools", "backends"]


@pytest.fixture(autouse=True)
def _clean_probe_state() -> Iterator[None]:
    clean_probe_redis()
    yield
    clean_probe_redis()


def probe(backend: Backend, ok: bool) -> None:
    """One check result through the prober's store (Redis) and recorder (Change + HealthEvent)."""
    target = ProbeTarget(backend_id=backend.pk, pool_id=backend.pool_id, kind="http", address=backend.address,
                         port=backend.port, interval=2.0, rise=1, fall=1)
    now = time.time()
    result = ProbeResult(backend_id=backend.pk, ok=ok, result="ok" if ok else "refused", latency_ms=1.0, due=now,
                         started=now, finished=now + 0.001, status=200 if ok else None)
    assert probes.ingest(sync_client(), [result], {backend.pk: target}) == 1


def live(api: APIClient) -> dict[str, Any]:
    response = api.get(f"{API}/topology/")
    assert response.status_code == 200, response.content
    return response.json()


def replay(api: APIClient, at: str) -> dict[str, Any]:
    response = api.get(f"{API}/topology/", {"at": at})
    assert response.status_code == 200, response.content
    return response.json()


def rows(body: dict[str, Any], key: str) -> dict[int, dict[str, Any]]:
    return {row["id"]: row for row in body[key]}


def statuses(body: dict[str, Any]) -> dict[int, str]:
    return {op["id"]: op["status"] for op in body["operations"]}


def build() -> tuple[Pool, list[Backend]]:
    """Regions, a PoP, a service with a VIP and a prefix, a monitored pool of four backends."""
    service = f.service(anycast_prefix=f.prefix())
    region = f.region()
    f.vip(service, region)
    f.client_network(region)
    pool = f.pool(f.pop(region), service, monitor=f.monitor(), expected_rps=100)
    return pool, [f.backend(pool, capacity_rps=1000) for _ in range(4)]


def test_it_gives_back_the_picture_that_was_live_at_each_instant(operator_api: APIClient, admin_api: APIClient,
                                                                 viewer_api: APIClient) -> None:
    pool, (b1, b2, b3, b4) = build()
    seen: list[tuple[str, str, dict[str, Any]]] = []

    def capture(label: str) -> None:
        picture = live(viewer_api)
        seen.append((label, timezone.now().isoformat(), picture))

    def act(url: str, body: dict[str, Any], api: APIClient = operator_api) -> Any:
        response = api.post(f"{API}/{url}", {"reason": "replay test", **body}, format="json")
        assert response.status_code in (200, 201, 202), response.content
        return response.json()

    capture("start")
    act(f"backends/{b1.pk}/drain/", {"grace_seconds": 600})
    capture("b1 draining")
    act(f"backends/{b2.pk}/weight/", {"weight": 40})
    capture("b2 weight 40")
    act(f"backends/{b3.pk}/maintenance/", {})
    capture("b3 maintenance")
    probe(b4, True)
    capture("b4 up")
    probe(b2, True)
    probe(b2, False)
    capture("b2 down")
    created = admin_api.post(f"{API}/backends/", {"pool": pool.pk, "name": "late", "address": "127.0.9.9",
                                                  "port": 8080, "capacity_rps": 500}, format="json")
    assert created.status_code == 201, created.content
    late = created.json()["id"]
    capture("late created")
    assert admin_api.patch(f"{API}/pools/{pool.pk}/", {"algorithm": "leastconn"}, format="json").status_code == 200
    capture("pool edited")
    assert admin_api.delete(f"{API}/backends/{late}/").status_code == 204
    capture("late deleted")
    act(f"backends/{b1.pk}/undrain/", {})
    capture("b1 back")

    # The pictures differ from one another: comparing with each is not comparing with one.
    backends_then = [rows(picture, "backends") for _, _, picture in seen]
    assert backends_then[0][b1.pk]["admin_state"] == "ready" and backends_then[1][b1.pk]["admin_state"] == "draining"
    assert backends_then[2][b2.pk]["weight"] == 40 and backends_then[4][b4.pk]["health"] == "up"
    assert backends_then[5][b2.pk]["health"] == "down" and late in backends_then[6] and late not in backends_then[8]
    assert rows(seen[7][2], "pools")[pool.pk]["algorithm"] == "leastconn"
    assert len({repr([then[key] for key in COMPARED]) for _, _, then in seen}) == len(seen)

    for label, at, then in seen:
        body = replay(viewer_api, at)
        assert body["replayed"] is True and body["at"] and "version" not in body, label
        for key in COMPARED:
            assert rows(body, key) == rows(then, key), (label, key)
        assert statuses(body) == statuses(then), label
        last = Change.objects.filter(time__lte=at).order_by("-time", "-id").first()
        assert body["as_of"]["change_id"] == last.pk and body["as_of"]["version"] == last.version, label
        # The health shown is the last transition the prober recorded by then (none yet: unknown).
        for bid, backend in rows(body, "backends").items():
            event = HealthEvent.objects.filter(backend_id=bid, time__lte=at).order_by("-time", "-id").first()
            assert backend["health"] == (event.to_health if event else "unknown"), (label, bid)


def test_an_operation_that_finished_later_is_shown_running_then(operator_api: APIClient,
                                                                viewer_api: APIClient) -> None:
    _pool, (b1, *_rest) = build()
    answer = operator_api.post(f"{API}/backends/{b1.pk}/drain/", {"reason": "deploy", "grace_seconds": 600},
                               format="json")
    op_id = answer.json()["operation"]["id"]
    during = timezone.now().isoformat()
    abort = operator_api.post(f"{API}/operations/{op_id}/abort/", {"reason": "wrong backend"}, format="json")
    assert abort.status_code == 200, abort.content
    assert statuses(live(viewer_api))[op_id] == "aborted"
    then = rows(replay(viewer_api, during), "operations")[op_id]
    assert then["status"] == "running" and then["finished_at"] is None and then["progress"] == {}


@pytest.mark.parametrize("at", ["yesterday", "", "2025-13-45T00:00:00Z", "2025-01-01", "0001-01-01T00:00:00+05:00",
                                "9999-12-31T23:59:59Z"])
def test_it_answers_a_bad_instant_with_a_field_error(viewer_api: APIClient, at: str) -> None:
    f.fleet(2, capacity_rps=10_000)
    do_drain(Backend.objects.first(), actor=Actor.system("test"), reason="history", grace_seconds=60)
    response = viewer_api.get(f"{API}/topology/", {"at": at})
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid" and body["errors"]["at"], body


def test_it_refuses_the_future_and_says_how_far_back_history_goes(viewer_api: APIClient) -> None:
    f.fleet(2)
    starts = Change.objects.order_by("time").first().time  # the viewer's token: the first change
    future = viewer_api.get(f"{API}/topology/", {"at": (timezone.now() + timezone.timedelta(hours=1)).isoformat()})
    assert future.status_code == 400 and "future" in future.json()["errors"]["at"][0]
    before = viewer_api.get(f"{API}/topology/", {"at": (starts - timezone.timedelta(seconds=1)).isoformat()})
    assert before.status_code == 400
    assert "History goes back to" in before.json()["errors"]["at"][0]
    assert before.json()["history_starts"] == starts.isoformat()
    assert replay(viewer_api, starts.isoformat())["history_starts"] == starts.isoformat()


def test_it_is_marked_as_the_past_and_never_as_a_version_to_follow(viewer_api: APIClient,
                                                                  anon_api: APIClient) -> None:
    f.fleet(2)
    at = timezone.now().isoformat()
    response = viewer_api.get(f"{API}/topology/", {"at": at})
    assert response.status_code == 200
    assert not response.has_header("ETag") and response["Cache-Control"] == "no-store"
    assert "version" not in response.json() and response.json()["replayed"] is True
    assert live(viewer_api)["version"] >= 1 and viewer_api.get(f"{API}/topology/").has_header("ETag")
    assert anon_api.get(f"{API}/topology/", {"at": at}).status_code == 401


def count_queries(api: APIClient, at: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        replay(api, at)
    return len(ctx.captured_queries)


def test_it_takes_as_many_queries_for_a_big_fleet_as_for_a_small_one(viewer_api: APIClient) -> None:
    actor = Actor.system("test")
    pool = f.fleet(3, capacity_rps=10_000)
    at = timezone.now().isoformat()
    do_drain(pool.backends.first(), actor=actor, reason="one", grace_seconds=60)
    replay(viewer_api, at)  # the token's first use is recorded once (last_used_at): not the replay's
    small = count_queries(viewer_api, at)
    for _ in range(15):
        other = f.fleet(4, capacity_rps=10_000)
        do_drain(other.backends.first(), actor=actor, reason="more history", grace_seconds=60)
        f.backend(f.pool(f.pop(f.region())))
    big = count_queries(viewer_api, at)
    assert small == big <= 16, (small, big)
    assert Backend.objects.count() > 70 and Change.objects.filter(time__gt=at).count() > 15
