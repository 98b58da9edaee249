"""GET /api/v1/anycast/, GET /api/v1/anycast/desired/?pop=, POST /api/v1/anycast/report/:
shapes, roles, bad input, the Redis record and the live push."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from steering.models import Change, PoP
from steering.services import announcements
from steering.services.effects import _redis
from tests import factories as f

PREFIX = "198.51.100.0/24"


@pytest.fixture
def pops(db: Any) -> tuple[PoP, PoP]:
    svc = f.service(slug="api", anycast_prefix=f.prefix(prefix=PREFIX))
    healthy, empty = f.pop(slug="bom9"), f.pop(slug="maa9")
    for p in (healthy, empty):
        f.backend(f.pool(p, svc), admin_state="ready" if p is healthy else "maint")
    for slug in ("bom9", "maa9"):
        _redis().delete(announcements.AGENT_KEY.format(slug=slug))
    return healthy, empty


def test_the_overview_has_desired_observed_and_agent_freshness(pops: tuple[PoP, PoP], viewer_api: Any) -> None:
    healthy, empty = pops
    announcements.record_agent_report(healthy, [PREFIX], session="up")
    announcements.record_agent_report(empty, [PREFIX], session="up", now=time.time() - 60)
    response = viewer_api.get("/api/v1/anycast/")
    assert response.status_code == 200
    rows = response.json()["pops"]
    assert rows[str(healthy.pk)] == {
        "slug": "bom9", "desired": [PREFIX], "observed": [PREFIX], "observed_at": rows[str(healthy.pk)]["observed_at"],
        "agent": "connected", "session": "up", "reason": "announcing: healthy backends for api",
    }
    stale = rows[str(empty.pk)]
    assert stale["desired"] == [] and stale["observed"] == [PREFIX]   # disagreeing: the UI shows the gap
    assert stale["agent"] == "stale" and stale["reason"] == "no healthy backends for api"


def test_a_pop_whose_agent_never_reported_is_absent(pops: tuple[PoP, PoP], viewer_api: Any) -> None:
    row = viewer_api.get("/api/v1/anycast/").json()["pops"][str(pops[0].pk)]
    assert (row["agent"], row["observed"], row["observed_at"], row["session"]) == ("absent", [], None, None)


def test_the_agent_gets_its_pops_instructions(pops: tuple[PoP, PoP], operator_api: Any) -> None:
    body = operator_api.get("/api/v1/anycast/desired/", {"pop": "bom9"}).json()
    assert body["pop"] == "bom9" and body["id"] == pops[0].pk
    assert body["desired"] == [PREFIX] and body["managed"] == [PREFIX]
    assert body["prefixes"] == [{"prefix": PREFIX, "announce": True, "reason": "healthy backends for api",
                                 "services": ["api"]}]
    assert operator_api.get("/api/v1/anycast/desired/", {"pop": "maa9"}).json()["desired"] == []


@pytest.mark.parametrize("query", [{}, {"pop": "nowhere"}, {"pop": "not a slug!"}, {"pop": "x" * 80}])
def test_desired_refuses_a_missing_or_unknown_pop(pops: tuple[PoP, PoP], viewer_api: Any, query: dict[str, str]) -> None:
    response = viewer_api.get("/api/v1/anycast/desired/", query)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid" and "pop" in response.json()["errors"]


def test_a_report_lands_in_redis_and_needs_no_audit_row(pops: tuple[PoP, PoP], operator_api: Any) -> None:
    changes = Change.objects.count()
    response = operator_api.post("/api/v1/anycast/report/",
                                 {"pop": "bom9", "observed": ["198.51.100.7/24"], "session": "up"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["observed"] == [PREFIX]
    stored = json.loads(_redis().get("steering:anycast:agent:bom9"))
    assert stored["observed"] == [PREFIX] and stored["session"] == "up"
    assert abs(stored["at"] - time.time()) < 60
    assert Change.objects.count() == changes   # a measurement, not a state change


@pytest.mark.parametrize("persona", ["viewer_api", "anon_api"])
def test_only_an_operator_may_report(pops: tuple[PoP, PoP], persona: str, request: pytest.FixtureRequest) -> None:
    client = request.getfixturevalue(persona)
    response = client.post("/api/v1/anycast/report/", {"pop": "bom9", "observed": []}, format="json")
    assert response.status_code == (403 if persona == "viewer_api" else 401)
    if persona == "viewer_api":
        assert "operator" in response.json()["detail"]
    assert _redis().get("steering:anycast:agent:bom9") is None


def test_readers_need_a_role(pops: tuple[PoP, PoP], anon_api: Any) -> None:
    assert anon_api.get("/api/v1/anycast/").status_code == 401
    assert anon_api.get("/api/v1/anycast/desired/", {"pop": "bom9"}).status_code == 401


@pytest.mark.parametrize(("body", "field"), [
    ({"pop": "bom9", "observed": ["198.51.100.0/33"]}, "observed"),
    ({"pop": "bom9", "observed": ["bogus"]}, "observed"),
    ({"pop": "bom9", "observed": "198.51.100.0/24"}, "observed"),
    ({"pop": "bom9", "observed": [PREFIX] * 1001}, "observed"),
    ({"pop": "bom9"}, "observed"),
    ({"pop": "nowhere", "observed": []}, "pop"),
    ({"observed": []}, "pop"),
    ({"pop": "bom9", "observed": [], "session": "sideways"}, "session"),
    ([1, 2], "non_field_errors"),
])
def test_a_bad_report_is_a_400_with_field_errors(pops: tuple[PoP, PoP], operator_api: Any, body: Any, field: str) -> None:
    response = operator_api.post("/api/v1/anycast/report/", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]


def test_it_pushes_live_only_when_the_observed_set_changes(pops: tuple[PoP, PoP], operator_api: Any,
                                                          django_capture_on_commit_callbacks: Any) -> None:
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("live", channel)

    async def drain() -> list[dict[str, Any]]:
        got = []
        while True:
            try:
                got.append(await asyncio.wait_for(layer.receive(channel), timeout=0.5))
            except TimeoutError:
                return got

    def report(observed: list[str]) -> None:
        r = operator_api.post("/api/v1/anycast/report/", {"pop": "bom9", "observed": observed, "session": "up"},
                              format="json")
        assert r.status_code == 200

    with django_capture_on_commit_callbacks(execute=True) as callbacks:   # pushes go after commit
        report([PREFIX])
        report([PREFIX])   # the same again: a heartbeat, no push
        report([])
    assert len(callbacks) == 2
    mine = [e for e in async_to_sync(drain)() if e["type"] == "live.observed" and e["message"]["pop"] == pops[0].pk]
    async_to_sync(layer.group_discard)("live", channel)
    assert [e["message"]["observed"] for e in mine] == [[PREFIX], []]
    first = mine[0]["message"]
    assert first["type"] == "observed" and first["layer"] == "anycast"
    assert first["desired"] == [PREFIX] and isinstance(first["at"], float)


def test_the_schema_documents_the_endpoints(viewer_api: Any) -> None:
    schema = viewer_api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    assert {"/api/v1/anycast/", "/api/v1/anycast/desired/", "/api/v1/anycast/report/"} <= set(schema["paths"])
    overview = schema["paths"]["/api/v1/anycast/"]["get"]["responses"]["200"]
    assert "AnycastOverview" in json.dumps(overview)
    assert "ReportInput" in json.dumps(schema["paths"]["/api/v1/anycast/report/"]["post"]["requestBody"])


def test_the_dataplanes_summary_counts_reporting_agents(pops: tuple[PoP, PoP]) -> None:
    assert announcements.connection_summary()["connected"] is False
    announcements.record_agent_report(pops[0], [PREFIX], session="up")
    assert announcements.connection_summary() == {"connected": True, "detail": "1 of 2 PoP agents reporting"}
