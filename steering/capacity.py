"""Pure capacity math: effective weight and drain-time estimate (where traffic goes: steering.whatif).

No Django here (a pure module, ARCHITECTURE.md §1): the data planes, the what-if, the guard and the UI's
"why does this backend get X%" all call these same functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_WEIGHT = 256

# States as plain strings so this module does not import the Django choices.
_OUT_OF_SERVICE_ADMIN = frozenset({"draining", "drained", "maint"})


@dataclass(frozen=True)
class WeightInputs:
    weight: int
    admin_state: str = "ready"
    health: str = "unknown"
    slow_start_seconds: int = 0
    seconds_since_ready: float | None = None
    pool_in_panic: bool = False
    # Outlier ejection (steering.services.outliers): seconds until it may return, None when not
    # ejected; the reason is the evidence ("14 x 5xx in 10 s").
    ejected_seconds_left: float | None = None
    ejection_reason: str = ""


@dataclass(frozen=True)
class WeightExplanation:
    effective: int
    reason: str


def explain_effective_weight(inputs: WeightInputs) -> WeightExplanation:
    """The weight a data plane should use for new traffic, and why.

    - draining / drained / maintenance: 0 (draining keeps its sessions, takes nothing new)
    - ejected by live traffic (outlier ejection): 0 until its ejection time is over, even in a
      panic (the ejection is bounded on its own: never more than the pool's share, never below
      its minimum healthy capacity); when the time is over the weight returns by itself, so a
      stopped outlier task can never keep capacity out
    - down: 0, unless the pool is in panic (most of it looks down at once, so the prober is
      suspected and everyone keeps serving)
    - unknown and stale keep their weight: no evidence is not evidence of failure
    - slow start: weight ramps linearly over slow_start_seconds after returning to ready,
      never below 1 so the backend is actually tried (as HAProxy does)
    """
    weight = max(0, min(MAX_WEIGHT, int(inputs.weight)))
    if inputs.admin_state in _OUT_OF_SERVICE_ADMIN:
        return WeightExplanation(0, f"admin state {inputs.admin_state}")
    if weight == 0:
        return WeightExplanation(0, "configured weight 0")
    left = inputs.ejected_seconds_left
    if left is not None and left > 0:
        why = inputs.ejection_reason or "failing live traffic"
        return WeightExplanation(0, f"ejected by live traffic: {why}; back in {math.ceil(left)} s "
                                    "unless the prober finds it down")
    if inputs.health == "down":
        if inputs.pool_in_panic:
            return WeightExplanation(weight, "down, but pool in panic: kept in service")
        return WeightExplanation(0, "health down")
    since = inputs.seconds_since_ready
    if inputs.slow_start_seconds > 0 and since is not None and since < inputs.slow_start_seconds:
        ramped = max(1, math.ceil(weight * max(0.0, since) / inputs.slow_start_seconds))
        pct = int(100 * max(0.0, since) / inputs.slow_start_seconds)
        return WeightExplanation(ramped, f"slow start {pct}% of {inputs.slow_start_seconds}s")
    return WeightExplanation(weight, f"configured weight {weight}")


def effective_weight(inputs: WeightInputs) -> int:
    return explain_effective_weight(inputs).effective


@dataclass(frozen=True)
class DrainEstimate:
    seconds: int
    sessions: int
    completion_rate: float
    buffer_seconds: int
    derivation: str


def estimate_drain_seconds(sessions: int, completion_rate: float, buffer_seconds: int = 15) -> DrainEstimate:
    """Drain time ~ active sessions / completion rate + a safety buffer.

    2,400 sessions finishing at 80/s -> 30 s + 15 s = 45 s.
    """
    if sessions <= 0:
        return DrainEstimate(buffer_seconds, 0, completion_rate, buffer_seconds, "no active sessions: buffer only")
    if completion_rate <= 0:
        raise ValueError("completion_rate must be positive when sessions are active")
    base = math.ceil(sessions / completion_rate)
    return DrainEstimate(
        base + buffer_seconds,
        sessions,
        completion_rate,
        buffer_seconds,
        f"{sessions} sessions / {completion_rate:g} per s = {base} s, + {buffer_seconds} s buffer",
    )
