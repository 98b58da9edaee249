"""Probe scheduling (DESIGN §4.2): a 1 s beat tick claims due backends from Redis and hands
them to shard tasks; each shard probes its backends concurrently (asyncio) and feeds results
to the state machine; transitions go to the DB through steering.services.health.

No task per probe, no DB row per probe. A shard writes nothing to the DB itself: transitions go
through a Redis stream to the recorder task (another process), so a wave of them never holds
the GIL the shard's event loop needs (health/outbox.py: recorded at least once, applied once).
The schedule follows the DB: the tick rebuilds it when the state version in Redis moved (any
audited change, including monitor and backend edits) and at least every
STEERING_PROBE_RESYNC_SECONDS. Every STEERING_HEALTH_RECONCILE_SECONDS the reconcile compares
DB health with the probe state and repairs what never arrived (`reconcile`).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db import connection, transaction
from redis.exceptions import LockError, RedisError

from steering.health import engine, outbox, store
from steering.health.checks import Network
from steering.health.target import ProbeResult, ProbeTarget
from steering.redis_keys import PROBE_SYNC_LOCK, STATE_VERSION
from steering.redisconn import sync_client
from steering.services import health as health_service

logger = logging.getLogger(__name__)

TICK_SECONDS = 1.0
# A tick claims what falls due before the next tick (+ margin); the shard sleeps until each
# backend's own due time, so probes run on schedule instead of up to a tick late.
LOOKAHEAD = TICK_SECONDS + 0.25
SHARD_EXPIRES = LOOKAHEAD + 2.0   # a shard not started by then is dropped: its backends come round next slot
# Every audited change moves the state version, health transitions included: during a wave of
# transitions the schedule is rebuilt at most this often (an edit reaches the prober within it).
MIN_RESYNC_SECONDS = 2.0

# Deletes a stale-due entry only if no fresh result moved it meanwhile.
_FORGET_IF_DUE = """
local n = 0
for i = 2, #ARGV do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if s and tonumber(s) <= tonumber(ARGV[1]) then redis.call('ZREM', KEYS[1], ARGV[i]) n = n + 1 end
end
return n
"""


def networks() -> list[Network]:
    return [ipaddress.ip_network(n, strict=False) for n in settings.STEERING_PROBE_ALLOWLIST]


def sync(r: Any, *, force: bool = False) -> dict[str, int] | None:
    """Rebuild the schedule from the DB when it may have changed; None when it was current."""
    version = (r.get(STATE_VERSION) or b"0").decode()
    synced = (r.get(store.SYNCED) or b"|0").decode().split("|")
    age = time.time() - float(synced[1] or 0)
    if not force and age < settings.STEERING_PROBE_RESYNC_SECONDS and (synced[0] == version or age < MIN_RESYNC_SECONDS):
        return None
    # One rebuild at a time across workers; a loser simply probes with the current schedule.
    if not r.set(PROBE_SYNC_LOCK, "1", nx=True, px=10_000):
        return None
    try:
        targets, health = health_service.probe_targets()
        result = store.sync_schedule(r, targets, health=health)
        r.set(store.SYNCED, f"{version}|{time.time()}")
        return result
    finally:
        r.delete(PROBE_SYNC_LOCK)


def tick(*, now: float | None = None, dispatch: Callable[[list[list[float]]], Any] | None = None) -> int:
    """Claim what is due before the next tick and dispatch it in shards; returns backends claimed."""
    r = sync_client()
    try:
        sync(r)
    except Exception as exc:  # the database away: probe on the schedule Redis has (ARCHITECTURE.md §4)
        logger.warning("probe tick: schedule not rebuilt (%s); probing on the current one", exc)
    now = time.time() if now is None else now
    claimed = store.claim(r, horizon=now + LOOKAHEAD, now=now)
    claimed.sort(key=lambda item: item[1])  # each shard covers a short stretch of the window
    size = settings.STEERING_PROBE_SHARD_SIZE
    send = dispatch or (lambda chunk: probe_shard.apply_async(args=[chunk], expires=SHARD_EXPIRES))
    for i in range(0, len(claimed), size):
        send([[bid, due] for bid, due in claimed[i:i + size]])
    return len(claimed)


def ingest(r: Any, results: list[ProbeResult], targets: dict[int, ProbeTarget]) -> int:
    """Results -> Redis counters and samples -> (on a transition) the DB, per pool, on this thread
    (no outbox entry: recorded here; one lost by a failure here is healed by the reconcile)."""
    transitions = store.apply_results(r, results, targets, keep_samples=settings.STEERING_PROBE_SAMPLES,
                                      outbox=False)
    return record(r, transitions)


def record(r: Any, transitions: Sequence[store.Transition]) -> int:
    """Transitions -> the DB through the service layer (Change + HealthEvent, panic re-decided).
    Each carries its `from` and seq, so recording one again changes nothing."""
    by_pool: dict[int, list[health_service.HealthUpdate]] = defaultdict(list)
    for t in transitions:
        by_pool[t.pool_id].append(health_service.HealthUpdate(t.backend_id, t.to_health, t.evidence,
                                                              from_health=t.from_health, seq=t.seq))
    if not by_pool:
        return 0
    failing = store.failing_in_pools(r, sorted(by_pool))
    return health_service.record_transitions_many(by_pool, failing=failing)


def schedule_recorder() -> None:
    record_probe_transitions.apply_async()


def ingest_deferred(r: Any, results: list[ProbeResult], targets: dict[int, ProbeTarget]) -> int:
    """Results -> Redis, and in the same atomic step the transitions -> the outbox stream, recorded
    by another process (see outbox.py)."""
    transitions = store.apply_results(r, results, targets, keep_samples=settings.STEERING_PROBE_SAMPLES)
    # One recorder task queued at a time; a recorder clears the flag before it drains. Should the
    # task never run, the stale sweep's safety net records the entries (sweep_stale).
    if transitions and r.set(outbox.SCHEDULED, "1", nx=True, px=5000):
        schedule_recorder()
    return len(transitions)


def rounds(transitions: Sequence[store.Transition]) -> list[list[store.Transition]]:
    """Split into consecutive batches holding each backend at most once: a batch is recorded as
    one set per backend, and up-then-down in one batch must still be two audited transitions."""
    out: list[list[store.Transition]] = []
    seen: set[int] = set()
    for t in transitions:
        if not out or t.backend_id in seen:
            out.append([])
            seen = set()
        out[-1].append(t)
        seen.add(t.backend_id)
    return out


def record_queued(r: Any, *, limit: int = 1000, lock_ms: int = outbox.LOCK_MS,
                  claim_idle_ms: int | None = None) -> int:
    """Drain the outbox into the DB; returns the transitions applied. One drainer at a time (the
    lock), so a backend's transitions commit in the order they happened. Entries are acknowledged
    only once their transaction committed; a batch that fails stays pending and goes first next
    time. Entries a dead drainer left pending are claimed once idle `claim_idle_ms` (default: the
    lock's lifetime, by when its lock has expired too); until then nothing newer is recorded."""
    idle_ms = lock_ms if claim_idle_ms is None else claim_idle_ms
    total = 0
    while True:
        lock = r.lock(outbox.LOCK, timeout=lock_ms / 1000, blocking=False)
        if not lock.acquire():
            return total  # another drainer is at it and looks again before it lets go
        try:
            r.delete(outbox.SCHEDULED)
            applied, complete = _drain(r, lock, limit=limit, claim_idle_ms=idle_ms)
            total += applied
        except Exception:
            _let_go(r, idle_ms)
            raise
        finally:
            _release(lock)
        if not complete or not outbox.undelivered(r):  # anything appended while we let go is ours to take
            return total


def _let_go(r: Any, idle_ms: int) -> None:
    try:
        outbox.let_go(r, outbox.consumer_name(), idle_ms=idle_ms)
    except RedisError:  # then they are claimable once idle; the original error is the one to raise
        logger.warning("could not hand back the outbox entries of a failed batch", exc_info=True)


def _release(lock: Any) -> None:
    try:
        lock.release()
    except LockError:
        pass  # it expired (a long batch) and may be another drainer's now: theirs to release


def _still_ours(lock: Any) -> bool:
    """Renew the lock after a read, so it outlives the entries just handed to us (a dead drainer's
    entries are claimable once idle a lock's lifetime). False: we lost it, stop after this batch."""
    try:
        lock.reacquire()
        return True
    except LockError:
        return False
    except RedisError:
        logger.warning("the recorder's lock could not be renewed; finishing this batch only", exc_info=True)
        return False


def _drain(r: Any, lock: Any, *, limit: int, claim_idle_ms: int) -> tuple[int, bool]:
    """Record the outbox, holding `lock`: abandoned entries first, then ours, then new ones.
    Returns (transitions applied, whether the outbox was drained)."""
    consumer = outbox.consumer_name()
    outbox.ensure_group(r)
    outbox.claim_abandoned(r, consumer, idle_ms=claim_idle_ms)
    if held := outbox.held_by_others(r, consumer):
        logger.info("%d outbox entries are held by a recorder that stopped; recording resumes when they "
                    "can be claimed (idle %d ms)", held, claim_idle_ms)
        return 0, False
    total = 0
    for entries in outbox.read(r, consumer, limit=limit):
        keep = _still_ours(lock)
        for batch in rounds([t for _, t in entries if t is not None]):
            total += record(r, batch)
        # record() commits each round itself (the recorder runs in autocommit); inside a caller's
        # transaction the acknowledgement waits for that transaction's commit.
        transaction.on_commit(functools.partial(outbox.ack, r, [entry_id for entry_id, _ in entries]))
        if not keep:
            return total, False
    outbox.tidy(r, consumer)
    return total, True


def prepare(r: Any, items: Sequence[Sequence[float]], *, deferred: bool = True
            ) -> tuple[list[tuple[ProbeTarget, float]], engine.Sink, dict[int, ProbeTarget]]:
    """(target, due) pairs for a shard's [backend id, due] items, and the sink its results go to
    (`deferred`: transitions via the outbox to the recorder task; else to the DB on the sink thread)."""
    ids = [int(bid) for bid, _ in items]
    targets = store.load_targets(r, ids)
    pairs = [(targets[int(bid)], float(due)) for bid, due in items if int(bid) in targets]
    apply = ingest_deferred if deferred else ingest

    def sink(batch: list[ProbeResult]) -> None:
        try:
            apply(r, batch, targets)
        except Exception:
            # One bad batch must not stop the shard. Nothing half-done is left behind: a batch's
            # state changes and outbox entries are one atomic script, and the reconcile repairs
            # a transition that the DB missed anyway.
            logger.exception("probe results could not be recorded (%d results)", len(batch))

    return pairs, sink, targets


def run_shard(items: Sequence[Sequence[float]], *, inline: bool = False) -> int:
    """Probe the given [backend id, due] pairs; `inline` records results on this thread after the
    probes (tests drive the engine this way inside their own transaction)."""
    r = sync_client()
    pairs, sink, targets = prepare(r, items, deferred=not inline)
    if inline:
        # Probe concurrently, then record on this thread (the caller's DB connection and transaction).
        import asyncio

        results: list[ProbeResult] = []
        with asyncio.Runner(loop_factory=engine.new_loop) as runner:
            count = runner.run(engine.run_shard(pairs, networks(), results.extend))
        ingest(r, sorted(results, key=lambda res: res.finished), targets)
        return count
    # The sink thread's own DB connection (schedule reads) is closed on that thread when the shard ends.
    return engine.run_shard_blocking(pairs, networks(), sink, on_thread_exit=lambda: connection.close())


def sweep_stale(*, now: float | None = None) -> list[int]:
    """Mark stale what has had no result for 3 intervals; re-decide pools in panic."""
    from steering.models import Pool

    r = sync_client()
    if outbox.backlog(r):  # a safety net: transitions whose recorder task was lost (a killed worker)
        record_queued(r)
    now = time.time() if now is None else now
    due = store.due_stale(r, now=now)

    def still_stale(bid: int) -> bool:
        score = r.zscore(store.STALE_AT, bid)
        return score is not None and float(score) <= now

    marked = health_service.do_mark_stale(due, still_stale=still_stale)
    for bid in marked:
        store.set_health(r, bid, "stale")
    if due:
        r.eval(_FORGET_IF_DUE, 1, store.STALE_AT, repr(now), *due)
    # Panic ends on recovery even when the recovery made no transition (failing, then passing).
    in_panic = list(Pool.objects.filter(in_panic=True).values_list("pk", flat=True))
    if in_panic:
        health_service.record_transitions_many({pk: [] for pk in in_panic}, failing=store.failing_in_pools(r, in_panic))
    return marked


def reconcile(*, now: float | None = None, lock_wait: float = 5.0) -> int | None:
    """Repair DB health from the probe state in Redis: a transition that never reached the DB
    (trimmed from the outbox unrecorded, lost with an older Redis, ...) heals here. Returns the
    backends repaired, None when the recorder's lock stayed busy (the next round tries again).

    Holding the recorder's lock: read the probe state, record everything the outbox holds, then
    compare. Whatever the state showed was appended to the outbox in the same atomic step, so a
    difference left after that drain is a real loss; a transition newer than the read wins (seq).
    Only fresh states are trusted (a result within the stale window): an old one is the stale
    sweep's business, and `unknown` says nothing.
    """
    r = sync_client()
    lock = r.lock(outbox.LOCK, timeout=outbox.LOCK_MS / 1000, blocking_timeout=lock_wait)
    if not lock.acquire():
        return None
    try:
        observed = store.snapshot(r)
        _, drained = _drain(r, lock, limit=1000, claim_idle_ms=outbox.LOCK_MS)
    finally:
        _release(lock)
    if not drained:
        return None  # a stopped recorder's entries wait to be claimed: compare once they are in
    now = time.time() if now is None else now
    trusted = {
        bid: health_service.ObservedHealth(o.state.health, o.seq, {
            "check": "reconcile", "result": o.state.health, "seq": o.seq, "ok_streak": o.state.ok_streak,
            "fail_streak": o.state.fail_streak, "last_result_age_s": round(max(0.0, now - o.state.last_time), 1)})
        # seq 0: no transition since the state was seeded from the database (a Redis that came back
        # empty): nothing a probe concluded, so nothing to repair the database with.
        for bid, o in observed.items() if o.state.health in ("up", "down", "stale") and o.fresh(now) and o.seq
    }
    return health_service.reconcile_health(trusted, failing=lambda pools: store.failing_in_pools(r, pools))


@shared_task(name="steering.probe_tick", ignore_result=True, time_limit=20, soft_time_limit=15)
def probe_tick() -> int:
    return tick()


@shared_task(name="steering.probe_shard", ignore_result=True, time_limit=90, soft_time_limit=80)
def probe_shard(items: list[list[float]]) -> int:
    return run_shard(items)


@shared_task(name="steering.record_probe_transitions", ignore_result=True, time_limit=60, soft_time_limit=50)
def record_probe_transitions() -> int:
    return record_queued(sync_client())


@shared_task(name="steering.probe_sweep_stale", ignore_result=True, time_limit=30, soft_time_limit=25)
def probe_sweep_stale() -> int:
    return len(sweep_stale())


@shared_task(name="steering.probe_reconcile", ignore_result=True, time_limit=60, soft_time_limit=50)
def probe_reconcile() -> int:
    return reconcile() or 0
