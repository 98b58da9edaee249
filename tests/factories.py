"""Small factory functions: a fleet in a few lines. Setup writes the ORM directly (no Change rows),
so tests can count exactly the Change rows their action produced."""

from __future__ import annotations

from itertools import count
from typing import Any

from steering.models import VIP, AnycastPrefix, Backend, ClientNetwork, Monitor, Pool, PoP, Region, Service

_seq = count(1)


def region(**kw: Any) -> Region:
    n = next(_seq)
    return Region.objects.create(**{"slug": f"region-{n}", "name": f"Region {n}", "latitude": 10.0, "longitude": 20.0, **kw})


def pop(region_obj: Region | None = None, **kw: Any) -> PoP:
    n = next(_seq)
    return PoP.objects.create(**{"region": region_obj or region(), "slug": f"pop{n}", "name": f"PoP {n}",
                                 "city": "Mumbai", "latitude": 19.07, "longitude": 72.87, **kw})


def service(**kw: Any) -> Service:
    n = next(_seq)
    return Service.objects.create(**{"slug": f"svc-{n}", "fqdn": f"svc{n}.example.net", **kw})


def monitor(**kw: Any) -> Monitor:
    n = next(_seq)
    return Monitor.objects.create(**{"slug": f"mon-{n}", "kind": "http", "path": "/healthz", **kw})


def pool(pop_obj: PoP | None = None, service_obj: Service | None = None, **kw: Any) -> Pool:
    n = next(_seq)
    return Pool.objects.create(**{"pop": pop_obj or pop(), "service": service_obj or service(), "slug": f"pool-{n}", **kw})


def backend(pool_obj: Pool | None = None, **kw: Any) -> Backend:
    n = next(_seq)
    return Backend.objects.create(**{"pool": pool_obj or pool(), "name": f"app-{n}",
                                     "address": f"127.0.{n // 250}.{n % 250 + 1}", "port": 8080, **kw})


def prefix(**kw: Any) -> AnycastPrefix:
    n = next(_seq)
    return AnycastPrefix.objects.create(**{"prefix": f"198.51.100.{(n % 64) * 4}/30", **kw})


def vip(service_obj: Service | None = None, region_obj: Region | None = None, **kw: Any) -> VIP:
    n = next(_seq)
    return VIP.objects.create(**{"service": service_obj or service(), "region": region_obj or region(),
                                 "address": f"192.0.2.{n % 250 + 1}", **kw})


def client_network(region_obj: Region | None = None, **kw: Any) -> ClientNetwork:
    n = next(_seq)
    return ClientNetwork.objects.create(**{"cidr": f"198.18.{n % 250}.0/24", "region": region_obj or region(), **kw})


def fleet(backends: int = 4, *, capacity_rps: int = 1000, expected_rps: int = 2000, **pool_kw: Any) -> Pool:
    """One pool of `backends` ready backends, each able to carry `capacity_rps`."""
    p = pool(expected_rps=expected_rps, **pool_kw)
    for _ in range(backends):
        backend(p, capacity_rps=capacity_rps)
    return p
