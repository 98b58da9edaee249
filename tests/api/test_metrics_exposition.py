"""/metrics after real actions: API latency by route pattern, operations by kind and outcome, guard
overrides, drains past their deadline, data-plane versions and lag per layer and PoP, probe
results and lag, live-feed sockets. Read back through Prometheus's own text parser."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from steering.health import store
from steering.health.target import ProbeResult, ProbeTarget
from steering.models import Backend
from steering.readmodels.version import current_version
from steering.redisconn import sync_client
from tests import factories as f
from tests.api.live_support import HOST, ORIGIN, session_cookie
from tests.conftest import agent_client
from tests.services.health_support import clean_probe_redis

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: Client | None = None) -> Samples:
    response = (client or Client()).get("/metrics")
    assert response.status_code == 200
    out: Samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def drain(api: APIClient, backend: Backend, **body: Any) -> Any:
    return api.post(f"/api/v1/backends/{backend.pk}/drain/", {"reason": "deploy 1.4.2", **body}, format="json")


@pytest.mark.django_db
def test_api_latency_is_labelled_by_route_pattern_method_and_status_class(operator_api: APIClient) -> None:
    backend = f.fleet(4).backends.first()
    assert backend is not None
    key = {"route": "/api/v1/backends/<pk>/drain/", "method": "POST", "status": "2xx"}
    before = value(scrape(), "steering_http_request_duration_seconds_count", **key) or 0.0
    assert drain(operator_api, backend, grace_seconds=0).status_code == 202
    assert operator_api.get(f"/api/v1/backends/{backend.pk}/").status_code == 200
    assert Client().get("/no/such/page/").status_code == 404
    samples = scrape()
    assert value(samples, "steering_http_request_duration_seconds_count", **key) == before + 1
    assert (value(samples, "steering_http_request_duration_seconds_bucket", **key, le="+Inf") or 0) >= 1
    assert value(samples, "steering_http_request_duration_seconds_count", route="/api/v1/backends/<pk>/",
                 method="GET", status="2xx")
    assert value(samples, "steering_http_request_duration_seconds_count", route="unmatched", method="GET",
                 status="4xx")
    routes = {dict(labels)["route"] for (name, labels) in samples if name.startswith("steering_http_request")}
    assert not any(f"/{backend.pk}/" in route for route in routes), routes  # never the raw path


@pytest.mark.django_db
def test_operations_by_kind_and_outcome_guard_overrides_and_overdue_drains(operator_api: APIClient) -> None:
    crowded = f.fleet(4, capacity_rps=1000, expected_rps=3600)  # losing one overloads the rest
    forced = drain(operator_api, crowded.backends.first(), grace_seconds=0, force=True,
                   force_reason="kernel CVE, accept the risk")
    assert forced.status_code == 202 and forced.json()["operation"]["forced"] is True
    roomy = f.fleet(4)
    aborted = drain(operator_api, roomy.backends.first(), grace_seconds=300).json()["operation"]
    assert operator_api.post(f"/api/v1/operations/{aborted['id']}/abort/", {"reason": "wrong host"},
                             format="json").status_code == 200
    late = roomy.backends.order_by("-pk").first()
    assert drain(operator_api, late, grace_seconds=300).status_code == 202
    # A drain the sweeper never completed: its deadline passed 90 s ago and it still drains.
    Backend.objects.filter(pk=late.pk).update(drain_deadline=timezone.now() - datetime.timedelta(seconds=90))

    samples = scrape()
    assert value(samples, "steering_operations_total", kind="drain", outcome="succeeded") == 1
    assert value(samples, "steering_operations_total", kind="drain", outcome="aborted") == 1
    assert value(samples, "steering_operations_total", kind="weight", outcome="failed") == 0
    assert value(samples, "steering_operations_in_progress", kind="drain", status="running") == 1
    assert value(samples, "steering_guard_overrides_total", kind="drain") == 1
    assert value(samples, "steering_guard_overrides_total", kind="withdraw") == 0
    assert value(samples, "steering_drains_overdue") == 1
    assert (value(samples, "steering_drains_overdue_max_seconds") or 0) >= 90


@pytest.mark.django_db
def test_data_plane_versions_state_and_lag_per_layer_and_pop(admin: Any) -> None:
    pool = f.fleet(3)
    pop = pool.pop
    agent = agent_client(admin, pop, "agent-metrics")
    v = current_version()
    assert agent.post("/api/v1/agent/ack/", {"layer": "local", "pop": pop.slug, "version": v},
                      format="json").status_code == 200
    samples = scrape()
    assert value(samples, "steering_dataplane_desired_version") == v
    assert value(samples, "steering_dataplane_applied_version", layer="local", pop=pop.slug) == v
    assert value(samples, "steering_dataplane_state", layer="local", pop=pop.slug, state="in_sync") == 1
    assert value(samples, "steering_dataplane_lag_seconds", layer="local", pop=pop.slug) == 0
    assert value(samples, "steering_dataplane_last_seen_timestamp_seconds", layer="local", pop=pop.slug)
    assert value(samples, "steering_dataplane_state", layer="anycast", pop=pop.slug, state="absent") == 1
    assert value(samples, "steering_dataplane_state", layer="dns", pop="", state="absent") == 1

    # A change the PoP's HAProxy has not acknowledged yet: applying, with its lag.
    from steering.services.actions import do_drain
    from steering.services.context import Actor

    do_drain(pool.backends.first(), actor=Actor(name="otto", source="api"), reason="r", grace_seconds=30)
    samples = scrape()
    assert value(samples, "steering_dataplane_desired_version") == v + 1
    assert value(samples, "steering_dataplane_applied_version", layer="local", pop=pop.slug) == v
    assert value(samples, "steering_dataplane_state", layer="local", pop=pop.slug, state="applying") == 1
    assert (value(samples, "steering_dataplane_lag_seconds", layer="local", pop=pop.slug) or 0) >= 0


@pytest.mark.django_db
def test_probe_results_and_lag() -> None:
    clean_probe_redis()
    try:
        r = sync_client()
        target = ProbeTarget(backend_id=4242, pool_id=1, kind="http", address="127.0.0.1", port=1,
                             interval=2.0, rise=1, fall=1)
        results = [ProbeResult(backend_id=4242, ok=False, result="refused", latency_ms=1.0, due=1000.0 + i * 2,
                               started=1000.2 + i * 2, finished=1000.201 + i * 2, status=None, error="refused")
                   for i in range(3)]
        store.apply_results(r, results, {4242: target}, outbox=False)
        samples = scrape()
        assert value(samples, "steering_probes_total", result="refused") == 3
        assert value(samples, "steering_probe_lag_seconds_count") == 3
        assert value(samples, "steering_probe_lag_seconds_bucket", le="0.25") == 3
        assert value(samples, "steering_probe_last_result_timestamp_seconds")
        assert value(samples, "steering_metrics_redis_up") == 1
    finally:
        clean_probe_redis()


@pytest.mark.django_db(transaction=True)
def test_live_feed_sockets_are_counted_while_open(operator: Any) -> None:
    from config.asgi import application

    cookie = session_cookie(operator)

    async def scenario() -> tuple[float | None, float | None]:
        comm = WebsocketCommunicator(application, "/ws/live/", headers=[(b"cookie", cookie), HOST, ORIGIN])
        connected, _ = await comm.connect()
        assert connected
        await comm.receive_json_from(timeout=10)  # hello: the socket holds its slot
        during = value(await sync_to_async(scrape)(), "steering_live_clients")
        await comm.disconnect()
        after = value(await sync_to_async(scrape)(), "steering_live_clients")
        return during, after

    during, after = async_to_sync(scenario)()
    assert during == 1
    assert after == 0
