"""Health transitions, stale marks and pool panic: the only writers of Backend.health and
Pool.in_panic. The prober calls these on a transition only, never per probe.

Panic semantics (DESIGN §6 "suspect the prober"): a backend's health is always recorded as
measured, so operators see every down; while its pool is in panic, `capacity.explain_effective_weight`
keeps down backends at their weight, so nothing is pulled from steering. A pool is in panic
while more than `panic_threshold_percent` of its backends are down or failing their latest
check (see steering.health.state.panic_decision); entering and leaving are audited.

Recording is idempotent, because the recorder delivers at least once (steering.health.outbox): a
transition carries the health it left (`from_health`) and its seq (increasing per backend, kept
on its HealthEvent); it is skipped when the DB no longer says `from_health` or has applied that
seq or a newer one. The reconcile (`reconcile_health`) repairs what never arrived, as
system:reconciler, through the same path.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from steering.choices import Health
from steering.health.state import PanicDecision, panic_decision
from steering.health.target import ProbeTarget
from steering.models import Backend, HealthEvent, Pool
from steering.services.audit import ChangeSet, snapshot
from steering.services.context import Actor
from steering.validators import parse_status_range

PROBER = Actor.system("prober")
RECONCILER = Actor.system("reconciler")
HealthChange = tuple[int, str, dict[str, Any]]  # (backend id, new health, evidence)


class HealthUpdate(NamedTuple):
    """One transition to record; `from_health` and `seq` make recording it twice harmless."""

    backend_id: int
    to_health: str
    evidence: dict[str, Any]
    from_health: str | None = None   # skipped unless the DB still says this (None: from anything)
    seq: int = 0                     # skipped unless newer than the last applied (0: no seq)


class ObservedHealth(NamedTuple):
    """What the prober's own state says of a backend (steering.health.store.snapshot)."""

    health: str
    seq: int
    evidence: dict[str, Any]


def probe_targets() -> tuple[list[ProbeTarget], dict[int, str]]:
    """Every backend whose pool has a monitor, as the prober sees it, and its DB health."""
    rows = Backend.objects.filter(pool__monitor__isnull=False).values_list(
        "pk", "pool_id", "address", "port", "health", "pool__monitor__kind", "pool__monitor__method",
        "pool__monitor__path", "pool__monitor__host_header", "pool__monitor__expected_status",
        "pool__monitor__body_match", "pool__monitor__tls_verify", "pool__monitor__interval_seconds",
        "pool__monitor__timeout_seconds", "pool__monitor__rise", "pool__monitor__fall",
    )
    targets, health = [], {}
    for (pk, pool_id, address, port, h, kind, method, path, host, status, body, verify, interval, timeout,
         rise, fall) in rows.iterator(chunk_size=2000):
        targets.append(ProbeTarget(
            backend_id=pk, pool_id=pool_id, kind=kind, address=address, port=port, method=method, path=path or "/",
            host_header=host, expected_status=tuple(parse_status_range(status)) or ((200, 399),),
            body_match=body, tls_verify=verify, interval=max(1.0, interval), timeout=min(timeout, interval),
            rise=rise, fall=fall,
        ))
        health[pk] = h
    return targets, health


def _reason(new: str, evidence: dict[str, Any]) -> str:
    if "why" in evidence:
        return str(evidence["why"])
    what = evidence.get("error") or (f"status {evidence['status']}" if "status" in evidence else evidence.get("result"))
    check = evidence.get("check", "check")
    if new == Health.UP:
        return f"{evidence.get('ok_streak', '?')} consecutive passing {check} checks (rise {evidence.get('rise', '?')})"
    if new == Health.DOWN:
        return (f"{evidence.get('fail_streak', '?')} consecutive failed {check} checks "
                f"(fall {evidence.get('fall', '?')}): {what}")
    return str(evidence.get("why", f"health {new}"))


def _panic(pool: Pool, failing: set[int], changes: Callable[[], ChangeSet]) -> None:
    rows = list(Backend.objects.filter(pool=pool).values_list("pk", "health"))
    ids = {pk for pk, _ in rows}
    suspect = {pk for pk, h in rows if h == Health.DOWN} | (failing & ids)
    decision = panic_decision(suspect=len(suspect), total=len(ids), threshold_percent=pool.panic_threshold_percent)
    explain = decision.explain
    if pool.monitor_id is None:
        # Panic means "suspect the prober"; with no monitor nothing probes this pool, so a panic
        # entered before its monitor was removed would otherwise never end.
        decision = PanicDecision(False, 0, len(ids), pool.panic_threshold_percent)
        explain = "the pool has no monitor any more, so no checks to suspect"
    if decision.in_panic == pool.in_panic:
        return
    before = snapshot(pool)
    # Compare-and-set under the pool lock: only one caller flips in_panic, and records it once.
    if not Pool.objects.filter(pk=pool.pk, in_panic=pool.in_panic).update(in_panic=decision.in_panic,
                                                                          revision=pool.revision + 1):
        return
    pool.refresh_from_db()
    cs = changes()
    action = "pool.panic" if decision.in_panic else "pool.panic_end"
    why = ("panic: " if decision.in_panic else "panic over: ") + explain + (
        "; down backends keep serving, suspect the prober" if decision.in_panic else "")
    cs.record(action, pool, before=before, after=snapshot(pool), reason=why)
    # Their effective weight changes with the pool's panic flag: the live map must redraw them.
    for backend in Backend.objects.filter(pool=pool, health=Health.DOWN).only("pk"):
        cs.touch(backend)


def _applied_seqs(backend_ids: Sequence[int]) -> dict[int, int]:
    """The newest seq each backend's health was recorded with (HealthEvent.seq)."""
    if not backend_ids:
        return {}
    rows = (HealthEvent.objects.filter(backend_id__in=backend_ids, seq__isnull=False).order_by()
            .values("backend_id").annotate(top=Max("seq")).values_list("backend_id", "top"))
    return {int(pk): int(top) for pk, top in rows}


def _applies(current: str, update: HealthUpdate, applied_seq: int, *, restate_seq: bool) -> bool:
    if current == update.to_health:
        return False  # already there (a retry, or another worker won)
    if update.from_health is not None and current != update.from_health:
        return False  # the DB moved on since this transition happened
    if update.seq and (applied_seq > update.seq or (applied_seq == update.seq and not restate_seq)):
        return False  # this one, or a later one, was applied already (delivered again)
    return True


@transaction.atomic
def record_transitions_many(by_pool: Mapping[int, Sequence[HealthChange | HealthUpdate]], *,
                            failing: dict[int, set[int]] | None = None, actor: Actor = PROBER,
                            restate_seq: bool = False) -> int:
    """Apply the prober's transitions, pool by pool, then re-decide each pool's panic flag.

    One transaction and one state version for the batch (a wave of transitions costs one commit
    and one live delta, not one each); inside it, per changed backend exactly one Change (actor
    system:prober) and one HealthEvent. The delta goes out after commit through the ChangeSet.
    A transition is skipped (compare-and-set) when the backend is already there, no longer at its
    `from_health`, or has a seq at least as new applied; `restate_seq` lets an equal seq through
    (the reconciler restating the state that seq left). Returns the transitions applied.
    """
    opened: list[ChangeSet] = []

    def changes() -> ChangeSet:
        if not opened:  # a ChangeSet bumps the state version: open one only when something changes
            opened.append(ChangeSet(actor, ""))
        return opened[0]

    now = timezone.now()
    applied = 0
    updates = {pk: [HealthUpdate(*item) for item in items] for pk, items in by_pool.items()}
    # Pools locked in id order, then their backends in id order: serialises panic decisions of a
    # pool across shard threads and workers, and a fixed order means no deadlock between them.
    # Every writer of a seq holds its pool's lock, so the seqs read after locking are current.
    pools = list(Pool.objects.select_for_update().filter(pk__in=list(updates)).order_by("pk"))
    applied_seq = _applied_seqs([u.backend_id for items in updates.values() for u in items if u.seq])
    for pool in pools:
        wanted = {u.backend_id: u for u in updates[pool.pk]}
        for backend in Backend.objects.select_for_update().filter(pool=pool, pk__in=wanted).order_by("pk"):
            update = wanted[backend.pk]
            if not _applies(backend.health, update, applied_seq.get(backend.pk, 0), restate_seq=restate_seq):
                continue
            new, evidence = update.to_health, update.evidence
            before = snapshot(backend)
            old = backend.health
            backend.health = new
            backend.health_changed_at = now
            backend.revision += 1
            backend.save(update_fields=["health", "health_changed_at", "revision", "updated_at"])
            change = changes().record("backend.health", backend, before=before, after=snapshot(backend),
                                      related=pool, reason=_reason(new, evidence))
            HealthEvent.objects.create(backend=backend, from_health=old, to_health=new, evidence=evidence,
                                       change_id=change.pk, seq=update.seq or None)
            applied += 1
        _panic(pool, (failing or {}).get(pool.pk, set()), changes)
    return applied


def record_transitions(pool_id: int, items: Sequence[HealthChange], *, failing: Iterable[int] = (),
                       actor: Actor = PROBER) -> int:
    """The transitions of one pool (see record_transitions_many)."""
    return record_transitions_many({pool_id: items}, failing={pool_id: set(failing)}, actor=actor)


def do_record_health(backend_id: int, *, new_health: str, evidence: dict[str, Any],
                     failing: Iterable[int] = (), actor: Actor = PROBER) -> bool:
    """One backend's transition (see record_transitions); False when it was already there."""
    pool_id = Backend.objects.filter(pk=backend_id).values_list("pool_id", flat=True).first()
    if pool_id is None:
        return False
    return record_transitions(pool_id, [(backend_id, new_health, evidence)], failing=failing, actor=actor) == 1


def do_mark_stale(backend_ids: Iterable[int], *, still_stale: Callable[[int], bool] = lambda _bid: True,
                  actor: Actor = PROBER) -> list[int]:
    """Mark backends stale whose results stopped arriving (never down: no evidence is not failure).

    Only up or down backends turn stale (unknown has no last-known state to keep).
    `still_stale` is asked again under the row lock, so a result that arrived meanwhile wins.
    """
    marked: list[int] = []
    by_pool: dict[int, list[int]] = {}
    for pk, pool_id in Backend.objects.filter(pk__in=list(backend_ids)).values_list("pk", "pool_id"):
        by_pool.setdefault(pool_id, []).append(pk)
    for _pool_id, ids in sorted(by_pool.items()):
        with transaction.atomic():
            changes: ChangeSet | None = None
            # Row locks in id order, as everywhere else, so no deadlock with a transition.
            for backend in Backend.objects.select_for_update().filter(pk__in=ids).order_by("pk"):
                if backend.health not in (Health.UP, Health.DOWN) or not still_stale(backend.pk):
                    continue
                before = snapshot(backend)
                old = backend.health
                backend.health = Health.STALE
                backend.health_changed_at = timezone.now()
                backend.revision += 1
                backend.save(update_fields=["health", "health_changed_at", "revision", "updated_at"])
                changes = changes or ChangeSet(actor, "")
                evidence = {"check": "none", "result": "stale",
                            "why": "no check results for 3 intervals: prober stopped or cut off"}
                change = changes.record("backend.health", backend, before=before, after=snapshot(backend),
                                        related=backend.pool, reason=evidence["why"])
                HealthEvent.objects.create(backend=backend, from_health=old, to_health=Health.STALE,
                                           evidence=evidence, change_id=change.pk)
                marked.append(backend.pk)
    return marked


def reconcile_health(observed: Mapping[int, ObservedHealth], *,
                     failing: Callable[[list[int]], dict[int, set[int]]]) -> int:
    """Make DB health say what the prober's state says, where a transition never reached the DB.

    Through the same path as the prober (one Change and HealthEvent per repaired backend, panic
    re-decided), as system:reconciler; `failing(pool ids)` gives the pools' failing backends.
    Compare-and-set on the health read here, and never over a newer seq than the observed one:
    a transition recorded meanwhile wins. Returns the backends repaired.
    """
    by_pool: dict[int, list[HealthUpdate]] = defaultdict(list)
    rows = Backend.objects.filter(pool__monitor__isnull=False).values_list("pk", "pool_id", "health")
    for pk, pool_id, health in rows.iterator(chunk_size=2000):
        seen = observed.get(pk)
        if seen is None or seen.health == health:
            continue
        why = (f"the prober's state says {seen.health} but the database said {health}: "
               f"a transition that never reached the database, repaired")
        by_pool[pool_id].append(HealthUpdate(pk, seen.health, {**seen.evidence, "why": why}, from_health=health,
                                             seq=seen.seq))
    if not by_pool:
        return 0
    return record_transitions_many(by_pool, failing=failing(sorted(by_pool)), actor=RECONCILER, restate_seq=True)
