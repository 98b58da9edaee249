"""Drain, undrain, maintenance and weight: on a backend, or on everything under a pool, PoP or region.

An action on a pool, PoP or region is one Operation covering every backend under it.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from steering import capacity
from steering.choices import AdminState, OperationKind
from steering.dataplane.stats import read_backend_stats
from steering.models import Backend, Operation, Pool, PoP, Region
from steering.services import guard
from steering.services.audit import ChangeSet, snapshot
from steering.services.context import Actor
from steering.services.errors import CapacityGuardRefused, InvalidInput, StaleWrite, StateConflict
from steering.services.operations import drain_progress, finish_immediately, open_operation, return_to_service
from steering.services.targets import Target, backends_under, target_label, target_type

_IN_SERVICE = (AdminState.READY,)
DRAIN_BUFFER_SECONDS = 15


def _lock_target(target: Target, expected_revision: int | None) -> Target:
    locked = type(target).objects.select_for_update().get(pk=target.pk)
    if expected_revision is not None and locked.revision != expected_revision:
        raise StaleWrite(
            f"{target_type(locked)} {locked.pk} changed since you read it (revision {locked.revision}).",
            extra={"current_etag": locked.etag},
        )
    return locked


def _require_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput({"reason": ["Say why: the reason goes into the audit log."]})
    return reason


def _apply_guard(target: Target, removed: list[Backend], *, action: str, force: bool, force_reason: str) -> dict[str, Any]:
    impact = guard.assess_removal(target, removed, action=action)
    if not impact["safe"] and not force:
        raise CapacityGuardRefused(impact["explain"], extra={"impact": impact})
    if not impact["safe"] and force and not force_reason.strip():
        raise InvalidInput({"force_reason": ["Forcing past the capacity guard needs its own reason."]})
    return impact


def _default_grace(target: Target) -> tuple[int, str]:
    if isinstance(target, Backend):
        return target.pool.default_grace_seconds, f"pool {target.pool} default"
    if isinstance(target, Pool):
        return target.default_grace_seconds, f"pool {target} default"
    return settings.STEERING_DEFAULT_GRACE_SECONDS, "site default"


def suggest_grace(target: Target, backends: list[Backend]) -> dict[str, Any]:
    """The grace a drain should get: from live session figures where the data plane reports
    them (sessions / completion rate + buffer, the longest backend wins), else the default."""
    default, default_basis = _default_grace(target)
    stats = read_backend_stats(b.pk for b in backends)
    estimates = []
    for b in backends:
        s = stats.get(b.pk)
        if s is not None and (s.sessions == 0 or s.completion_rate > 0):
            estimates.append((capacity.estimate_drain_seconds(s.sessions, s.completion_rate, DRAIN_BUFFER_SECONDS), b))
    if not estimates:
        return {"seconds": default, "basis": "default",
                "derivation": f"{default_basis}: {default} s (no live session figures)"}
    longest, who = max(estimates, key=lambda pair: pair[0].seconds)
    unmeasured = len(backends) - len(estimates)
    derivation = f"{who.name}: {longest.derivation}"
    if len(estimates) > 1:
        derivation += f" (longest of {len(estimates)} measured)"
    seconds = longest.seconds
    if unmeasured:
        # Backends without figures get at least the default.
        seconds = max(seconds, default)
        derivation += f"; {unmeasured} without figures: at least {default_basis} {default} s"
    return {"seconds": seconds, "basis": "measured", "derivation": derivation}


def _set_site_state(target: Target, state: str, changes: ChangeSet) -> None:
    if isinstance(target, Backend) or target.admin_state == state:
        return
    before = snapshot(target)
    target.admin_state = state
    target.revision += 1
    target.save(update_fields=["admin_state", "revision", "updated_at"])
    changes.record(f"{target_type(target)}.{'undrain' if state == AdminState.READY else state}", target, before=before, after=snapshot(target))


def _restore_layered(target: Target, undrain_op: Operation, changes: ChangeSet) -> None:
    """Undraining a site a layered drain took out also brings back its DNS answers and anycast
    announcements (the drain recorded what it took away)."""
    from steering.services.layered import rollback_layered

    for layered in Operation.objects.select_for_update().filter(
            kind=OperationKind.LAYERED_DRAIN, target_type=target_type(target), target_id=target.pk,
            status__in=["running", "succeeded"]):
        if layered.result.get("restored_by"):
            continue
        restored = rollback_layered(layered, changes)
        result = {**layered.result, "restored_by": undrain_op.pk, "restored": restored}
        status = "aborted" if layered.status == "running" else layered.status
        Operation.objects.filter(pk=layered.pk).update(result=result, status=status, revision=F("revision") + 1,
                                                       finished_at=layered.finished_at or timezone.now())
        changes.touch(layered)


def impact_of(target: Target, action: str) -> dict[str, Any]:
    """The what-if for `action` on `target`, without changing anything."""
    if action in ("drain", "maintenance"):
        removed = [b for b in backends_under(target).select_related("pool") if b.admin_state in _IN_SERVICE]
        return guard.assess_removal(target, removed, action=action)
    if action == "undrain":
        back = backends_under(target).exclude(admin_state=AdminState.READY).count()
        return {
            "action": action,
            "target": {"type": target_type(target), "id": target.pk, "name": target_label(target)},
            "basis": "configured",
            "verdict": "safe",
            "safe": True,
            "backends_affected": back,
            "moved_rps": 0.0,
            "unplaced_rps": 0.0,
            "receivers": [],
            "notes": ["returning capacity never overloads anyone; slow start ramps each backend in"],
            "explain": f"{back} backend(s) return to service.",
        }
    raise InvalidInput({"action": [f"Unknown action {action!r}; use drain, maintenance or undrain."]})


@transaction.atomic
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
) -> tuple[Operation | None, dict[str, Any]]:
    """Stop new traffic to everything under `target`; each backend becomes drained at its deadline.

    Returns (operation, impact); the operation is None for a dry run.
    """
    reason = _require_reason(reason)
    target = _lock_target(target, expected_revision)
    # Lock the backends in id order so concurrent actions on overlapping sets cannot deadlock.
    backends = list(backends_under(target).select_for_update().select_related("pool").order_by("pk"))
    candidates = [b for b in backends if b.admin_state in _IN_SERVICE]
    grace = suggest_grace(target, candidates)
    if grace_seconds is not None:
        grace = {"seconds": grace_seconds, "basis": "given", "derivation": f"given: {grace_seconds} s",
                 "suggested": grace}
    if dry_run:
        return None, {**guard.assess_removal(target, candidates, action="drain"), "grace": grace}
    if not candidates:
        states = sorted({b.admin_state for b in backends}) or ["empty"]
        raise StateConflict(
            f"Nothing to drain under {target_label(target)}: its backends are {', '.join(states)}.",
            code="already_draining" if AdminState.DRAINING in states else "state_conflict",
            extra={"running_operations": sorted({b.operation_id for b in backends if b.operation_id})},
        )
    impact = {**_apply_guard(target, candidates, action="drain", force=force, force_reason=force_reason),
              "grace": grace}
    seconds = int(grace["seconds"])
    now = timezone.now()
    deadline = now + datetime.timedelta(seconds=seconds)
    op = open_operation(
        OperationKind.DRAIN, target, actor=actor, reason=reason, forced=force and not impact["safe"],
        params={"grace_seconds": seconds, "grace_basis": grace["basis"], "grace_derivation": grace["derivation"],
                "backends_total": len(candidates), "force_reason": force_reason, "impact": impact},
        deadline=deadline,
    )
    op.steps = [{"name": f"drain {len(candidates)} backend(s), grace {seconds} s", "status": "running"}]
    changes = ChangeSet(actor, reason, operation_id=op.pk, forced=op.forced, force_reason=force_reason)
    _set_site_state(target, AdminState.DRAINING, changes)
    for backend in candidates:
        before = snapshot(backend)
        # Compare-and-set: the row is locked, and only a backend still ready moves to draining.
        moved = Backend.objects.filter(pk=backend.pk, admin_state=AdminState.READY).update(
            admin_state=AdminState.DRAINING, drain_started_at=now, drain_deadline=deadline,
            drain_version=changes.version, operation=op, revision=F("revision") + 1, updated_at=now,
        )
        if moved != 1:
            continue
        backend.refresh_from_db()
        changes.record("backend.drain", backend, before=before, after=snapshot(backend), related=backend.pool)
    op.progress = drain_progress(op)
    op.save(update_fields=["steps", "progress"])
    changes.touch(op)
    if seconds == 0:
        # No grace: completes now, through the same compare-and-set path the sweeper uses.
        from steering.services.operations import complete_drains

        complete_drains([b.pk for b in candidates], actor=actor, why=reason, now=now)
        op.refresh_from_db()
    return op, impact


@transaction.atomic
def do_undrain(
    target: Target, *, actor: Actor, reason: str, expected_revision: int | None = None
) -> tuple[Operation, dict[str, Any]]:
    """Return everything under `target` to service; slow start ramps each backend's weight in."""
    reason = _require_reason(reason)
    target = _lock_target(target, expected_revision)
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
    for backend in candidates:
        if backend.operation_id and backend.admin_state == AdminState.DRAINING:
            aborted_ops.add(backend.operation_id)
        return_to_service(backend, changes, now=now, operation=op)
    _set_site_state(target, AdminState.READY, changes)
    if not isinstance(target, Backend):
        _restore_layered(target, op, changes)
    for running in Operation.objects.select_for_update().filter(pk__in=aborted_ops, status="running"):
        # A drain interrupted by an undrain ends as aborted, says by what, and is audited as such.
        result = {"aborted_by": actor.name, "reason": f"undrain: {reason}", "superseded_by": op.pk}
        if Operation.objects.filter(pk=running.pk, status="running").update(
            status="aborted", finished_at=now, revision=F("revision") + 1, result=result,
        ):
            changes.record("operation.abort", running, before={"status": "running"},
                           after={"status": "aborted", "result": result})
    finish_immediately(op, changes, {"returned_to_service": len(candidates)})
    return op, impact


@transaction.atomic
def do_maintenance(
    target: Target,
    *,
    actor: Actor,
    reason: str,
    force: bool = False,
    force_reason: str = "",
    dry_run: bool = False,
    expected_revision: int | None = None,
) -> tuple[Operation | None, dict[str, Any]]:
    """Take everything under `target` out of service at once (no grace: sessions are cut)."""
    reason = _require_reason(reason)
    target = _lock_target(target, expected_revision)
    backends = list(backends_under(target).select_for_update().select_related("pool").order_by("pk"))
    candidates = [b for b in backends if b.admin_state != AdminState.MAINT]
    removed = [b for b in candidates if b.admin_state in _IN_SERVICE]
    if dry_run:
        return None, guard.assess_removal(target, removed, action="maintenance")
    if not candidates and (isinstance(target, Backend) or target.admin_state == AdminState.MAINT):
        raise StateConflict(f"{target_label(target)} is already in maintenance.", code="already_maintenance")
    impact = _apply_guard(target, removed, action="maintenance", force=force, force_reason=force_reason)
    op = open_operation(OperationKind.MAINTENANCE, target, actor=actor, reason=reason,
                        forced=force and not impact["safe"],
                        params={"backends_total": len(candidates), "force_reason": force_reason, "impact": impact})
    changes = ChangeSet(actor, reason, operation_id=op.pk, forced=op.forced, force_reason=force_reason)
    now = timezone.now()
    for backend in candidates:
        before = snapshot(backend)
        backend.admin_state = AdminState.MAINT
        backend.drain_deadline = None
        backend.operation = op
        backend.revision += 1
        backend.save()
        changes.record("backend.maintenance", backend, before=before, after=snapshot(backend), related=backend.pool)
    if not isinstance(target, Backend) and target.admin_state != AdminState.MAINT:
        _set_site_state(target, AdminState.MAINT, changes)
    del now
    finish_immediately(op, changes, {"in_maintenance": len(candidates)})
    return op, impact


# Targets whose actions the API exposes.
ACTION_TARGETS = (Backend, Pool, PoP, Region)
