"""Build the GSLB snapshot from the DB: services, VIPs, client networks, healthy capacity.

A region has healthy capacity for a service when a PoP of it (PoP and region admin state ready)
has a pool of that service with a backend of effective weight > 0: the same effective-weight
function the local data plane and the what-if use (steering.capacity via representation).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils import timezone

from steering import capacity
from steering.choices import AdminState
from steering.gslb import policy
from steering.models import VIP, Backend, ClientNetwork, Service
from steering.representation import weight_inputs


def healthy_regions() -> dict[int, set[int]]:
    """service id -> ids of the regions that can take its new traffic."""
    now = timezone.now()
    found: dict[int, set[int]] = {}
    backends = (
        Backend.objects.filter(pool__pop__admin_state=AdminState.READY,
                               pool__pop__region__admin_state=AdminState.READY)
        .select_related("pool", "pool__pop")
        .only("weight", "admin_state", "health", "slow_start_seconds", "ready_since",
              "ejected_at", "ejected_until", "ejection_reason",
              "pool__service_id", "pool__in_panic", "pool__pop__region_id")
    )
    for b in backends.iterator(chunk_size=2000):
        service_id, region_id = b.pool.service_id, b.pool.pop.region_id
        if region_id in found.get(service_id, ()):
            continue
        if capacity.effective_weight(weight_inputs(b, pool_in_panic=b.pool.in_panic, now=now)) > 0:
            found.setdefault(service_id, set()).add(region_id)
    return found


def snapshot_inputs() -> dict[str, Any]:
    """What the GSLB server needs to answer, as JSON: its part of the agent contract."""
    services, networks = _inputs()
    return policy.snapshot_inputs_to_dict(
        services, networks, nameservers=settings.STEERING_GSLB_NAMESERVERS,
        hostmaster=settings.STEERING_GSLB_HOSTMASTER, zone_ttl=settings.STEERING_GSLB_ZONE_TTL)


def build_from_db(version: int | None) -> policy.Snapshot:
    services, networks = _inputs()
    return policy.build_snapshot(
        services, networks, version=version,
        nameservers=settings.STEERING_GSLB_NAMESERVERS, hostmaster=settings.STEERING_GSLB_HOSTMASTER,
        zone_ttl=settings.STEERING_GSLB_ZONE_TTL,
    )


def _inputs() -> tuple[list[policy.Service], list[tuple[str, int]]]:
    healthy = healthy_regions()
    vips: dict[int, list[policy.Vip]] = {}
    for v in VIP.objects.all().only("id", "service_id", "region_id", "address", "weight", "priority", "enabled"):
        vips.setdefault(v.service_id, []).append(
            policy.Vip(v.pk, v.region_id, v.address, v.weight, v.priority, v.enabled))
    services = [
        policy.Service(id=s.pk, fqdn=s.fqdn, policy=s.dns_policy, ttl=s.ttl, vips=tuple(vips.get(s.pk, ())),
                       healthy_regions=frozenset(healthy.get(s.pk, ())))
        for s in Service.objects.all().only("id", "fqdn", "dns_policy", "ttl")
    ]
    networks = list(ClientNetwork.objects.values_list("cidr", "region_id"))
    return services, networks
