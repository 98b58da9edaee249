"""The capacity guard: gathers the fleet from the database and asks the pure what-if.

Loads are measured (the data plane's session rates in Redis, when fresh for every backend of
a pool) or configured (the pool's expected_rps); the answer says which. A backend with
capacity 0 has declared none and is never judged overloaded (the answer notes it).

The answer is an `Impact` (steering.services.impact), built here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable
from typing import Any, get_args

from django.utils import timezone

from steering import capacity, whatif
from steering.choices import AdminState, AnnounceState
from steering.dataplane.stats import read_backend_stats
from steering.models import VIP, Backend, Pool, PoP, Service
from steering.representation import WeightFields, weight_inputs, weight_inputs_of
from steering.services import safety
from steering.services.impact import (
    Basis,
    Grace,
    Impact,
    ImpactAction,
    ImpactReceiver,
    ImpactTarget,
    Plan,
    ReceiverType,
    SafetyBreach,
    TargetType,
    Verdict,
    WeightPlan,
)
from steering.services.targets import Target, target_label, target_type

UNLIMITED = whatif.INF


# What the what-if needs of a backend. A fleet-wide assessment (a PoP or region drain) reads every
# backend, so these columns as plain rows: no model instance, pool or PoP per row (a third of the
# time of model instances; build_fleet holds the pools and PoPs already).
_FLEET_FIELDS = ("pk", "pool_id", "name", "weight", "admin_state", "health", "slow_start_seconds", "ready_since",
                 "ejected_at", "ejected_until", "ejection_reason", "capacity_rps", "backup")


def _eff(row: WeightFields, pool_in_panic: bool, now: Any) -> int:
    return capacity.effective_weight(weight_inputs_of(row, pool_in_panic=pool_in_panic, now=now))


def build_fleet(pools: Iterable[Pool]) -> tuple[whatif.Fleet, dict[str, int]]:
    """The what-if's view of these pools (and their backup pools), with a count of load bases."""
    now = timezone.now()
    pool_list = list(pools)
    backup_ids = {p.backup_pool_id for p in pool_list if p.backup_pool_id} - {p.pk for p in pool_list}
    if backup_ids:
        pool_list += list(Pool.objects.filter(pk__in=backup_ids).select_related("pop"))
    pools_by_id = {p.pk: p for p in pool_list}
    pop_rows = list(PoP.objects.filter(pk__in={p.pop_id for p in pool_list}))
    pop_slugs = {pop.pk: pop.slug for pop in pop_rows}
    pool_names = {p.pk: f"{pop_slugs[p.pop_id]}/{p.slug}" for p in pool_list}
    backends = list(Backend.objects.filter(pool__in=pool_list).values_list(*_FLEET_FIELDS, named=True))
    stats = read_backend_stats(b.pk for b in backends)
    by_pool: dict[int, list[Any]] = {}
    for b in backends:
        by_pool.setdefault(b.pool_id, []).append(b)
    backup_targets = set(Pool.objects.filter(backup_pool__isnull=False).order_by()
                         .values_list("backup_pool_id", flat=True))
    bases = {"measured": 0, "configured": 0}
    pool_nodes = []
    for p in pool_list:
        members = [b for b in by_pool.get(p.pk, []) if not b.backup]
        measured = bool(members) and all(b.pk in stats for b in members)
        load = sum(stats[b.pk].session_rate for b in members) if measured else float(p.expected_rps)
        bases["measured" if measured else "configured"] += 1
        pool_nodes.append(whatif.PoolNode(p.pk, p.pop_id, p.service_id, pool_names[p.pk], load, p.backup_pool_id,
                                          p.pk in backup_targets))
    backend_nodes = tuple(
        whatif.BackendNode(b.pk, b.pool_id, f"{pool_names[b.pool_id]}/{b.name}",
                           _eff(b, pools_by_id[b.pool_id].in_panic, now),
                           float(b.capacity_rps) if b.capacity_rps else UNLIMITED, b.backup)
        for b in backends
    )
    pops = tuple(
        whatif.PopNode(p.pk, p.region_id, p.slug, p.latitude, p.longitude,
                       serving=p.admin_state == AdminState.READY, announcing=p.announce == AnnounceState.ANNOUNCE)
        for p in pop_rows
    )
    service_ids = {p.service_id for p in pool_list}
    vips: dict[int, dict[int, tuple[int, int]]] = {}
    addresses: dict[int, list[str]] = {}
    for v in VIP.objects.filter(service_id__in=service_ids, enabled=True):
        vips.setdefault(v.service_id, {})[v.region_id] = (v.weight, v.priority)
        addresses.setdefault(v.service_id, []).append(v.address)
    services = tuple(
        whatif.ServiceNode(s.pk, s.slug, s.dns_policy, _is_anycast(s, addresses.get(s.pk, [])), vips.get(s.pk, {}))
        for s in Service.objects.filter(pk__in=service_ids).select_related("anycast_prefix")
    )
    return whatif.Fleet(backend_nodes, tuple(pool_nodes), pops, services), bases


def _is_anycast(service: Service, vip_addresses: list[str]) -> bool:
    """Clients reach a service by anycast when the addresses DNS hands out lie in its prefix
    (or it has a prefix and no DNS answers at all)."""
    if service.anycast_prefix is None:
        return False
    network = ipaddress.ip_network(service.anycast_prefix.prefix)
    if not vip_addresses:
        return True
    return any(ipaddress.ip_address(a) in network for a in vip_addresses)


def _receiver(r: whatif.Receiver) -> ImpactReceiver:
    headroom = r.headroom_after
    return ImpactReceiver(
        type=_closed(r.type, ReceiverType),
        id=r.id,
        name=r.name,
        load_before_rps=round(r.load_before, 1),
        load_after_rps=round(r.load_after, 1),
        capacity_rps=None if r.capacity == UNLIMITED else r.capacity,
        headroom_after_percent=None if headroom is None else round(100 * headroom, 1),
        overloaded=r.overloaded,
    )


def _closed(value: str, values: Any) -> Any:
    """`value`, checked to be one of the Literal `values` (the what-if speaks plain strings)."""
    if value not in get_args(values):
        raise ValueError(f"{value!r} is not one of {get_args(values)}")
    return value


def _target(target: Target) -> ImpactTarget:
    return ImpactTarget(_closed(target_type(target), TargetType), target.pk, target_label(target))


def explain(verdict: str, overloaded: list[ImpactReceiver], unplaced: float) -> str:
    if verdict == "safe":
        return "The receivers can absorb the moved traffic."
    if verdict == "outage":
        return (
            f"{unplaced:.0f} req/s would have nowhere to go. Add capacity, set a backup pool, or drain "
            "fewer backends; force with a reason only if you accept the outage."
        )
    worst = max(overloaded, key=lambda r: r.load_after_rps / (r.capacity_rps or 1))
    return (
        f"{len(overloaded)} receiver(s) would pass capacity, worst {worst.name} at "
        f"{worst.load_after_rps:.0f}/{worst.capacity_rps or 0:.0f} req/s. Drain fewer at once, add capacity, "
        "or force with a reason."
    )


def report(target: Target, action: ImpactAction, result: whatif.Assessment, bases: dict[str, int],
           affected: int, *, grace: Grace | None = None, plan: Plan | None = None,
           breaches: list[SafetyBreach] | None = None) -> Impact:
    """The impact of `action` on `target` from the what-if's `result` (with the drain's grace or
    the weight change's or layered drain's plan, and the safety rules it breaks, when given)."""
    # Receivers are who gains load (and anyone already over capacity); what it leaves is `moved_rps`.
    rows = [_receiver(r) for r in result.receivers if r.load_after > r.load_before + 1e-9 or r.overloaded]
    overloaded = [r for r in rows if r.overloaded]
    notes = list(result.notes)
    if any(r.capacity_rps is None for r in rows):
        notes.append("some receivers declare no capacity (capacity_rps 0) and are not judged")
    basis: Basis = "measured" if bases["measured"] and not bases["configured"] else (
        "mixed" if bases["measured"] else "configured")
    lost = max(0.0, result.unplaced - result.already_unplaced)
    verdict: Verdict = _closed(result.verdict, Verdict)
    breaches = breaches or []
    explained = explain(verdict, overloaded, lost)
    if breaches:
        rules = " | ".join(f"{b.rule}: {b.detail}" for b in breaches)
        word = "rule" if len(breaches) == 1 else "rules"
        explained = f"Breaks safety {word} {rules}." + ("" if verdict == "safe" else " " + explained)
    return Impact(
        action=action,
        target=_target(target),
        basis=basis,
        verdict=verdict,
        safe=verdict == "safe" and not breaches,
        backends_affected=affected,
        moved_rps=round(result.moved, 1),
        unplaced_rps=round(lost, 1),
        receivers=rows,
        notes=notes,
        explain=explained,
        safety_rules=breaches,
        grace=grace,
        plan=plan,
    )


def returning(target: Target, action: ImpactAction, backends: int, *, note: str, explained: str) -> Impact:
    """Capacity coming back (undrain, announce): it never overloads anyone, so no what-if."""
    return Impact(
        action=action,
        target=_target(target),
        basis="configured",
        verdict="safe",
        safe=True,
        backends_affected=backends,
        moved_rps=0.0,
        unplaced_rps=0.0,
        receivers=[],
        notes=[note],
        explain=explained,
    )


def assess_removal(target: Target, removed_backends: Iterable[Backend], *, action: ImpactAction,
                   grace: Grace | None = None) -> Impact:
    """The what-if of taking `removed_backends` out of new traffic because of `action` on `target`
    (a drain passes its grace, which the impact shows)."""
    removed = list(removed_backends)
    ttype = target_type(target)
    if ttype in ("pop", "region"):
        pools = Pool.objects.select_related("pop")  # a site leaving affects the whole service
        fleet, bases = build_fleet(pools)
        kind = "withdraw" if action == "withdraw" else "drain"
        result = whatif.assess(fleet, whatif.Action(kind, ttype, target.pk))
    else:
        pools = Pool.objects.filter(pk__in={b.pool_id for b in removed}).select_related("pop")
        fleet, bases = build_fleet(pools)
        result = _removal(fleet, removed)
    breaches = safety.breaches_of(safety.move_of(target, action, (b.pk for b in removed)))
    return report(target, action, result, bases, len({b.pk for b in removed}), grace=grace, breaches=breaches)


def with_grace(impact: Impact, grace: Grace) -> Impact:
    """The same impact, showing the grace of the drain it belongs to."""
    return dataclasses.replace(impact, grace=grace)


def _removal(fleet: whatif.Fleet, removed: list[Backend]) -> whatif.Assessment:
    # Several backends at once (a pool drain, or the ready ones of it) as one weight change.
    return whatif.assess_weights(fleet, {b.pk: 0 for b in removed})


def assess_weight(backend: Backend, new_weight: int, *, plan: WeightPlan | None = None) -> Impact:
    fleet, bases = build_fleet(Pool.objects.filter(pk=backend.pool_id).select_related("pop"))
    now = timezone.now()
    mine = weight_inputs(backend, pool_in_panic=backend.pool.in_panic, now=now)
    effective = capacity.effective_weight(capacity.WeightInputs(**{**mine.__dict__, "weight": new_weight}))
    result = whatif.assess_weights(fleet, {backend.pk: effective})
    # A weight of 0 takes the backend out of service, as far as a pool's share rule is concerned.
    breaches = safety.breaches_of(safety.move_of(backend, "weight", [backend.pk] if effective == 0 else []))
    return report(backend, "weight", result, bases, 1, plan=plan, breaches=breaches)
