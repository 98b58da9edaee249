"""Anycast announcements, read side: what each PoP should announce and why (from the database), beside
what it does announce (what each PoP's agent reports).

Desired is decided by the pure steering.dataplane.exabgp.desired.decide from the PoP's admin
states and its healthy capacity per service. Observed is a measurement: the agent beside each
PoP's ExaBGP reports what ExaBGP announces, and steering.services.announcements keeps it in Redis
(never in the relational DB), key steering.redis_keys.ANYCAST_AGENT.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from django.utils import timezone

from steering import capacity
from steering.dataplane.exabgp.desired import PopDecision, PopFacts, ServiceFacts, decide, sort_prefixes
from steering.models import AnycastPrefix, Backend, Pool, PoP
from steering.redis_keys import ANYCAST_AGENT
from steering.redisconn import sync_client
from steering.representation import weight_inputs

logger = logging.getLogger(__name__)

CONNECTED_WITHIN_SECONDS = 5.0
SESSION_STATES = ("up", "down")


# --- desired ---------------------------------------------------------------------------------

def pop_facts(pops: Iterable[PoP]) -> dict[int, PopFacts]:
    """What the pure decision needs for each PoP: three queries whatever the fleet's size."""
    pop_list = list(pops)
    now = timezone.now()
    pools = list(Pool.objects.filter(pop__in=pop_list, service__anycast_prefix__isnull=False)
                 .select_related("service__anycast_prefix"))
    usable: dict[int, int] = {p.pk: 0 for p in pools}
    total: dict[int, int] = {p.pk: 0 for p in pools}
    panic = {p.pk: p.in_panic for p in pools}
    for b in Backend.objects.filter(pool__in=pools):
        total[b.pool_id] += 1
        if capacity.effective_weight(weight_inputs(b, pool_in_panic=panic[b.pool_id], now=now)) > 0:
            usable[b.pool_id] += 1
    per_pop: dict[int, dict[str, ServiceFacts]] = {}
    for p in pools:
        assert p.service.anycast_prefix is not None
        seen = per_pop.setdefault(p.pop_id, {}).get(p.service.slug)
        per_pop[p.pop_id][p.service.slug] = ServiceFacts(
            p.service.slug, p.service.anycast_prefix.prefix,
            usable_backends=usable[p.pk] + (seen.usable_backends if seen else 0),
            backends=total[p.pk] + (seen.backends if seen else 0))
    return {
        pop.pk: PopFacts(pop.slug, pop.announce, pop.admin_state, pop.region.slug, pop.region.admin_state,
                         tuple(per_pop.get(pop.pk, {}).values()))
        for pop in pop_list
    }


def desired_for(pops: Iterable[PoP] | None = None) -> dict[int, tuple[PoP, PopDecision]]:
    """The desired announcements of these PoPs (all PoPs when None), by PoP id."""
    pop_list = list(PoP.objects.select_related("region").order_by("slug") if pops is None else pops)
    facts = pop_facts(pop_list)
    return {pop.pk: (pop, decide(facts[pop.pk])) for pop in pop_list}


def managed_prefixes() -> list[str]:
    """Every anycast prefix the control plane knows: the only routes an agent may withdraw."""
    return list(sort_prefixes(AnycastPrefix.objects.values_list("prefix", flat=True)))


# --- observed --------------------------------------------------------------------------------

def read_reports(slugs: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The last report of each PoP's agent that has one (absent keys: never reported)."""
    slug_list = list(slugs)
    if not slug_list:
        return {}
    try:
        raw = sync_client().mget([ANYCAST_AGENT.format(slug=s) for s in slug_list])
    except Exception as exc:  # Redis away: every agent reads as absent, which the UI says plainly
        logger.warning("could not read anycast agent reports: %s", exc)
        return {}
    found: dict[str, dict[str, Any]] = {}
    for slug, value in zip(slug_list, raw, strict=True):
        if not value:
            continue
        try:
            report = json.loads(value)
            float(report["at"])
            list(report["observed"])
        except (ValueError, KeyError, TypeError):
            continue
        found[slug] = report
    return found


def agent_state(report: dict[str, Any] | None, now: float | None = None) -> str:
    if report is None:
        return "absent"
    age = (now if now is not None else time.time()) - float(report["at"])
    return "connected" if age <= CONNECTED_WITHIN_SECONDS else "stale"


# --- the overview ----------------------------------------------------------------------------

def overview(now: float | None = None) -> dict[str, Any]:
    """GET /api/v1/anycast/: desired (DB) beside observed (agents' reports) for every PoP."""
    decided = desired_for()
    reports = read_reports(pop.slug for pop, _d in decided.values())
    now = now if now is not None else time.time()
    pops: dict[str, Any] = {}
    for pop_id, (pop, decision) in decided.items():
        report = reports.get(pop.slug)
        pops[str(pop_id)] = {
            "slug": pop.slug,
            "desired": list(decision.desired),
            "observed": list(report["observed"]) if report else [],
            "observed_at": float(report["at"]) if report else None,
            "agent": agent_state(report, now),
            "session": report.get("session") if report else None,
            "reason": decision.reason,
        }
    return {"pops": pops}


def connection_summary(now: float | None = None) -> dict[str, Any]:
    """For GET /api/v1/dataplanes/: is the anycast layer connected, in one line."""
    slugs = list(PoP.objects.values_list("slug", flat=True))
    reports = read_reports(slugs)
    states = [agent_state(reports.get(s), now) for s in slugs]
    connected = states.count("connected")
    if not slugs:
        return {"connected": False, "detail": "no PoPs"}
    if connected == 0:
        return {"connected": False, "detail": "no ExaBGP agent is reporting"}
    return {"connected": True, "detail": f"{connected} of {len(slugs)} PoP agents reporting"}
