"""The prober's hot state in Redis: the schedule, each backend's counters and recent samples,
and the metric counters every worker adds to. No relational DB here, no Django.

Keys (all under `steering:probe:`; their names are steering.redis_keys.PROBE_*):
  due            ZSET  backend id -> next due time (unix s); claimed atomically by CLAIM_SCRIPT
  cfg            HASH  backend id -> ProbeTarget JSON (what and how to check)
  interval       HASH  backend id -> check interval (read by CLAIM_SCRIPT to reschedule)
  pool:{id}      SET   the backend ids of a pool (for the panic count)
  state:{id}     STR   CheckState ("health|ok|fail|last_time|last_due")
  samples:{id}   LIST  the latest SAMPLES results, newest first
  stale_at       ZSET  backend id -> time after which it is stale without a new result
  seq            HASH  backend id -> sequence number of its latest transition (see APPLY_SCRIPT)
  transitions:stream  STREAM  the transitions on their way to the DB (steering.health.outbox)
"""

from __future__ import annotations

import hashlib
import math
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
from redis.exceptions import NoScriptError

from steering import redis_keys as keys
from steering.health.state import STALE, CheckState
from steering.health.target import ProbeResult, ProbeTarget, decode_sample

P = keys.PROBE_PREFIX
DUE, CFG, IVL = keys.PROBE_DUE, keys.PROBE_CFG, keys.PROBE_INTERVAL
STALE_AT, SYNCED = keys.PROBE_STALE_AT, keys.PROBE_SYNCED
SEQ, TRANSITIONS = keys.PROBE_SEQ, keys.PROBE_TRANSITIONS
# A cap on the stream in case no recorder runs for a long while (the recorder trims what it
# acknowledged); a transition trimmed unrecorded is healed by the reconcile (tasks.probes.reconcile).
TRANSITIONS_MAXLEN = 100_000
M_PROBES, M_LATENCY, M_LAG, M_GAUGES = (keys.METRICS_PROBES, keys.METRICS_PROBE_LATENCY, keys.METRICS_PROBE_LAG,
                                        keys.METRICS_PROBE_GAUGES)
STALE_INTERVALS = 3
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


# msgpack, not JSON, for the batch: floats travel as exact doubles, and packing is ~10x cheaper
# than JSON's float repr (msgpack ships with channels-redis). packb: no Packer shared by threads.
def _pack(rows: list[tuple[Any, ...]]) -> bytes:
    return msgpack.packb(rows, use_bin_type=True)


def state_key(backend_id: int) -> str:
    return keys.PROBE_STATE.format(id=backend_id)


def samples_key(backend_id: int) -> str:
    return keys.PROBE_SAMPLES.format(id=backend_id)


def pool_key(pool_id: int) -> str:
    return keys.PROBE_POOL.format(id=pool_id)


# Pops what is due by ARGV[1] and moves each to its next slot, in one atomic step: two workers
# running this at once can never both get a backend for the same slot. The next slot keeps the
# backend's phase (due + k*interval), so the spread across the interval survives an outage.
# The answer is ONE string ("id due,id due,..."): a reply of thousands of elements costs the
# client far more to parse than one bulk string.
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
  out[#out + 1] = id .. ' ' .. items[i + 1]
end
return table.concat(out, ',')
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
    packed = run_script(r, CLAIM_SCRIPT, CLAIM_SHA, (DUE, IVL), (repr(horizon), repr(now), limit))
    text = packed.decode() if isinstance(packed, bytes) else packed
    if not text:
        return []
    return [(int(bid), float(due)) for bid, due in (item.split(" ") for item in text.split(","))]


# HMGET answered as one string, one config per line ("" where a backend has none); JSON has no
# raw newline. ARGV[1] the ids, comma-separated.
LOAD_TARGETS_SCRIPT = """
local ids = {}
for id in string.gmatch(ARGV[1], '[^,]+') do ids[#ids + 1] = id end
local out = {}
for i = 1, #ids, 1000 do
  local vals = redis.call('HMGET', KEYS[1], unpack(ids, i, math.min(i + 999, #ids)))
  for j = 1, #vals do out[#out + 1] = vals[j] or '' end
end
return table.concat(out, '\\n')
"""
_decoded: dict[str, ProbeTarget] = {}


def _target(raw: str) -> ProbeTarget:
    """ProbeTarget.decode, memoised: the same configs come back every interval."""
    target = _decoded.get(raw)
    if target is None:
        if len(_decoded) >= 200_000:
            _decoded.clear()
        target = _decoded[raw] = ProbeTarget.decode(raw)
    return target


def load_targets(r: Any, ids: Sequence[int]) -> dict[int, ProbeTarget]:
    if not ids:
        return {}
    packed = run_script(r, LOAD_TARGETS_SCRIPT, LOAD_TARGETS_SHA, (CFG,), (",".join(str(i) for i in ids),))
    raws = (packed.decode() if isinstance(packed, bytes) else packed).split("\n")
    return {bid: _target(raw) for bid, raw in zip(ids, raws, strict=True) if raw}


@dataclass(frozen=True)
class Transition:
    backend_id: int
    pool_id: int
    from_health: str
    to_health: str
    evidence: dict[str, object]
    seq: int = 0   # increases with each transition of this backend (0: not from the engine)

    def pack(self) -> bytes:
        """The stream entry (the same msgpack array APPLY_SCRIPT writes)."""
        return bytes(msgpack.packb([self.backend_id, self.pool_id, self.from_health, self.to_health, self.evidence,
                                    self.seq], use_bin_type=True))

    @classmethod
    def unpack(cls, raw: bytes) -> Transition:
        backend_id, pool_id, from_health, to_health, evidence, *seq = msgpack.unpackb(raw, raw=False)
        return cls(int(backend_id), int(pool_id), str(from_health), str(to_health), dict(evidence),
                   int(seq[0]) if seq else 0)


def _lua_list(values: Sequence[float]) -> str:
    return "{" + ", ".join(repr(v) for v in values) + "}"


def _lua_names(values: Sequence[float]) -> str:
    return "{" + ", ".join(f"'{v!r}'" for v in values) + "}"


# The whole of apply_results in one round trip. ARGV[1] the key prefix, ARGV[2] samples kept,
# ARGV[3] stale intervals, ARGV[4] the wall clock for the last_result_time gauge, ARGV[5] the
# batch as ONE msgpack array of [backend id, ok 0|1, latency ms, result, due, started, finished,
# rise, fall, interval, sample detail, pool id, check kind, HTTP status or -1, error], ARGV[6]
# '1' to append transitions to the outbox stream, ARGV[7] the stream's cap. KEYS: stale_at, the
# probes/latency/lag/gauges hashes, the transitions stream, the seq hash.
# Server side, per result: the rise/fall step (the same semantics as steering.health.state.step,
# checked against it by tests/unit/test_health_state.py), its state string and stale deadline, the
# sample (LPUSH + LTRIM); per transition: its sequence number and, in the same atomic call as the
# state change, its stream entry (so no transition is ever in Redis without its outbox entry);
# per batch: the metric counters and histogram buckets. Returns only the transitions, flat:
# index into the batch, the entry (a msgpack array, Transition.unpack).
# seq = max(previous + 1, Redis TIME in microseconds): increasing per backend, and still above
# every earlier one if Redis lost the hash (the DB keeps the last applied seq: services.health).
# The state and samples keys are built here from the prefix (fine on one Redis server; on Redis
# Cluster they would have to be passed in KEYS).
APPLY_SCRIPT = """
local P = ARGV[1]
local keep = tonumber(ARGV[2]) - 1
local stale_n = tonumber(ARGV[3])
local batch = cmsgpack.unpack(ARGV[5])
local LAT_B, LAT_N = __LAT_B__, __LAT_N__
local LAG_B, LAG_N = __LAG_B__, __LAG_N__
local function bucket(v, bounds, names)
  for i = 1, #bounds do if v <= bounds[i] then return names[i] end end
  return '+Inf'
end
local function decode(s)
  if not s then return 'unknown', 0, 0, 0, 0 end
  local h, o, f, lt, ld = string.match(s, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
  o, f, lt, ld = tonumber(o), tonumber(f), tonumber(lt), tonumber(ld)
  if not (h and o and f and lt and ld) or o ~= math.floor(o) or f ~= math.floor(f) then
    return 'unknown', 0, 0, 0, 0
  end
  return h, o, f, lt, ld
end
local to_outbox, maxlen = ARGV[6] == '1', ARGV[7]
local now_us = nil
local by_result, lat_c, lag_c = {}, {}, {}
local lat_sum, lag_sum, lag_max = 0.0, 0.0, 0.0
local out = {}
for i, r in ipairs(batch) do
  local bid, ok, latency_ms, result, due, started, finished = r[1], r[2], r[3], r[4], r[5], r[6], r[7]
  local rise, fall, interval, detail = r[8], r[9], r[10], r[11]
  local id = string.format('%d', bid)
  by_result[result] = (by_result[result] or 0) + 1
  local lat = latency_ms / 1000.0
  local lag = started - due
  if lag < 0 then lag = 0.0 end
  local lb, gb = bucket(lat, LAT_B, LAT_N), bucket(lag, LAG_B, LAG_N)
  lat_c[lb] = (lat_c[lb] or 0) + 1
  lag_c[gb] = (lag_c[gb] or 0) + 1
  lat_sum = lat_sum + lat
  lag_sum = lag_sum + lag
  if lag > lag_max then lag_max = lag end
  local key = P .. 'state:' .. id
  local h, o, f, lt, ld = decode(redis.call('GET', key))
  if not (due < ld) then
    local nh = h
    if ok == 1 then
      o = math.min(o + 1, 1000000); f = 0
      if o >= rise then nh = 'up' end
    else
      f = math.min(f + 1, 1000000); o = 0
      if f >= fall then nh = 'down' end
    end
    redis.call('SET', key, string.format('%s|%d|%d|%.3f|%.3f', nh, o, f, finished, due))
    redis.call('ZADD', KEYS[1], string.format('%.17g', finished + stale_n * interval), id)
    if nh ~= h then
      if not now_us then
        local t = redis.call('TIME')
        now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
      end
      local seq = math.max((tonumber(redis.call('HGET', KEYS[7], id)) or 0) + 1, now_us)
      redis.call('HSET', KEYS[7], id, string.format('%.0f', seq))
      local ev = {check = r[13], result = result, latency_ms = math.floor(latency_ms * 100 + 0.5) / 100,
                  ok_streak = o, fail_streak = f, rise = rise, fall = fall}
      if r[14] >= 0 then ev.status = r[14] end
      if r[15] ~= '' then ev.error = r[15] end
      local entry = cmsgpack.pack({bid, r[12], h, nh, ev, seq})
      if to_outbox then redis.call('XADD', KEYS[6], 'MAXLEN', '~', maxlen, '*', 't', entry) end
      out[#out + 1] = i - 1; out[#out + 1] = entry
    end
  end
  local skey = P .. 'samples:' .. id
  redis.call('LPUSH', skey, string.format('%.3f|%d|%.2f|%s|%s', finished, ok, latency_ms, result, detail))
  redis.call('LTRIM', skey, 0, keep)
end
for k, n in pairs(by_result) do redis.call('HINCRBY', KEYS[2], k, n) end
for k, n in pairs(lat_c) do redis.call('HINCRBY', KEYS[3], k, n) end
for k, n in pairs(lag_c) do redis.call('HINCRBY', KEYS[4], k, n) end
redis.call('HINCRBYFLOAT', KEYS[3], 'sum', string.format('%.17g', lat_sum))
redis.call('HINCRBY', KEYS[3], 'count', #batch)
redis.call('HINCRBYFLOAT', KEYS[4], 'sum', string.format('%.17g', lag_sum))
redis.call('HINCRBY', KEYS[4], 'count', #batch)
redis.call('HSET', KEYS[5], 'lag_last_batch_max', string.format('%.17g', lag_max), 'last_result_time', ARGV[4])
return out
"""
for _name, _value in (("__LAT_B__", _lua_list(LATENCY_BUCKETS)), ("__LAT_N__", _lua_names(LATENCY_BUCKETS)),
                      ("__LAG_B__", _lua_list(LAG_BUCKETS)), ("__LAG_N__", _lua_names(LAG_BUCKETS))):
    APPLY_SCRIPT = APPLY_SCRIPT.replace(_name, _value)
APPLY_SHA = hashlib.sha1(APPLY_SCRIPT.encode()).hexdigest()
CLAIM_SHA = hashlib.sha1(CLAIM_SCRIPT.encode()).hexdigest()
LOAD_TARGETS_SHA = hashlib.sha1(LOAD_TARGETS_SCRIPT.encode()).hexdigest()


def run_script(r: Any, script: str, sha: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """EVALSHA (the script body is sent once per Redis server), EVAL when the server lacks it."""
    try:
        return r.evalsha(sha, len(keys), *keys, *args)
    except NoScriptError:
        return r.eval(script, len(keys), *keys, *args)


def pack_results(results: Sequence[ProbeResult], targets: dict[int, ProbeTarget]) -> bytes:
    """The batch as the one packed argument of APPLY_SCRIPT."""
    rows = []
    for res in results:
        t = targets[res.backend_id]
        detail = str(res.status) if res.status is not None else res.error[:120].replace("|", "/")
        rows.append((res.backend_id, 1 if res.ok else 0, res.latency_ms, res.result, res.due, res.started,
                     res.finished, t.rise, t.fall, t.interval, detail, t.pool_id, res.check,
                     -1 if res.status is None else res.status, res.error[:300]))
    return _pack(rows)


def apply_results(r: Any, results: Sequence[ProbeResult], targets: dict[int, ProbeTarget], *,
                  keep_samples: int = 60, outbox: bool = True) -> list[Transition]:
    """Feed results to the state machine with Redis as memory; return the transitions.

    One Redis round trip per batch (APPLY_SCRIPT): the script steps each backend's counters,
    writes its samples and the metric counters, appends each transition to the outbox stream
    (unless `outbox` is False: a caller that records them itself), and answers only with the
    transitions. Results are applied in order, so two results for one backend in a batch step
    one after the other; the `last_due` check drops a result that arrives out of order.
    """
    results = [res for res in results if res.backend_id in targets]
    if not results:
        return []
    flat = run_script(r, APPLY_SCRIPT, APPLY_SHA, (STALE_AT, M_PROBES, M_LATENCY, M_LAG, M_GAUGES, TRANSITIONS, SEQ),
                      (P, keep_samples, STALE_INTERVALS, repr(time.time()), pack_results(results, targets),
                       "1" if outbox else "0", TRANSITIONS_MAXLEN))
    return [Transition.unpack(flat[i + 1]) for i in range(0, len(flat), 2)]


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


# Each backend's state string, seq and interval, read together: a transition is never seen
# half (its new health with the previous seq). ARGV[1] the prefix, ARGV[2] ids comma-separated;
# KEYS: the seq and interval hashes. One line per id: "state;seq;interval".
SNAPSHOT_SCRIPT = """
local out = {}
for id in string.gmatch(ARGV[2], '[^,]+') do
  local s = redis.call('GET', ARGV[1] .. 'state:' .. id) or ''
  out[#out + 1] = s .. ';' .. (redis.call('HGET', KEYS[1], id) or '0') .. ';' .. (redis.call('HGET', KEYS[2], id) or '0')
end
return table.concat(out, '\\n')
"""
SNAPSHOT_SHA = hashlib.sha1(SNAPSHOT_SCRIPT.encode()).hexdigest()


@dataclass(frozen=True)
class Observed:
    """What the prober's Redis says about one backend (for the reconcile)."""

    state: CheckState
    seq: int
    interval: float

    def fresh(self, now: float) -> bool:
        """A result within the stale window: the state still speaks for the backend."""
        return self.state.last_time > 0 and now - self.state.last_time <= STALE_INTERVALS * self.interval


def snapshot(r: Any, *, chunk: int = 1000) -> dict[int, Observed]:
    """Every scheduled backend's probe state, seq and interval (those with a state only)."""
    ids = sorted(int(x) for x in r.hkeys(CFG))
    out: dict[int, Observed] = {}
    for i in range(0, len(ids), chunk):
        part = ids[i:i + chunk]
        packed = run_script(r, SNAPSHOT_SCRIPT, SNAPSHOT_SHA, (SEQ, IVL), (P, ",".join(map(str, part))))
        lines = (packed.decode() if isinstance(packed, bytes) else packed).split("\n")
        for bid, line in zip(part, lines, strict=True):
            state, seq, interval = line.rsplit(";", 2)
            if state:
                out[bid] = Observed(CheckState.decode(state), int(seq), float(interval))
    return out


def read_state(r: Any, backend_id: int) -> tuple[CheckState, list[dict[str, object]]]:
    pipe = r.pipeline(transaction=False)
    pipe.get(state_key(backend_id)).lrange(samples_key(backend_id), 0, -1)
    raw_state, raw_samples = pipe.execute()
    return CheckState.decode(raw_state), [decode_sample(s) for s in raw_samples]
