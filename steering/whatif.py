"""The capacity what-if, as pure functions over a plain description of the fleet (no Django).

For an action on a backend, pool, PoP or region (drain, maintenance, weight change, anycast
withdrawal) it answers: where does the traffic go, what load and headroom does each receiver
end with, and is that safe. The rules, in the order traffic meets them:

- inside a pool, a removed backend's share goes to the surviving primaries by effective weight;
  with no primary left, to the pool's backup servers; with none of those, to its backup pool;
- a PoP that stops serving (drain, maintenance) sends each service's traffic to the other PoPs
  of its region serving that service (by capacity); with none left, DNS moves the region's
  traffic to other regions by the service's policy (weighted: by VIP weight; failover: the next
  priority; geo: the nearest region with capacity);
- an anycast withdrawal moves the PoP's anycast traffic to the nearest announcing PoP(s).

Traffic is conserved: whatever cannot be placed is reported as unplaced (an outage).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field, replace

INF = float("inf")


@dataclass(frozen=True)
class BackendNode:
    id: int
    pool_id: int
    name: str
    weight: int            # effective weight now
    capacity: float        # req/s; INF when not declared
    backup: bool = False


@dataclass(frozen=True)
class PoolNode:
    id: int
    pop_id: int
    service_id: int
    name: str
    load: float                      # req/s now (measured or configured)
    backup_pool_id: int | None = None
    is_backup_for_others: bool = False


@dataclass(frozen=True)
class PopNode:
    id: int
    region_id: int
    name: str
    latitude: float
    longitude: float
    serving: bool = True       # admin state ready
    announcing: bool = True    # anycast announced


@dataclass(frozen=True)
class ServiceNode:
    id: int
    name: str
    dns_policy: str = "weighted"     # weighted | failover | geo
    anycast: bool = False      # clients reach it at an anycast address (its VIPs lie in its prefix)
    # region id -> (VIP weight, failover priority); regions without an enabled VIP are absent
    regions: dict[int, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Fleet:
    backends: tuple[BackendNode, ...]
    pools: tuple[PoolNode, ...]
    pops: tuple[PopNode, ...]
    services: tuple[ServiceNode, ...]


@dataclass(frozen=True)
class Action:
    kind: str                 # drain | maintenance | weight | withdraw
    target_type: str          # backend | pool | pop | region
    target_id: int
    new_weight: int | None = None


@dataclass(frozen=True)
class Receiver:
    type: str
    id: int
    name: str
    load_before: float
    load_after: float
    capacity: float

    @property
    def overloaded(self) -> bool:
        return self.load_after > self.capacity + 1e-9

    @property
    def headroom_after(self) -> float | None:
        if self.capacity == INF:
            return None
        if self.capacity <= 0:
            return -1.0 if self.load_after > 0 else 0.0
        return 1.0 - self.load_after / self.capacity


@dataclass(frozen=True)
class Assessment:
    moved: float
    unplaced: float                      # load with nowhere to go after the action
    receivers: tuple[Receiver, ...]
    notes: tuple[str, ...] = ()
    already_unplaced: float = 0.0        # ... of which was already lost before it

    @property
    def verdict(self) -> str:
        if self.unplaced > self.already_unplaced + 1e-6:
            return "outage"
        return "overload" if any(r.overloaded for r in self.receivers) else "safe"


# --- helpers ---------------------------------------------------------------------------------


def _distance_km(a: PopNode, b: PopNode) -> float:
    """Great-circle distance: the stand-in for BGP's choice of the next nearest PoP."""
    la1, lo1, la2, lo2 = map(math.radians, (a.latitude, a.longitude, b.latitude, b.longitude))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 6371.0 * 2 * math.asin(min(1.0, math.sqrt(h)))


class _Ledger:
    """Load per receiver, before and after, so several moves add up on the same receiver."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, int], list] = {}

    def add(self, kind: str, ident: int, name: str, before: float, capacity: float, extra: float) -> None:
        row = self.rows.setdefault((kind, ident), [name, before, before, capacity])
        row[2] += extra

    def receivers(self) -> tuple[Receiver, ...]:
        return tuple(Receiver(k, i, r[0], r[1], r[2], r[3]) for (k, i), r in sorted(self.rows.items()))


def _spread(amount: float, weights: dict[int, float]) -> dict[int, float]:
    unbounded = [k for k, w in weights.items() if w == INF]
    if unbounded:  # undeclared capacities: share evenly among them
        return {k: amount / len(unbounded) for k in unbounded}
    total = sum(w for w in weights.values() if w > 0)
    if total <= 0:
        return {}
    return {k: amount * w / total for k, w in weights.items() if w > 0}


# --- the assessment ----------------------------------------------------------------------------


def assess(fleet: Fleet, action: Action) -> Assessment:
    pools = {p.id: p for p in fleet.pools}
    pops = {p.id: p for p in fleet.pops}
    by_pool: dict[int, list[BackendNode]] = defaultdict(list)
    for b in fleet.backends:
        by_pool[b.pool_id].append(b)
    if action.kind == "weight":
        return _within_pools(fleet, pools, by_pool, {action.target_id: action.new_weight or 0})
    if action.target_type == "backend":
        return _within_pools(fleet, pools, by_pool, {action.target_id: 0})
    if action.target_type == "pool":
        return _within_pools(fleet, pools, by_pool, {b.id: 0 for b in by_pool.get(action.target_id, [])})
    if action.target_type == "pop":
        leaving = {action.target_id}
    elif action.target_type == "region":
        leaving = {p.id for p in fleet.pops if p.region_id == action.target_id}
    else:
        raise ValueError(f"unknown target type {action.target_type!r}")
    return _sites_leave(fleet, pools, pops, by_pool, leaving, anycast_only=action.kind == "withdraw")


def _place(pool: PoolNode, pool_backends: list[BackendNode], weights: dict[int, int], pools: dict[int, PoolNode],
           by_pool: dict[int, list[BackendNode]]) -> tuple[dict[tuple[str, int], float], float, str]:
    """Where a pool's load goes under `weights`: primaries, else backup servers, else the backup
    pool, else nowhere (the second value)."""
    primaries = {b.id: float(weights.get(b.id, b.weight)) for b in pool_backends if not b.backup}
    placed = _spread(pool.load, primaries)
    if placed:
        return {("backend", k): v for k, v in placed.items()}, 0.0, "primaries"
    backups = {b.id: float(weights.get(b.id, b.weight)) for b in pool_backends if b.backup}
    placed = _spread(pool.load, backups)
    if placed:
        return {("backend", k): v for k, v in placed.items()}, 0.0, "backup servers"
    bp = pools.get(pool.backup_pool_id) if pool.backup_pool_id else None
    if bp is not None and any(weights.get(b.id, b.weight) > 0 for b in by_pool.get(bp.id, [])):
        return {("pool", bp.id): pool.load}, 0.0, f"backup pool {bp.name}"
    return {}, pool.load, "nowhere"


def assess_weights(fleet: Fleet, new_weights: dict[int, int]) -> Assessment:
    """Several backends' effective weights changing at once (0 = removed), within their pools."""
    pools = {p.id: p for p in fleet.pools}
    by_pool: dict[int, list[BackendNode]] = defaultdict(list)
    for b in fleet.backends:
        by_pool[b.pool_id].append(b)
    return _within_pools(fleet, pools, by_pool, new_weights)


def _within_pools(fleet: Fleet, pools: dict[int, PoolNode], by_pool: dict[int, list[BackendNode]],
                  new_weights: dict[int, int]) -> Assessment:
    ledger, notes = _Ledger(), []
    moved = unplaced = already = 0.0
    names = {b.id: b for b in fleet.backends}
    touched = {b.pool_id for b in fleet.backends if b.id in new_weights}
    for pool_id in sorted(touched):
        pool = pools[pool_id]
        before, lost_before, _ = _place(pool, by_pool[pool_id], {}, pools, by_pool)
        after, lost_after, where = _place(pool, by_pool[pool_id], new_weights, pools, by_pool)
        already += lost_before
        unplaced += lost_after
        moved += sum(max(0.0, v - after.get(k, 0.0)) for k, v in before.items())
        for key in sorted(set(before) | set(after)):
            kind, ident = key
            if kind == "backend":
                ledger.add(kind, ident, names[ident].name, before.get(key, 0.0), names[ident].capacity,
                           after.get(key, 0.0) - before.get(key, 0.0))
            else:
                bp = pools[ident]
                cap = sum(b.capacity for b in by_pool.get(ident, []) if new_weights.get(b.id, b.weight) > 0)
                ledger.add(kind, ident, bp.name, bp.load, cap, after.get(key, 0.0) - before.get(key, 0.0))
        if where != "primaries" and lost_after > lost_before:
            notes.append(f"{pool.name}: no backend and no backup pool left for {pool.load:.0f} req/s")
        elif where != "primaries":
            notes.append(f"{pool.name}: no primary left; {where} take(s) {pool.load:.0f} req/s")
    return Assessment(moved, unplaced, ledger.receivers(), tuple(notes), already_unplaced=already)


Capacities = dict[tuple[int, int], tuple[float, float]]
_NONE = (0.0, 0.0)  # a PoP with no primary pool for the service


def _pop_capacities(pools: dict[int, PoolNode], by_pool: dict[int, list[BackendNode]]) -> Capacities:
    """(PoP, service) -> (load, capacity) of the PoP's primary pools for the service; capacity
    counts serving backends. Once per assessment: asked per PoP and service, it was quadratic in
    the PoPs (a region of 40 PoPs leaving a 200-PoP fleet asked it 13,000 times)."""
    table: Capacities = {}
    for p in pools.values():
        if p.is_backup_for_others:
            continue
        load, cap = table.get((p.pop_id, p.service_id), (0.0, 0.0))
        table[(p.pop_id, p.service_id)] = (
            load + p.load, cap + sum(b.capacity for b in by_pool.get(p.id, []) if b.weight > 0 and not b.backup))
    return table


def _sites_leave(fleet: Fleet, pools: dict[int, PoolNode], pops: dict[int, PopNode],
                 by_pool: dict[int, list[BackendNode]], leaving: set[int], *, anycast_only: bool) -> Assessment:
    ledger, notes = _Ledger(), []
    moved = unplaced = 0.0
    services = {s.id: s for s in fleet.services}
    capacities = _pop_capacities(pools, by_pool)
    for service in fleet.services:
        if anycast_only and not service.anycast:
            continue
        serving = {p.id for p in fleet.pops if p.serving and p.id not in leaving
                   and capacities.get((p.id, service.id), _NONE)[1] > 0}
        for pop_id in sorted(leaving):
            load, _ = capacities.get((pop_id, service.id), _NONE)
            if load <= 0:
                continue
            moved += load
            if service.anycast and pops[pop_id].announcing and not anycast_only:
                # Packets keep landing where the prefix is announced: draining behind a live
                # announcement blackholes them. Withdraw first (a layered drain does).
                notes.append(f"{service.name}: {pops[pop_id].name} still announces the anycast prefix; "
                             f"withdraw it first or {load:.0f} req/s keep arriving with no backend")
                unplaced += load
                continue
            if service.anycast:
                targets = _nearest(pops[pop_id], [pops[i] for i in serving if pops[i].announcing])
                why = "anycast: next nearest announcing PoP"
            else:
                targets = _dns_targets(services[service.id], pops[pop_id], pops, serving, capacities)
                why = f"DNS {service.dns_policy}"
            placed = _spread(load, targets)
            if not placed:
                notes.append(f"{service.name}: {load:.0f} req/s from {pops[pop_id].name} has nowhere to go")
                unplaced += load
                continue
            notes.append(f"{service.name} from {pops[pop_id].name}: {why} -> "
                         + ", ".join(pops[t].name for t in sorted(placed)))
            for t, extra in placed.items():
                before, cap = capacities.get((t, service.id), _NONE)
                ledger.add("pop", t, f"{pops[t].name} ({service.name})", before, cap, extra)
    # The same PoP serving several services appears once per service: capacity is per service pool.
    return Assessment(moved, unplaced, ledger.receivers(), tuple(notes))


def _nearest(origin: PopNode, candidates: list[PopNode]) -> dict[int, float]:
    if not candidates:
        return {}
    best = min(_distance_km(origin, c) for c in candidates)
    return {c.id: 1.0 for c in candidates if _distance_km(origin, c) <= best + 1.0}


def _dns_targets(service: ServiceNode, origin: PopNode, pops: dict[int, PopNode], serving: set[int],
                 capacities: Capacities) -> dict[int, float]:
    same_region = {i: capacities.get((i, service.id), _NONE)[1] for i in serving
                   if pops[i].region_id == origin.region_id}
    if same_region:
        return same_region  # the region's VIP still answers; its other PoPs absorb by capacity
    if not service.regions:
        # No DNS answers configured for the service: assume clients can reach any serving PoP.
        return {i: capacities.get((i, service.id), _NONE)[1] for i in serving}
    regions_alive: dict[int, list[int]] = defaultdict(list)
    for i in serving:
        if pops[i].region_id in service.regions:
            regions_alive[pops[i].region_id].append(i)
    if not regions_alive:
        return {}
    if service.dns_policy == "failover":
        best = min(service.regions[r][1] for r in regions_alive)
        chosen = {r: 1.0 for r in regions_alive if service.regions[r][1] == best}
    elif service.dns_policy == "geo":
        nearest = min(regions_alive, key=lambda r: min(_distance_km(origin, pops[i]) for i in regions_alive[r]))
        chosen = {nearest: 1.0}
    else:
        chosen = {r: float(service.regions[r][0]) for r in regions_alive}
    targets: dict[int, float] = {}
    for region, share in chosen.items():
        caps = {i: capacities.get((i, service.id), _NONE)[1] for i in regions_alive[region]}
        total = sum(caps.values())
        for i, c in caps.items():
            targets[i] = targets.get(i, 0.0) + (share * c / total if total else 0.0)
    return targets


def without(fleet: Fleet, backend_ids: set[int]) -> Fleet:
    """The fleet with these backends at effective weight 0 (used to chain what-ifs)."""
    return replace(fleet, backends=tuple(replace(b, weight=0) if b.id in backend_ids else b for b in fleet.backends))
