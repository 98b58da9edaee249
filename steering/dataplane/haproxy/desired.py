"""The desired HAProxy state of one PoP, read from the database into plain data (model.py).

The server weight is exactly `capacity.explain_effective_weight` of the backend: one function for
every data plane, the what-if and the UI (pure modules, ARCHITECTURE.md §1).
"""

from __future__ import annotations

import datetime
from typing import Any

from django.utils import timezone

from steering import capacity
from steering.dataplane.haproxy.model import ADMIN_TO_RUNTIME, MAINT, PoolSpec, PopSpec, ServerSpec, ServiceSpec
from steering.models import Backend, Pool, PoP
from steering.representation import weight_inputs


def server_spec(backend: Any, *, pool_in_panic: bool, now: datetime.datetime) -> ServerSpec:
    explained = capacity.explain_effective_weight(weight_inputs(backend, pool_in_panic=pool_in_panic, now=now))
    return ServerSpec(
        name=backend.name, address=backend.address, port=backend.port, weight=explained.effective,
        state=ADMIN_TO_RUNTIME.get(backend.admin_state, MAINT), backup=backend.backup, backend_id=backend.pk,
        weight_reason=explained.reason,
    )


# What a server's spec and its effective weight read (steering.representation.weight_inputs):
# loading only these keeps a fleet-wide rebuild from converting every timestamp of every row.
SPEC_FIELDS = tuple(f.name for f in Backend._meta.concrete_fields
                    if f.name in {"id", "pool", "name", "address", "port", "backup", "weight", "admin_state", "health",
                                  "slow_start_seconds", "ready_since"} or f.name.startswith("eject"))


class _Row:
    """A backend's value row with the attribute access server_spec and weight_inputs use."""

    def __init__(self, row: dict[str, Any]) -> None:
        self.__dict__.update(row)
        self.pk = row["id"]

    def get_deferred_fields(self) -> set[str]:
        return set()


def _pool_spec(p: Pool, backends: list[Any], now: datetime.datetime) -> PoolSpec:
    return PoolSpec(
        id=p.pk, slug=p.slug, service=p.service.slug, mode="http" if p.mode == "l7" else "tcp",
        algorithm=p.algorithm, match_host=p.match_host, match_path_prefix=p.match_path_prefix,
        rule_priority=p.rule_priority, backup_pool_id=p.backup_pool_id,
        servers=tuple(server_spec(b, pool_in_panic=p.in_panic, now=now) for b in backends),
        retries=p.retries, redispatch=p.redispatch, retry_on=p.retry_on, observe=p.observe,
        error_limit=p.error_limit,
    )


def pop_specs(pops: list[PoP], *, now: datetime.datetime | None = None) -> dict[int, PopSpec]:
    """The desired HAProxy state of many PoPs in three queries, whatever their number: when a
    fleet-wide change wakes every PoP's agent, their states are built together."""
    now = now or timezone.now()
    pools = list(Pool.objects.filter(pop__in=pops).select_related("service")
                 .order_by("pop_id", "rule_priority", "slug", "pk"))
    by_pool: dict[int, list[Any]] = {p.pk: [] for p in pools}
    # Value rows, not model instances: a fleet-wide rebuild reads 20,000 of them.
    for row in Backend.objects.filter(pool__in=pools).order_by("pool_id", "name").values(*SPEC_FIELDS):
        by_pool[row["pool"]].append(_Row(row))
    by_pop: dict[int, list[Pool]] = {pop.pk: [] for pop in pops}
    for p in pools:
        by_pop[p.pop_id].append(p)
    return {
        pop.pk: PopSpec(
            slug=pop.slug,
            services=tuple(ServiceSpec(slug=s.slug, protocol=s.protocol)
                           for s in sorted({p.service for p in by_pop[pop.pk]}, key=lambda s: s.slug)),
            pools=tuple(_pool_spec(p, by_pool[p.pk], now) for p in by_pop[pop.pk]),
        )
        for pop in pops
    }


def pop_spec(pop: PoP | int, *, now: datetime.datetime | None = None) -> PopSpec:
    pop_obj = pop if isinstance(pop, PoP) else PoP.objects.get(pk=pop)
    return pop_specs([pop_obj], now=now)[pop_obj.pk]
