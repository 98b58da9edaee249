"""Anycast over the API: GET /api/v1/anycast/ (desired beside observed, any role), and the anycast
layer of the agent contract (GET /api/v1/agent/desired/?layer=anycast, POST /api/v1/agent/report/
and /ack/) with a PoP-scoped agent token: shapes, scope, bad input, the Redis record and the live
push. The operator-token endpoints of before (/api/v1/anycast/desired/ and /report/) are gone."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from rest_framework.test import APIClient

from steering.models import Change, DataplaneState, PoP
from steering.readmodels import announcements
from steering.readmodels.version import current_version
from steering.redis_keys import ANYCAST_AGENT
from steering.redisconn import sync_client
from steering.services.announcements import record_agent_report
from steering.services.context import Actor
from steering.services.tokens import do_create_token
from tests import factories as f
from tests.conftest import make_user

PREFIX = "198.51.100.0/24"


@pytest.fixture
def pops(db: Any) -> tuple[PoP, PoP]:
    svc = f.service(slug="api", anycast_prefix=f.prefix(prefix=PREFIX))
    healthy, empty = f.pop(slug="bom9"), f.pop(slug="maa9")
    for p in (healthy, empty):
        f.backend(f.pool(p, svc), admin_state="ready" if p is healthy else "maint")
    for slug in ("bom9", "maa9"):
        sync_client().delete(ANYCAST_AGENT.format(slug=slug))
    return healthy, empty


def agent_client(pop: PoP) -> APIClient:
    owner = make_user(f"owner-{pop.slug}", "admin")
    _token, raw = do_create_token(owner, name=f"agent-anycast-{pop.slug}", role="agent", pop=pop,
                                  actor=Actor.system("test"))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture
def bom9_agent(pops: tuple[PoP, PoP]) -> APIClient:
    return agent_client(pops[0])


def report(client: APIClient, body: Any) -> Any:
    return client.post("/api/v1/agent/report/", body, format="json")


def test_the_overview_has_desired_observed_and_agent_freshness(pops: tuple[PoP, PoP], viewer_api: Any) -> None:
    healthy, empty = pops
    record_agent_report(healthy, [PREFIX], session="up")
    record_agent_report(empty, [PREFIX], session="up", now=time.time() - 60)
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


def test_the_agent_gets_its_pops_announcements_versioned(pops: tuple[PoP, PoP], bom9_agent: APIClient) -> None:
    response = bom9_agent.get("/api/v1/agent/desired/", {"layer": "anycast", "pop": "bom9"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["layer"], body["pop"], body["version"]) == ("anycast", "bom9", current_version())
    assert body["etag"] == response["ETag"]
    spec = body["spec"]
    assert spec["pop"] == "bom9" and spec["id"] == pops[0].pk and "at" not in spec   # no clock in the spec
    assert spec["desired"] == [PREFIX] and spec["managed"] == [PREFIX]
    assert spec["prefixes"] == [{"prefix": PREFIX, "announce": True, "reason": "healthy backends for api",
                                 "services": ["api"]}]
    # Without naming the PoP, an agent token reads its own.
    assert bom9_agent.get("/api/v1/agent/desired/", {"layer": "anycast"}).json()["spec"]["pop"] == "bom9"
    # Nothing changed: the spec the agent runs is current (304, the version to acknowledge).
    again = bom9_agent.get("/api/v1/agent/desired/", {"layer": "anycast", "pop": "bom9"},
                           HTTP_IF_NONE_MATCH=body["etag"])
    assert again.status_code == 304 and again["X-Steering-Version"] == str(body["version"])


def test_an_agent_token_is_bound_to_its_pop_and_to_pop_layers(pops: tuple[PoP, PoP], bom9_agent: APIClient) -> None:
    version = current_version()
    refusals = [
        bom9_agent.get("/api/v1/agent/desired/", {"layer": "anycast", "pop": "maa9"}),
        bom9_agent.get("/api/v1/agent/desired/", {"layer": "dns"}),
        report(bom9_agent, {"layer": "anycast", "pop": "maa9", "observed": [PREFIX], "session": "up"}),
        report(bom9_agent, {"layer": "dns", "answers": []}),
        bom9_agent.post("/api/v1/agent/ack/", {"layer": "anycast", "pop": "maa9", "version": version}, format="json"),
        bom9_agent.post("/api/v1/agent/ack/", {"layer": "dns", "version": version}, format="json"),
    ]
    assert [r.status_code for r in refusals] == [403] * 6, [r.content for r in refusals]
    assert all(r.json()["code"] == "out_of_scope" for r in refusals)
    assert sync_client().get(ANYCAST_AGENT.format(slug="maa9")) is None
    assert not DataplaneState.objects.filter(pop=pops[1]).exists()
    assert bom9_agent.get("/api/v1/anycast/").status_code == 403   # an agent token is no viewer


def test_a_report_lands_in_redis_and_needs_no_audit_row(pops: tuple[PoP, PoP], bom9_agent: APIClient) -> None:
    changes = Change.objects.count()
    response = report(bom9_agent, {"layer": "anycast", "pop": "bom9", "observed": ["198.51.100.7/24"], "session": "up"})
    assert response.status_code == 200, response.content
    assert response.json() == {"stored": {"observed": [PREFIX]}}
    stored = json.loads(sync_client().get("steering:anycast:agent:bom9"))
    assert stored["observed"] == [PREFIX] and stored["session"] == "up"
    assert abs(stored["at"] - time.time()) < 60
    assert Change.objects.count() == changes   # a measurement, not a state change


def test_an_ack_records_the_applied_version(pops: tuple[PoP, PoP], bom9_agent: APIClient) -> None:
    body = bom9_agent.get("/api/v1/agent/desired/", {"layer": "anycast", "pop": "bom9"}).json()
    response = bom9_agent.post("/api/v1/agent/ack/", {"layer": "anycast", "pop": "bom9", "version": body["version"],
                                                      "etag": body["etag"]}, format="json")
    assert response.status_code == 200 and response.json()["accepted"] is True, response.content
    row = DataplaneState.objects.get(layer="anycast", pop=pops[0], instance="default")
    assert (row.applied_version, row.applied_etag, row.agent_token_name) == (body["version"], body["etag"],
                                                                             "agent-anycast-bom9")


@pytest.mark.parametrize("persona", ["viewer_api", "operator_api", "admin_api", "anon_api"])
def test_only_an_agent_token_may_report(pops: tuple[PoP, PoP], persona: str, request: pytest.FixtureRequest) -> None:
    client = request.getfixturevalue(persona)
    response = report(client, {"layer": "anycast", "pop": "bom9", "observed": []})
    assert response.status_code == (401 if persona == "anon_api" else 403)
    assert sync_client().get("steering:anycast:agent:bom9") is None


@pytest.mark.parametrize(("method", "path"), [("get", "/api/v1/anycast/desired/?pop=bom9"),
                                              ("post", "/api/v1/anycast/report/")])
def test_the_operator_token_endpoints_are_gone(pops: tuple[PoP, PoP], operator_api: Any, method: str, path: str) -> None:
    assert getattr(operator_api, method)(path, {"pop": "bom9", "observed": []} if method == "post" else None,
                                         format="json").status_code == 404


def test_readers_need_a_role(pops: tuple[PoP, PoP], anon_api: Any) -> None:
    assert anon_api.get("/api/v1/anycast/").status_code == 401
    assert anon_api.get("/api/v1/agent/desired/", {"layer": "anycast", "pop": "bom9"}).status_code == 401


@pytest.mark.parametrize(("body", "field"), [
    ({"layer": "anycast", "observed": ["198.51.100.0/33"]}, "observed"),
    ({"layer": "anycast", "observed": ["bogus"]}, "observed"),
    ({"layer": "anycast", "observed": "198.51.100.0/24"}, "observed"),
    ({"layer": "anycast", "observed": [PREFIX] * 1001}, "observed"),
    ({"layer": "anycast", "observed": [], "session": "sideways"}, "session"),
    ({"layer": "anycast", "observed": [], "answers": [[1, 1, 1]]}, "answers"),
    ({"observed": []}, "layer"),
    ([1, 2], "non_field_errors"),
])
def test_a_bad_report_is_a_400_with_field_errors(pops: tuple[PoP, PoP], bom9_agent: APIClient, body: Any,
                                                field: str) -> None:
    response = report(bom9_agent, body)
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]
    assert sync_client().get("steering:anycast:agent:bom9") is None


def test_it_pushes_live_only_when_the_observed_set_changes(pops: tuple[PoP, PoP], bom9_agent: APIClient,
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

    def send(observed: list[str]) -> None:
        r = report(bom9_agent, {"layer": "anycast", "observed": observed, "session": "up"})
        assert r.status_code == 200, r.content

    with django_capture_on_commit_callbacks(execute=True) as callbacks:   # pushes go after commit
        send([PREFIX])
        send([PREFIX])   # the same again: a heartbeat, no push
        send([])
    assert len(callbacks) == 2
    mine = [e for e in async_to_sync(drain)() if e["type"] == "live.observed" and e["message"]["pop"] == pops[0].pk
            and e["message"].get("layer") == "anycast" and "observed" in e["message"]]
    async_to_sync(layer.group_discard)("live", channel)
    assert [e["message"]["observed"] for e in mine] == [[PREFIX], []]
    first = mine[0]["message"]
    assert first["type"] == "observed" and first["layer"] == "anycast"
    assert first["desired"] == [PREFIX] and isinstance(first["at"], float)


def test_the_schema_documents_the_overview_and_the_agent_contract_not_the_old_endpoints(viewer_api: Any) -> None:
    schema = viewer_api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    paths = set(schema["paths"])
    assert {"/api/v1/anycast/", "/api/v1/agent/desired/", "/api/v1/agent/ack/", "/api/v1/agent/report/"} <= paths
    assert not {"/api/v1/anycast/desired/", "/api/v1/anycast/report/"} & paths
    overview = schema["paths"]["/api/v1/anycast/"]["get"]["responses"]["200"]
    assert "AnycastOverview" in json.dumps(overview)
    ref = schema["paths"]["/api/v1/agent/report/"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    report_input = json.dumps(schema["components"]["schemas"][ref.rsplit("/", 1)[-1]])
    assert "observed" in report_input and "session" in report_input


def test_the_dataplanes_summary_counts_reporting_agents(pops: tuple[PoP, PoP]) -> None:
    assert announcements.connection_summary()["connected"] is False
    record_agent_report(pops[0], [PREFIX], session="up")
    assert announcements.connection_summary() == {"connected": True, "detail": "1 of 2 PoP agents reporting"}
