"""Drain, undrain, maintenance and weight: on a backend, or on everything under a pool, PoP or region.

An action on a pool, PoP or region is one Operation covering every backend under it. A dry run
or an impact is a preview: it reads without locks and writes nothing.
"""

from __future__ import annotations

import datetime

from django.db import transaction
from django.utils import timezone

from steering.choices import AdminState, OperationKind, OperationStatus
from steering.models import Backend, Operation, Pool, PoP, Region
from steering.services import guard, layered
from steering.services.audit import ChangeSet
from steering.services.confirmations import finish_when_applied, layers_for
from steering.services.context import Actor
from steering.services.errors import InvalidInput, StateConflict
from steering.services.impact import Grace, Impact
from steering.services.kernel import (
    enforce_guard,
    lock_for_write,
    read_current,
    require_reason,
    return_to_service,
    set_fields,
    set_site_state,
    start_draining,
    suggest_grace,
)
from steering.services.operation_lifecycle import (
    close_released_windows,
    drain_progress,
    finish_operation,
    open_operation,
    open_or_start,
)
from steering.services.operations import complete_drains
from steering.services.targets import Target, backends_under, target_label

_IN_SERVICE = (AdminState.READY,)


def _set_site_state(target: Target, state: str, changes: ChangeSet) -> None:
    if isinstance(target, Backend) or target.admin_state == state:
        return
    set_site_state(target, state, changes)


def impact_of(target: Target, action: str) -> Impact:
    """The what-if for `action` on `target`, without changing anything."""
    if action in ("drain", "maintenance"):
        removed = [b for b in backends_under(target).select_related("pool") if b.admin_state in _IN_SERVICE]
        return guard.assess_removal(target, removed, action="drain" if action == "drain" else "maintenance")
    if action == "undrain":
        back = backends_under(target).exclude(admin_state=AdminState.READY).count()
        return guard.returning(
            target, "undrain", back, explained=f"{back} backend(s) return to service.",
            note="returning capacity never overloads anyone; slow start ramps each backend in")
    raise InvalidInput({"action": [f"Unknown action {action!r}; use drain, maintenance or undrain."]})


def _drain_grace(target: Target, candidates: list[Backend], grace_seconds: int | None) -> Grace:
    return Grace.of(suggest_grace(target, candidates), given_seconds=grace_seconds)


def preview_drain(target: Target, *, grace_seconds: int | None = None,
                  expected_revision: int | None = None) -> Impact:
    """A drain's dry run: its impact and grace, read without locks."""
    target = read_current(target, expected_revision)
    candidates = [b for b in backends_under(target).select_related("pool").order_by("pk")
                  if b.admin_state in _IN_SERVICE]
    grace = _drain_grace(target, candidates, grace_seconds)
    return guard.assess_removal(target, candidates, action="drain", grace=grace)


def do_drain(
    target: Target,
    *,
    actor: Actor,
    reason: str,
    grace_seconds: int | None = None,
    force: bool = False,
    force_reason: str = "",
    dry_run: bool = False,
    expected_revision: int | None = None,
    expires_at: datetime.datetime | None = None,
    operation: Operation | None = None,
) -> tuple[Operation | None, Impact]:
    """Stop new traffic to everything under `target`; each backend becomes drained at its deadline.
    With `expires_at`, everything returns to service then by itself (steering.services.windows);
    `operation`: a scheduled one this drain starts (else a new one is opened).

    Returns (operation, impact); the operation is None for a dry run.
    """
    reason = require_reason(reason)
    if dry_run:
        return None, preview_drain(target, grace_seconds=grace_seconds, expected_revision=expected_revision)
    with transaction.atomic():
        target = lock_for_write(target, expected_revision)
        # Lock the backends in id order so concurrent actions on overlapping sets cannot deadlock.
        backends = list(backends_under(target).select_for_update().select_related("pool").order_by("pk"))
        candidates = [b for b in backends if b.admin_state in _IN_SERVICE]
        grace = _drain_grace(target, candidates, grace_seconds)
        if not candidates:
            states = sorted({b.admin_state for b in backends}) or ["empty"]
            raise StateConflict(
                f"Nothing to drain under {target_label(target)}: its backends are {', '.join(states)}.",
                code="already_draining" if AdminState.DRAINING in states else "state_conflict",
                extra={"running_operations": sorted({b.operation_id for b in backends if b.operation_id})},
            )
        impact = guard.assess_removal(target, candidates, action="drain")
        forced = enforce_guard(impact, force=force, force_reason=force_reason)
        impact = guard.with_grace(impact, grace)  # a refusal shows no grace; the drain that goes ahead does
        seconds = grace.seconds
        now = timezone.now()
        deadline = now + datetime.timedelta(seconds=seconds)
        op = open_or_start(
            operation, OperationKind.DRAIN, target, actor=actor, reason=reason, forced=forced,
            params={"grace_seconds": seconds, "grace_basis": grace.basis, "grace_derivation": grace.derivation,
                    "backends_total": len(candidates), "force_reason": force_reason, "impact": impact.as_json()},
            deadline=deadline, expires_at=expires_at,
        )
        op.steps = [{"name": f"drain {len(candidates)} backend(s), grace {seconds} s", "status": "running"}]
        changes = ChangeSet(actor, reason, operation_id=op.pk, forced=op.forced, force_reason=force_reason)
        _set_site_state(target, AdminState.DRAINING, changes)
        for backend in candidates:
            start_draining(backend, op, changes, now=now, deadline=deadline)
        op.progress = drain_progress(op)
        op.save(update_fields=["steps", "progress"])
        changes.touch(op)
        if seconds == 0:
            # No grace: completes now, through the same compare-and-set path the sweeper uses.
            complete_drains([b.pk for b in candidates], actor=actor, why=reason, now=now)
            op.refresh_from_db()
        return op, impact


@transaction.atomic
def do_undrain(
    target: Target, *, actor: Actor, reason: str, expected_revision: int | None = None
) -> tuple[Operation, Impact]:
    """Return everything under `target` to service; slow start ramps each backend's weight in."""
    reason = require_reason(reason)
    target = lock_for_write(target, expected_revision)
    backends = list(backends_under(target).select_for_update().select_related("pool").order_by("pk"))
    candidates = [b for b in backends if b.admin_state != AdminState.READY]
    if not candidates and (isinstance(target, Backend) or target.admin_state == AdminState.READY):
        raise StateConflict(f"{target_label(target)} is already in service.", code="already_ready")
    impact = impact_of(target, "undrain")
    op = open_operation(OperationKind.UNDRAIN, target, actor=actor, reason=reason,
                        params={"backends_total": len(candidates)})
    changes = ChangeSet(actor, reason, operation_id=op.pk)
    now = timezone.now()
    aborted_ops: set[int] = set()
    held_by = {b.operation_id for b in candidates if b.operation_id}
    for backend in candidates:
        if backend.operation_id and backend.admin_state == AdminState.DRAINING:
            aborted_ops.add(backend.operation_id)
        return_to_service(backend, changes, now=now, operation=op)
    close_released_windows(held_by, changes, now=now, why=f"back in service before its end: {reason}")
    _set_site_state(target, AdminState.READY, changes)
    if isinstance(target, (PoP, Region)):
        layered.restore_site(target, op, changes)
    for running in Operation.objects.select_for_update().filter(pk__in=aborted_ops, status=OperationStatus.RUNNING):
        # A drain interrupted by an undrain ends as aborted, says by what, and is audited as such.
        result = {"aborted_by": actor.name, "reason": f"undrain: {reason}", "superseded_by": op.pk}
        if finish_operation(running, OperationStatus.ABORTED, result):
            changes.record("operation.abort", running, before={"status": "running"},
                           after={"status": "aborted", "result": result})
    layers = layers_for(target, sites=isinstance(target, (PoP, Region)))
    finish_when_applied(op, changes, {"returned_to_service": len(candidates)}, layers)
    return op, impact


def preview_maintenance(target: Target, *, expected_revision: int | None = None) -> Impact:
    """Maintenance's dry run: its impact, read without locks."""
    target = read_current(target, expected_revision)
    removed = [b for b in backends_under(target).select_related("pool") if b.admin_state in _IN_SERVICE]
    return guard.assess_removal(target, removed, action="maintenance")


def do_maintenance(
    target: Target,
    *,
    actor: Actor,
    reason: str,
    force: bool = False,
    force_reason: str = "",
    dry_run: bool = False,
    expected_revision: int | None = None,
    expires_at: datetime.datetime | None = None,
    operation: Operation | None = None,
) -> tuple[Operation | None, Impact]:
    """Take everything under `target` out of service at once (no grace: sessions are cut); with
    `expires_at`, back in service then by itself (`operation`: a scheduled one it starts)."""
    reason = require_reason(reason)
    if dry_run:
        return None, preview_maintenance(target, expected_revision=expected_revision)
    with transaction.atomic():
        target = lock_for_write(target, expected_revision)
        backends = list(backends_under(target).select_for_update().select_related("pool").order_by("pk"))
        candidates = [b for b in backends if b.admin_state != AdminState.MAINT]
        removed = [b for b in candidates if b.admin_state in _IN_SERVICE]
        if not candidates and (isinstance(target, Backend) or target.admin_state == AdminState.MAINT):
            raise StateConflict(f"{target_label(target)} is already in maintenance.", code="already_maintenance")
        impact = guard.assess_removal(target, removed, action="maintenance")
        forced = enforce_guard(impact, force=force, force_reason=force_reason)
        op = open_or_start(operation, OperationKind.MAINTENANCE, target, actor=actor, reason=reason, forced=forced,
                           params={"backends_total": len(candidates), "force_reason": force_reason,
                                   "impact": impact.as_json()}, expires_at=expires_at)
        changes = ChangeSet(actor, reason, operation_id=op.pk, forced=op.forced, force_reason=force_reason)
        for backend in candidates:
            set_fields(backend, {"admin_state": AdminState.MAINT, "drain_deadline": None, "operation": op}, changes,
                       "backend.maintenance", related=backend.pool)
        _set_site_state(target, AdminState.MAINT, changes)
        layers = layers_for(target, sites=isinstance(target, (PoP, Region)))
        finish_when_applied(op, changes, {"in_maintenance": len(candidates)}, layers)
        return op, impact


# Targets whose actions the API exposes.
ACTION_TARGETS = (Backend, Pool, PoP, Region)
