"""The safety rules an action would break: the database's side of steering.safety.

The guard asks `breaches_of` for every action that takes capacity away and puts the answer in
the impact (`Impact.safety_rules`); `kernel.enforce_guard` refuses with 409 `safety_rule`.
Only what the enabled rules speak of is read: no rules, one query.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from django.db.models import Q
from django.utils import timezone

from steering import capacity, safety
from steering.choices import AdminState, AnnounceState, SafetyRuleKind
from steering.dataplane.exabgp.desired import IN_SERVICE
from steering.models import VIP, Backend, Pool, PoP, Region, SafetyRule, Service
from steering.representation import weight_inputs_of
from steering.services.impact import BreachKind, SafetyBreach
from steering.services.targets import Target

_ROW_FIELDS = ("pk", "pool_id", "weight", "admin_state", "health", "slow_start_seconds", "ready_since",
               "ejected_at", "ejected_until", "ejection_reason")


def move_of(target: Target, action: str, removed_backends: Iterable[int] = ()) -> safety.Move:
    """What `action` on `target` takes away (`removed_backends`: a backend or pool action's)."""
    if isinstance(target, (PoP, Region)):
        pops = frozenset([target.pk] if isinstance(target, PoP) else
                         PoP.objects.filter(region=target).values_list("pk", flat=True))
        if action == "withdraw":
            return safety.Move(pops_withdrawn=pops)
        return safety.Move(pops_leaving=pops)
    return safety.Move(backends=frozenset(removed_backends))


def breaches_of(move: safety.Move) -> list[SafetyBreach]:
    """The enabled rules `move` would break."""
    if not (move.backends or move.pops_leaving or move.pops_withdrawn):
        return []
    rules = list(SafetyRule.objects.filter(enabled=True).select_related("service", "prefix", "pool__pop"))
    if not rules:
        return []
    facts = _facts(rules, move)
    found = safety.breaches([_rule(r) for r in rules], facts, move)
    return [SafetyBreach(b.rule.slug, b.rule.id, cast(BreachKind, b.rule.kind), b.rule.threshold, b.before,
                         b.after, b.detail) for b in found]


def _rule(row: SafetyRule) -> safety.Rule:
    scope = row.service or row.prefix or row.pool
    scope_id = scope.pk if scope is not None else None
    name = (row.service.fqdn if row.service else row.prefix.prefix if row.prefix
            else str(row.pool) if row.pool else "every pool")
    return safety.Rule(row.pk, row.slug, row.kind, row.threshold, scope_id, name)


def _pools_spoken_of(rules: list[SafetyRule], move: safety.Move) -> Q:
    """The pools the rules count: a service's everywhere, a prefix's services', a pool rule's."""
    wanted = Q(pk__in=[])
    for r in rules:
        if r.kind == SafetyRuleKind.MIN_DNS_REGIONS:
            wanted |= Q(service_id=r.service_id)
        elif r.kind == SafetyRuleKind.MIN_ANNOUNCING_POPS:
            wanted |= Q(service__anycast_prefix_id=r.prefix_id)
        elif r.pool_id is not None:
            wanted |= Q(pk=r.pool_id)
        else:  # every pool: those the move touches are the only ones it can break
            wanted |= Q(backends__pk__in=move.backends)
    return wanted


def _facts(rules: list[SafetyRule], move: safety.Move) -> safety.Facts:
    now = timezone.now()
    pools = list(Pool.objects.filter(_pools_spoken_of(rules, move)).distinct()
                 .select_related("pop").only("pk", "pop_id", "service_id", "slug", "in_panic", "pop__slug"))
    panic = {p.pk: p.in_panic for p in pools}
    rows = Backend.objects.filter(pool__in=pools).values_list(*_ROW_FIELDS, named=True)
    backends = tuple(safety.BackendFact(b.pk, b.pool_id, _serving(b, panic[b.pool_id], now)) for b in rows)
    pop_rows = PoP.objects.filter(pk__in={p.pop_id for p in pools} | move.pops_leaving | move.pops_withdrawn)
    region_rows = list(Region.objects.values_list("pk", "slug", "admin_state"))
    regions = {pk: state for pk, _slug, state in region_rows}
    pops = tuple(safety.PopFact(
        p.pk, p.region_id, p.slug,
        in_dns=p.admin_state == AdminState.READY and regions[p.region_id] == AdminState.READY,
        may_announce=(p.announce == AnnounceState.ANNOUNCE and p.admin_state in IN_SERVICE
                      and regions[p.region_id] in IN_SERVICE)) for p in pop_rows)
    service_ids = {p.service_id for p in pools}
    vip_regions: dict[int, set[int]] = {}
    for service_id, region_id in VIP.objects.filter(service_id__in=service_ids, enabled=True).values_list(
            "service_id", "region_id"):
        vip_regions.setdefault(service_id, set()).add(region_id)
    return safety.Facts(
        backends=backends,
        pools=tuple(safety.PoolFact(p.pk, p.pop_id, p.service_id, f"{p.pop.slug}/{p.slug}") for p in pools),
        pops=pops,
        region_names={pk: slug for pk, slug, _state in region_rows},
        vip_regions={k: frozenset(v) for k, v in vip_regions.items()},
        service_prefix=dict(Service.objects.filter(pk__in=service_ids, anycast_prefix__isnull=False)
                            .values_list("pk", "anycast_prefix_id")),
    )


def _serving(row: Any, in_panic: bool, now: Any) -> bool:
    return capacity.effective_weight(weight_inputs_of(row, pool_in_panic=in_panic, now=now)) > 0
