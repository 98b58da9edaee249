"""The capacity guard: where removed traffic goes and whether the receivers can take it.

The math is the pure `capacity` module; this module only gathers its inputs. Loads are the
pools' configured expectations (expected_rps) until data-plane measurements exist, and the
answer says so. A receiver with capacity 0 has no declared capacity and is never judged
overloaded (the answer notes it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from django.utils import timezone

from steering import capacity
from steering.choices import AdminState
from steering.models import Backend, Pool, PoP
from steering.representation import weight_inputs
from steering.services.targets import Target, target_label, target_type

UNLIMITED = float("inf")


def _eff(backend: Backend, removed: set[int], now: Any) -> int:
    if backend.pk in removed:
        return 0
    return capacity.effective_weight(weight_inputs(backend, pool_in_panic=backend.pool.in_panic, now=now))


def _cap(value: int) -> float:
    return float(value) if value > 0 else UNLIMITED


def _impact_row(kind: str, ident: int, name: str, r: capacity.ReceiverImpact) -> dict[str, Any]:
    return {
        "type": kind,
        "id": ident,
        "name": name,
        "load_before_rps": round(r.load_before, 1),
        "load_after_rps": round(r.load_after, 1),
        "capacity_rps": None if r.capacity == UNLIMITED else r.capacity,
        "headroom_after_percent": None if r.capacity == UNLIMITED else round(100 * r.headroom_after, 1),
        "overloaded": r.overloaded,
    }


def _pool_removal(pool: Pool, removed: set[int], now: Any) -> tuple[float, list[dict[str, Any]], float, list[str]]:
    """Within one pool: the removed backends' load goes to the survivors, then the backup pool."""
    notes: list[str] = []
    backends = list(pool.backends.all())
    primaries = [b for b in backends if not b.backup]
    weights_now = {b.pk: _eff(b, set(), now) for b in primaries}
    shares_now = capacity.shares({str(k): v for k, v in weights_now.items()})
    load = float(pool.expected_rps)
    load_of = {b.pk: load * shares_now[str(b.pk)] for b in primaries}
    moved = sum(load_of[b.pk] for b in primaries if b.pk in removed)
    survivors = [b for b in primaries if b.pk not in removed and _eff(b, removed, now) > 0]
    if not survivors:
        survivors = [b for b in backends if b.backup and b.pk not in removed and _eff(b, removed, now) > 0]
        if survivors:
            notes.append(f"{pool}: no primary backend left; backup servers take the load")
    if survivors:
        receivers = [
            capacity.Receiver(str(b.pk), _eff(b, removed, now), _cap(b.capacity_rps), load_of.get(b.pk, 0.0))
            for b in survivors
        ]
        result = capacity.redistribute(moved, receivers)
        names = {str(b.pk): b.path for b in survivors}
        rows = [_impact_row("backend", int(r.key), names[r.key], r) for r in result.receivers]
        return moved, rows, result.unplaced_load, notes
    backup_pool = pool.backup_pool
    if backup_pool is not None and moved > 0:
        bp_backends = [b for b in backup_pool.backends.all() if b.pk not in removed and _eff(b, removed, now) > 0]
        if bp_backends:
            notes.append(f"{pool}: empty; backup pool {backup_pool} takes its traffic")
            cap = sum(_cap(b.capacity_rps) for b in bp_backends)
            rec = capacity.Receiver(str(backup_pool.pk), 1, cap, float(backup_pool.expected_rps))
            result = capacity.redistribute(moved, [rec])
            return moved, [_impact_row("pool", backup_pool.pk, str(backup_pool), r) for r in result.receivers], 0.0, notes
    if moved > 0:
        notes.append(f"{pool}: no backend and no backup pool left to take {moved:.0f} req/s")
    return moved, [], moved, notes


def _site_removal(pools: list[Pool], now: Any) -> tuple[float, list[dict[str, Any]], float, list[str]]:
    """A PoP or region leaving: each service's load moves to that service's pools in other PoPs."""
    notes = ["PoP/region traffic is assumed to move to the other PoPs serving the same service, by their weight"]
    leaving_pops = {p.pop_id for p in pools}
    moved_by_service: dict[int, float] = defaultdict(float)
    for p in pools:
        moved_by_service[p.service_id] += float(p.expected_rps)
    rows: list[dict[str, Any]] = []
    unplaced = 0.0
    for service_id, moved in moved_by_service.items():
        others = (
            Pool.objects.filter(service_id=service_id, backup_for__isnull=True)
            .exclude(pop_id__in=leaving_pops)
            .exclude(pop__admin_state__in=[AdminState.DRAINING, AdminState.DRAINED, AdminState.MAINT])
            .select_related("pop")
            .prefetch_related("backends")
        )
        per_pop: dict[int, list[Pool]] = defaultdict(list)
        for other in others:
            per_pop[other.pop_id].append(other)
        receivers = []
        names = {}
        for pop_id, pop_pools in per_pop.items():
            weight = sum(_eff(b, set(), now) for pp in pop_pools for b in pp.backends.all() if not b.backup)
            cap = sum(_cap(b.capacity_rps) for pp in pop_pools for b in pp.backends.all() if not b.backup)
            load = sum(float(pp.expected_rps) for pp in pop_pools)
            receivers.append(capacity.Receiver(str(pop_id), weight, cap, load))
            names[str(pop_id)] = pop_pools[0].pop.slug
        result = capacity.redistribute(moved, receivers)
        unplaced += result.unplaced_load
        rows.extend(_impact_row("pop", int(r.key), names[r.key], r) for r in result.receivers if r.load_after != r.load_before)
    return sum(moved_by_service.values()), rows, unplaced, notes


def assess_removal(target: Target, removed_backends: Iterable[Backend], *, action: str) -> dict[str, Any]:
    """The what-if of taking `removed_backends` out of new traffic because of `action` on `target`."""
    now = timezone.now()
    removed = list(removed_backends)
    removed_ids = {b.pk for b in removed}
    notes: list[str] = []
    rows: list[dict[str, Any]] = []
    moved = 0.0
    unplaced = 0.0
    if isinstance(target, (PoP,)) or target_type(target) == "region":
        from steering.services.targets import pools_under

        pools = list(pools_under(target).select_related("pop"))
        moved, rows, unplaced, notes = _site_removal(pools, now)
    else:
        by_pool: dict[int, Pool] = {}
        for b in removed:
            by_pool[b.pool_id] = b.pool
        for pool in by_pool.values():
            m, r, u, n = _pool_removal(pool, removed_ids, now)
            moved += m
            rows.extend(r)
            unplaced += u
            notes.extend(n)
    if any(r["capacity_rps"] is None for r in rows):
        notes.append("some receivers declare no capacity (capacity_rps 0) and are not judged")
    overloaded = [r for r in rows if r["overloaded"]]
    if unplaced > 1e-9:
        verdict = "outage"
    elif overloaded:
        verdict = "overload"
    else:
        verdict = "safe"
    return {
        "action": action,
        "target": {"type": target_type(target), "id": target.pk, "name": target_label(target)},
        "basis": "configured",
        "verdict": verdict,
        "safe": verdict == "safe",
        "backends_affected": len(removed_ids),
        "moved_rps": round(moved, 1),
        "unplaced_rps": round(unplaced, 1),
        "receivers": rows,
        "notes": notes,
        "explain": _explain(verdict, overloaded, unplaced),
    }


def _explain(verdict: str, overloaded: list[dict[str, Any]], unplaced: float) -> str:
    if verdict == "safe":
        return "The survivors can absorb the moved traffic."
    if verdict == "outage":
        return (
            f"{unplaced:.0f} req/s would have nowhere to go. Add capacity, set a backup pool, or drain "
            "fewer backends; force with a reason only if you accept the outage."
        )
    worst = max(overloaded, key=lambda r: r["load_after_rps"] / (r["capacity_rps"] or 1))
    return (
        f"{len(overloaded)} receiver(s) would pass capacity, worst {worst['name']} at "
        f"{worst['load_after_rps']:.0f}/{worst['capacity_rps']:.0f} req/s. Drain fewer at once, add capacity, "
        "or force with a reason."
    )
