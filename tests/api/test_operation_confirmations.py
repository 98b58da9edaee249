"""Undrain, maintenance, weight, withdraw and announce end when the data planes that carry them
acknowledged their version: `succeeded` naming what confirmed it, or `unconfirmed` in words after
the acknowledgement timeout. With confirmation off they succeed at once (the other tests)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from steering.models import Backend, Operation, PoP
from steering.readmodels.version import current_version
from steering.services.actions import do_drain, do_maintenance, do_undrain
from steering.services.anycast import do_announce, do_withdraw
from steering.services.context import Actor
from steering.services.operations import sweep_due
from steering.services.weights import do_set_weight
from tests import factories as f
from tests.conftest import agent_client
from tests.services.sites import site_fleet

OPERATOR = Actor(name="otto", source="api")
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _confirmation_on(settings: Any) -> None:
    settings.STEERING_DATAPLANE_CONFIRM = True
    settings.STEERING_DATAPLANE_ACK_TIMEOUT_SECONDS = 10


def ack(client: APIClient, layer: str) -> None:
    answer = client.post("/api/v1/agent/ack/", {"layer": layer, "version": current_version(), "etag": "e"},
                         format="json")
    assert answer.status_code == 200, answer.content


def later(seconds: float) -> datetime.datetime:
    return timezone.now() + datetime.timedelta(seconds=seconds)


def test_an_undrain_succeeds_once_its_pops_haproxy_runs_it_and_says_so(admin: Any) -> None:
    pool = f.fleet(2)
    backend = pool.backends.first()
    Backend.objects.filter(pk=backend.pk).update(admin_state="maint")
    haproxy = agent_client(admin, pool.pop, "haproxy")
    op = do_undrain(backend, actor=OPERATOR, reason="back")[0]
    op.refresh_from_db()
    assert op.status == "running" and op.progress["awaiting"] == [f"{pool.pop.slug} HAProxy"]
    assert Backend.objects.get(pk=backend.pk).admin_state == "ready"  # the change itself is written
    sweep_due()
    assert Operation.objects.get(pk=op.pk).status == "running"
    ack(haproxy, "local")
    sweep_due()
    op.refresh_from_db()
    assert op.status == "succeeded" and op.result["confirmed"] == [f"{pool.pop.slug} HAProxy"]
    assert "awaiting" not in op.progress


def test_an_unacknowledged_withdraw_ends_unconfirmed_in_plain_words() -> None:
    _west, _east, fra, _lhr, _iad = site_fleet()
    op = do_withdraw(fra, actor=OPERATOR, reason="router work", force=True, force_reason="test")[0]
    assert op is not None
    sweep_due(now=later(3))
    assert Operation.objects.get(pk=op.pk).status == "running"  # within the timeout: still waiting
    sweep_due(now=later(12))
    op.refresh_from_db()
    assert op.status == "unconfirmed"
    [words] = op.result["unconfirmed"]
    assert words.startswith(f"{fra.slug} ExaBGP has not applied version ") and " for 1" in words
    assert words.endswith("agent last seen never") and op.result["announce"] == "withdraw"


def test_announce_waits_for_exabgp_only(admin: Any) -> None:
    _west, _east, fra, _lhr, _iad = site_fleet()
    PoP.objects.filter(pk=fra.pk).update(announce="withdraw")
    op = do_announce(PoP.objects.get(pk=fra.pk), actor=OPERATOR, reason="back")[0]
    op.refresh_from_db()
    assert op.progress["awaiting"] == [f"{fra.slug} ExaBGP"]
    ack(agent_client(admin, fra, "exabgp"), "anycast")
    sweep_due()
    assert Operation.objects.get(pk=op.pk).status == "succeeded"


def test_a_pop_without_anycast_services_has_nothing_to_confirm_for_a_withdraw() -> None:
    pool = f.fleet(2, capacity_rps=1000, expected_rps=10)
    op = do_withdraw(pool.pop, actor=OPERATOR, reason="no prefixes here")[0]
    assert op is not None and Operation.objects.get(pk=op.pk).status == "succeeded"


def test_a_sites_maintenance_waits_for_every_layer_that_carries_it(admin: Any) -> None:
    west, _east, fra, lhr, _iad = site_fleet()
    op = do_maintenance(west, actor=OPERATOR, reason="power work", force=True, force_reason="test")[0]
    assert op is not None
    op.refresh_from_db()
    assert sorted(op.progress["awaiting"]) == sorted([f"{fra.slug} HAProxy", f"{lhr.slug} HAProxy",
                                                      f"{fra.slug} ExaBGP", f"{lhr.slug} ExaBGP", "GSLB server"])
    for pop in (fra, lhr):
        ack(agent_client(admin, pop, f"haproxy-{pop.slug}"), "local")
        ack(agent_client(admin, pop, f"exabgp-{pop.slug}"), "anycast")
    sweep_due()
    op.refresh_from_db()
    assert op.status == "running" and op.progress["awaiting"] == ["GSLB server"]
    ack(agent_client(admin, None, "gslb"), "dns")
    sweep_due()
    assert Operation.objects.get(pk=op.pk).status == "succeeded"


def test_an_operation_awaiting_acknowledgement_holds_nothing_up(admin_api: APIClient) -> None:
    pool = f.fleet(3, capacity_rps=1000, expected_rps=10)
    backend = pool.backends.first()
    first = do_set_weight(backend, actor=OPERATOR, reason="less", weight=50)[0]
    assert first is not None and Operation.objects.get(pk=first.pk).status == "running"
    # A ramp is not refused as "a second ramp", and the backend can still be deleted.
    ramp = do_set_weight(Backend.objects.get(pk=backend.pk), actor=OPERATOR, reason="ramp", weight=100,
                         ramp_seconds=10)[0]
    assert ramp is not None
    Operation.objects.filter(pk=ramp.pk).update(status="aborted")
    answer = admin_api.delete(f"/api/v1/backends/{backend.pk}/", HTTP_X_CHANGE_REASON="decommissioned")
    assert answer.status_code == 204, answer.content


def test_an_unconfirmed_drain_says_for_how_long_its_version_went_unapplied() -> None:
    pool = f.fleet(2, capacity_rps=1000, expected_rps=10)
    op = do_drain(pool.backends.first(), actor=OPERATOR, reason="deploy", grace_seconds=2)[0]
    assert op is not None
    sweep_due(now=later(12))
    op.refresh_from_db()
    assert op.status == "unconfirmed" and " HAProxy has not applied version " in op.result["unconfirmed"][0]
    assert " for 1" in op.result["unconfirmed"][0]  # 11 or 12 s, depending on the clock between calls
