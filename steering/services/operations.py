"""Operations: create, progress, finish, abort; and the 1 s sweeper that acts on due timers."""

from __future__ import annotations

import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from steering.choices import AdminState, OperationKind, OperationStatus
from steering.dataplane.stats import read_backend_stats
from steering.models import Backend, Operation, Pool, PoP, Region
from steering.services.audit import ChangeSet, snapshot
from steering.services.context import Actor
from steering.services.errors import StaleWrite, StateConflict
from steering.services.targets import Target, target_label, target_type

SWEEPER = "sweeper"


def open_operation(
    kind: str,
    target: Target,
    *,
    actor: Actor,
    reason: str,
    forced: bool = False,
    params: dict[str, Any] | None = None,
    deadline: datetime.datetime | None = None,
) -> Operation:
    return Operation.objects.create(
        kind=kind,
        status=OperationStatus.RUNNING,
        target_type=target_type(target),
        target_id=target.pk,
        target_repr=target_label(target)[:300],
        actor_id=actor.user_id,
        actor_name=actor.name,
        source=actor.source,
        request_id=actor.request_id,
        reason=reason,
        forced=forced,
        params=params or {},
        deadline=deadline,
    )


def _finish(op: Operation, status: str, result: dict[str, Any]) -> bool:
    """Compare-and-set running/paused -> final, so two finishers (sweeper, abort) never both win."""
    now = timezone.now()
    won = Operation.objects.filter(pk=op.pk, status__in=[OperationStatus.RUNNING, OperationStatus.PAUSED]).update(
        status=status, finished_at=now, result=result, revision=F("revision") + 1
    )
    if won:
        op.refresh_from_db()
    return bool(won)


def finish_immediately(op: Operation, changes: ChangeSet, result: dict[str, Any]) -> None:
    op.progress = {**op.progress, "percent": 100}
    op.save(update_fields=["progress"])
    _finish(op, OperationStatus.SUCCEEDED, result)
    changes.touch(op)


def return_to_service(backend: Backend, changes: ChangeSet, *, now: datetime.datetime,
                      operation: Operation | None = None) -> None:
    """Back to ready (from draining, drained or maintenance), slow start from now, audited."""
    before = snapshot(backend)
    backend.admin_state = AdminState.READY
    backend.drain_deadline = None
    backend.drain_started_at = None
    backend.ready_since = now
    if operation is not None:
        backend.operation = operation
    backend.revision += 1
    backend.save()
    changes.record("backend.undrain", backend, before=before, after=snapshot(backend), related=backend.pool)


def drain_progress(op: Operation) -> dict[str, Any]:
    states = list(Backend.objects.filter(operation=op).values_list("admin_state", flat=True))
    total = int(op.params.get("backends_total", len(states)))
    left = sum(1 for s in states if s == AdminState.DRAINING)
    done = max(0, total - left)
    seconds_left = max(0, int((op.deadline - timezone.now()).total_seconds())) if op.deadline else None
    return {
        "backends_total": total,
        "backends_left": left,
        "backends_done": done,
        "seconds_left": seconds_left,
        "percent": 100 if total == 0 else int(100 * done / total),
    }


def _set_target_state(op: Operation, from_state: str, to_state: str, changes: ChangeSet) -> None:
    sites: dict[str, type[Pool] | type[PoP] | type[Region]] = {"pool": Pool, "pop": PoP, "region": Region}
    model = sites.get(op.target_type)
    if model is None:
        return
    target = model._default_manager.select_for_update().filter(pk=op.target_id, admin_state=from_state).first()
    if target is None:
        return
    before = snapshot(target)
    target.admin_state = to_state
    target.revision += 1
    target.save(update_fields=["admin_state", "revision", "updated_at"])
    verb = "undrain" if to_state == AdminState.READY else to_state
    changes.record(f"{op.target_type}.{verb}", target, before=before, after=snapshot(target), operation_id=op.pk)


def _maybe_complete_drain(op_id: int, changes: ChangeSet) -> None:
    op = Operation.objects.select_for_update().get(pk=op_id)
    if op.status != OperationStatus.RUNNING or op.kind not in (OperationKind.DRAIN, OperationKind.LAYERED_DRAIN):
        return
    progress = drain_progress(op)
    if op.kind == OperationKind.LAYERED_DRAIN:
        op.progress = {**op.progress, **progress, "step": "local"}
        op.save(update_fields=["progress"])
        if progress["backends_left"] == 0 and op.params.get("step") == 3:
            from steering.services.layered import finish_layered

            finish_layered(op, changes)
        else:
            changes.touch(op)
        return
    unconfirmed = op.progress.get("unconfirmed", [])
    op.progress = {**progress, **({"unconfirmed": unconfirmed} if unconfirmed else {})}
    op.save(update_fields=["progress"])
    if progress["backends_left"] == 0:
        # Done in the desired state; "succeeded" only if every data plane said it applied it.
        status = OperationStatus.UNCONFIRMED if unconfirmed else OperationStatus.SUCCEEDED
        result: dict[str, Any] = {"drained": progress["backends_done"]}
        if unconfirmed:
            result["unconfirmed"] = unconfirmed
        if _finish(op, status, result):
            _set_target_state(op, AdminState.DRAINING, AdminState.DRAINED, changes)
    changes.touch(op)


def _split_by_confirmation(backends: list[Backend], now: datetime.datetime) -> tuple[list[Backend], dict[int, str]]:
    """Which draining backends may complete: those whose PoP's HAProxy acknowledged the drain's
    version, and (unconfirmed, with the words why) those still unacknowledged after the timeout.
    The rest keep draining: nothing says "drained" before a data plane did it."""
    from steering.choices import DataplaneLayer
    from steering.dataplane.status import confirmed_versions, layer_status

    pop_ids = {b.pool.pop_id for b in backends}
    confirmed = confirmed_versions(DataplaneLayer.LOCAL, pop_ids, now.timestamp())
    timeout = datetime.timedelta(seconds=settings.STEERING_DATAPLANE_ACK_TIMEOUT_SECONDS)
    ready: list[Backend] = []
    unconfirmed: dict[int, str] = {}
    words: dict[int, str] = {}
    for b in backends:
        pop_id = b.pool.pop_id
        if b.drain_version is None or confirmed.get(pop_id, -1) >= b.drain_version:
            ready.append(b)
        elif b.drain_started_at is not None and now - b.drain_started_at >= timeout:
            if pop_id not in words:
                status = layer_status(DataplaneLayer.LOCAL, PoP.objects.get(pk=pop_id), now.timestamp())
                words[pop_id] = (f"{status.pop} HAProxy has not applied version {b.drain_version} "
                                 f"(runs {status.applied_version if status.applied_version is not None else 'nothing we know of'}); "
                                 f"agent last seen {_clock(status.seen_at)}")
            unconfirmed[b.pk] = words[pop_id]
            ready.append(b)
    return ready, unconfirmed


def _clock(ts: float | None) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).strftime("%H:%M:%S UTC") if ts else "never"


def complete_drains(backend_ids: list[int], *, actor: Actor, why: str, now: datetime.datetime | None = None,
                    confirm: bool | None = None) -> int:
    """Draining -> drained for these backends, by compare-and-set, in one transaction and one
    live delta. Returns how many this call moved (a concurrent sweeper or undrain gets the rest).

    With confirmation on (STEERING_DATAPLANE_CONFIRM), a backend moves only once its PoP's
    HAProxy acknowledged the drain, or as `unconfirmed` when it did not within the timeout."""
    now = now or timezone.now()
    confirm = settings.STEERING_DATAPLANE_CONFIRM if confirm is None else confirm
    if not backend_ids:
        return 0
    with transaction.atomic():
        # Pools first, then backends, each in id order: the same order the prober's health
        # transitions lock in, so a drain completing and a health change never deadlock.
        pool_ids = sorted(set(Backend.objects.filter(pk__in=backend_ids).values_list("pool_id", flat=True)))
        list(Pool.objects.select_for_update().filter(pk__in=pool_ids).order_by("pk").values_list("pk", flat=True))
        backends = list(Backend.objects.select_for_update().select_related("pool")
                        .filter(pk__in=backend_ids, admin_state=AdminState.DRAINING).order_by("pk"))
        unconfirmed: dict[int, str] = {}
        if confirm:
            backends, unconfirmed = _split_by_confirmation(backends, now)
        if not backends:
            return 0
        changes = ChangeSet(actor, why)
        ops: set[int] = set()
        moved_count = 0
        for backend in backends:
            before = snapshot(backend)
            # CAS: only a row still draining moves; a concurrent undrain or second sweeper loses here.
            moved = Backend.objects.filter(pk=backend.pk, admin_state=AdminState.DRAINING).update(
                admin_state=AdminState.DRAINED, drain_deadline=None, revision=F("revision") + 1, updated_at=now
            )
            if moved != 1:
                continue
            moved_count += 1
            backend.admin_state, backend.drain_deadline, backend.revision = AdminState.DRAINED, None, backend.revision + 1
            note = unconfirmed.get(backend.pk)
            changes.record("backend.drained", backend, before=before, after=snapshot(backend), related=backend.pool,
                           operation_id=backend.operation_id,
                           reason=f"{why}; not confirmed: {note}" if note else None)
            if backend.operation_id:
                ops.add(backend.operation_id)
                if note:
                    _note_unconfirmed(backend.operation_id, f"{backend.path}: {note}")
        for op_id in sorted(ops):
            _maybe_complete_drain(op_id, changes)
        return moved_count


def _note_unconfirmed(op_id: int, note: str) -> None:
    op = Operation.objects.select_for_update().get(pk=op_id)
    notes = list(op.progress.get("unconfirmed", []))
    if note not in notes and len(notes) < 50:
        op.progress = {**op.progress, "unconfirmed": [*notes, note]}
        op.save(update_fields=["progress"])


def complete_drain(backend_id: int, *, actor: Actor, why: str, now: datetime.datetime | None = None) -> bool:
    """Draining -> drained for one backend. True when this call did it."""
    return complete_drains([backend_id], actor=actor, why=why, now=now) == 1


def sweep_due(now: datetime.datetime | None = None) -> dict[str, int]:
    """Act on every due timer once. Safe to run from several workers at the same time."""
    now = now or timezone.now()
    actor = Actor.system(SWEEPER)
    due = list(
        Backend.objects.filter(admin_state=AdminState.DRAINING, drain_deadline__lte=now)
        .order_by("drain_deadline")
        .values_list("pk", flat=True)[:1000]
    )
    completed = complete_drains(due, actor=actor, why="drain deadline reached", now=now)
    early = _complete_idle_drains(actor, now)
    from steering.services.layered import advance_layered_drains
    from steering.services.weights import advance_ramps

    ramps = advance_ramps(now)
    layered = advance_layered_drains(now)
    return {"drains_completed": completed + early, "drains_completed_early": early, "ramp_steps": ramps,
            "layered_steps": layered}


def _complete_idle_drains(actor: Actor, now: datetime.datetime) -> int:
    """A draining backend whose data plane reports 0 sessions is done before its deadline.

    Only figures sampled after the drain began count: a zero from before means nothing.
    """
    draining = dict(Backend.objects.filter(admin_state=AdminState.DRAINING).values_list("pk", "drain_started_at")[:5000])
    if not draining:
        return 0
    stats = read_backend_stats(draining)
    idle = [
        pk for pk, started in draining.items()
        if (s := stats.get(pk)) is not None and s.sessions == 0 and started is not None
        and s.updated_at > started.timestamp()
    ]
    return complete_drains(idle, actor=actor, why="sessions reached zero before the deadline", now=now)


@transaction.atomic
def do_abort_operation(op: Operation, *, actor: Actor, reason: str, expected_revision: int | None = None) -> Operation:
    """Stop a running operation and roll back what it was doing (a drain returns its backends to ready)."""
    locked = Operation.objects.select_for_update().get(pk=op.pk)
    if expected_revision is not None and locked.revision != expected_revision:
        raise StaleWrite(f"operation {locked.pk} changed since you read it.", extra={"current_etag": locked.etag})
    if locked.status not in (OperationStatus.RUNNING, OperationStatus.PAUSED):
        raise StateConflict(f"operation {locked.pk} is {locked.status}, not running.", code="not_running")
    changes = ChangeSet(actor, reason, operation_id=locked.pk)
    restored = 0
    if locked.kind == OperationKind.DRAIN:
        now = timezone.now()
        for backend in Backend.objects.select_for_update().filter(operation=locked, admin_state=AdminState.DRAINING):
            return_to_service(backend, changes, now=now)
            restored += 1
        _set_target_state(locked, AdminState.DRAINING, AdminState.READY, changes)
    if locked.kind == OperationKind.WEIGHT:
        from steering.services.weights import rollback_ramp

        rollback_ramp(locked, changes)
    if locked.kind == OperationKind.LAYERED_DRAIN:
        from steering.services.layered import rollback_layered

        restored = rollback_layered(locked, changes)["backends"]
        _set_target_state(locked, AdminState.DRAINING, AdminState.READY, changes)
    before = {"status": locked.status}
    _finish(locked, OperationStatus.ABORTED, {"aborted_by": actor.name, "reason": reason, "backends_restored": restored})
    changes.record("operation.abort", locked, before=before, after={"status": locked.status, "result": locked.result})
    return locked
