"""Layered drain of a PoP or region: DNS, wait out the TTL, anycast, local, done — or rolled back."""

from __future__ import annotations

from steering.models import VIP, Backend, Change, Operation, PoP, Region
from steering.services.operations import sweep_due
from tests.services.sites import at, layered, site_fleet


def test_a_region_leaves_dns_waits_withdraws_then_drains(operator_api):
    west, east, fra, lhr, iad = site_fleet()
    r = layered(operator_api, "regions", west)
    assert r.status_code == 202, r.content
    op_id = r.json()["operation"]["id"]
    plan = r.json()["impact"]["plan"]
    assert plan["wait_seconds"] == 120  # the longest TTL (60 s) x 2
    assert sorted(plan["withdraw"]) == ["fra9", "lhr9"]
    # Step 1 done at once: the region's VIPs no longer answer; nothing else moved yet.
    assert not VIP.objects.filter(region=west, enabled=True).exists()
    assert PoP.objects.get(pk=fra.pk).announce == "announce"
    assert not Backend.objects.filter(pool__pop__region=west).exclude(admin_state="ready").exists()
    op = Operation.objects.get(pk=op_id)
    assert [s["status"] for s in op.steps] == ["done", "running", "pending", "pending", "pending"]
    # The TTL wait is honoured...
    sweep_due(now=at(60))
    assert PoP.objects.get(pk=fra.pk).announce == "announce"
    # ...then anycast is withdrawn and the local drain starts.
    sweep_due(now=at(121))
    assert set(PoP.objects.filter(region=west).values_list("announce", flat=True)) == {"withdraw"}
    assert set(Backend.objects.filter(pool__pop__region=west).values_list("admin_state", flat=True)) == {"draining"}
    op.refresh_from_db()
    assert [s["status"] for s in op.steps][:4] == ["done", "done", "done", "running"]
    # Backends drain at their grace: the region is drained, the operation done.
    sweep_due(now=at(160))
    op.refresh_from_db()
    assert op.status == "succeeded"
    assert Region.objects.get(pk=west.pk).admin_state == "drained"
    assert Backend.objects.filter(pool__pop=iad, admin_state="ready").count() == 4
    actions = list(Change.objects.filter(operation_id=op_id).values_list("action", flat=True))
    for expected in ("region.drain", "vip.disable", "pop.withdraw", "backend.drain", "backend.drained", "region.drained"):
        assert expected in actions, expected


def test_a_pop_with_a_region_mate_keeps_the_region_vip(operator_api):
    west, east, fra, lhr, iad = site_fleet()
    r = layered(operator_api, "pops", fra)
    assert r.status_code == 202, r.content
    assert r.json()["impact"]["plan"]["dns"] == []  # London still answers for the region
    assert VIP.objects.filter(region=west, enabled=True).count() == 2
    # No DNS step to wait for: anycast and local follow at the next sweep.
    sweep_due(now=at(1))
    assert PoP.objects.get(pk=fra.pk).announce == "withdraw"
    assert PoP.objects.get(pk=lhr.pk).announce == "announce"


def test_abort_rolls_every_layer_back(operator_api):
    west, east, fra, lhr, iad = site_fleet()
    op_id = layered(operator_api, "regions", west).json()["operation"]["id"]
    sweep_due(now=at(121))  # DNS out, anycast withdrawn, backends draining
    r = operator_api.post(f"/api/v1/operations/{op_id}/abort/", {"reason": "cut postponed"}, format="json")
    assert r.status_code == 200 and r.json()["status"] == "aborted"
    assert VIP.objects.filter(region=west, enabled=True).count() == 2
    assert set(PoP.objects.filter(region=west).values_list("announce", flat=True)) == {"announce"}
    assert set(Backend.objects.filter(pool__pop__region=west).values_list("admin_state", flat=True)) == {"ready"}
    assert Region.objects.get(pk=west.pk).admin_state == "ready"


def test_undrain_after_a_layered_drain_brings_dns_and_anycast_back(operator_api):
    west, east, fra, lhr, iad = site_fleet()
    op_id = layered(operator_api, "regions", west).json()["operation"]["id"]
    sweep_due(now=at(121))
    sweep_due(now=at(160))
    assert Operation.objects.get(pk=op_id).status == "succeeded"
    r = operator_api.post(f"/api/v1/regions/{west.pk}/undrain/", {"reason": "cut done"}, format="json")
    assert r.status_code == 202, r.content
    assert VIP.objects.filter(region=west, enabled=True).count() == 2
    assert set(PoP.objects.filter(region=west).values_list("announce", flat=True)) == {"announce"}
    assert set(Backend.objects.filter(pool__pop__region=west).values_list("admin_state", flat=True)) == {"ready"}


def test_the_guard_judges_the_end_state(operator_api):
    west, east, fra, lhr, iad = site_fleet()
    iad.pools.update(expected_rps=3500)  # east (4000 req/s per service) cannot also take west's 1000
    r = layered(operator_api, "regions", west)
    assert r.status_code == 409 and r.json()["code"] == "capacity_guard"
    assert VIP.objects.filter(region=west, enabled=True).count() == 2
    dry = layered(operator_api, "regions", west, dry_run=True)
    assert dry.status_code == 200 and dry.json()["verdict"] == "overload"


def test_layered_applies_only_to_sites(operator_api):
    west, east, fra, lhr, iad = site_fleet()
    backend = Backend.objects.filter(pool__pop=fra).first()
    r = layered(operator_api, "backends", backend)
    assert r.status_code == 400 and "layered" in r.json()["errors"]


def test_it_keeps_the_stored_shape_existing_rows_and_the_dashboard_read(operator_api):
    west, east, fra, lhr, iad = site_fleet()
    op_id = layered(operator_api, "regions", west).json()["operation"]["id"]

    def stored():
        op = Operation.objects.get(pk=op_id)
        return op.params["step"], op.progress["step"], [s["name"] for s in op.steps]

    names = ["dns", "wait", "anycast", "local", "done"]
    assert stored() == (1, "wait", names)
    sweep_due(now=at(121))
    assert stored() == (3, "local", names)
    sweep_due(now=at(160))
    assert stored() == (3, "done", names)
