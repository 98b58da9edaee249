"""Load the demo topology through the service layer (audited as system:demo). Idempotent."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from steering.demo import topology as demo
from steering.models import VIP, AnycastPrefix, Backend, ClientNetwork, Monitor, Pool, PoP, Region, Service
from steering.services.context import Actor
from steering.services.topology import do_create

REASON = "demo topology"


class Command(BaseCommand):
    help = "Create the demo fleet (4 regions, 7 PoPs, 2 services, 63 loopback backends) unless it exists."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--force", action="store_true", help="Seed even if some topology exists.")

    def handle(self, *args: Any, **options: Any) -> None:
        if Region.objects.exists() and not options["force"]:
            self.stdout.write("topology exists; demo not loaded (use --force to add it anyway)")
            return
        with transaction.atomic():
            counts = seed(Actor.system("demo"))
        self.stdout.write("demo topology loaded: " + ", ".join(f"{n} {k}" for k, n in counts.items()))


def seed(actor: Actor) -> dict[str, int]:
    regions = {
        slug: do_create(Region, {"slug": slug, "name": name, "latitude": lat, "longitude": lon}, actor=actor, reason=REASON)
        for slug, name, lat, lon in demo.REGIONS
    }
    pops = {
        slug: do_create(PoP, {"slug": slug, "region": regions[region], "name": name, "city": city,
                              "latitude": lat, "longitude": lon, "capacity_rps": 12000}, actor=actor, reason=REASON)
        for slug, region, name, city, lat, lon in demo.POPS
    }
    prefixes = {p: do_create(AnycastPrefix, {"prefix": p, "description": d}, actor=actor, reason=REASON) for p, d in demo.PREFIXES}
    services = {
        slug: do_create(Service, {"slug": slug, "fqdn": fqdn, "port": port, "protocol": proto, "dns_policy": policy,
                                  "ttl": ttl, "anycast_prefix": prefixes[prefix]}, actor=actor, reason=REASON)
        for slug, fqdn, port, proto, policy, ttl, prefix in demo.SERVICES
    }
    for service, per_region in demo.VIPS.items():
        for region, (address, weight, priority) in per_region.items():
            do_create(VIP, {"service": services[service], "region": regions[region], "address": address,
                            "weight": weight, "priority": priority}, actor=actor, reason=REASON)
    for cidr, region, description in demo.CLIENT_NETWORKS:
        do_create(ClientNetwork, {"cidr": cidr, "region": regions[region], "description": description}, actor=actor, reason=REASON)
    monitors = {
        slug: do_create(Monitor, {"slug": slug, "kind": kind, "path": path, "expected_status": expected},
                        actor=actor, reason=REASON)
        for slug, kind, path, expected in demo.MONITORS
    }
    backends = 0
    for pop_index, pop in enumerate(pops.values(), start=1):
        for pool_index, (slug, (service, mode, path, prio, count, port, cap, load, monitor)) in enumerate(demo.POOLS.items()):
            pool = do_create(Pool, {
                "pop": pop, "service": services[service], "slug": slug, "mode": mode, "match_path_prefix": path,
                "rule_priority": prio, "monitor": monitors[monitor], "expected_rps": load,
                "algorithm": "leastconn" if mode == "l7" else "roundrobin",
            }, actor=actor, reason=REASON)
            for n in range(1, count + 1):
                do_create(Backend, {
                    "pool": pool, "name": f"{slug.split('-')[0]}-{n}", "address": f"127.1.{pop_index}.{pool_index * 10 + n}",
                    "port": port, "weight": 100, "capacity_rps": cap, "slow_start_seconds": 30, "version": "1.4.1",
                }, actor=actor, reason=REASON)
                backends += 1
    return {"regions": len(regions), "PoPs": len(pops), "services": len(services), "backends": backends}
