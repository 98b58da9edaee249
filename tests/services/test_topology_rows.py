"""The topology snapshot is built from value rows (fast), the live deltas from model instances
(`represent`): both must describe every object identically, or the browser would flip between them."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from steering.models import Backend, Pool
from steering.representation import TYPES, represent
from steering.services.actions import do_drain
from steering.services.context import Actor
from steering.topology import topology_snapshot
from tests import factories as f

pytestmark = pytest.mark.django_db


def test_snapshot_rows_equal_the_delta_form_of_every_object() -> None:
    prefix = f.prefix(prefix="198.51.100.0/24")
    svc = f.service(anycast_prefix=prefix)
    pool = f.pool(service_obj=svc, monitor=f.monitor(), in_panic=True)
    other = f.pool(pool.pop, svc, slug="other")
    f.vip(svc, pool.pop.region, address="203.0.113.9")
    f.client_network(pool.pop.region, cidr="198.18.0.0/16")
    f.backend(pool, health="down", weight=40)                                     # kept in steering by panic
    f.backend(other, slow_start_seconds=60, ready_since=timezone.now() - datetime.timedelta(seconds=15))  # ramping
    f.backend(other, health="up", capacity_rps=5000)
    victim = f.backend(other, health="up", capacity_rps=5000)
    do_drain(victim, actor=Actor(name="otto", source="api"), reason="deploy", grace_seconds=60, force=True,
             force_reason="test")
    body = topology_snapshot()
    panic = set(Pool.objects.filter(in_panic=True).values_list("pk", flat=True))
    for model, key in TYPES.values():
        expected = {o.pk: represent(o, pools_in_panic=panic) for o in model._default_manager.all()}
        got = {row["id"]: row for row in body[key]}
        assert set(got) == set(expected), key
        for pk, row in got.items():
            want = expected[pk]
            if model is Backend and want["slow_start_seconds"]:
                # The ramp moves with the clock between the two reads: compare the rest exactly.
                assert abs(row.pop("effective_weight") - want.pop("effective_weight")) <= 1
                row.pop("effective_weight_reason"), want.pop("effective_weight_reason")
            assert row == want, (key, pk)
    assert body["operations"] and "params" not in body["operations"][0]
