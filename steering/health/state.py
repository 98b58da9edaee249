"""The rise/fall state machine and the panic decision. Pure: no Django, no Redis, no I/O.

Semantics follow HAProxy's `rise`/`fall`: a backend changes state only after `rise` consecutive
successes (to up) or `fall` consecutive failures (to down). `unknown` (never checked) and
`stale` (results stopped arriving) leave by the same counters; the counters survive a stale
spell, so a backend that was steadily passing before the prober went away is up again on its
first passing result.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

UNKNOWN, UP, DOWN, STALE = "unknown", "up", "down", "stale"


@dataclass(frozen=True)
class CheckState:
    """What the engine remembers about one backend between probes (kept in Redis)."""

    health: str = UNKNOWN
    ok_streak: int = 0
    fail_streak: int = 0
    last_time: float = 0.0   # unix time of the last result
    last_due: float = 0.0    # the schedule slot that result answered (orders late results)

    def encode(self) -> str:
        return f"{self.health}|{self.ok_streak}|{self.fail_streak}|{self.last_time:.3f}|{self.last_due:.3f}"

    @classmethod
    def decode(cls, raw: str | bytes | None) -> CheckState:
        if not raw:
            return cls()
        text = raw.decode() if isinstance(raw, bytes) else raw
        try:
            health, ok, fail, last_time, last_due = text.split("|")
            return cls(health, int(ok), int(fail), float(last_time), float(last_due))
        except ValueError:
            return cls()  # a garbled entry is treated as never checked, not as a failure


@dataclass(frozen=True)
class Step:
    state: CheckState
    transition: tuple[str, str] | None  # (from, to) when health changed
    accepted: bool = True               # False: an out-of-order result, ignored


def step(state: CheckState, *, ok: bool, rise: int, fall: int, now: float, due: float) -> Step:
    """Feed one probe result into the state machine."""
    # Race guard: a result for an older schedule slot than one already counted is dropped,
    # so a late shard can never rewind the counters.
    if due < state.last_due:
        return Step(state, None, accepted=False)
    if ok:
        new = replace(state, ok_streak=min(state.ok_streak + 1, 1_000_000), fail_streak=0, last_time=now, last_due=due)
        wanted = UP if new.ok_streak >= rise else state.health
    else:
        new = replace(state, fail_streak=min(state.fail_streak + 1, 1_000_000), ok_streak=0, last_time=now, last_due=due)
        wanted = DOWN if new.fail_streak >= fall else state.health
    if wanted == state.health:
        return Step(new, None)
    return Step(replace(new, health=wanted), (state.health, wanted))


def is_stale(state: CheckState, *, interval: float, now: float, intervals: int = 3) -> bool:
    """No result for `intervals` check intervals (the prober is dead or cut off)."""
    return state.last_time > 0 and state.health != STALE and now - state.last_time > intervals * interval


@dataclass(frozen=True)
class PanicDecision:
    in_panic: bool
    suspect: int       # backends down or failing their latest check
    total: int         # backends probed in the pool
    threshold_percent: int

    @property
    def explain(self) -> str:
        pct = 100.0 * self.suspect / self.total if self.total else 0.0
        side = "above" if self.in_panic else "at or below"
        return (f"{self.suspect} of {self.total} backends down or failing ({pct:.0f}%), "
                f"{side} the panic threshold of {self.threshold_percent}%")


def panic_decision(*, suspect: int, total: int, threshold_percent: int) -> PanicDecision:
    """A pool is in panic while MORE than `threshold_percent` of its probed backends are down
    or failing their latest check (Envoy's panic threshold; 0 disables it).

    Counting "failing their latest check" besides "down" is what catches a mass failure within
    one interval: by the time the first backend reaches `fall`, the others have failed once.
    """
    in_panic = threshold_percent > 0 and total > 0 and suspect * 100 > threshold_percent * total
    return PanicDecision(in_panic, suspect, total, threshold_percent)
