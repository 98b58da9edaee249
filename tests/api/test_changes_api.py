"""GET /api/v1/changes/: the audit log, filtered, paginated, newest first, and exported as CSV."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any

import pytest
from django.utils import timezone

from steering.api.views.changes import CSV_COLUMNS
from steering.models import Change, Operation, Pool, Region
from steering.services import actions, weights
from steering.services.context import Actor
from steering.services.operations import do_abort_operation
from steering.services.topology import do_create
from tests import factories as f

pytestmark = pytest.mark.django_db

URL = "/api/v1/changes/"


@dataclass
class History:
    pool: Pool
    drained: Any
    weighted: Any
    region: Region
    drain_op: Operation
    weight_op: Operation
    t_between: Any


@pytest.fixture
def history(operator, admin) -> History:
    """A small audit log: a drain over the API, a weight change from the CLI, a region the demo made."""
    pool = f.fleet(4)
    drained, weighted = list(pool.backends.order_by("pk"))[:2]
    drain_op, _ = actions.do_drain(drained, actor=Actor("otto-operator", "api", operator, "req-drain-1"),
                                   reason="deploy 1.4.2", grace_seconds=30)
    t_between = timezone.now()
    weight_op, _ = weights.do_set_weight(weighted, actor=Actor("ada-admin", "cli", admin, "req-weight-1"),
                                         reason="canary", weight=50)
    region = do_create(Region, {"slug": "sa-east", "name": "South America", "latitude": -23.5, "longitude": -46.6},
                       actor=Actor.system("demo"), reason="demo topology")
    assert drain_op is not None and weight_op is not None
    return History(pool, drained, weighted, region, drain_op, weight_op, t_between)


def results(client: Any, **params: Any) -> list[dict[str, Any]]:
    r = client.get(URL, {"page_size": 1000, **params})
    assert r.status_code == 200, r.content
    return r.json()["results"]


def actions_of(rows: list[dict[str, Any]]) -> list[str]:
    return [row["action"] for row in rows]


def test_it_filters_by_object(viewer_api, history):
    rows = results(viewer_api, object_type="backend", object_id=history.drained.pk)
    assert actions_of(rows) == ["backend.drain"]
    assert rows[0]["object_id"] == history.drained.pk


def test_it_filters_by_actor_name(viewer_api, history):
    assert actions_of(results(viewer_api, actor="ada-admin")) == ["backend.weight"]
    assert actions_of(results(viewer_api, actor="system:demo")) == ["region.create"]
    assert results(viewer_api, actor="nobody-at-all") == []


def test_it_filters_by_action_and_action_prefix(viewer_api, history):
    assert [r["object_id"] for r in results(viewer_api, action="backend.weight")] == [history.weighted.pk]
    backend_actions = actions_of(results(viewer_api, action_prefix="backend."))
    assert sorted(backend_actions) == ["backend.drain", "backend.weight"]
    assert actions_of(results(viewer_api, action_prefix="region.")) == ["region.create"]


def test_it_filters_by_source(viewer_api, history):
    assert actions_of(results(viewer_api, source="cli")) == ["backend.weight"]
    assert actions_of(results(viewer_api, source="api")) == ["backend.drain"]
    # The personas' tokens were issued by system:test, so "system" has those and the demo's region.
    system = results(viewer_api, source="system")
    assert "region.create" in actions_of(system)
    assert {r["source"] for r in system} == {"system"}


def test_it_rejects_an_unknown_source(viewer_api, history):
    r = viewer_api.get(URL, {"source": "carrier-pigeon"})
    assert r.status_code == 400


def test_it_filters_by_time_window(viewer_api, history):
    since = results(viewer_api, since=history.t_between.isoformat())
    assert sorted(actions_of(since)) == ["backend.weight", "region.create"]
    until = results(viewer_api, until=history.t_between.isoformat(), action_prefix="backend.")
    assert actions_of(until) == ["backend.drain"]
    assert results(viewer_api, since=timezone.now().isoformat()) == []


def test_it_filters_by_request_id(viewer_api, history):
    rows = results(viewer_api, request_id="req-weight-1")
    assert actions_of(rows) == ["backend.weight"]
    assert rows[0]["request_id"] == "req-weight-1"


def test_it_filters_by_operation(viewer_api, history):
    rows = results(viewer_api, operation_id=history.drain_op.pk)
    assert actions_of(rows) == ["backend.drain"]
    # Aborting the drain adds to the same operation's history.
    do_abort_operation(history.drain_op, actor=Actor.system("test"), reason="wrong backend")
    assert sorted(actions_of(results(viewer_api, operation_id=history.drain_op.pk))) == [
        "backend.drain", "backend.undrain", "operation.abort"]


def test_it_filters_by_involvement_as_object_or_related(viewer_api, history):
    rows = results(viewer_api, involving_type="pool", involving_id=history.pool.pk)
    # The pool's history includes what happened to its backends (related = the pool).
    assert sorted(actions_of(rows)) == ["backend.drain", "backend.weight"]
    other_pool = f.fleet(1)
    assert results(viewer_api, involving_type="pool", involving_id=other_pool.pk) == []
    as_object = results(viewer_api, involving_type="backend", involving_id=history.weighted.pk)
    assert actions_of(as_object) == ["backend.weight"]


def test_it_paginates(viewer_api, history):
    total = Change.objects.count()
    assert total >= 4
    r = viewer_api.get(URL, {"page_size": 2})
    assert r.status_code == 200
    body = r.json()
    assert body["count"] == total
    assert len(body["results"]) == 2
    assert body["next"] is not None and "page=2" in body["next"]
    assert body["previous"] is None
    second = viewer_api.get(body["next"]).json()
    assert {row["id"] for row in second["results"]}.isdisjoint({row["id"] for row in body["results"]})


def test_it_lists_newest_first(viewer_api, history):
    rows = results(viewer_api)
    assert rows[0]["action"] == "region.create"
    times = [row["time"] for row in rows]
    ids = [row["id"] for row in rows]
    assert times == sorted(times, reverse=True)
    assert ids == sorted(ids, reverse=True)


def test_it_lists_changes_in_constant_queries(viewer_api, history, django_assert_max_num_queries):
    for n in range(30):
        do_create(Region, {"slug": f"bulk-{n}", "name": f"Bulk {n}", "latitude": 1.0, "longitude": 2.0},
                  actor=Actor.system("test"))
    with django_assert_max_num_queries(8):
        r = viewer_api.get(URL, {"page_size": 100})
    assert r.status_code == 200
    assert len(r.json()["results"]) >= 34


def test_it_refuses_anonymous_readers(anon_api, history):
    assert anon_api.get(URL).status_code in (401, 403)
    assert anon_api.get(URL + "export/").status_code in (401, 403)


def test_it_is_read_only(admin_api, history):
    change = Change.objects.first()
    assert admin_api.post(URL, {"action": "x"}, format="json").status_code == 405
    assert admin_api.delete(f"{URL}{change.pk}/").status_code == 405
    assert admin_api.patch(f"{URL}{change.pk}/", {"reason": "rewritten"}, format="json").status_code == 405
    assert Change.objects.get(pk=change.pk).reason == change.reason


# --- CSV export ------------------------------------------------------------------------------------


def export(client: Any, **params: Any) -> tuple[Any, list[dict[str, str]]]:
    r = client.get(URL + "export/", params)
    assert r.status_code == 200
    body = b"".join(r.streaming_content).decode("utf-8")
    reader = csv.DictReader(io.StringIO(body))
    assert reader.fieldnames == CSV_COLUMNS
    return r, list(reader)


def test_it_exports_csv_with_a_header_and_one_row_per_change(viewer_api, history):
    r, rows = export(viewer_api)
    assert r["Content-Type"].startswith("text/csv")
    assert "attachment" in r["Content-Disposition"]
    assert len(rows) == Change.objects.count()
    assert [int(row["id"]) for row in rows] == list(Change.objects.values_list("id", flat=True))
    weight = next(row for row in rows if row["action"] == "backend.weight")
    assert weight["actor_name"] == "ada-admin"
    assert weight["source"] == "cli"
    assert weight["request_id"] == "req-weight-1"
    assert int(weight["operation_id"]) == history.weight_op.pk
    assert json.loads(weight["before"])["weight"] == 100
    assert json.loads(weight["after"])["weight"] == 50
    created = next(row for row in rows if row["action"] == "region.create")
    assert created["before"] == ""
    assert json.loads(created["after"])["slug"] == "sa-east"


def test_it_applies_filters_to_the_export(viewer_api, history):
    _, rows = export(viewer_api, action_prefix="backend.")
    assert sorted(row["action"] for row in rows) == ["backend.drain", "backend.weight"]
    _, rows = export(viewer_api, request_id="req-drain-1")
    assert [row["action"] for row in rows] == ["backend.drain"]
    _, rows = export(viewer_api, involving_type="pool", involving_id=history.pool.pk, source="api")
    assert [row["object_id"] for row in rows] == [str(history.drained.pk)]


def test_it_exports_awkward_reasons_intact(viewer_api, operator):
    pool = f.fleet(4)
    b = pool.backends.first()
    reason = 'INC-7, "quoted", comma; newline\nsecond line'
    actions.do_drain(b, actor=Actor("otto-operator", "api", operator, "req-csv"), reason=reason, grace_seconds=30)
    _, rows = export(viewer_api, request_id="req-csv")
    assert len(rows) == 1
    assert rows[0]["reason"] == reason


def test_it_shows_the_token_that_acted_and_the_chain(viewer_api, operator):
    from steering.models import ApiToken
    from steering.models.tokens import hash_token
    from tests.conftest import token_client

    client = token_client(operator)
    token = ApiToken.objects.get(digest=hash_token(client.raw_token))
    b = f.fleet(4).backends.first()
    r = client.post(f"/api/v1/backends/{b.pk}/drain/", {"reason": "deploy"}, format="json", HTTP_X_REQUEST_ID="req-tok")
    assert r.status_code == 202, r.content
    (row,) = results(viewer_api, request_id="req-tok")
    assert (row["token_id"], row["token_name"], row["source"]) == (token.pk, token.name, "api")
    assert len(row["hash"]) == 64 and len(row["prev_hash"]) == 64
    _, exported = export(viewer_api, request_id="req-tok")
    assert (exported[0]["token_id"], exported[0]["token_name"]) == (str(token.pk), token.name)
    # The token's deletion keeps the record of what it did.
    token_id = token.pk
    token.delete()
    (row,) = results(viewer_api, request_id="req-tok")
    assert row["token_id"] == token_id


def test_the_action_filter_knows_the_audit_table_and_old_names(viewer_api) -> None:
    assert viewer_api.get("/api/v1/changes/", {"action": "pop.maintenance"}).status_code == 200
    assert viewer_api.get("/api/v1/changes/", {"action": "pop.draining"}).status_code == 200  # an older row's name
    answer = viewer_api.get("/api/v1/changes/", {"action": "pop.bogus"})
    assert answer.status_code == 400 and "action" in answer.json()["errors"]
