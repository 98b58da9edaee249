"""Drains completing, the 1 s sweeper that acts on due timers, and abort.

What happens to an operation of a given kind (its next step, its rollback, its end once its
backends are drained) is its handler's business: `steering.services.operation_kinds`.
"""

from __future__ import annotations

import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from steering.choices import AdminState, DataplaneLayer, OperationStatus
from steering.dataplane.stats import read_backend_stats
from steering.dataplane.status import confirmed_versions, layer_status
from steering.models import Backend, Operation, Pool, PoP
from steering.services import confirmations, operation_kinds
from steering.services.audit import ChangeSet, snapshot
from steering.services.context import Actor
from steering.services.errors import StateConflict
from steering.services.kernel import lock_for_write
from steering.services.operation_lifecycle import SWEEPER, finish_operation


def _split_by_confirmation(backends: list[Backend], now: datetime.datetime) -> tuple[list[Backend], dict[int, str]]:
    """Which draining backends may complete: those whose PoP's HAProxy acknowledged the drain's
    version, and (unconfirmed, with the words why) those still unacknowledged after the timeout.
    The rest keep draining: nothing says "drained" before a data plane did it."""
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
                waited = int((now - b.drain_started_at).total_seconds())
                runs = status.applied_version if status.applied_version is not None else "nothing we know of"
                words[pop_id] = (f"{status.pop} HAProxy has not applied version {b.drain_version} for {waited} s "
                                 f"(runs {runs}); agent last seen {_clock(status.seen_at)}")
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
            _tell_operation(op_id, changes)
        return moved_count


def _tell_operation(op_id: int, changes: ChangeSet) -> None:
    """Some backends of this operation became drained: its kind decides what that means."""
    op = Operation.objects.select_for_update().get(pk=op_id)
    handler = operation_kinds.handler_for(op.kind)
    if op.status == OperationStatus.RUNNING and handler is not None and handler.on_backends_drained is not None:
        handler.on_backends_drained(op, changes)


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
    due = list(
        Backend.objects.filter(admin_state=AdminState.DRAINING, drain_deadline__lte=now)
        .order_by("drain_deadline")
        .values_list("pk", flat=True)[:1000]
    )
    completed = complete_drains(due, actor=SWEEPER, why="drain deadline reached", now=now)
    early = _complete_idle_drains(SWEEPER, now)
    result = {"drains_completed": completed + early, "drains_completed_early": early}
    for handler in operation_kinds.HANDLERS.values():
        if handler.advance is not None:
            result[handler.sweep_key] = handler.advance(now)
    result["confirmed_or_timed_out"] = confirmations.advance(now)
    return result


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
    """Stop a running (or paused) operation and roll back what it was doing, as its kind says."""
    locked = lock_for_write(op, expected_revision)
    if locked.status not in (OperationStatus.RUNNING, OperationStatus.PAUSED, OperationStatus.SCHEDULED):
        raise StateConflict(f"operation {locked.pk} is {locked.status}, not running.", code="not_running")
    changes = ChangeSet(actor, reason, operation_id=locked.pk)
    handler = operation_kinds.handler_for(locked.kind)
    restored = handler.roll_back(locked, changes) if handler is not None else 0
    before = {"status": locked.status}
    finish_operation(locked, OperationStatus.ABORTED,
                     {"aborted_by": actor.name, "reason": reason, "backends_restored": restored})
    changes.record("operation.abort", locked, before=before, after={"status": locked.status, "result": locked.result})
    return locked
