"""The desired HAProxy state of one PoP, read from the database into plain data (model.py).

The server weight is exactly `capacity.explain_effective_weight` of the backend: one function for
every data plane, the what-if and the UI (pure modules, ARCHITECTURE.md §1).
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from django.db import connections
from django.db.models import BooleanField, Count, ExpressionWrapper, Max, Q, Sum
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
# While a weight ramps (slow start) the spec changes with the clock, not with a version: its
# document is rebuilt this often so waiting agents get the next step of the ramp.
RAMP_REFRESH_SECONDS = 1.0


def _pool_spec(p: Pool, servers: tuple[ServerSpec, ...]) -> PoolSpec:
    return PoolSpec(
        id=p.pk, slug=p.slug, service=p.service.slug, mode="http" if p.mode == "l7" else "tcp",
        algorithm=p.algorithm, match_host=p.match_host, match_path_prefix=p.match_path_prefix,
        rule_priority=p.rule_priority, backup_pool_id=p.backup_pool_id, servers=servers,
        retries=p.retries, redispatch=p.redispatch, retry_on=p.retry_on, observe=p.observe,
        error_limit=p.error_limit, max_ejected_percent=p.outlier_max_ejected_percent,
        min_healthy_percent=p.min_healthy_percent,
    )


def _server_rows(pools: list[Pool], now: datetime.datetime) -> tuple[list[tuple[Any, ...]], dict[int, Backend]]:
    """The plain rows of these pools' backends in (pool, name) order, and the full Backend of each
    row in slow start or ejected (whose weight depends on the clock)."""
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
    return rows, full


def _clock_change(backend: Backend, now: datetime.datetime) -> float | None:
    """When this backend's server spec next changes by the clock alone: its slow-start ramp's
    next step (every RAMP_REFRESH_SECONDS), or the end of its ejection."""
    due: list[float] = []
    if backend.slow_start_seconds and backend.ready_since is not None \
            and backend.ready_since + datetime.timedelta(seconds=backend.slow_start_seconds) > now:
        due.append(now.timestamp() + RAMP_REFRESH_SECONDS)
    if backend.ejected_until is not None and backend.ejected_until > now:
        due.append(backend.ejected_until.timestamp())
    return min(due, default=None)


class BuiltServers(NamedTuple):
    by_pool: dict[int, list[Any]]
    refresh_at: dict[int, float]   # pool id -> when its servers next change by the clock alone
    timed_pools: frozenset[int]     # pools with a server in slow start or ejected


def _server_specs(pools: list[Pool], now: datetime.datetime, make: Callable[..., Any] = ServerSpec) -> BuiltServers:
    """Every server of these pools, in (pool, name) order, by pool id: a ServerSpec each, or what
    `make` builds from the same keywords (`dict`: the wire form, without a dataclass in between)."""
    if not pools:  # a PoP without pools: no query (compiling `pool IN ()` raises EmptyResultSet)
        return BuiltServers({}, {}, frozenset())
    panic = {p.pk: p.in_panic for p in pools}
    rows, full = _server_rows(pools, now)
    plain: dict[tuple[Any, ...], capacity.WeightExplanation] = {}
    by_pool: dict[int, list[Any]] = {p.pk: [] for p in pools}
    refresh: dict[int, float] = {}
    for pk, pool_id, name, address, port, backup, weight, admin_state, health, capacity_rps, _timed in rows:
        in_panic = panic[pool_id]
        if pk in full:
            spec = server_spec(full[pk], pool_in_panic=in_panic, now=now)
            by_pool[pool_id].append(spec if make is ServerSpec else make(**vars(spec)))
            due = _clock_change(full[pk], now)
            if due is not None:
                refresh[pool_id] = min(due, refresh.get(pool_id, due))
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
    timed_pools = frozenset(b.pool_id for b in full.values())
    return BuiltServers(by_pool, refresh, timed_pools)


@dataclass(frozen=True)
class _KeptServers:
    fingerprint: tuple[Any, ...]
    in_panic: bool
    servers: list[dict[str, Any]]


class ServerListCache:
    """The wire-form server lists of pools, kept between builds of the desired state, so a change
    that rewrites every PoP's spec without touching its backends (a service's protocol, a pool's
    retries) does not re-read and rebuild 20,000 servers: a fleet-wide rebuild was two thirds that.

    A pool's list is reused only when its backends' fingerprint (count, sum of ids, sum of
    revisions, latest updated_at; one aggregate query for all pools) and its panic flag are what
    they were. Every write to a backend raises its revision (kernel.set_fields, the health
    recorder, the drain CAS updates), a new row has a fresh id and a deleted one takes its id
    out, so any change to a pool's rows moves the fingerprint. Pools with a server in slow start
    or ejected change by the clock and are never kept."""

    MAX_POOLS = 100_000

    def __init__(self) -> None:
        self._kept: dict[int, _KeptServers] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()

    @staticmethod
    def fingerprints(pools: list[Pool]) -> dict[int, tuple[Any, ...]]:
        rows = (Backend.objects.filter(pool__in=pools).order_by().values("pool_id")
                .annotate(n=Count("id"), ids=Sum("id"), revisions=Sum("revision"), latest=Max("updated_at"))
                .values_list("pool_id", "n", "ids", "revisions", "latest"))
        found = {pool_id: tuple(rest) for pool_id, *rest in rows}
        return {p.pk: found.get(p.pk, (0, None, None, None)) for p in pools}

    def server_dicts(self, pools: list[Pool], now: datetime.datetime) -> BuiltServers:
        if not pools:
            return BuiltServers({}, {}, frozenset())
        fingerprints = self.fingerprints(pools)
        by_pool: dict[int, list[Any]] = {}
        with self._lock:
            for p in pools:
                kept = self._kept.get(p.pk)
                if kept is not None and kept.fingerprint == fingerprints[p.pk] and kept.in_panic == p.in_panic:
                    by_pool[p.pk] = kept.servers
        stale = [p for p in pools if p.pk not in by_pool]
        built = _server_specs(stale, now, make=dict)
        by_pool.update(built.by_pool)
        with self._lock:
            if len(self._kept) + len(stale) > self.MAX_POOLS:
                self._kept.clear()
            for p in stale:
                if p.pk not in built.timed_pools:
                    self._kept[p.pk] = _KeptServers(fingerprints[p.pk], p.in_panic, built.by_pool[p.pk])
                else:
                    self._kept.pop(p.pk, None)
        return BuiltServers(by_pool, built.refresh_at, built.timed_pools)


# One per process: the web process's long-polls share it (steering.api.longpoll).
SERVER_LISTS = ServerListCache()


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


class PopSpecDicts(NamedTuple):
    specs: dict[int, dict[str, Any]]
    refresh_at: dict[int, float | None]  # PoP id -> when its spec next changes by the clock alone


def build_pop_spec_dicts(pops: list[PoP], *, now: datetime.datetime | None = None) -> PopSpecDicts:
    """`pop_spec_to_dict(pop_specs(...))`, built straight into the wire form: a fleet-wide change
    rebuilds 20,000 servers, and a frozen dataclass each, copied into a dict, was a third of it.
    Server lists whose backends did not change are reused (SERVER_LISTS): they are shared between
    the documents built, so nobody may modify them."""
    now = now or timezone.now()
    pools, by_pop = _pools_by_pop(pops)
    built = SERVER_LISTS.server_dicts(pools, now)
    specs = {
        pop.pk: {
            "slug": pop.slug,
            "services": [dict(vars(s)) for s in _services(by_pop[pop.pk])],
            "pools": [{**vars(_pool_spec(p, ())), "servers": built.by_pool[p.pk]} for p in by_pop[pop.pk]],
            "notes": [],
        }
        for pop in pops
    }
    refresh = {pop.pk: min((built.refresh_at[p.pk] for p in by_pop[pop.pk] if p.pk in built.refresh_at),
                           default=None) for pop in pops}
    return PopSpecDicts(specs, refresh)


def pop_spec_dicts(pops: list[PoP], *, now: datetime.datetime | None = None) -> dict[int, dict[str, Any]]:
    return build_pop_spec_dicts(pops, now=now).specs


def pop_specs(pops: list[PoP], *, now: datetime.datetime | None = None) -> dict[int, PopSpec]:
    """The desired HAProxy state of many PoPs in a few queries, whatever their number: when a
    fleet-wide change wakes every PoP's agent, their states are built together."""
    now = now or timezone.now()
    pools, by_pop = _pools_by_pop(pops)
    servers = _server_specs(pools, now).by_pool
    return {
        pop.pk: PopSpec(slug=pop.slug, services=_services(by_pop[pop.pk]),
                        pools=tuple(_pool_spec(p, tuple(servers[p.pk])) for p in by_pop[pop.pk]))
        for pop in pops
    }


def pop_spec(pop: PoP | int, *, now: datetime.datetime | None = None) -> PopSpec:
    pop_obj = pop if isinstance(pop, PoP) else PoP.objects.get(pk=pop)
    return pop_specs([pop_obj], now=now)[pop_obj.pk]
