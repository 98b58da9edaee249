"""A small world of sites shared by the layered-drain tests and the tests that reuse its shape
(the kernel's, the impact's, the agent contract's): two regions, three PoPs, a DNS service and an
anycast one."""

from __future__ import annotations

import datetime

from django.utils import timezone

from tests import factories as f


def site_fleet():
    """Region `west` (fra, lhr) and `east` (iad); service `api` (DNS, ttl 30) and `static` (anycast)."""
    prefix = f.prefix(prefix="203.0.113.0/24")
    api = f.service(ttl=30)
    static = f.service(ttl=60, anycast_prefix=prefix)
    west, east = f.region(), f.region()
    fra = f.pop(west, slug="fra9", latitude=50.11, longitude=8.68)
    lhr = f.pop(west, slug="lhr9", latitude=51.50, longitude=-0.12)
    iad = f.pop(east, slug="iad9", latitude=39.04, longitude=-77.48)
    f.vip(api, west, address="192.0.2.10")
    f.vip(api, east, address="192.0.2.20")
    f.vip(static, west, address="203.0.113.10")
    f.vip(static, east, address="203.0.113.20")
    for pop in (fra, lhr, iad):
        f.fleet(2, capacity_rps=2000, expected_rps=500, pop=pop, service=api)
        f.fleet(2, capacity_rps=2000, expected_rps=500, pop=pop, service=static)
    return west, east, fra, lhr, iad


def layered(api, kind, obj, **body):
    return api.post(f"/api/v1/{kind}/{obj.pk}/drain/", {"reason": "fibre cut planned", "layered": True,
                                                         "grace_seconds": 20, **body}, format="json")


def at(seconds):
    return timezone.now() + datetime.timedelta(seconds=seconds)
