"""How many of a pool's backends passive verdicts may take out at once. Pure: no Django, no I/O.

Two places take backends out on live traffic, and both obey this one rule:
- the control plane's outlier ejection (steering.services.outliers, via steering.dataplane.passive,
  which re-exports what is here);
- the HAProxy agent (steering.agents.haproxy), which puts back servers HAProxy's own
  `observe layer4 ... on-error mark-down` took out beyond it. That agent imports no Django, which is
  why the rule lives beside the other Django-free HAProxy modules rather than in passive.py.

The rule: at most `max_ejected_percent` of the pool's primary backends out at once, and at least
one when the share is above 0 (so a pool of fewer than 100/N backends can still lose its one bad
backend, as Envoy does); never below `min_healthy_percent` of its capacity (of its backends when
capacities are not declared); never its last serving backend.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol


class Bounds(Protocol):
    """A pool's two bounds (steering.dataplane.passive.OutlierPolicy has them)."""

    @property
    def max_ejected_percent(self) -> int: ...
    @property
    def min_healthy_percent(self) -> int: ...


@dataclass(frozen=True)
class Member:
    """A primary backend of a pool as the bound sees it."""

    id: int
    capacity: float     # requests/s it can carry (0: not declared)
    serving: bool       # takes new traffic now (effective weight > 0)
    ejected: bool = False


@dataclass(frozen=True)
class Choice:
    eject: tuple[int, ...]
    held: tuple[int, ...]             # verdicts the bounds kept in service
    why_held: str = ""
    limit: int = 0                    # how many may be ejected at once in this pool


def ejection_limit(members: int, max_ejected_percent: int) -> int:
    """At most this many of `members` ejected at once: the share, rounded down, but at least one
    when the share is above 0 (as Envoy does), so a small pool can still lose its one bad backend."""
    if max_ejected_percent <= 0 or members <= 0:
        return 0
    return max(1, math.floor(members * max_ejected_percent / 100))


def choose(members: Sequence[Member], candidates: Iterable[int], policy: Bounds) -> Choice:
    """Which candidates (worst first) may be ejected: never more than the pool's share at once,
    never below its minimum healthy capacity, never its last serving backend."""
    by_id = {m.id: m for m in members}
    declared = bool(members) and all(m.capacity > 0 for m in members)

    def cap(m: Member) -> float:
        return m.capacity if declared else 1.0

    total = sum(cap(m) for m in members)
    serving = sum(cap(m) for m in members if m.serving and not m.ejected)
    serving_count = sum(1 for m in members if m.serving and not m.ejected)
    limit = ejection_limit(len(members), policy.max_ejected_percent)
    ejected = sum(1 for m in members if m.ejected)
    floor = total * policy.min_healthy_percent / 100
    eject: list[int] = []
    held: list[int] = []
    why = ""
    for cid in candidates:
        m = by_id.get(cid)
        if m is None or m.ejected:
            continue
        loses = cap(m) if m.serving else 0.0
        if ejected >= limit:
            held.append(cid)
            why = why or (f"at most {policy.max_ejected_percent}% of the pool may be ejected at once "
                          f"({limit} of {len(members)})")
        elif m.serving and (serving_count <= 1 or serving - loses < floor - 1e-9):
            held.append(cid)
            unit = "req/s" if declared else "backends"
            why = why or (f"ejecting would leave {serving - loses:g} of {total:g} {unit} serving, below the pool's "
                          f"minimum healthy {policy.min_healthy_percent}%")
        else:
            eject.append(cid)
            ejected += 1
            serving -= loses
            serving_count -= 1 if m.serving else 0
    return Choice(tuple(eject), tuple(held), why, limit)
