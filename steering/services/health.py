"""Health transitions, stale marks and pool panic: the only writers of Backend.health and
Pool.in_panic. The prober calls these on a transition only, never per probe.

Panic semantics (DESIGN §6 "suspect the prober"): a backend's health is always recorded as
measured, so operators see every down; while its pool is in panic, `capacity.explain_effective_weight`
keeps down backends at their weight, so nothing is pulled from steering. A pool is in panic
while more than `panic_threshold_percent` of its backends are down or failing their latest
check (see steering.health.state.panic_decision); entering and leaving are audited.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from django.db import transaction
from django.utils import timezone

from steering.choices import Health
from steering.health.state import PanicDecision, panic_decision
from steering.health.target import ProbeTarget
from steering.models import Backend, HealthEvent, Pool
from steering.services.audit import ChangeSet, snapshot
from steering.services.context import Actor
from steering.validators import parse_status_range

PROBER = Actor.system("prober")
HealthChange = tuple[int, str, dict[str, Any]]  # (backend id, new health, evidence)


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


@transaction.atomic
def record_transitions_many(by_pool: Mapping[int, Sequence[HealthChange]], *,
                            failing: dict[int, set[int]] | None = None, actor: Actor = PROBER) -> int:
    """Apply the prober's transitions, pool by pool, then re-decide each pool's panic flag.

    One transaction and one state version for the batch (a wave of transitions costs one commit
    and one live delta, not one each); inside it, per changed backend exactly one Change (actor
    system:prober) and one HealthEvent. The delta goes out after commit through the ChangeSet.
    Returns the transitions applied.
    """
    opened: list[ChangeSet] = []

    def changes() -> ChangeSet:
        if not opened:  # a ChangeSet bumps the state version: open one only when something changes
            opened.append(ChangeSet(actor, ""))
        return opened[0]

    now = timezone.now()
    applied = 0
    # Pools locked in id order, then their backends in id order: serialises panic decisions of a
    # pool across shard threads and workers, and a fixed order means no deadlock between them.
    for pool in Pool.objects.select_for_update().filter(pk__in=list(by_pool)).order_by("pk"):
        wanted = {bid: (new, ev) for bid, new, ev in by_pool[pool.pk]}
        for backend in Backend.objects.select_for_update().filter(pool=pool, pk__in=wanted).order_by("pk"):
            new, evidence = wanted[backend.pk]
            if backend.health == new:
                continue  # compare-and-set: already there (a retry, or another worker won)
            before = snapshot(backend)
            old = backend.health
            backend.health = new
            backend.health_changed_at = now
            backend.revision += 1
            backend.save(update_fields=["health", "health_changed_at", "revision", "updated_at"])
            change = changes().record("backend.health", backend, before=before, after=snapshot(backend),
                                      related=pool, reason=_reason(new, evidence))
            HealthEvent.objects.create(backend=backend, from_health=old, to_health=new, evidence=evidence,
                                       change_id=change.pk)
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
