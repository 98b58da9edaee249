"""An Operation's life: opened by an action, finished once (compare-and-set), its progress, and
the state its target site ends in. Shared by every action module; imports none of them."""

from __future__ import annotations

import datetime
from typing import Any

from django.db.models import F
from django.utils import timezone

from steering.choices import AdminState, OperationStatus
from steering.models import Backend, Operation, Pool, PoP, Region
from steering.services import notifications
from steering.services.audit import ChangeSet
from steering.services.context import Actor
from steering.services.kernel import Site, set_site_state
from steering.services.targets import Target, target_label, target_type

# Who the 1 s sweeper acts as when it moves an operation on (audited as system:sweeper).
SWEEPER = Actor.system("sweeper")

_SITES: dict[str, type[Site]] = {"pool": Pool, "pop": PoP, "region": Region}


def open_operation(
    kind: str,
    target: Target,
    *,
    actor: Actor,
    reason: str,
    forced: bool = False,
    params: dict[str, Any] | None = None,
    deadline: datetime.datetime | None = None,
    status: str = OperationStatus.RUNNING,
) -> Operation:
    """A new operation, running (or `status`: scheduled); webhooks hear that it started."""
    op = Operation.objects.create(
        kind=kind,
        status=status,
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
    notifications.operation_changed(op)
    return op


def open_or_start(
    scheduled: Operation | None,
    kind: str,
    target: Target,
    *,
    actor: Actor,
    reason: str,
    forced: bool = False,
    params: dict[str, Any] | None = None,
    deadline: datetime.datetime | None = None,
    expires_at: datetime.datetime | None = None,
) -> Operation:
    """A new running operation, or the `scheduled` one now starting (its who and why stay those of
    whoever scheduled it; its params gain what the start decided)."""
    if scheduled is None:
        op = open_operation(kind, target, actor=actor, reason=reason, forced=forced, params=params, deadline=deadline)
        if expires_at is not None:
            op.expires_at = expires_at
            op.save(update_fields=["expires_at"])
        return op
    scheduled.status = OperationStatus.RUNNING
    scheduled.forced = scheduled.forced or forced
    scheduled.params = {**scheduled.params, **(params or {}), "started_at": timezone.now().isoformat()}
    scheduled.deadline = deadline
    scheduled.revision += 1
    scheduled.save(update_fields=["status", "forced", "params", "deadline", "revision"])
    notifications.operation_changed(scheduled)
    return scheduled


def finish_operation(op: Operation, status: str, result: dict[str, Any]) -> bool:
    """Compare-and-set running/paused/scheduled -> final, so two finishers (sweeper, abort) never both win."""
    won = Operation.objects.filter(pk=op.pk, status__in=[OperationStatus.RUNNING, OperationStatus.PAUSED,
                                                         OperationStatus.SCHEDULED]).update(
        status=status, finished_at=timezone.now(), result=result, revision=F("revision") + 1
    )
    if won:
        op.refresh_from_db()
        notifications.operation_changed(op)
    return bool(won)


def finish_immediately(op: Operation, changes: ChangeSet, result: dict[str, Any]) -> None:
    """An operation whose whole effect happened in its own transaction: succeeded at once."""
    op.progress = {**op.progress, "percent": 100}
    op.save(update_fields=["progress"])
    finish_operation(op, OperationStatus.SUCCEEDED, result)
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


def move_target_state(op: Operation, from_state: str, to_state: str, changes: ChangeSet) -> None:
    """The operation's target site (pool, PoP, region) goes from_state -> to_state, if it still
    is in from_state (an operator may have moved it meanwhile); a backend target has no site state."""
    model = _SITES.get(op.target_type)
    if model is None:
        return
    site = model._default_manager.select_for_update().filter(pk=op.target_id, admin_state=from_state).first()
    if site is not None:
        set_site_state(site, to_state, changes, operation_id=op.pk)


_HELD = (AdminState.DRAINING, AdminState.DRAINED, AdminState.MAINT)


def close_released_windows(op_ids: set[int], changes: ChangeSet, *, now: datetime.datetime, why: str) -> None:
    """The maintenance windows of these operations that no longer hold anything (someone brought
    their backends back) end now, not at their expiry: the calendar shows only what is open."""
    for op in Operation.objects.select_for_update().filter(pk__in=op_ids, expires_at__isnull=False,
                                                             expired_at__isnull=True):
        if Backend.objects.filter(operation=op, admin_state__in=_HELD).exists():
            continue
        before = {"expires_at": op.expires_at.isoformat() if op.expires_at else None, "expired_at": None}
        op.expired_at = now
        op.save(update_fields=["expired_at"])
        changes.record("operation.expire", op, before=before,
                       after={**before, "expired_at": now.isoformat(), "ended": "early"}, reason=why)
