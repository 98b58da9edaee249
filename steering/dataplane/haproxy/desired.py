"""The desired HAProxy state of one PoP, read from the database into plain data (model.py).

The server weight is exactly `capacity.explain_effective_weight` of the backend: one function for
every data plane, the what-if and the UI (pure modules, ARCHITECTURE.md §1).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from django.db import connections
from django.db.models import BooleanField, ExpressionWrapper, Q
from django.utils import timezone

from steering import capacity
from steering.dataplane.haproxy.model import ADMIN_TO_RUNTIME, MAINT, PoolSpec, PopSpec, ServerSpec, ServiceSpec
from steering.models import Backend, Pool, PoP
from steering.representation import ejection_left, weight_inputs


def server_spec(backend: Any, *, pool_in_panic: bool, now: datetime.datetime) -> ServerSpec:
    explained = capacity.explain_effective_weight(weight_inputs(backend, pool_in_panic=pool_in_panic, now=now))
    return ServerSpec(
        name=backend.name, address=backend.address, port=backend.port, weight=explained.effective,
        state=ADMIN_TO_RUNTIME.get(backend.admin_state, MAINT), backup=backend.backup, backend_id=backend.pk,
        weight_reason=explained.reason, capacity=float(backend.capacity_rps),
        ejected=ejection_left(backend.ejected_at, backend.ejected_until, now) is not None,
    )


# What a server's spec and its effective weight read (steering.representation.weight_inputs).
SPEC_FIELDS = tuple(f.name for f in Backend._meta.concrete_fields
                    if f.name in {"id", "pool", "name", "address", "port", "backup", "weight", "admin_state", "health",
                                  "slow_start_seconds", "ready_since", "capacity_rps"} or f.name.startswith("eject"))
# Most servers of a fleet-wide rebuild are neither in slow start nor ejected: their weight depends
# on four values only, computed once per distinct four. Their timestamps are then never read (on
# SQLite, converting 60,000 of them was a third of a 200-PoP rebuild).
_PLAIN_FIELDS = ("id", "pool_id", "name", "address", "port", "backup", "weight", "admin_state", "health",
                 "capacity_rps")
MAX_SLOW_START = datetime.timedelta(seconds=3600)  # the model's bound on slow_start_seconds


def _pool_spec(p: Pool, servers: tuple[ServerSpec, ...]) -> PoolSpec:
    return PoolSpec(
        id=p.pk, slug=p.slug, service=p.service.slug, mode="http" if p.mode == "l7" else "tcp",
        algorithm=p.algorithm, match_host=p.match_host, match_path_prefix=p.match_path_prefix,
        rule_priority=p.rule_priority, backup_pool_id=p.backup_pool_id, servers=servers,
        retries=p.retries, redispatch=p.redispatch, retry_on=p.retry_on, observe=p.observe,
        error_limit=p.error_limit, max_ejected_percent=p.outlier_max_ejected_percent,
        min_healthy_percent=p.min_healthy_percent,
    )


def _server_specs(pools: list[Pool], now: datetime.datetime, make: Callable[..., Any] = ServerSpec) -> dict[int, list[Any]]:
    """Every server of these pools, in (pool, name) order, by pool id: a ServerSpec each, or what
    `make` builds from the same keywords (`dict`: the wire form, without a dataclass in between)."""
    if not pools:  # a PoP without pools: no query (compiling `pool IN ()` raises EmptyResultSet)
        return {}
    panic = {p.pk: p.in_panic for p in pools}
    timed = ExpressionWrapper(Q(ejected_until__gt=now) | Q(ready_since__gt=now - MAX_SLOW_START),
                              output_field=BooleanField())
    query = (Backend.objects.filter(pool__in=pools).order_by("pool_id", "name")
             .annotate(timed=timed).values_list(*_PLAIN_FIELDS, "timed"))
    # The plain rows straight from the cursor: the ORM's per-value converters were a fifth of a
    # fleet-wide rebuild, and these columns need none (booleans arrive as 0/1 on SQLite).
    sql, params = query.query.sql_with_params()
    with connections[query.db].cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    timed_ids = [r[0] for r in rows if r[-1]]
    full = {b.pk: b for b in Backend.objects.filter(pk__in=timed_ids).only(*SPEC_FIELDS)} if timed_ids else {}
    plain: dict[tuple[Any, ...], capacity.WeightExplanation] = {}
    by_pool: dict[int, list[Any]] = {p.pk: [] for p in pools}
    for pk, pool_id, name, address, port, backup, weight, admin_state, health, capacity_rps, _timed in rows:
        in_panic = panic[pool_id]
        if pk in full:
            spec = server_spec(full[pk], pool_in_panic=in_panic, now=now)
            by_pool[pool_id].append(spec if make is ServerSpec else make(**vars(spec)))
            continue
        key = (weight, admin_state, health, in_panic)
        explained = plain.get(key)
        if explained is None:
            explained = plain[key] = capacity.explain_effective_weight(capacity.WeightInputs(
                weight=weight, admin_state=admin_state, health=health, pool_in_panic=in_panic))
        by_pool[pool_id].append(make(
            name=name, address=address, port=port, weight=explained.effective,
            state=ADMIN_TO_RUNTIME.get(admin_state, MAINT), backup=bool(backup), backend_id=pk,
            weight_reason=explained.reason, capacity=float(capacity_rps), ejected=False))
    return by_pool


def _pools_by_pop(pops: list[PoP]) -> tuple[list[Pool], dict[int, list[Pool]]]:
    pools = list(Pool.objects.filter(pop__in=pops).select_related("service")
                 .order_by("pop_id", "rule_priority", "slug", "pk"))
    by_pop: dict[int, list[Pool]] = {pop.pk: [] for pop in pops}
    for p in pools:
        by_pop[p.pop_id].append(p)
    return pools, by_pop


def _services(pools: list[Pool]) -> tuple[ServiceSpec, ...]:
    return tuple(ServiceSpec(slug=s.slug, protocol=s.protocol) for s in sorted({p.service for p in pools},
                                                                                   key=lambda s: s.slug))


def pop_spec_dicts(pops: list[PoP], *, now: datetime.datetime | None = None) -> dict[int, dict[str, Any]]:
    """`pop_spec_to_dict(pop_specs(...))`, built straight into the wire form: a fleet-wide change
    rebuilds 20,000 servers, and a frozen dataclass each, copied into a dict, was a third of it."""
    now = now or timezone.now()
    pools, by_pop = _pools_by_pop(pops)
    servers = _server_specs(pools, now, make=dict)
    return {
        pop.pk: {
            "slug": pop.slug,
            "services": [dict(vars(s)) for s in _services(by_pop[pop.pk])],
            "pools": [{**vars(_pool_spec(p, ())), "servers": servers[p.pk]} for p in by_pop[pop.pk]],
            "notes": [],
        }
        for pop in pops
    }


def pop_specs(pops: list[PoP], *, now: datetime.datetime | None = None) -> dict[int, PopSpec]:
    """The desired HAProxy state of many PoPs in a few queries, whatever their number: when a
    fleet-wide change wakes every PoP's agent, their states are built together."""
    now = now or timezone.now()
    pools, by_pop = _pools_by_pop(pops)
    servers = _server_specs(pools, now)
    return {
        pop.pk: PopSpec(slug=pop.slug, services=_services(by_pop[pop.pk]),
                        pools=tuple(_pool_spec(p, tuple(servers[p.pk])) for p in by_pop[pop.pk]))
        for pop in pops
    }


def pop_spec(pop: PoP | int, *, now: datetime.datetime | None = None) -> PopSpec:
    pop_obj = pop if isinstance(pop, PoP) else PoP.objects.get(pk=pop)
    return pop_specs([pop_obj], now=now)[pop_obj.pk]
