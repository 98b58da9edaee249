"""Operations: create, progress, finish, abort; and the 1 s sweeper that acts on due timers."""

from __future__ import annotations

import datetime
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from steering.choices import AdminState, OperationKind, OperationStatus
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
    """Compare-and-set running -> final, so two finishers (sweeper, abort) never both win."""
    now = timezone.now()
    won = Operation.objects.filter(pk=op.pk, status=OperationStatus.RUNNING).update(
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
    changes.record(f"{op.target_type}.{verb}", target, before=before, after=snapshot(target))


def _maybe_complete_drain(op_id: int, changes: ChangeSet) -> None:
    op = Operation.objects.select_for_update().get(pk=op_id)
    if op.status != OperationStatus.RUNNING or op.kind != OperationKind.DRAIN:
        return
    progress = drain_progress(op)
    op.progress = progress
    op.save(update_fields=["progress"])
    if progress["backends_left"] == 0:
        if _finish(op, OperationStatus.SUCCEEDED, {"drained": progress["backends_done"]}):
            _set_target_state(op, AdminState.DRAINING, AdminState.DRAINED, changes)
    changes.touch(op)


def complete_drain(backend_id: int, *, actor: Actor, why: str, now: datetime.datetime | None = None) -> bool:
    """Draining -> drained for one backend, by compare-and-set. True when this call did it."""
    now = now or timezone.now()
    with transaction.atomic():
        backend = Backend.objects.select_for_update().filter(pk=backend_id).first()
        if backend is None or backend.admin_state != AdminState.DRAINING:
            return False
        before = snapshot(backend)
        # CAS: only a row still draining moves; a concurrent undrain or second sweeper loses here.
        moved = Backend.objects.filter(pk=backend_id, admin_state=AdminState.DRAINING).update(
            admin_state=AdminState.DRAINED, drain_deadline=None, revision=F("revision") + 1, updated_at=now
        )
        if moved != 1:
            return False
        backend.refresh_from_db()
        changes = ChangeSet(actor, why, operation_id=backend.operation_id)
        changes.record("backend.drained", backend, before=before, after=snapshot(backend), related=backend.pool)
        if backend.operation_id:
            _maybe_complete_drain(backend.operation_id, changes)
        return True


def sweep_due(now: datetime.datetime | None = None) -> dict[str, int]:
    """Act on every due timer once. Safe to run from several workers at the same time."""
    now = now or timezone.now()
    actor = Actor.system(SWEEPER)
    due = list(
        Backend.objects.filter(admin_state=AdminState.DRAINING, drain_deadline__lte=now)
        .order_by("drain_deadline")
        .values_list("pk", flat=True)[:1000]
    )
    completed = sum(1 for pk in due if complete_drain(pk, actor=actor, why="drain deadline reached", now=now))
    refreshed = _refresh_running_progress()
    return {"drains_completed": completed, "operations_refreshed": refreshed}


def _refresh_running_progress() -> int:
    """Keep running drain operations' progress (time left) current for pollers."""
    count = 0
    for op in Operation.objects.filter(status=OperationStatus.RUNNING, kind=OperationKind.DRAIN):
        progress = drain_progress(op)
        if progress != op.progress:
            Operation.objects.filter(pk=op.pk, status=OperationStatus.RUNNING).update(progress=progress)
            count += 1
    return count


@transaction.atomic
def do_abort_operation(op: Operation, *, actor: Actor, reason: str, expected_revision: int | None = None) -> Operation:
    """Stop a running operation and roll back what it was doing (a drain returns its backends to ready)."""
    locked = Operation.objects.select_for_update().get(pk=op.pk)
    if expected_revision is not None and locked.revision != expected_revision:
        raise StaleWrite(f"operation {locked.pk} changed since you read it.", extra={"current_etag": locked.etag})
    if locked.status != OperationStatus.RUNNING:
        raise StateConflict(f"operation {locked.pk} is {locked.status}, not running.", code="not_running")
    changes = ChangeSet(actor, reason, operation_id=locked.pk)
    restored = 0
    if locked.kind == OperationKind.DRAIN:
        now = timezone.now()
        for backend in Backend.objects.select_for_update().filter(operation=locked, admin_state=AdminState.DRAINING):
            before = snapshot(backend)
            backend.admin_state = AdminState.READY
            backend.drain_deadline = None
            backend.drain_started_at = None
            backend.ready_since = now
            backend.revision += 1
            backend.save()
            changes.record("backend.undrain", backend, before=before, after=snapshot(backend), related=backend.pool)
            restored += 1
        _set_target_state(locked, AdminState.DRAINING, AdminState.READY, changes)
    before = {"status": locked.status}
    _finish(locked, OperationStatus.ABORTED, {"aborted_by": actor.name, "reason": reason, "backends_restored": restored})
    changes.record("operation.abort", locked, before=before, after={"status": locked.status, "result": locked.result})
    return locked
