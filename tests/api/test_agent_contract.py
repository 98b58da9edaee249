"""The agent contract: scoped agent tokens, versioned desired state, ACK/NACK, reports, and a
drain that completes only once its PoP's HAProxy acknowledged it."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from steering import redis_keys
from steering.models import ApiToken, Backend, Change, DataplaneState, Operation
from steering.readmodels.version import current_version
from steering.redisconn import sync_client
from steering.services.actions import do_drain
from steering.services.context import Actor
from steering.services.operations import sweep_due
from steering.services.tokens import do_revoke_token
from tests import factories as f
from tests.conftest import agent_client

OPERATOR = Actor(name="otto", source="api")


@pytest.fixture
def site(admin: Any) -> dict[str, Any]:
    pool = f.fleet(3, capacity_rps=1000, expected_rps=1000)
    other = f.pop()
    other_pool = f.pool(other, pool.service)
    return {"pool": pool, "pop": pool.pop, "backends": list(pool.backends.order_by("pk")), "other": other,
            "other_backend": f.backend(other_pool), "agent": agent_client(admin, pool.pop, "agent-a"),
            "dns_agent": agent_client(admin, None, "agent-dns")}


def desired(client: APIClient, **params: Any) -> Any:
    return client.get("/api/v1/agent/desired/", params)


# --- scope ---------------------------------------------------------------------------------------

def test_it_gives_an_agent_token_its_own_pops_desired_state_and_nothing_else(site: dict[str, Any]) -> None:
    agent, pop = site["agent"], site["pop"]
    answer = desired(agent, layer="local")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["pop"] == pop.slug and body["version"] == current_version()
    assert answer["ETag"] == body["etag"] and answer["X-Steering-Version"] == str(body["version"])
    servers = [s["backend_id"] for p in body["spec"]["pools"] for s in p["servers"]]
    assert servers == [b.pk for b in site["backends"]]
    assert desired(agent, layer="local", pop=site["other"].slug).status_code == 403
    assert desired(agent, layer="dns").status_code == 403
    assert desired(site["dns_agent"], layer="local", pop=pop.slug).status_code == 403
    assert desired(site["dns_agent"], layer="dns").status_code == 200
    assert desired(agent, layer="bogus").status_code == 400


def test_an_agent_token_can_do_nothing_else(site: dict[str, Any]) -> None:
    agent, backend = site["agent"], site["backends"][0]
    assert agent.get("/api/v1/backends/").status_code == 403
    assert agent.get("/api/v1/topology/").status_code == 403
    drain = agent.post(f"/api/v1/backends/{backend.pk}/drain/", {"reason": "x"}, format="json")
    assert drain.status_code == 403
    assert Backend.objects.get(pk=backend.pk).admin_state == "ready"


def test_people_read_any_scope_but_never_acknowledge(site: dict[str, Any], viewer_api: APIClient,
                                                     admin_api: APIClient, anon_api: APIClient) -> None:
    assert desired(viewer_api, layer="local", pop=site["other"].slug).status_code == 200
    assert desired(anon_api, layer="local", pop=site["pop"].slug).status_code in (401, 403)
    ack = admin_api.post("/api/v1/agent/ack/", {"layer": "local", "pop": site["pop"].slug, "version": 1},
                         format="json")
    assert ack.status_code == 403
    assert not DataplaneState.objects.exists()


def test_it_answers_304_with_the_version_when_the_spec_is_unchanged(site: dict[str, Any]) -> None:
    first = desired(site["agent"], layer="local").json()
    do_drain(site["other_backend"], actor=OPERATOR, reason="elsewhere", grace_seconds=30)  # another PoP
    again = site["agent"].get("/api/v1/agent/desired/", {"layer": "local"}, HTTP_IF_NONE_MATCH=first["etag"])
    assert again.status_code == 304
    assert int(again["X-Steering-Version"]) == current_version() > first["version"]


def test_create_token_makes_agent_tokens_bound_to_a_pop(site: dict[str, Any], admin: Any, capsys: Any) -> None:
    admin.is_superuser = True
    admin.save()
    call_command("create_token", "--agent", "--pop", site["pop"].slug)
    raw = capsys.readouterr().out.strip()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert desired(client, layer="local").status_code == 200
    token_change = Change.objects.filter(action="token.create").latest("id")
    assert token_change.after["pop"] == site["pop"].slug and token_change.after["role"] == "agent"


def test_admins_issue_and_list_agent_tokens_per_pop(site: dict[str, Any], admin_api: APIClient) -> None:
    made = admin_api.post("/api/v1/tokens/", {"name": "fra-haproxy", "role": "agent", "pop": site["pop"].slug},
                          format="json")
    assert made.status_code == 201, made.content
    assert made.json()["pop"] == site["pop"].slug
    listed = admin_api.get("/api/v1/tokens/", {"pop": site["pop"].pk}).json()["results"]
    assert {t["name"] for t in listed} >= {"fra-haproxy", "agent-a"}
    wrong = admin_api.post("/api/v1/tokens/", {"name": "x", "role": "operator", "pop": site["pop"].slug},
                           format="json")
    assert wrong.status_code == 400 and "pop" in wrong.json()["errors"]


# --- acknowledgements ---------------------------------------------------------------------------

def ack(client: APIClient, **body: Any) -> Any:
    return client.post("/api/v1/agent/ack/", {"layer": "local", **body}, format="json")


def test_an_ack_moves_applied_forward_only(site: dict[str, Any]) -> None:
    agent = site["agent"]
    do_drain(site["backends"][0], actor=OPERATOR, reason="r", grace_seconds=30)
    v = current_version()
    assert ack(agent, version=v, etag='"e"').json()["accepted"] is True
    replay = ack(agent, version=v - 1)
    assert replay.status_code == 200 and replay.json()["accepted"] is False
    row = DataplaneState.objects.get(layer="local", pop=site["pop"])
    assert row.applied_version == v and row.applied_etag == '"e"'
    future = ack(agent, version=v + 1000)
    assert future.status_code == 400 and "version" in future.json()["errors"]
    assert DataplaneState.objects.get(pk=row.pk).applied_version == v


def test_a_nack_records_the_data_planes_error_until_a_newer_version_applies(site: dict[str, Any]) -> None:
    agent = site["agent"]
    do_drain(site["backends"][0], actor=OPERATOR, reason="r", grace_seconds=30)
    v = current_version()
    ack(agent, version=v, error="[ALERT] parsing [haproxy.cfg:12]: unknown keyword 'bogus'")
    row = DataplaneState.objects.get(layer="local", pop=site["pop"])
    assert row.error_version == v and "bogus" in row.error
    do_drain(site["backends"][1], actor=OPERATOR, reason="r", grace_seconds=30)
    ack(agent, version=current_version())
    row.refresh_from_db()
    assert row.error == "" and row.applied_version == current_version()


def test_the_dataplanes_view_shows_desired_applied_and_words(site: dict[str, Any], viewer_api: APIClient) -> None:
    agent = site["agent"]
    ack(agent, version=current_version())
    applied = viewer_api.get("/api/v1/dataplanes/").json()["applied"]
    local = applied["pops"][site["pop"].slug]["local"]
    assert local["state"] == "in_sync" and local["applied_version"] == current_version()
    assert applied["pops"][site["other"].slug]["local"]["state"] == "absent"
    do_drain(site["backends"][0], actor=OPERATOR, reason="r", grace_seconds=30)
    local = viewer_api.get("/api/v1/dataplanes/").json()["applied"]["pops"][site["pop"].slug]["local"]
    assert local["state"] in ("applying", "behind") and local["desired_version"] == current_version()
    assert local["applied_version"] < local["desired_version"]



def dataplane_rows() -> list[tuple[Any, ...]]:
    """Every DataplaneState row, all of its fields: what an agent's request may have moved."""
    return list(DataplaneState.objects.order_by("pk").values_list())


def test_an_ack_or_nack_for_another_pop_is_403_and_changes_nothing(site: dict[str, Any]) -> None:
    agent, dns_agent, other = site["agent"], site["dns_agent"], site["other"].slug
    do_drain(site["backends"][0], actor=OPERATOR, reason="r", grace_seconds=30)
    v = current_version()
    assert ack(agent, version=v - 1, etag='"mine"').status_code == 200   # its own row exists, at v - 1
    rows, seen = dataplane_rows(), sync_client().hgetall(redis_keys.AGENTS_SEEN)
    foreign = [ack(agent, pop=other, version=v, etag='"e"'),                       # another PoP's HAProxy
               ack(agent, pop=other, version=v, error="refused"),                   # ... its NACK
               ack(agent, layer="anycast", pop=other, version=v),                   # another PoP's ExaBGP
               ack(agent, layer="dns", version=v),                                  # the DNS layer
               ack(dns_agent, pop=site["pop"].slug, version=v),                     # the GSLB server on a PoP
               ack(dns_agent, pop=site["pop"].slug, version=v, error="refused")]
    assert [a.status_code for a in foreign] == [403] * len(foreign)
    assert {a.json()["code"] for a in foreign} == {"out_of_scope"}
    assert dataplane_rows() == rows   # no row moved (its own stays at v - 1), none was made
    assert sync_client().hgetall(redis_keys.AGENTS_SEEN) == seen   # not even "seen"
    assert not DataplaneState.objects.filter(pop=site["other"]).exists()


def test_a_revoked_agent_token_is_401_on_desired_ack_and_report_and_changes_nothing(site: dict[str, Any]) -> None:
    agent, mine = site["agent"], site["backends"][0]
    assert ack(agent, version=current_version(), etag='"before"').status_code == 200   # in use until now
    do_revoke_token(ApiToken.objects.get(name="agent-a"), actor=Actor.system("test"), reason="host retired")
    do_drain(mine, actor=OPERATOR, reason="r", grace_seconds=30)   # something new to ACK
    v = current_version()
    redis = sync_client()
    stats = redis_keys.BACKEND_STATS.format(id=mine.pk)
    redis.delete(stats)
    rows, seen = dataplane_rows(), redis.hgetall(redis_keys.AGENTS_SEEN)
    answers = {"desired": desired(agent, layer="local"),
               "long-poll": desired(agent, layer="local", after=v - 1, wait=1),
               "ack": ack(agent, version=v, etag='"after"'),
               "nack": ack(agent, version=v, error="refused"),
               "report": report(agent, {"servers": {str(mine.pk): {"sessions": 3}}})}
    assert {name: a.status_code for name, a in answers.items()} == dict.fromkeys(answers, 401)
    assert all("revoked" in a.json()["detail"] for a in answers.values())
    assert dataplane_rows() == rows   # applied stays at the version before, no error recorded
    assert redis.hgetall(redis_keys.AGENTS_SEEN) == seen and not redis.exists(stats)


# --- reports -------------------------------------------------------------------------------------

def report(client: APIClient, body: dict[str, Any]) -> Any:
    return client.post("/api/v1/agent/report/", {"layer": "local", **body}, format="json")


def test_a_report_stores_figures_of_its_own_pop_only(site: dict[str, Any]) -> None:
    mine, theirs = site["backends"][0], site["other_backend"]
    redis = sync_client()
    redis.delete(redis_keys.BACKEND_STATS.format(id=mine.pk), redis_keys.BACKEND_STATS.format(id=theirs.pk))
    figures = {"sessions": 3, "session_rate": 2.0, "completion_rate": 1.5, "rate_5xx": 0.0}
    refused = report(site["agent"], {"servers": {str(mine.pk): figures, str(theirs.pk): figures}})
    assert refused.status_code == 403
    assert not redis.exists(redis_keys.BACKEND_STATS.format(id=mine.pk))  # nothing of a refused report is kept
    ok = report(site["agent"], {"servers": {str(mine.pk): figures},
                                "haproxy": {"connected": True, "pid": 42, "servers": 1}})
    assert ok.status_code == 200, ok.content
    assert redis.hget(redis_keys.BACKEND_STATS.format(id=mine.pk), "sessions") == b"3"


@pytest.mark.parametrize("body", [
    {"servers": {"abc": {"sessions": 1}}},
    {"servers": {"1": {"sessions": -1}}},
    {"servers": {"1": {"Bad Name": 1}}},
    {"servers": "nope"},
    {"observed": ["198.51.100.0/24"]},          # an anycast field in a local report
    {"layer": "nope"},
])
def test_a_malformed_report_is_400_and_stores_nothing(site: dict[str, Any], body: dict[str, Any]) -> None:
    answer = report(site["agent"], body)
    assert answer.status_code == 400, answer.content
    assert answer.json()["code"] == "invalid"


def test_an_oversized_report_is_413(site: dict[str, Any]) -> None:
    big = {"servers": {str(site["backends"][0].pk): {"sessions": 1}}, "pad": "x" * (1024 * 1024 + 10)}
    answer = site["agent"].post("/api/v1/agent/report/", json.dumps({"layer": "local", **big}),
                                content_type="application/json")
    assert answer.status_code == 413


def test_repairs_the_agent_reports_are_audited_as_the_reconciler(site: dict[str, Any]) -> None:
    backend = site["backends"][0]
    answer = report(site["agent"], {"repaired": [{"proxy": "pool-1-web", "server": backend.name,
                                                  "observed": {"state": "maint", "weight": 0},
                                                  "desired": {"state": "ready", "weight": 100},
                                                  "backend_id": backend.pk}]})
    assert answer.status_code == 200, answer.content
    change = Change.objects.get(action="dataplane.repair")
    assert change.actor_name == "system:reconciler" and change.object_id == backend.pk


# --- a drain completes when HAProxy confirmed it ---------------------------------------------------

def test_a_drain_completes_only_after_its_pops_haproxy_acknowledged_it(site: dict[str, Any], settings: Any) -> None:
    settings.STEERING_DATAPLANE_CONFIRM = True
    agent, backend = site["agent"], site["backends"][0]
    ack(agent, version=current_version())  # the PoP has a HAProxy agent, in sync before the drain
    op = do_drain(backend, actor=OPERATOR, reason="deploy", grace_seconds=5)[0]
    past_deadline = timezone.now() + datetime.timedelta(seconds=6)
    sweep_due(now=past_deadline)
    assert Backend.objects.get(pk=backend.pk).admin_state == "draining"  # HAProxy never said it drained
    ack(agent, version=current_version())
    sweep_due(now=past_deadline)
    assert Backend.objects.get(pk=backend.pk).admin_state == "drained"
    assert Operation.objects.get(pk=op.pk).status == "succeeded"


def test_an_unacknowledged_drain_ends_unconfirmed_and_says_why(site: dict[str, Any], settings: Any) -> None:
    settings.STEERING_DATAPLANE_CONFIRM = True
    settings.STEERING_DATAPLANE_ACK_TIMEOUT_SECONDS = 10
    backend = site["backends"][0]
    op = do_drain(backend, actor=OPERATOR, reason="deploy", grace_seconds=2)[0]
    sweep_due(now=timezone.now() + datetime.timedelta(seconds=3))
    assert Backend.objects.get(pk=backend.pk).admin_state == "draining"  # within the ack timeout: still waiting
    sweep_due(now=timezone.now() + datetime.timedelta(seconds=11))
    op = Operation.objects.get(pk=op.pk)
    assert op.status == "unconfirmed"
    words = " ".join(op.result["unconfirmed"])
    assert f"{site['pop'].slug} HAProxy has not applied version" in words and "agent last seen never" in words
    drained = Change.objects.filter(action="backend.drained", object_id=backend.pk).get()
    assert "not confirmed" in drained.reason


# --- agents need no Django --------------------------------------------------------------------------

def test_the_haproxy_agent_imports_no_django_database_or_redis() -> None:
    code = ("import sys, steering.agents.haproxy, steering.agents.contract; "
            "bad = sorted({m.split('.')[0] for m in sys.modules} & {'django', 'redis', 'psycopg', 'celery', "
            "'rest_framework', 'channels'}); print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


# --- a layered drain counts a layer done when its data plane acknowledged it ---------------------

def test_a_layered_drain_waits_for_each_layer_to_acknowledge(operator_api: APIClient, admin: Any,
                                                             settings: Any) -> None:
    from tests.services.sites import at, layered, site_fleet

    settings.STEERING_DATAPLANE_CONFIRM = True
    settings.STEERING_DATAPLANE_ACK_TIMEOUT_SECONDS = 600
    west, _east, fra, lhr, _iad = site_fleet()
    dns = agent_client(admin, None, "gslb")
    local = {p.slug: agent_client(admin, p, f"haproxy-{p.slug}") for p in (fra, lhr)}
    anycast = {p.slug: agent_client(admin, p, f"exabgp-{p.slug}") for p in (fra, lhr)}

    def ack_all(clients: dict[str, APIClient], layer: str) -> None:
        for client in clients.values():
            assert ack(client, layer=layer, version=current_version()).status_code == 200

    op_id = layered(operator_api, "regions", west, grace_seconds=0).json()["operation"]["id"]
    # The TTL wait has not started: the GSLB server has not applied the DNS change.
    sweep_due(now=at(500))
    op = Operation.objects.get(pk=op_id)
    assert op.params["step"] == 1 and "waiting for the GSLB server" in op.progress["dns"]
    ack(dns, layer="dns", version=current_version())
    sweep_due()
    op = Operation.objects.get(pk=op_id)
    assert op.params["dns_confirmed"] is True and op.deadline > timezone.now() + datetime.timedelta(seconds=100)
    sweep_due(now=op.deadline + datetime.timedelta(seconds=1))  # the wait is over: withdraw, drain
    assert Operation.objects.get(pk=op_id).params["step"] == 3
    sweep_due()
    assert set(Backend.objects.filter(pool__pop__region=west).values_list("admin_state", flat=True)) == {"draining"}
    ack_all(local, "local")  # HAProxy confirms the drains: they complete at their deadline
    later = op.deadline + datetime.timedelta(seconds=5)
    sweep_due(now=later)
    assert set(Backend.objects.filter(pool__pop__region=west).values_list("admin_state", flat=True)) == {"drained"}
    op = Operation.objects.get(pk=op_id)
    assert op.status == "running" and op.progress["step"] == "anycast"  # ExaBGP has not confirmed yet
    ack_all(anycast, "anycast")
    sweep_due(now=later)
    op = Operation.objects.get(pk=op_id)
    assert op.status == "succeeded", (op.status, op.progress)
    assert [s["status"] for s in op.steps] == ["done"] * 5


def test_a_report_with_redis_away_keeps_its_database_part_and_drops_only_the_figures(admin: Any, monkeypatch: Any) -> None:
    """What the fault suite saw: every HAProxy agent's report answered 500 while Redis was away."""
    import redis as redis_lib

    from steering.services import agent_reports, agents

    def away(*args, **kwargs):
        raise redis_lib.ConnectionError("Error 111 connecting. Connection refused.")

    pool = f.fleet(2)
    client = agent_client(admin, pool.pop)
    backend = pool.backends.first()
    monkeypatch.setattr(agent_reports, "store_local_figures", away)
    monkeypatch.setattr(agent_reports, "store_haproxy_status", away)
    monkeypatch.setattr(agents, "record_seen", away)
    from steering.api.views import agent as agent_view

    monkeypatch.setattr(agent_view, "record_seen", away)
    answer = client.post("/api/v1/agent/report/", {
        "layer": "local", "servers": {str(backend.pk): {"sessions": 1}}, "haproxy": {"connected": True},
        "repaired": [{"proxy": "p", "server": "s", "observed": {"state": "maint", "weight": 0},
                      "desired": {"state": "ready", "weight": 100}, "backend_id": backend.pk}]}, format="json")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["stored"]["repaired"] == 1 and "servers" not in body["stored"]
    assert {s.split(":")[0] for s in body["skipped"]} == {"seen", "servers", "haproxy"}
    assert Change.objects.filter(action="dataplane.repair").count() == 1


def test_an_anycast_report_with_redis_away_is_answered_and_says_what_it_dropped(admin: Any, monkeypatch: Any) -> None:
    """What the fault suite saw: the anycast agent's reports answered 503 while Redis was away (what
    ExaBGP announces is a measurement kept only in Redis; the report itself must not fail)."""
    import redis as redis_lib

    from steering.api.views import agent as agent_view
    from steering.services import announcements

    class Away:
        def __getattr__(self, name: str) -> Any:
            def refuse(*args: Any, **kwargs: Any) -> Any:
                raise redis_lib.ConnectionError("Error 111 connecting. Connection refused.")
            return refuse

    pop = f.pop()
    client = agent_client(admin, pop, name="anycast-agent")
    monkeypatch.setattr(announcements, "sync_client", Away)
    monkeypatch.setattr(agent_view, "record_seen", Away().hset)
    answer = client.post("/api/v1/agent/report/", {"layer": "anycast", "observed": ["198.51.100.0/24"],
                                                    "session": "up"}, format="json")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert "observed" not in body["stored"]
    assert {s.split(":")[0] for s in body["skipped"]} == {"seen", "observed"}


# --- passive health: what HAProxy's observe did reaches the outlier policy at once -----------------

def test_a_report_with_a_server_observe_took_out_runs_the_outlier_tick_at_once(
        site: dict[str, Any], monkeypatch: Any, django_capture_on_commit_callbacks: Any) -> None:
    from steering.services import outliers
    from steering.tasks.outliers import outlier_tick

    pool, victim = site["pool"], site["backends"][1]
    Backend.objects.filter(pool=pool).update(health="up")
    redis = sync_client()
    redis.delete(redis_keys.OUTLIER_TRACKS, redis_keys.OUTLIER_HELD, redis_keys.OUTLIER_LOCK)
    queued: list[dict[str, Any]] = []

    def run_now(**options: Any) -> None:  # what a worker does with the task, here in the test
        queued.append(options)
        outlier_tick.apply()

    monkeypatch.setattr(outlier_tick, "apply_async", run_now)
    figures = {"sessions": 1, "session_rate": 10.0, "completion_rate": 10.0, "rate_5xx": 0.0, "stot": 100,
               "errors": 0, "hrsp_5xx": 0, "observed_down": 0}
    try:
        with django_capture_on_commit_callbacks(execute=True):
            assert report(site["agent"], {"servers": {str(b.pk): figures for b in site["backends"]}}).status_code == 200
        assert queued == []  # nobody down: no tick asked for
        outliers.tick()      # the beat's tick, a second before: each backend's window starts
        down = {**figures, "stot": 103, "errors": 3, "observed_down": 1}
        with django_capture_on_commit_callbacks(execute=True):
            answer = report(site["agent"], {"servers": {str(victim.pk): down}})
        assert answer.status_code == 200, answer.content
        assert queued == [{"expires": 5}]
        victim.refresh_from_db()
        assert victim.ejected_at is not None and victim.ejection_reason.startswith("HAProxy took it out")
        assert Change.objects.get(action="backend.eject").actor_name == "system:outlier"
    finally:
        for b in site["backends"]:
            redis.delete(redis_keys.BACKEND_STATS.format(id=b.pk))
        redis.delete(redis_keys.OUTLIER_TRACKS, redis_keys.OUTLIER_HELD, redis_keys.METRICS_OUTLIER)


def test_servers_the_agent_put_back_beyond_the_bound_tell_the_operator_once(site: dict[str, Any]) -> None:
    pool, backends = site["pool"], site["backends"]
    redis = sync_client()
    held = {"sessions": 0, "session_rate": 0.0, "completion_rate": 0.0, "rate_5xx": 0.0, "observe_held": 1}
    try:
        for _ in range(2):  # the agent reports it on each pass it puts them back
            answer = report(site["agent"], {"servers": {str(b.pk): held for b in backends[1:]}})
            assert answer.status_code == 200, answer.content
        pool.refresh_from_db()
        assert pool.outlier_panic and "its agent put 2 back in" in pool.outlier_panic_reason
        assert Change.objects.filter(action="pool.outlier_panic", object_id=pool.pk).count() == 1
        # Only its own PoP's backends: naming another's refuses the whole report.
        refused = report(site["agent"], {"servers": {str(site["other_backend"].pk): held}})
        assert refused.status_code == 403
    finally:
        for b in [*backends, site["other_backend"]]:
            redis.delete(redis_keys.BACKEND_STATS.format(id=b.pk))
        redis.delete(redis_keys.OUTLIER_HELD, redis_keys.METRICS_OUTLIER)
