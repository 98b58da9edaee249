"""The impact: what an action would do to traffic, as the capacity guard answers it.

Only the guard (`steering.services.guard`) builds an `Impact`; the services, the 409
`capacity_guard` refusal and the API pass it on as it is. `Impact.as_json` is the one place it
becomes JSON (an answer's body, an operation's stored params, a refusal's body). The API's
serializer is generated from these dataclasses, and the dashboard's types from the API's
OpenAPI schema (ARCHITECTURE.md §1), so nothing repeats the shape by hand.

No Django here: plain frozen dataclasses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Verdict = Literal["safe", "overload", "outage"]
# Where the loads come from: the data plane's session rates, the pools' expected_rps, or both.
Basis = Literal["measured", "configured", "mixed"]
ImpactAction = Literal["drain", "maintenance", "undrain", "weight", "withdraw", "announce", "layered_drain"]
TargetType = Literal["backend", "pool", "pop", "region"]
ReceiverType = Literal["backend", "pool", "pop"]
SuggestedGraceBasis = Literal["measured", "default"]  # from live session figures, or the default
GraceBasis = Literal["measured", "default", "given"]   # ... or the operator gave it

# A field with this metadata is left out of the JSON when None (rather than sent as null): the
# extras only some actions have. Its serializer field is optional, not nullable.
OMIT_IF_NONE: Mapping[str, bool] = {"omit_if_none": True}


@dataclass(frozen=True)
class ImpactTarget:
    type: TargetType
    id: int
    name: str


@dataclass(frozen=True)
class ImpactReceiver:
    """A backend, pool or PoP that gains load (or is already over capacity)."""

    type: ReceiverType
    id: int
    name: str
    load_before_rps: float
    load_after_rps: float
    capacity_rps: float | None            # None: declares no capacity, so is never judged
    headroom_after_percent: float | None  # None with capacity_rps None
    overloaded: bool


@dataclass(frozen=True)
class SuggestedGrace:
    """The grace a drain would get by itself: from live session figures, else the default."""

    seconds: int
    basis: SuggestedGraceBasis
    derivation: str


@dataclass(frozen=True)
class Grace:
    """A drain's grace; when the operator gave one, what was suggested comes along."""

    seconds: int
    basis: GraceBasis
    derivation: str
    suggested: SuggestedGrace | None = field(default=None, metadata=OMIT_IF_NONE)

    @classmethod
    def of(cls, suggested: Mapping[str, Any], given_seconds: int | None = None) -> Grace:
        """From `kernel.suggest_grace`'s answer and the seconds the operator gave (if any)."""
        mine = SuggestedGrace(int(suggested["seconds"]), suggested["basis"], str(suggested["derivation"]))
        if given_seconds is None:
            return cls(mine.seconds, mine.basis, mine.derivation)
        return cls(given_seconds, "given", f"given: {given_seconds} s", suggested=mine)


@dataclass(frozen=True)
class WeightPlan:
    """A weight change's steps (one: at once) and the seconds between them."""

    steps: list[int]
    step_seconds: int


@dataclass(frozen=True)
class LayeredPlan:
    """A layered drain's plan: the DNS answers it stops, the wait, the announcements it withdraws."""

    dns: list[str]
    wait_seconds: int
    ttl_seconds: int
    ttl_factor: float
    withdraw: list[str]


Plan = WeightPlan | LayeredPlan


BreachKind = Literal["min_dns_regions", "min_announcing_pops", "max_pool_out_percent"]


@dataclass(frozen=True)
class SafetyBreach:
    """A safety rule the action would break: its count (or % out) before and after."""

    rule: str                  # the rule's slug
    rule_id: int
    kind: BreachKind
    threshold: int
    before: int
    after: int
    detail: str


@dataclass(frozen=True)
class Impact:
    action: ImpactAction
    target: ImpactTarget
    basis: Basis
    verdict: Verdict
    safe: bool
    backends_affected: int
    moved_rps: float
    unplaced_rps: float                   # newly lost by the action (already lost before is not counted)
    receivers: list[ImpactReceiver]
    notes: list[str]
    explain: str
    # The safety rules it would break; any makes the action unsafe (409 safety_rule unless forced).
    safety_rules: list[SafetyBreach] = field(default_factory=list)
    grace: Grace | None = field(default=None, metadata=OMIT_IF_NONE)   # drain
    plan: Plan | None = field(default=None, metadata=OMIT_IF_NONE)     # weight, layered drain

    def as_json(self) -> dict[str, Any]:
        """The impact as the API shows it and operations store it."""
        return dataclasses.asdict(self, dict_factory=_json_object)


def _omitted_names(*classes: type) -> frozenset[str]:
    return frozenset(f.name for c in classes for f in dataclasses.fields(c) if f.metadata.get("omit_if_none"))


_OMITTED = _omitted_names(Impact, Grace)


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return {k: v for k, v in pairs if not (v is None and k in _OMITTED)}
