"""Passive health: what live traffic says about a backend. Pure rules here, no Django.

Active probes ask "does /healthz answer?"; real traffic can disagree (a backend passing its check
while failing half its requests, or one that died a second ago and will not be probed for a few
more). Two signals come from the data plane's figures (steering.dataplane.stats):

- the 5xx flag (`FiveXXRule`, `set_flags`): one sample's 5xx rate against its session rate,
  stored beside the figures and pushed live as it flips. Evidence shown beside the backend.
- the outlier verdict (`OutlierPolicy`, `Track`, `judge`): the cumulative counters over a window,
  per backend. steering.services.outliers acts on it: ejects the backend (effective weight 0, so
  every data plane stops sending it new traffic), bounded by `choose` so passive verdicts can
  never empty a pool, audited as system:outlier, and confirmed (down) or cleared (back in) by the
  active prober (`prober_clears`: early, for failed connections only). HAProxy's own `observe layer4` (rendered per pool) is the first responder: it
  takes a server out after `error_limit` failed connections in a row; the verdict reads that too.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

# The bound lives with the Django-free HAProxy modules (the HAProxy agent applies it to HAProxy's
# own observe); re-exported here, where the rest of the outlier rules are.
from steering.dataplane.haproxy.bound import Choice as Choice
from steering.dataplane.haproxy.bound import Member as Member
from steering.dataplane.haproxy.bound import choose as choose
from steering.dataplane.haproxy.bound import ejection_limit as ejection_limit
from steering.redis_keys import BACKEND_STATS

logger = logging.getLogger(__name__)


class HasRates(Protocol):
    @property
    def session_rate(self) -> float: ...
    @property
    def rate_5xx(self) -> float: ...


@dataclass(frozen=True)
class FiveXXRule:
    min_rate: float = 1.0     # 5xx/s below this is noise, whatever the share
    min_share: float = 0.25   # 5xx per new session

    def spiking(self, f: HasRates) -> bool:
        if f.rate_5xx < self.min_rate:
            return False
        return f.rate_5xx >= self.min_share * max(f.session_rate, f.rate_5xx, 1e-9)


def set_flags(figures: Mapping[int, HasRates], rule: FiveXXRule, *, redis: Any) -> list[int]:
    """Store each backend's flag beside its figures; push the ones that changed. Returns those ids."""
    ids = list(figures)
    if not ids:
        return []
    pipe = redis.pipeline(transaction=False)
    for backend_id in ids:
        pipe.hget(BACKEND_STATS.format(id=backend_id), "flag_5xx")
    previous = pipe.execute()
    changed: list[int] = []
    pipe = redis.pipeline(transaction=False)
    for backend_id, before in zip(ids, previous, strict=True):
        now_flagged = rule.spiking(figures[backend_id])
        if (before == b"1") != now_flagged:
            changed.append(backend_id)
            pipe.hset(BACKEND_STATS.format(id=backend_id), "flag_5xx", "1" if now_flagged else "0")
    pipe.execute()
    from steering.services.effects import publish_observed

    for backend_id in changed:
        f = figures[backend_id]
        flagged = rule.spiking(f)
        if flagged:
            logger.warning("backend %s: 5xx spike (%.1f/s of %.1f sessions/s)", backend_id, f.rate_5xx, f.session_rate)
        publish_observed({"type": "observed", "layer": "local", "backend": backend_id, "flag_5xx": flagged,
                          "rate_5xx": round(f.rate_5xx, 2), "session_rate": round(f.session_rate, 2),
                          "at": time.time()})
    return changed


# --- outlier detection ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OutlierPolicy:
    """A pool's outlier settings (steering.models.Pool.outlier_*, error_limit, min_healthy_percent).

    Defaults follow Envoy's outlier detection where it has one: 5 consecutive failures, 30 s
    base ejection growing with each repeat up to 300 s, at most 10 % of the pool ejected."""

    consecutive_failures: int = 5
    failure_percent: int = 25
    window_seconds: float = 10.0
    min_requests: int = 10
    ejection_seconds: int = 30
    max_ejection_seconds: int = 300
    max_ejected_percent: int = 10
    min_healthy_percent: int = 50


@dataclass(frozen=True)
class Point:
    """One sample of a backend's cumulative counters (HAProxy's, since it started)."""

    at: float
    stot: int        # attempts sent to it
    errors: int      # failed attempts (connection errors, broken responses, retried, redispatched)
    http_5xx: int    # 5xx answers
    down: int = 0    # HAProxy's observe has it down (1) at this sample

    def as_list(self) -> list[float]:
        return [self.at, self.stot, self.errors, self.http_5xx, self.down]


@dataclass
class Track:
    """A backend's recent samples (one window and one baseline) and its failure streak.

    `streak` counts failed attempts in consecutive samples that saw no success; a sample with a
    success resets it (the counters cannot tell the order within one sample, so a success there
    is taken as breaking the run: the share rule and HAProxy's own observe catch the rest).
    `streak_5xx`: how many of those were 5xx answers (the rest failed connections or answers
    broken off), which decides whether the prober may end the ejection early (`prober_clears`).
    `went_down`: HAProxy's observe took it out while we watched (a sample in service, then one
    down). A backend already down when first seen (e.g. just back from an ejection, HAProxy's
    check not yet through) is old news, not a new verdict: the prober decides that one."""

    points: list[Point] = field(default_factory=list)
    streak: int = 0
    went_down: bool = False
    streak_5xx: int = 0

    def add(self, p: Point, *, keep_seconds: float) -> bool:
        """Add a newer sample; False when it is not newer than the last one (already seen)."""
        if self.points and p.at <= self.points[-1].at:
            return False
        if not p.down:
            self.went_down = False
        elif self.points and not self.points[-1].down:
            self.went_down = True
        if self.points:
            last = self.points[-1]
            if p.stot < last.stot or p.errors < last.errors or p.http_5xx < last.http_5xx:
                self.points, self.streak, self.streak_5xx = [p], 0, 0  # counters went back: HAProxy restarted
                return True
            failed = (p.errors - last.errors) + (p.http_5xx - last.http_5xx)
            succeeded = (p.stot - last.stot) - failed
            self.streak = 0 if succeeded > 0 else self.streak + failed
            self.streak_5xx = 0 if succeeded > 0 else self.streak_5xx + (p.http_5xx - last.http_5xx)
        self.points.append(p)
        # Keep the window plus one older sample as its baseline.
        cutoff = p.at - keep_seconds
        while len(self.points) > 2 and self.points[1].at <= cutoff:
            self.points.pop(0)
        return True

    def window(self, now: float, seconds: float) -> tuple[int, int, int, float]:
        """(attempts, failed attempts, 5xx, seconds covered) over the last `seconds`."""
        if len(self.points) < 2:
            return 0, 0, 0, 0.0
        latest = self.points[-1]
        base = self.points[0]
        for p in self.points:
            if p.at <= now - seconds:
                base = p
        if base is latest:
            return 0, 0, 0, 0.0
        return (latest.stot - base.stot, latest.errors - base.errors, latest.http_5xx - base.http_5xx,
                latest.at - base.at)

    def to_json(self) -> dict[str, Any]:
        return {"p": [p.as_list() for p in self.points], "s": self.streak, "d": int(self.went_down),
                "s5": self.streak_5xx}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Track:
        if not data:
            return cls()
        try:
            points = [Point(float(x[0]), int(x[1]), int(x[2]), int(x[3]), int(x[4]) if len(x) > 4 else 0)
                      for x in data.get("p", [])]
            return cls(points, int(data.get("s", 0)), bool(data.get("d", 0)), int(data.get("s5", 0)))
        except (TypeError, ValueError, IndexError):
            return cls()


@dataclass(frozen=True)
class Verdict:
    rule: str          # "observed" (HAProxy took it out) | "consecutive" | "share"
    reason: str        # what the map, the panel and the audit say
    severity: float    # worst first when the bound lets only some go

    def as_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "reason": self.reason}


def judge(policy: OutlierPolicy, track: Track, *, now: float) -> Verdict | None:
    """Does live traffic say this backend is an outlier? None: no (or not enough evidence)."""
    if track.went_down:
        return Verdict("observed", f"HAProxy took it out after {policy.consecutive_failures} failed connections "
                                   "in a row (observe layer4)", 3.0)
    if policy.consecutive_failures > 0 and track.streak >= policy.consecutive_failures:
        answers = f" ({track.streak_5xx} × 5xx)" if track.streak_5xx else ""
        return Verdict("consecutive", f"{track.streak} failed requests in a row{answers}", 2.0)
    attempts, errors, http_5xx, span = track.window(now, policy.window_seconds)
    failed = min(attempts, errors + http_5xx)
    if attempts >= policy.min_requests and failed > 0 and failed * 100 >= policy.failure_percent * attempts:
        parts = [f"{http_5xx} × 5xx"] if http_5xx else []
        if errors:
            parts.append(f"{errors} failed attempts")
        return Verdict("share", f"{' + '.join(parts)} in {max(1, round(span))} s "
                                f"({round(100 * failed / attempts)}% of {attempts} requests)", failed / attempts)
    return None


def ejection_seconds(policy: OutlierPolicy, count: int) -> int:
    """How long the `count`-th ejection in a row lasts: base × count, capped (Envoy's rule)."""
    return int(min(policy.max_ejection_seconds, policy.ejection_seconds * max(1, count)))


# --- the prober ends an ejection early --------------------------------------------------------------

# judge()'s words for verdicts on failed connections, not on answers: HAProxy's observe, and a run of
# failed attempts with no 5xx in it ("N failed requests in a row", without "(K × 5xx)").
_CONNECTION_VERDICT = re.compile(r"^(HAProxy took it out after \d+ failed connections in a row\b|\d+ failed requests in a row$)")


def connection_failures(reason: str) -> bool:
    """Was an ejection with this reason (judge's words, kept in Backend.ejection_reason) for failed
    connections rather than for what the backend answered?"""
    return bool(_CONNECTION_VERDICT.match(reason))


@dataclass(frozen=True)
class ProbeResult:
    """The prober's latest word on a backend (steering.health.state.CheckState's fields)."""

    health: str          # up | down | unknown | stale
    ok_streak: int       # passing checks in a row, the latest included
    last_time: float     # unix time of the latest result


def prober_clears(reason: str, *, ejected_at: float, ejected_until: float, now: float,
                  probe: ProbeResult | None) -> bool:
    """May the active prober end this ejection before its time is over?

    Only an ejection for failed connections (HAProxy's observe, a run of failed attempts): a
    check that connects and passes answers that very question, e.g. the process was restarted.
    Never one for 5xx answers: a backend can pass /healthz and still answer 503 to real requests.
    And not at once: from half the ejection on (so a repeat, which lasts longer, also stays out
    longer), on a passing result taken from that half-way point on with the prober calling it up.
    """
    if probe is None or not connection_failures(reason):
        return False
    halfway = ejected_at + (ejected_until - ejected_at) / 2
    return now >= halfway and probe.health == "up" and probe.ok_streak >= 1 and probe.last_time >= halfway
