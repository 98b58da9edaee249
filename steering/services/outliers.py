"""Outlier ejection: live traffic takes a failing backend out, bounded, audited, and confirmed or
cleared by the active prober. The only writer of Backend.ejected_* and Pool.outlier_panic*.

Every second (steering.tasks.outliers) `tick`:

1. reads each serving backend's cumulative counters from the data plane's figures in Redis
   (steering.dataplane.stats, written by the PoP's HAProxy agent) into a small per-backend window
   kept in Redis (`Track`: never a DB row per sample) and asks `passive.judge`: did HAProxy's own
   observe take it out, did it fail `error_limit` requests in a row, or did 5xx answers and failed
   attempts reach the pool's share over its window?
2. for a pool with verdicts, under the pool's row lock: `passive.choose` picks the worst ones the
   bounds allow (at most `outlier_max_ejected_percent` of the pool at once, at least one as in
   Envoy; never below `min_healthy_percent` of its capacity; never its last serving backend) and
   ejects them: `ejected_until` = now + base × (ejections in a row), capped. The effective weight
   (steering.capacity) is 0 until then, so HAProxy, DNS, anycast, the what-if and the explainer
   all see it. One Change per ejection, actor system:outlier. Verdicts the bounds hold back put
   the pool in "outlier panic" (audited once when entered and once when over, shown on the map):
   the rest keep serving and the operator is told which bound held.
3. ends ejections: the prober finding the backend down confirms the verdict (the ejection ends,
   health keeps it out, audited); when the time is over the backend comes back (cleared, audited,
   slow start if it has one) unless the prober has it down. The prober can also clear it early
   (`passive.prober_clears`): only an ejection for failed connections, from half its time on, on
   a passing check taken since then. Never one for 5xx answers: /healthz passing says nothing
   about those. If this task stops, the effective weight still returns by itself when
   `ejected_until` passes: a passive verdict can delay capacity, never keep it.

The HAProxy agent bounds HAProxy's own observe the same way and reports the servers it put back
(`observe_held`); `record_observe_held` puts their pool in outlier panic, so the operator is told.

The DB is written only on a transition (eject, end, panic in or out). What the tick counted and how many
backends are ejected now are read by steering.readmodels.outliers (for /metrics).
"""

from __future__ import annotations

import datetime
import json
import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Q

from steering import capacity
from steering.choices import AdminState, Health
from steering.dataplane.passive import (
    Choice,
    Member,
    OutlierPolicy,
    Point,
    ProbeResult,
    Track,
    Verdict,
    choose,
    ejection_limit,
    ejection_seconds,
    judge,
    prober_clears,
)
from steering.dataplane.stats import read_backend_stats
from steering.health.state import CheckState
from steering.health.store import state_key
from steering.models import Backend, Pool, PoP
from steering.redis_keys import METRICS_OUTLIER, OUTLIER_HELD, OUTLIER_LOCK, OUTLIER_TRACKS
from steering.redisconn import sync_client
from steering.representation import ejection_left
from steering.services.audit import ChangeSet
from steering.services.context import Actor
from steering.services.kernel import set_fields

logger = logging.getLogger(__name__)

OUTLIER = Actor.system("outlier")

_FIELDS = ("pk", "pool_id", "name", "weight", "admin_state", "health", "slow_start_seconds", "ready_since", "backup",
           "capacity_rps", "ejected_at", "ejected_until", "ejection_count", "ejection_reason")


def policy_of(pool: Pool) -> OutlierPolicy:
    return OutlierPolicy(
        consecutive_failures=pool.error_limit, failure_percent=pool.outlier_failure_percent,
        window_seconds=float(pool.outlier_window_seconds), min_requests=pool.outlier_min_requests,
        ejection_seconds=pool.outlier_ejection_seconds, max_ejection_seconds=pool.outlier_max_ejection_seconds,
        max_ejected_percent=pool.outlier_max_ejected_percent, min_healthy_percent=pool.min_healthy_percent,
    )


@dataclass(frozen=True)
class _Row:
    pk: int
    pool_id: int
    name: str
    weight: int
    admin_state: str
    health: str
    slow_start_seconds: int
    ready_since: datetime.datetime | None
    backup: bool
    capacity_rps: int
    ejected_at: datetime.datetime | None
    ejected_until: datetime.datetime | None
    ejection_count: int
    ejection_reason: str

    def ejection_left(self, when: datetime.datetime) -> float | None:
        return ejection_left(self.ejected_at, self.ejected_until, when)

    def serving(self, when: datetime.datetime, in_panic: bool) -> bool:
        """Takes new traffic now, by the one effective-weight function."""
        since = (when - self.ready_since).total_seconds() if self.ready_since else None
        return capacity.effective_weight(capacity.WeightInputs(
            weight=self.weight, admin_state=self.admin_state, health=self.health,
            slow_start_seconds=self.slow_start_seconds, seconds_since_ready=since, pool_in_panic=in_panic,
            ejected_seconds_left=self.ejection_left(when))) > 0


def _members(rows: Iterable[_Row], when: datetime.datetime, in_panic: bool) -> list[Member]:
    return [Member(r.pk, float(r.capacity_rps), r.serving(when, in_panic), r.ejection_left(when) is not None)
            for r in rows if not r.backup]


def _count(redis: Any, counts: Counter[str]) -> None:
    if not counts:
        return
    try:
        pipe = redis.pipeline(transaction=False)
        for name, n in counts.items():
            pipe.hincrbyfloat(METRICS_OUTLIER, name, n)
        pipe.execute()
    except Exception as exc:  # metrics never stop a verdict
        logger.warning("outliers: could not count %s: %s", dict(counts), exc)


# --- the tick ------------------------------------------------------------------------------------


def tick(*, now: float | None = None) -> dict[str, int]:
    """One pass: detect, eject within the bounds, end what is due. Safe to run in parallel (a Redis
    lock makes one pass at a time; every write is a compare-and-set under row locks anyway)."""
    redis = sync_client()
    lock = redis.lock(OUTLIER_LOCK, timeout=30)
    if not lock.acquire(blocking=False):
        return {"skipped": 1}
    try:
        return _tick(redis, time.time() if now is None else now)
    finally:
        try:
            lock.release()
        except Exception:
            pass  # expired while we ran: the next pass takes it


def _tick(redis: Any, at: float) -> dict[str, int]:
    when = datetime.datetime.fromtimestamp(at, tz=datetime.UTC)
    result: Counter[str] = Counter()
    pools = {p.pk: p for p in Pool.objects.filter(Q(outlier_detection=True) | Q(outlier_panic=True))}
    # Ends first: a backend whose ejection is over is judged again only on figures sampled after it.
    result.update(_end_ejections(when, redis))
    rows = [_Row(*r) for r in Backend.objects.filter(pool_id__in=[p for p, x in pools.items() if x.outlier_detection])
            .values_list(*_FIELDS).order_by("pool_id", "pk")]
    verdicts = _detect(redis, pools, rows, at, when)
    held_pools: set[int] = set()
    for pool_id in sorted(verdicts):
        choice = _eject(pool_id, verdicts[pool_id], when)
        result["ejected"] += len(choice.eject)
        result["held"] += len(choice.held)
        if choice.held:
            held_pools.add(pool_id)
    if held_pools:
        redis.hset(OUTLIER_HELD, mapping={str(pid): at for pid in held_pools})
    result["panic_over"] = _end_panics(pools, held_pools, redis, at)
    try:
        redis.hset(METRICS_OUTLIER, "held_now", result["held"])
    except Exception:
        pass
    return {k: v for k, v in result.items() if v}


def _detect(redis: Any, pools: dict[int, Pool], rows: Sequence[_Row], at: float,
            when: datetime.datetime) -> dict[int, list[tuple[int, Verdict]]]:
    """Verdicts by pool (worst first) for the serving primaries, from their figures and windows."""
    judged = [r for r in rows if not r.backup and r.admin_state == AdminState.READY and r.ejected_at is None
              and r.serving(when, pools[r.pool_id].in_panic)]
    ids = [r.pk for r in judged]
    figures = read_backend_stats(ids)
    raw = redis.hmget(OUTLIER_TRACKS, ids) if ids else []
    tracks: dict[int, Track] = {}
    for bid, blob in zip(ids, raw, strict=True):
        try:
            tracks[bid] = Track.from_json(json.loads(blob) if blob else None)
        except ValueError:
            tracks[bid] = Track()
    changed: dict[str, str] = {}
    verdicts: dict[int, list[tuple[int, Verdict]]] = {}
    for r in judged:
        f = figures.get(r.pk)
        if f is None:
            continue  # no fresh figures: no evidence either way
        if r.ejected_until is not None and f.updated_at <= r.ejected_until.timestamp():
            continue  # sampled before it came back: evidence already acted on
        pool = pools[r.pool_id]
        policy = policy_of(pool)
        track = tracks[r.pk]
        point = Point(f.updated_at, f.stot, f.errors, f.hrsp_5xx, int(bool(f.observed_down)))
        if track.add(point, keep_seconds=policy.window_seconds):
            changed[str(r.pk)] = json.dumps(track.to_json(), separators=(",", ":"))
        verdict = judge(policy, track, now=at)
        if verdict is not None:
            verdicts.setdefault(r.pool_id, []).append((r.pk, verdict))
    pipe = redis.pipeline(transaction=False)
    if changed:
        pipe.hset(OUTLIER_TRACKS, mapping=changed)
    # Only serving backends keep a window: one that left (drained, ejected, deleted) starts afresh.
    keep = {str(i) for i in ids}
    gone = [k for k in (x.decode() if isinstance(x, bytes) else x for x in redis.hkeys(OUTLIER_TRACKS)) if k not in keep]
    if gone:
        pipe.hdel(OUTLIER_TRACKS, *gone)
    pipe.execute()
    for items in verdicts.values():
        items.sort(key=lambda item: (-item[1].severity, item[0]))
    return verdicts


def _eject(pool_id: int, verdicts: list[tuple[int, Verdict]], when: datetime.datetime) -> Choice:
    """Eject what the bounds allow, under the pool's lock; enter outlier panic if they held any."""
    redis = sync_client()
    ejected_rules: Counter[str] = Counter()
    with transaction.atomic():
        pool = Pool.objects.select_for_update().filter(pk=pool_id, outlier_detection=True).first()
        if pool is None:
            return Choice((), ())
        backends = {b.pk: b for b in Backend.objects.select_for_update().filter(pool=pool).order_by("pk")}
        rows = [_Row(*(getattr(b, f) for f in _FIELDS)) for b in backends.values()]
        policy = policy_of(pool)
        by_id = dict(verdicts)
        # Re-checked under the lock: still ready, serving and not ejected (another pass may have won).
        fresh = {r.pk for r in rows if r.admin_state == AdminState.READY and r.ejection_left(when) is None
                 and r.serving(when, pool.in_panic)}
        choice = choose(_members(rows, when, pool.in_panic), [bid for bid, _ in verdicts if bid in fresh], policy)
        changes: ChangeSet | None = None
        for bid in choice.eject:
            b = backends[bid]
            verdict = by_id[bid]
            # Ejections in a row: the count starts over once it stayed in for the longest ejection.
            last_end = b.ejected_until
            quiet = last_end is not None and (when - last_end).total_seconds() > policy.max_ejection_seconds
            count = 1 if quiet or last_end is None else b.ejection_count + 1
            seconds = ejection_seconds(policy, count)
            changes = changes or ChangeSet(OUTLIER, "")
            set_fields(b, {"ejected_at": when, "ejected_until": when + datetime.timedelta(seconds=seconds),
                           "ejection_count": count, "ejection_reason": verdict.reason[:300]},
                       changes, "backend.eject", related=pool,
                       reason=f"ejected by live traffic: {verdict.reason}; out for {seconds} s "
                              f"(ejection {count} in a row), then back unless the prober finds it down")
            ejected_rules[f"eject:{verdict.rule}"] += 1
        if choice.held and not pool.outlier_panic:
            names = ", ".join(backends[bid].name for bid in choice.held[:5]) + ("…" if len(choice.held) > 5 else "")
            why = (f"{len(choice.held)} more backend(s) fail live traffic ({names}) but stay in: {choice.why_held}; "
                   "the active prober decides for them")[:300]
            changes = changes or ChangeSet(OUTLIER, "")
            set_fields(pool, {"outlier_panic": True, "outlier_panic_reason": why}, changes, "pool.outlier_panic",
                       reason=why)
            ejected_rules["panic"] += 1
    if choice.eject:
        logger.warning("pool %s: ejected %s by live traffic", pool_id, list(choice.eject))
        try:
            redis.hdel(OUTLIER_TRACKS, *[str(b) for b in choice.eject])
        except Exception:
            pass
    _count(redis, ejected_rules)
    return choice


def _end_ejections(when: datetime.datetime, redis: Any) -> Counter[str]:
    """Confirmed (the prober has it down), cleared (time over), or the policy was turned off."""
    rows = list(Backend.objects.filter(ejected_at__isnull=False)
                .values_list("pk", "pool_id", "health", "ejected_at", "ejected_until", "ejection_reason",
                             "pool__outlier_detection", "pool__in_panic"))
    due: dict[int, dict[int, str]] = {}
    early: list[tuple[int, int, datetime.datetime, datetime.datetime, str]] = []
    for pk, pool_id, health, since, until, reason, detecting, in_panic in rows:
        over = until is None or until <= when
        if not detecting:
            due.setdefault(pool_id, {})[pk] = "off"
        elif health == Health.DOWN and (over or not in_panic):
            due.setdefault(pool_id, {})[pk] = "confirmed"
        elif over:
            due.setdefault(pool_id, {})[pk] = "cleared"
        elif health == Health.UP and since is not None and until is not None:
            early.append((pk, pool_id, since, until, reason))
    for pk, pool_id in _cleared_by_the_prober(early, when, redis):
        due.setdefault(pool_id, {})[pk] = "early"
    counts: Counter[str] = Counter()
    for pool_id in sorted(due):
        wanted = due[pool_id]
        with transaction.atomic():
            pool = Pool.objects.select_for_update().filter(pk=pool_id).first()
            if pool is None:
                continue
            changes: ChangeSet | None = None
            for b in Backend.objects.select_for_update().filter(pool=pool, pk__in=wanted).order_by("pk"):
                if b.ejected_at is None:
                    continue  # another pass ended it
                how = wanted[b.pk]
                planned_end = b.ejected_until
                values: dict[str, Any] = {"ejected_at": None,
                                          "ejected_until": min(when, planned_end) if planned_end else when}
                if how == "confirmed":
                    action = "backend.eject_confirmed"
                    why = f"the prober confirms the ejection ({b.ejection_reason}): health down, it stays out"
                elif how == "early":
                    action = "backend.eject_end"
                    why = (f"back in early, cleared by the prober: its checks pass again past half the ejection, "
                           f"and the ejection was for failed connections ({b.ejection_reason}), which a passing "
                           "check answers")
                elif how == "off":
                    action = "backend.eject_end"
                    why = "outlier detection turned off for the pool: back in"
                else:
                    action = "backend.eject_end"
                    prober = {str(Health.UP): "the prober passes it", str(Health.UNKNOWN): "no active check to ask",
                              str(Health.STALE): "the prober's results are stale"}.get(b.health, b.health)
                    why = f"back in: ejection over ({b.ejection_reason}); {prober}"
                if how != "confirmed" and b.slow_start_seconds > 0:
                    values["ready_since"] = when  # back gradually, as after an undrain
                    why += f"; slow start over {b.slow_start_seconds} s"
                changes = changes or ChangeSet(OUTLIER, "")
                set_fields(b, values, changes, action, related=pool, reason=why[:2000])
                counts[f"end:{how}"] += 1
    if early_ends := counts.pop("end:early", 0):
        counts["end:cleared"] += early_ends  # /metrics: an early clear is a clear
    if counts:
        ended = [str(pk) for items in due.values() for pk in items]
        try:
            redis.hdel(OUTLIER_TRACKS, *ended)
        except Exception:
            pass
        _count(redis, counts)
    return Counter({"returned": counts["end:cleared"] + counts["end:off"], "confirmed": counts["end:confirmed"]})


def _cleared_by_the_prober(candidates: Sequence[tuple[int, int, datetime.datetime, datetime.datetime, str]],
                           when: datetime.datetime, redis: Any) -> list[tuple[int, int]]:
    """(backend, pool) of the ejections the prober's latest results end early (passive.prober_clears),
    read from the prober's state in Redis (steering.health.store) for those that could qualify."""
    at = when.timestamp()
    # First by what needs no Redis (the verdict's kind, half the time gone): as if a check passed now.
    could = [c for c in candidates if prober_clears(c[4], ejected_at=c[2].timestamp(), ejected_until=c[3].timestamp(),
                                                    now=at, probe=ProbeResult("up", 1, at))]
    if not could:
        return []
    try:
        raw = redis.mget([state_key(c[0]) for c in could])
    except Exception as exc:  # the prober's state away: the ejections end on time instead
        logger.warning("outliers: could not read the prober's state: %s", exc)
        return []
    out: list[tuple[int, int]] = []
    for (pk, pool_id, since, until, reason), blob in zip(could, raw, strict=True):
        state = CheckState.decode(blob)
        probe = ProbeResult(state.health, state.ok_streak, state.last_time)
        if prober_clears(reason, ejected_at=since.timestamp(), ejected_until=until.timestamp(), now=at, probe=probe):
            out.append((pk, pool_id))
    return out


def record_observe_held(pop: PoP, backend_ids: Iterable[int], *, now: float | None = None) -> int:
    """The PoP's HAProxy agent put these servers back: HAProxy's observe had taken out more of their
    pools than the bound allows (steering.dataplane.haproxy.observe). Each pool enters outlier panic
    (audited once, when it enters) and stays in it until a window passes with nothing held back.
    Returns the pools newly in panic."""
    at = time.time() if now is None else now
    redis = sync_client()
    names: dict[int, list[str]] = {}
    for pool_id, name in Backend.objects.filter(pk__in=list(backend_ids), pool__pop=pop).values_list("pool_id", "name"):
        names.setdefault(pool_id, []).append(name)
    if not names:
        return 0
    redis.hset(OUTLIER_HELD, mapping={str(pid): at for pid in names})
    entered = 0
    for pool_id in sorted(names):
        with transaction.atomic():
            pool = Pool.objects.select_for_update().filter(pk=pool_id, outlier_panic=False).first()
            if pool is None:
                continue  # in panic already: said once
            members = Backend.objects.filter(pool=pool, backup=False).count()
            held = sorted(names[pool_id])
            listed = ", ".join(held[:5]) + ("…" if len(held) > 5 else "")
            why = (f"HAProxy's observe took out more backends than the pool may lose at once; its agent put "
                   f"{len(held)} back in ({listed}): at most {pool.outlier_max_ejected_percent}% of the pool out at "
                   f"once ({ejection_limit(members, pool.outlier_max_ejected_percent)} of {members}), never below its "
                   f"minimum healthy {pool.min_healthy_percent}%; the active prober decides for them")[:300]
            set_fields(pool, {"outlier_panic": True, "outlier_panic_reason": why}, ChangeSet(OUTLIER, ""),
                       "pool.outlier_panic", reason=why)
            entered += 1
    _count(redis, Counter({"panic": entered}))
    logger.warning("pop %s: HAProxy agent put back %s beyond the bound", pop.slug, dict(names))
    return entered


def _end_panics(pools: dict[int, Pool], held_now: set[int], redis: Any, at: float) -> int:
    """A pool leaves outlier panic once no verdict was held back for a whole window."""
    in_panic = [p for p in pools.values() if p.outlier_panic and p.pk not in held_now]
    if not in_panic:
        return 0
    held_at = redis.hmget(OUTLIER_HELD, [str(p.pk) for p in in_panic])
    ended = 0
    for pool, last in zip(in_panic, held_at, strict=True):
        quiet_for = at - float(last) if last else float("inf")
        # The agent's holds on HAProxy's observe count whether or not the pool ejects itself.
        if (pool.outlier_detection or pool.observe == "layer4") and quiet_for < pool.outlier_window_seconds:
            continue
        with transaction.atomic():
            locked = Pool.objects.select_for_update().filter(pk=pool.pk, outlier_panic=True).first()
            if locked is None:
                continue
            why = ("outlier panic over: no backend held back by the bounds for "
                   f"{pool.outlier_window_seconds} s" if quiet_for >= pool.outlier_window_seconds else
                   "outlier panic over: outlier detection turned off")
            set_fields(locked, {"outlier_panic": False, "outlier_panic_reason": ""}, ChangeSet(OUTLIER, ""),
                       "pool.outlier_panic_end", reason=why)
        redis.hdel(OUTLIER_HELD, str(pool.pk))
        ended += 1
    return ended

