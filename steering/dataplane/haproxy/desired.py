"""The desired HAProxy state of one PoP, read from the database into plain data (model.py).

The server weight is exactly `capacity.explain_effective_weight` of the backend (DESIGN §3: one
function for every data plane, the what-if and the UI).
"""

from __future__ import annotations

import datetime

from django.utils import timezone

from steering import capacity
from steering.dataplane.haproxy.model import ADMIN_TO_RUNTIME, MAINT, PoolSpec, PopSpec, ServerSpec, ServiceSpec
from steering.models import Backend, Pool, PoP, Service
from steering.representation import weight_inputs


def server_spec(backend: Backend, *, pool_in_panic: bool, now: datetime.datetime) -> ServerSpec:
    explained = capacity.explain_effective_weight(weight_inputs(backend, pool_in_panic=pool_in_panic, now=now))
    return ServerSpec(
        name=backend.name, address=backend.address, port=backend.port, weight=explained.effective,
        state=ADMIN_TO_RUNTIME.get(backend.admin_state, MAINT), backup=backend.backup, backend_id=backend.pk,
        weight_reason=explained.reason,
    )


def pop_spec(pop: PoP | int, *, now: datetime.datetime | None = None) -> PopSpec:
    pop_obj = pop if isinstance(pop, PoP) else PoP.objects.get(pk=pop)
    now = now or timezone.now()
    pools = list(Pool.objects.filter(pop=pop_obj).select_related("service").order_by("rule_priority", "slug", "pk"))
    by_pool: dict[int, list[Backend]] = {p.pk: [] for p in pools}
    for b in Backend.objects.filter(pool__pop=pop_obj).order_by("pool_id", "name"):
        by_pool[b.pool_id].append(b)
    service_ids = {p.service_id for p in pools}
    services = tuple(ServiceSpec(slug=s.slug, protocol=s.protocol)
                     for s in Service.objects.filter(pk__in=service_ids).order_by("slug"))
    return PopSpec(
        slug=pop_obj.slug,
        services=services,
        pools=tuple(
            PoolSpec(
                id=p.pk, slug=p.slug, service=p.service.slug, mode="http" if p.mode == "l7" else "tcp",
                algorithm=p.algorithm, match_host=p.match_host, match_path_prefix=p.match_path_prefix,
                rule_priority=p.rule_priority, backup_pool_id=p.backup_pool_id,
                servers=tuple(server_spec(b, pool_in_panic=p.in_panic, now=now) for b in by_pool[p.pk]),
            )
            for p in pools
        ),
    )
