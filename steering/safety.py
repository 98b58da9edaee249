"""Safety rules, judged as pure functions over a plain description of the fleet (no Django).

A rule holds a count the fleet must keep (regions in DNS for a service, PoPs announcing a prefix)
or a share it must not pass (backends of a pool out of service). `breaches` counts each rule
before and after a `Move` (what an action takes away) and names the rules the move breaks.

A move breaks a rule when the rule does not hold after it *and* the move makes the count worse:
an action elsewhere is never refused because a rule is already broken (that would freeze the
fleet at the worst moment), and bringing capacity back is never refused.

The counts follow what the data planes do, so a rule speaks of what clients will see:
- a region answers in DNS for a service when it has an enabled VIP for it and a PoP in service
  (PoP and region ready) with a backend of that service taking traffic (the GSLB snapshot's rule);
- a PoP announces a prefix when the operator has not withdrawn it, the PoP and its region are
  in service, and every service of that prefix has a backend taking traffic there (the anycast
  agent's rule, steering.dataplane.exabgp.desired);
- a backend is out of service when it takes no traffic (effective weight 0: drained, in
  maintenance, down, ejected or weight 0). A pool whose whole PoP leaves is not "a pool's
  backends out": the site rules speak for that.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

MIN_DNS_REGIONS = "min_dns_regions"
MIN_ANNOUNCING_POPS = "min_announcing_pops"
MAX_POOL_OUT_PERCENT = "max_pool_out_percent"


@dataclass(frozen=True)
class Rule:
    id: int
    slug: str
    kind: str                  # one of the three above
    threshold: int             # the least count, or the most percent
    scope_id: int | None       # the service, prefix or pool (None: every pool)
    scope_name: str = ""


@dataclass(frozen=True)
class BackendFact:
    id: int
    pool_id: int
    serving: bool              # effective weight > 0 now


@dataclass(frozen=True)
class PoolFact:
    id: int
    pop_id: int
    service_id: int
    name: str


@dataclass(frozen=True)
class PopFact:
    id: int
    region_id: int
    name: str
    in_dns: bool               # PoP and region ready: its region's VIPs may answer for it
    may_announce: bool         # operator announces, PoP and region in service (ready or draining)


@dataclass(frozen=True)
class Facts:
    backends: tuple[BackendFact, ...]
    pools: tuple[PoolFact, ...]
    pops: tuple[PopFact, ...]
    region_names: dict[int, str]
    vip_regions: dict[int, frozenset[int]]     # service id -> regions with an enabled VIP
    service_prefix: dict[int, int]             # service id -> its anycast prefix id (anycast services)


@dataclass(frozen=True)
class Move:
    """What an action takes away."""

    backends: frozenset[int] = frozenset()     # stop taking traffic
    pops_leaving: frozenset[int] = frozenset()  # stop serving (drain, maintenance, layered drain)
    pops_withdrawn: frozenset[int] = frozenset()  # stop announcing only


@dataclass(frozen=True)
class Breach:
    rule: Rule
    before: int                # the count, or the percent out
    after: int
    detail: str


def breaches(rules: Iterable[Rule], facts: Facts, move: Move) -> list[Breach]:
    """The rules `move` breaks, in the order given."""
    view = _View(facts)
    found: list[Breach] = []
    for rule in rules:
        if rule.kind == MIN_DNS_REGIONS:
            found += _at_least(rule, view.dns_regions(rule.scope_id, Move()), view.dns_regions(rule.scope_id, move),
                               "region", "in DNS for", view.facts.region_names)
        elif rule.kind == MIN_ANNOUNCING_POPS:
            found += _at_least(rule, view.announcing(rule.scope_id, Move()), view.announcing(rule.scope_id, move),
                               "PoP", "announcing", view.pop_names)
        elif rule.kind == MAX_POOL_OUT_PERCENT:
            found += view.pool_breaches(rule, move)
        else:
            raise ValueError(f"unknown safety rule kind {rule.kind!r}")
    return found


def _at_least(rule: Rule, before: set[int], after: set[int], noun: str, verb: str,
              names: dict[int, str]) -> list[Breach]:
    if len(after) >= rule.threshold or len(after) >= len(before):
        return []
    lost = ", ".join(sorted(names[i] for i in before - after))
    left = ", ".join(sorted(names[i] for i in after)) or "none"
    detail = (f"at least {rule.threshold} {noun}(s) {verb} {rule.scope_name}; this leaves "
              f"{len(after)} ({left}), taking away {lost}")
    return [Breach(rule, len(before), len(after), detail)]


class _View:
    """The facts indexed for counting."""

    def __init__(self, facts: Facts) -> None:
        self.facts = facts
        self.pops = {p.id: p for p in facts.pops}
        self.pop_names = {p.id: p.name for p in facts.pops}
        self.by_pool: dict[int, list[BackendFact]] = defaultdict(list)
        for b in facts.backends:
            self.by_pool[b.pool_id].append(b)

    def _takes_traffic(self, pool: PoolFact, move: Move) -> bool:
        return any(b.serving and b.id not in move.backends for b in self.by_pool.get(pool.id, ()))

    def dns_regions(self, service_id: int | None, move: Move) -> set[int]:
        wanted = self.facts.vip_regions.get(service_id or 0, frozenset())
        regions: set[int] = set()
        for pool in self.facts.pools:
            pop = self.pops.get(pool.pop_id)
            if (pool.service_id == service_id and pop is not None and pop.region_id in wanted and pop.in_dns
                    and pop.id not in move.pops_leaving and self._takes_traffic(pool, move)):
                regions.add(pop.region_id)
        return regions

    def announcing(self, prefix_id: int | None, move: Move) -> set[int]:
        # A PoP announces a prefix only when every service of it there has a backend taking traffic.
        serving: dict[int, bool] = {}
        for pool in self.facts.pools:
            if self.facts.service_prefix.get(pool.service_id) != prefix_id:
                continue
            serving[pool.pop_id] = serving.get(pool.pop_id, True) and self._takes_traffic(pool, move)
        gone = move.pops_leaving | move.pops_withdrawn
        return {pop_id for pop_id, ok in serving.items()
                if ok and pop_id in self.pops and self.pops[pop_id].may_announce and pop_id not in gone}

    def pool_breaches(self, rule: Rule, move: Move) -> list[Breach]:
        found = []
        for pool in self.facts.pools:
            if rule.scope_id is not None and pool.id != rule.scope_id:
                continue
            members = self.by_pool.get(pool.id, [])
            if not members or pool.pop_id in move.pops_leaving:
                continue
            out_before = sum(1 for b in members if not b.serving)
            out_after = sum(1 for b in members if not b.serving or b.id in move.backends)
            before, after = _percent(out_before, len(members)), _percent(out_after, len(members))
            if out_after > out_before and after > rule.threshold:
                found.append(Breach(rule, before, after, (
                    f"at most {rule.threshold}% of {pool.name} out of service at once; this takes "
                    f"{out_after} of {len(members)} out ({after}%)")))
        return found


def _percent(part: int, whole: int) -> int:
    """Rounded up, so 1 of 3 out is 34%, past a 33% rule."""
    return -(-100 * part // whole)
