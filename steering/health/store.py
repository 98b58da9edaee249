"""The prober's hot state in Redis: the schedule, each backend's counters and recent samples,
and the metric counters every worker adds to. No relational DB here, no Django.

Keys (all under `steering:probe:`):
  due            ZSET  backend id -> next due time (unix s); claimed atomically by CLAIM_SCRIPT
  cfg            HASH  backend id -> ProbeTarget JSON (what and how to check)
  interval       HASH  backend id -> check interval (read by CLAIM_SCRIPT to reschedule)
  pool:{id}      SET   the backend ids of a pool (for the panic count)
  state:{id}     STR   CheckState ("health|ok|fail|last_time|last_due")
  samples:{id}   LIST  the latest SAMPLES results, newest first
  stale_at       ZSET  backend id -> time after which it is stale without a new result
"""

from __future__ import annotations

import math
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from steering.health.state import STALE, CheckState, step
from steering.health.target import ProbeResult, ProbeTarget, decode_sample

P = "steering:probe:"
DUE, CFG, IVL, STALE_AT, SYNCED = P + "due", P + "cfg", P + "interval", P + "stale_at", P + "synced"
M = "steering:metrics:"
M_PROBES, M_LATENCY, M_LAG, M_GAUGES = M + "probes", M + "latency", M + "lag", M + "gauges"
STALE_INTERVALS = 3
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def state_key(backend_id: int) -> str:
    return f"{P}state:{backend_id}"


def samples_key(backend_id: int) -> str:
    return f"{P}samples:{backend_id}"


def pool_key(pool_id: int) -> str:
    return f"{P}pool:{pool_id}"


# Pops what is due by ARGV[1] and moves each to its next slot, in one atomic step: two workers
# running this at once can never both get a backend for the same slot. The next slot keeps the
# backend's phase (due + k*interval), so the spread across the interval survives an outage.
CLAIM_SCRIPT = """
local items = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]))
local now = tonumber(ARGV[2])
local out = {}
for i = 1, #items, 2 do
  local id = items[i]
  local due = tonumber(items[i + 1])
  local iv = tonumber(redis.call('HGET', KEYS[2], id) or '2')
  local nxt = due + iv
  if nxt <= now then nxt = due + iv * (math.floor((now - due) / iv) + 1) end
  redis.call('ZADD', KEYS[1], nxt, id)
  out[#out + 1] = id
  out[#out + 1] = items[i + 1]
end
return out
"""

# LPUSH + LTRIM for many lists in one round trip: KEYS are the lists, ARGV[1] the length kept.
PUSH_SAMPLES_SCRIPT = """
local keep = tonumber(ARGV[1]) - 1
for i, key in ipairs(KEYS) do
  redis.call('LPUSH', key, ARGV[i + 1])
  redis.call('LTRIM', key, 0, keep)
end
return #KEYS
"""

# Replace only the health field of a state string, leaving the counters a result just wrote.
SET_HEALTH_SCRIPT = """
local s = redis.call('GET', KEYS[1])
if not s then return 0 end
local rest = string.match(s, '^[^|]*(|.*)$')
if not rest then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. rest)
return 1
"""


def phase(backend_id: int, interval: float) -> float:
    """A stable offset inside the interval: spreads first probes so there is no herd at :00."""
    return (zlib.crc32(str(backend_id).encode()) / 2**32) * interval


def next_slot(now: float, backend_id: int, interval: float) -> float:
    ph = phase(backend_id, interval)
    return ph + interval * math.ceil((now - ph) / interval)


def sync_schedule(r: Any, targets: Iterable[ProbeTarget], *, now: float | None = None,
                  health: dict[int, str] | None = None) -> dict[str, int]:
    """Make the schedule match `targets` (what the DB says should be probed).

    New backends are slotted at their phase; removed ones lose schedule, config, counters and
    samples; a changed check is re-slotted when its interval changed. `health` (the DB's) seeds
    a new entry's state so a backend already up or down can still turn stale.
    """
    now = time.time() if now is None else now
    wanted = {t.backend_id: t for t in targets}
    current = {int(k): v.decode() if isinstance(v, bytes) else v for k, v in r.hgetall(CFG).items()}
    pipe = r.pipeline(transaction=False)
    added = changed = removed = 0
    for bid in set(current) - set(wanted):
        gone = ProbeTarget.decode(current[bid])
        pipe.zrem(DUE, bid).hdel(CFG, bid).hdel(IVL, bid).srem(pool_key(gone.pool_id), bid)
        pipe.zrem(STALE_AT, bid).delete(state_key(bid), samples_key(bid))
        removed += 1
    for bid, target in wanted.items():
        encoded = target.encode()
        old_raw = current.get(bid)
        if old_raw == encoded:
            continue
        old = ProbeTarget.decode(old_raw) if old_raw else None
        pipe.hset(CFG, bid, encoded).hset(IVL, bid, target.interval).sadd(pool_key(target.pool_id), bid)
        if old is None:
            added += 1
            pipe.zadd(DUE, {bid: next_slot(now, bid, target.interval)})
            known = (health or {}).get(bid, "unknown")
            if known not in ("unknown", STALE):
                pipe.set(state_key(bid), CheckState(health=known, last_time=now).encode(), nx=True)
                pipe.zadd(STALE_AT, {bid: now + STALE_INTERVALS * target.interval})
        else:
            changed += 1
            if old.pool_id != target.pool_id:
                pipe.srem(pool_key(old.pool_id), bid)
            if old.interval != target.interval:
                pipe.zadd(DUE, {bid: next_slot(now, bid, target.interval)})
    pipe.execute()
    return {"added": added, "changed": changed, "removed": removed, "total": len(wanted)}


def claim(r: Any, *, horizon: float, now: float | None = None, limit: int = 20000) -> list[tuple[int, float]]:
    """Backends due by `horizon`, each exactly once across all callers, with their due times."""
    now = time.time() if now is None else now
    flat = r.eval(CLAIM_SCRIPT, 2, DUE, IVL, repr(horizon), repr(now), limit)
    return [(int(flat[i]), float(flat[i + 1])) for i in range(0, len(flat), 2)]


def load_targets(r: Any, ids: Sequence[int]) -> dict[int, ProbeTarget]:
    if not ids:
        return {}
    raws = r.hmget(CFG, list(ids))
    return {bid: ProbeTarget.decode(raw) for bid, raw in zip(ids, raws, strict=True) if raw}


@dataclass(frozen=True)
class Transition:
    backend_id: int
    pool_id: int
    from_health: str
    to_health: str
    evidence: dict[str, object]


def _bucket(value: float, buckets: Sequence[float]) -> str:
    for b in buckets:
        if value <= b:
            return repr(b)
    return "+Inf"


def apply_results(r: Any, results: Sequence[ProbeResult], targets: dict[int, ProbeTarget], *,
                  keep_samples: int = 60) -> list[Transition]:
    """Feed results to the state machine with Redis as memory; return the transitions.

    One probe per backend is in flight at a time (the claim guarantees it and the timeout is
    within the interval), so this read-modify-write has a single writer per backend; the
    `last_due` check in `step` drops a result that arrives out of order anyway.
    """
    results = [res for res in results if res.backend_id in targets]
    if not results:
        return []
    keys = [state_key(res.backend_id) for res in results]
    states = [CheckState.decode(raw) for raw in r.mget(keys)]
    new_states: dict[str, str] = {}
    stale_at: dict[int, float] = {}
    transitions: list[Transition] = []
    by_result: Counter[str] = Counter()
    latency: Counter[str] = Counter()
    lag: Counter[str] = Counter()
    lat_sum = lag_sum = lag_max = 0.0
    for res, key, st in zip(results, keys, states, strict=True):
        t = targets[res.backend_id]
        stepped = step(st, ok=res.ok, rise=t.rise, fall=t.fall, now=res.finished, due=res.due)
        by_result[res.result] += 1
        latency[_bucket(res.latency_ms / 1000.0, LATENCY_BUCKETS)] += 1
        lag[_bucket(res.lag, LAG_BUCKETS)] += 1
        lat_sum += res.latency_ms / 1000.0
        lag_sum += res.lag
        lag_max = max(lag_max, res.lag)
        if not stepped.accepted:
            continue
        new_states[key] = stepped.state.encode()
        stale_at[res.backend_id] = res.finished + STALE_INTERVALS * t.interval
        if stepped.transition:
            ev = {**res.evidence(), "ok_streak": stepped.state.ok_streak, "fail_streak": stepped.state.fail_streak,
                  "rise": t.rise, "fall": t.fall}
            transitions.append(Transition(res.backend_id, t.pool_id, *stepped.transition, ev))
    pipe = r.pipeline(transaction=False)
    if new_states:
        pipe.mset(new_states)
        pipe.zadd(STALE_AT, stale_at)
    sample_keys = [samples_key(res.backend_id) for res in results]
    pipe.eval(PUSH_SAMPLES_SCRIPT, len(sample_keys), *sample_keys, keep_samples, *[res.sample() for res in results])
    for name, n in by_result.items():
        pipe.hincrby(M_PROBES, name, n)
    for name, n in latency.items():
        pipe.hincrby(M_LATENCY, name, n)
    for name, n in lag.items():
        pipe.hincrby(M_LAG, name, n)
    pipe.hincrbyfloat(M_LATENCY, "sum", lat_sum).hincrby(M_LATENCY, "count", len(results))
    pipe.hincrbyfloat(M_LAG, "sum", lag_sum).hincrby(M_LAG, "count", len(results))
    pipe.hset(M_GAUGES, mapping={"lag_last_batch_max": lag_max, "last_result_time": time.time()})
    pipe.execute()
    return transitions


def set_health(r: Any, backend_id: int, health: str) -> None:
    """Tell the engine what the DB now says (after a stale mark), so the next result compares
    against it and a return to up or down is a transition again."""
    r.eval(SET_HEALTH_SCRIPT, 1, state_key(backend_id), health)


def failing_in_pools(r: Any, pool_ids: Sequence[int]) -> dict[int, set[int]]:
    """Per pool, the backends whose latest check failed or that are down (two round trips)."""
    if not pool_ids:
        return {}
    pipe = r.pipeline(transaction=False)
    for pid in pool_ids:
        pipe.smembers(pool_key(pid))
    members = [sorted(int(x) for x in m) for m in pipe.execute()]
    flat = [i for ids in members for i in ids]
    states = dict(zip(flat, (CheckState.decode(raw) for raw in r.mget([state_key(i) for i in flat])), strict=True)) \
        if flat else {}
    return {pid: {i for i in ids if states[i].fail_streak > 0 or states[i].health == "down"}
            for pid, ids in zip(pool_ids, members, strict=True)}


def failing_in_pool(r: Any, pool_id: int) -> set[int]:
    return failing_in_pools(r, [pool_id])[pool_id]


def due_stale(r: Any, *, now: float | None = None, limit: int = 5000) -> list[int]:
    now = time.time() if now is None else now
    return [int(x) for x in r.zrangebyscore(STALE_AT, "-inf", now, start=0, num=limit)]


def forget_stale(r: Any, backend_ids: Iterable[int]) -> None:
    ids = list(backend_ids)
    if ids:
        r.zrem(STALE_AT, *ids)


def read_state(r: Any, backend_id: int) -> tuple[CheckState, list[dict[str, object]]]:
    pipe = r.pipeline(transaction=False)
    pipe.get(state_key(backend_id)).lrange(samples_key(backend_id), 0, -1)
    raw_state, raw_samples = pipe.execute()
    return CheckState.decode(raw_state), [decode_sample(s) for s in raw_samples]
