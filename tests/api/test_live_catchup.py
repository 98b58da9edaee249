"""Catching up on the live feed: the deltas published after a version, merged, from Redis; a gap
that cannot be filled is 410 (then, and only then, the browser refetches the topology)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from rest_framework.test import APIClient

from steering.readmodels.version import current_version
from steering.redis_keys import LIVE_DELTAS
from steering.redisconn import sync_client
from steering.services.context import Actor
from steering.services.topology import do_update
from tests import factories as f

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("test")
URL = "/api/v1/live/deltas/"


@pytest.fixture(autouse=True)
def _empty_store() -> Iterator[None]:
    sync_client().delete(LIVE_DELTAS)   # versions restart with each test's database
    yield
    sync_client().delete(LIVE_DELTAS)


def change_weights(backends: list[Any], weights: list[int], capture: Any) -> list[int]:
    """Each weight change committed (so it publishes), one version each; returns the versions."""
    versions = []
    for backend, weight in zip(backends, weights, strict=True):
        with capture(execute=True):
            do_update(backend, {"weight": weight}, actor=ACTOR, reason="test")
        versions.append(current_version())
    return versions


def test_a_client_catches_up_on_what_it_missed_with_one_merged_delta(
        viewer_api: APIClient, django_capture_on_commit_callbacks: Any) -> None:
    pool = f.fleet(3)
    a, b, c = list(pool.backends.order_by("pk"))
    v1, v2, v3 = change_weights([a, b, a], [11, 22, 33], django_capture_on_commit_callbacks)
    answer = viewer_api.get(URL, {"after": v1})
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert (body["type"], body["from_version"], body["version"]) == ("delta", v1 + 1, v3)
    weights = {ch["id"]: ch["data"]["weight"] for ch in body["changes"] if ch["type"] == "backend"}
    assert weights == {b.pk: 22, a.pk: 33}      # the latest of each object, nothing from v1 and before
    # Up to date: nothing newer, no changes.
    assert viewer_api.get(URL, {"after": v3}).json() == {"type": "delta", "from_version": v3 + 1, "version": v3,
                                                        "changes": []}


def test_a_gap_the_store_cannot_fill_is_410_gone(viewer_api: APIClient, django_capture_on_commit_callbacks: Any,
                                                 settings: Any) -> None:
    pool = f.fleet(2)
    a, b = list(pool.backends.order_by("pk"))
    settings.STEERING_LIVE_CATCHUP_VERSIONS = 2
    v1, v2, v3 = change_weights([a, b, a], [5, 6, 7], django_capture_on_commit_callbacks)
    assert viewer_api.get(URL, {"after": v1}).status_code == 200    # v2 and v3 are kept
    gone = viewer_api.get(URL, {"after": v1 - 1})                      # v1 is not any more
    assert gone.status_code == 410 and gone.json()["code"] == "gone"
    sync_client().delete(LIVE_DELTAS)                                  # Redis restarted: nothing kept
    assert viewer_api.get(URL, {"after": v3}).status_code == 410


def test_a_version_that_published_nothing_is_a_hole(viewer_api: APIClient,
                                                    django_capture_on_commit_callbacks: Any) -> None:
    from steering.services.audit import bump_version

    pool = f.fleet(2)
    a, b = list(pool.backends.order_by("pk"))
    (v1,) = change_weights([a], [9], django_capture_on_commit_callbacks)
    bump_version()                       # a version with no delta (as a fleet apply's lock takes one)
    change_weights([b], [10], django_capture_on_commit_callbacks)
    assert viewer_api.get(URL, {"after": v1}).status_code == 410


def test_a_store_that_went_back_in_time_forgets_what_came_after(viewer_api: APIClient,
                                                                django_capture_on_commit_callbacks: Any) -> None:
    from steering.readmodels import live_deltas

    live_deltas.record(50, {"type": "delta", "version": 50, "changes": []})   # from before a restore
    pool = f.fleet(1)
    (v1,) = change_weights([pool.backends.get()], [12], django_capture_on_commit_callbacks)
    assert v1 < 50
    assert sync_client().zcount(LIVE_DELTAS, 50, 50) == 0


@pytest.mark.parametrize("query", [{}, {"after": "x"}, {"after": -1}])
def test_bad_queries_are_400(viewer_api: APIClient, query: dict[str, Any]) -> None:
    answer = viewer_api.get(URL, query)
    assert answer.status_code == 400 and "after" in answer.json()["errors"]


def test_it_needs_a_signed_in_caller(anon_api: APIClient) -> None:
    assert anon_api.get(URL, {"after": 1}).status_code in (401, 403)


def test_an_agent_token_may_not_read_the_feed(admin: Any) -> None:
    from tests.conftest import agent_client

    pop = f.pop()
    assert agent_client(admin, pop).get(URL, {"after": 1}).status_code == 403
