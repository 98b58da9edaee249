"""A layered drain with a window: it starts layer by layer at `not_before` (judged again then), and at
`expires_at` every layer it took away comes back by itself, audited as system:scheduler."""

from __future__ import annotations

from steering.models import VIP, Backend, Change, Operation, PoP, Region
from steering.services.operations import sweep_due
from steering.services.windows import sweep
from tests.services.sites import at, layered, site_fleet


def layers_of(region: Region) -> tuple[str, int, set[str], set[str]]:
    """The region's state, its VIPs answering, its PoPs' announcements, its backends' states."""
    return (Region.objects.get(pk=region.pk).admin_state, VIP.objects.filter(region=region, enabled=True).count(),
            set(PoP.objects.filter(region=region).values_list("announce", flat=True)),
            set(Backend.objects.filter(pool__pop__region=region).values_list("admin_state", flat=True)))


IN_SERVICE = ("ready", 2, {"announce"}, {"ready"})


def test_a_layered_drain_with_an_end_brings_every_layer_back_by_itself(operator_api):
    west, east, fra, lhr, iad = site_fleet()
    r = layered(operator_api, "regions", west, expires_at=at(3600).isoformat())
    assert r.status_code == 202, r.content
    op_id = r.json()["operation"]["id"]
    assert r.json()["operation"]["expires_at"] is not None
    sweep_due(now=at(121))
    sweep_due(now=at(160))
    assert Operation.objects.get(pk=op_id).status == "succeeded"
    assert layers_of(west) == ("drained", 0, {"withdraw"}, {"drained"})
    assert sweep(now=at(1800))["windows_ended"] == 0
    assert sweep(now=at(3601))["windows_ended"] == 1
    assert layers_of(west) == IN_SERVICE
    assert layers_of(east) == ("ready", 2, {"announce"}, {"ready"})
    op = Operation.objects.get(pk=op_id)
    assert op.expired_at is not None and op.result["restored_by"]
    undrain = Operation.objects.get(pk=op.result["restored_by"])
    assert undrain.kind == "undrain" and undrain.actor_name == "system:scheduler"
    assert f"operation {op_id}" in undrain.reason
    assert set(Change.objects.filter(operation_id=undrain.pk).values_list("action", flat=True)) >= {
        "vip.enable", "pop.announce", "backend.undrain", "region.undrain"}
    assert sweep(now=at(7200))["windows_ended"] == 0  # once


def test_a_scheduled_layered_drain_starts_at_its_time_and_its_end_cuts_it_short(operator_api, viewer_api):
    west, east, fra, lhr, iad = site_fleet()
    r = layered(operator_api, "regions", west, not_before=at(600).isoformat(), expires_at=at(700).isoformat())
    assert r.status_code == 202, r.content
    op = r.json()["operation"]
    assert op["status"] == "scheduled" and op["kind"] == "layered_drain"
    assert r.json()["impact"]["plan"]["wait_seconds"] == 120   # the what-if of the layered drain itself
    assert layers_of(west) == IN_SERVICE
    calendar = viewer_api.get("/api/v1/operations/?window=true").json()["results"]
    assert [o["id"] for o in calendar] == [op["id"]]
    assert sweep(now=at(60))["windows_started"] == 0
    assert sweep(now=at(601))["windows_started"] == 1
    started = Operation.objects.get(pk=op["id"])
    assert started.status == "running" and started.actor_name == operator_api.user.username
    assert layers_of(west) == ("draining", 0, {"announce"}, {"ready"})   # DNS out, waiting out the TTL
    # The window ends while it still waits on DNS: over, everything back, and saying why.
    assert sweep(now=at(701))["windows_ended"] == 1
    assert layers_of(west) == IN_SERVICE
    ended = Operation.objects.get(pk=op["id"])
    assert ended.status == "succeeded" and ended.result["ended_by_window"] == ended.result["restored_by"]
    sweep_due(now=at(900))   # the sweeper no longer advances it
    assert layers_of(west) == IN_SERVICE


def test_an_undrain_before_the_end_closes_the_layered_window(operator_api, viewer_api):
    west, east, fra, lhr, iad = site_fleet()
    op_id = layered(operator_api, "pops", fra, expires_at=at(3600).isoformat()).json()["operation"]["id"]
    sweep_due(now=at(1))
    assert PoP.objects.get(pk=fra.pk).announce == "withdraw"
    r = operator_api.post(f"/api/v1/pops/{fra.pk}/undrain/", {"reason": "work finished early"}, format="json")
    assert r.status_code == 202, r.content
    assert PoP.objects.get(pk=fra.pk).announce == "announce"
    assert Operation.objects.get(pk=op_id).expired_at is not None
    early = Change.objects.get(action="operation.expire", object_id=op_id)
    assert early.after["ended"] == "early" and "work finished early" in early.reason
    assert viewer_api.get("/api/v1/operations/?window=true").json()["results"] == []
    assert sweep(now=at(3601))["windows_ended"] == 0


def test_a_layered_window_that_cannot_be_is_400_and_changes_nothing(operator_api):
    west, east, fra, lhr, iad = site_fleet()
    for body in ({"expires_at": at(-60).isoformat()}, {"not_before": at(600).isoformat(), "expires_at": at(300).isoformat()},
                 {"expires_at": at(3600 * 24 * 400).isoformat()}):
        r = layered(operator_api, "regions", west, **body)
        assert r.status_code == 400 and "expires_at" in r.json()["errors"], r.content
    assert layers_of(west) == IN_SERVICE and not Operation.objects.exists()
