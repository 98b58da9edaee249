"""The desired-state builder keeps each pool's server list between builds (SERVER_LISTS) and
reuses it while the pool's backends are unchanged. Every way the product writes a backend must
make the next build equal a build from scratch, and an unchanged pool must really be reused."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import pytest
from django.utils import timezone

from steering.dataplane.desired import encoded_documents, refresh_times
from steering.dataplane.haproxy.desired import SERVER_LISTS, build_pop_spec_dicts
from steering.models import Backend, Pool, PoP
from steering.services.actions import do_drain, do_undrain
from steering.services.context import Actor
from steering.services.health import do_record_health
from steering.services.operations import complete_drain
from steering.services.topology import do_create, do_delete, do_update
from tests import factories as f

pytestmark = pytest.mark.django_db

ACTOR = Actor.system("test")


def _servers(pool: Pool) -> list[dict[str, Any]]:
    spec = build_pop_spec_dicts([pool.pop]).specs[pool.pop.pk]
    return next(p["servers"] for p in spec["pools"] if p["id"] == pool.pk)


def _from_scratch(pop: PoP, now: datetime.datetime) -> dict[str, Any]:
    SERVER_LISTS.clear()
    return build_pop_spec_dicts([pop], now=now).specs[pop.pk]


def _two_pools() -> tuple[Pool, Pool, list[Backend]]:
    pool = f.pool()
    other = f.pool(pool.pop, service_obj=pool.service, slug="other", rule_priority=5)
    backends = [f.backend(pool, weight=10 + i) for i in range(3)] + [f.backend(pool, health="down")]
    f.backend(other)
    return pool, other, backends


def test_an_unchanged_pool_is_reused_and_a_changed_one_rebuilt() -> None:
    pool, other, backends = _two_pools()
    first_pool, first_other = _servers(pool), _servers(other)
    assert _servers(pool) is first_pool and _servers(other) is first_other   # nothing changed: kept
    do_update(backends[0], {"weight": 99}, actor=ACTOR, reason="test")
    assert _servers(other) is first_other                                   # the other pool: still kept
    rebuilt = _servers(pool)
    assert rebuilt is not first_pool
    assert [s["weight"] for s in rebuilt] != [s["weight"] for s in first_pool]


WRITES: dict[str, Callable[[Pool, list[Backend]], object]] = {
    "weight": lambda pool, bs: do_update(bs[0], {"weight": 3}, actor=ACTOR, reason="t"),
    "address": lambda pool, bs: do_update(bs[1], {"address": "127.9.9.9"}, actor=ACTOR, reason="t"),
    "health": lambda pool, bs: do_record_health(bs[0].pk, new_health="down", evidence={"why": "test"}),
    "drain": lambda pool, bs: do_drain(Backend.objects.get(pk=bs[2].pk), actor=ACTOR, reason="t"),
    "drain completes": lambda pool, bs: (do_drain(Backend.objects.get(pk=bs[2].pk), actor=ACTOR, reason="t"),
                                         _servers(pool),
                                         complete_drain(bs[2].pk, actor=ACTOR, why="test")),
    "delete": lambda pool, bs: do_delete(Backend.objects.get(pk=bs[1].pk), actor=ACTOR, reason="t"),
    "create": lambda pool, bs: do_create(Backend, {"pool": pool, "name": "zz-new", "address": "127.8.8.8",
                                                   "port": 8080}, actor=ACTOR, reason="t"),
    "delete and create, same count": lambda pool, bs: (
        do_delete(Backend.objects.get(pk=bs[0].pk), actor=ACTOR, reason="t"),
        do_create(Backend, {"pool": pool, "name": bs[0].name, "address": bs[0].address, "port": 9090},
                  actor=ACTOR, reason="t")),
    "pool panics": lambda pool, bs: Pool.objects.filter(pk=pool.pk).update(in_panic=True),
    "ejected": lambda pool, bs: do_update(bs[0], {"ejected_at": timezone.now(), "ejection_reason": "5xx",
                                                  "ejected_until": timezone.now() + datetime.timedelta(seconds=30)},
                                          actor=ACTOR, reason="t"),
    "undrain into slow start": lambda pool, bs: (
        do_update(bs[2], {"slow_start_seconds": 60}, actor=ACTOR, reason="t"),
        do_drain(Backend.objects.get(pk=bs[2].pk), actor=ACTOR, reason="t"),
        complete_drain(bs[2].pk, actor=ACTOR, why="test"),
        _servers(pool),
        do_undrain(Backend.objects.get(pk=bs[2].pk), actor=ACTOR, reason="t")),
}


@pytest.mark.parametrize("write", list(WRITES))
def test_after_each_kind_of_write_the_kept_build_equals_a_fresh_one(write: str) -> None:
    pool, _other, backends = _two_pools()
    before = _servers(pool)
    WRITES[write](pool, backends)
    pop = PoP.objects.get(pk=pool.pop_id)
    now = timezone.now()  # one instant for both builds: a ramping weight moves with the clock
    kept = build_pop_spec_dicts([pop], now=now).specs[pop.pk]
    assert kept == _from_scratch(pop, now)
    assert next(p["servers"] for p in kept["pools"] if p["id"] == pool.pk) != before  # the write showed


def test_a_pool_that_changes_by_the_clock_is_never_kept_and_says_when() -> None:
    pool, other, backends = _two_pools()
    now = timezone.now()
    Backend.objects.filter(pk=backends[0].pk).update(slow_start_seconds=60, ready_since=now - datetime.timedelta(seconds=5),
                                                      revision=backends[0].revision + 1)
    built = build_pop_spec_dicts([pool.pop])
    assert _servers(pool) is not _servers(pool)       # rebuilt every time: the ramp moves with the clock
    assert _servers(other) is _servers(other)
    # When the PoP's spec next changes: the same instant as the query-based answer, give or take the clock.
    expected = refresh_times("local", [pool.pop])[pool.pop.pk]
    assert expected is not None and built.refresh_at[pool.pop.pk] == pytest.approx(expected, abs=0.5)


def test_a_documents_etag_digests_the_bytes_its_body_carries() -> None:
    import hashlib

    import orjson

    pool, _other, _backends = _two_pools()
    document, encoded = encoded_documents("local", [pool.pop])[pool.pop.pk]
    assert orjson.loads(encoded) == orjson.loads(orjson.dumps(document["spec"]))
    assert document["etag"] == '"' + hashlib.sha256(encoded).hexdigest()[:32] + '"'
