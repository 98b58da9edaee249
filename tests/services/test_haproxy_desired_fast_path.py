"""A fleet-wide rebuild computes most servers' weights once per distinct (weight, state, health,
panic) and reads timestamps only for servers in slow start or ejected: its specs must equal the
one-backend-at-a-time `server_spec` in every state."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from steering.dataplane.haproxy.desired import pop_spec_dicts, pop_specs, server_spec
from steering.dataplane.haproxy.model import pop_spec_to_dict
from steering.models import Backend
from tests import factories as f

pytestmark = pytest.mark.django_db


def test_every_state_gives_the_same_server_spec_as_one_at_a_time() -> None:
    now = timezone.now()
    ago = lambda seconds: now - datetime.timedelta(seconds=seconds)  # noqa: E731
    pool = f.pool(in_panic=False)
    panic = f.pool(pool.pop, in_panic=True)
    cases = [
        {},
        {"weight": 0},
        {"admin_state": "draining", "drain_deadline": now + datetime.timedelta(seconds=30)},
        {"admin_state": "maint"},
        {"health": "down"},
        {"health": "up", "weight": 7},
        {"slow_start_seconds": 60, "ready_since": ago(15)},            # ramping
        {"slow_start_seconds": 60, "ready_since": ago(600)},           # ramp over
        {"slow_start_seconds": 3600, "ready_since": ago(3599)},        # the longest ramp, nearly over
        {"ejected_at": ago(5), "ejected_until": now + datetime.timedelta(seconds=25), "ejection_reason": "9 x 5xx"},
        {"ejected_at": ago(60), "ejected_until": ago(30), "ejection_reason": "over"},  # ejection ended
    ]
    for p in (pool, panic):
        for kw in cases:
            f.backend(p, **kw)
    f.backend(panic, health="down")
    built = pop_specs([pool.pop], now=now)[pool.pop.pk]
    got = {s.backend_id: s for p in built.pools for s in p.servers}
    for backend in Backend.objects.select_related("pool"):
        assert got[backend.pk] == server_spec(backend, pool_in_panic=backend.pool.in_panic, now=now), backend.pk
    # The wire form built straight from the rows is the dataclasses' wire form.
    assert pop_spec_dicts([pool.pop], now=now)[pool.pop.pk] == pop_spec_to_dict(built)
    weights = {s.weight_reason.split(" ")[0] for s in got.values()}
    assert {"admin", "configured", "slow", "ejected", "health", "down,"} <= weights  # every path was taken


def test_a_pop_without_pools_has_an_empty_spec_in_both_forms() -> None:
    pop = f.pop()
    assert pop_specs([pop])[pop.pk].pools == ()
    assert pop_spec_dicts([pop])[pop.pk] == {"slug": pop.slug, "services": [], "pools": [], "notes": []}
