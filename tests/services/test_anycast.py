"""Withdraw and announce a PoP's anycast prefixes; the what-if for a withdrawal and for draining
behind a live announcement."""

from __future__ import annotations

from steering.models import Change, Operation, PoP
from tests import factories as f


def anycast_fleet():
    """Two regions, three PoPs, one anycast service whose VIPs lie in its prefix."""
    prefix = f.prefix(prefix="203.0.113.0/24")
    svc = f.service(anycast_prefix=prefix)
    west, east = f.region(), f.region()
    fra = f.pop(west, slug="fra9", latitude=50.11, longitude=8.68)
    lhr = f.pop(west, slug="lhr9", latitude=51.50, longitude=-0.12)
    iad = f.pop(east, slug="iad9", latitude=39.04, longitude=-77.48)
    for region, address in ((west, "203.0.113.10"), (east, "203.0.113.20")):
        f.vip(svc, region, address=address)
    for pop in (fra, lhr, iad):
        f.fleet(2, capacity_rps=1000, expected_rps=600, pop=pop, service=svc)
    return fra, lhr, iad


def test_it_withdraws_to_the_nearest_announcing_pop_and_audits(operator_api):
    fra, lhr, iad = anycast_fleet()
    r = operator_api.post(f"/api/v1/pops/{fra.pk}/withdraw/", {"reason": "router maintenance"}, format="json")
    assert r.status_code == 202, r.content
    impact = r.json()["impact"]
    assert [row["id"] for row in impact["receivers"]] == [lhr.pk]  # London is nearest to Frankfurt
    assert impact["receivers"][0]["load_after_rps"] == 1200.0
    fra.refresh_from_db()
    assert fra.announce == "withdraw"
    change = Change.objects.get(action="pop.withdraw")
    assert (change.before["announce"], change.after["announce"]) == ("announce", "withdraw")
    assert Operation.objects.get(pk=r.json()["operation"]["id"]).kind == "withdraw"
    again = operator_api.post(f"/api/v1/pops/{fra.pk}/withdraw/", {"reason": "again"}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "already_withdrawn"
    back = operator_api.post(f"/api/v1/pops/{fra.pk}/announce/", {"reason": "done"}, format="json")
    assert back.status_code == 202
    assert PoP.objects.get(pk=fra.pk).announce == "announce"


def test_the_guard_refuses_a_withdrawal_the_neighbour_cannot_take(operator_api):
    fra, lhr, iad = anycast_fleet()
    lhr.pools.update(expected_rps=1500)  # London at 1500/2000: Frankfurt's 600 would push it to 2100
    r = operator_api.post(f"/api/v1/pops/{fra.pk}/withdraw/", {"reason": "x"}, format="json")
    assert r.status_code == 409 and r.json()["code"] == "capacity_guard"
    assert PoP.objects.get(pk=fra.pk).announce == "announce"


def test_draining_behind_a_live_announcement_is_an_outage(viewer_api):
    fra, lhr, iad = anycast_fleet()
    impact = viewer_api.get(f"/api/v1/pops/{fra.pk}/impact/?action=drain").json()
    assert impact["verdict"] == "outage"
    assert any("withdraw it first" in n for n in impact["notes"])
    PoP.objects.filter(pk=fra.pk).update(announce="withdraw")
    assert viewer_api.get(f"/api/v1/pops/{fra.pk}/impact/?action=drain").json()["verdict"] == "safe"


def test_withdraw_impact_is_readable_without_acting(viewer_api):
    fra, lhr, iad = anycast_fleet()
    r = viewer_api.get(f"/api/v1/pops/{fra.pk}/impact/?action=withdraw")
    assert r.status_code == 200 and r.json()["action"] == "withdraw"
    assert viewer_api.post(f"/api/v1/pops/{fra.pk}/withdraw/", {"reason": "x"}, format="json").status_code == 403
