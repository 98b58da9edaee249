"""Filters narrow lists; a detail view and an action on one object build none
(steering.api.filters: DRF would otherwise filter the queryset a detail view looks its object up in)."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.test.utils import CaptureQueriesContext

from steering.choices import AdminState
from tests import factories as f

API = "/api/v1"


def test_a_list_is_still_filtered_searched_and_ordered(viewer_api: Any) -> None:
    pool = f.fleet(3)
    drained = f.backend(pool, name="zz-drained", admin_state=AdminState.DRAINED)
    listed = viewer_api.get(f"{API}/backends/", {"admin_state": "drained"}).json()["results"]
    assert [b["id"] for b in listed] == [drained.pk]
    assert viewer_api.get(f"{API}/backends/", {"search": "zz-drained"}).json()["count"] == 1
    names = [b["name"] for b in viewer_api.get(f"{API}/backends/", {"ordering": "-name"}).json()["results"]]
    assert names == sorted(names, reverse=True)
    refused = viewer_api.get(f"{API}/backends/", {"admin_state": "sideways"})
    assert refused.status_code == 400 and "admin_state" in refused.json()["errors"]


def test_a_detail_ignores_list_filters_instead_of_answering_404(viewer_api: Any) -> None:
    backend = f.fleet(2).backends.first()
    answer = viewer_api.get(f"{API}/backends/{backend.pk}/", {"admin_state": "drained", "search": "nothing"})
    assert answer.status_code == 200, answer.content
    assert answer.json()["id"] == backend.pk


def test_an_action_on_one_object_runs_no_filter_query(operator_api: Any) -> None:
    backend = f.fleet(3, capacity_rps=1000, expected_rps=100).backends.first()
    with CaptureQueriesContext(connection) as queries:
        answer = operator_api.post(f"{API}/backends/{backend.pk}/drain/?admin_state=drained",
                                   {"reason": "filters", "grace_seconds": 5}, format="json")
    assert answer.status_code == 202, answer.content
    lookups = [q["sql"] for q in queries.captured_queries
               if q["sql"].startswith('SELECT "steering_backend"') and '"admin_state" = ' in q["sql"].split("WHERE")[-1]]
    assert lookups == [], lookups
