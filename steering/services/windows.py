"""Maintenance that ends by itself: a drain or maintenance with a start ahead (`not_before`) and
an end (`expires_at`), like ARC's zonal shifts that expire.

- Scheduling judges the action now (the guard, the safety rules: refused unless forced, as ever)
  and again when it starts: the fleet may have moved meanwhile, and a start the guard would
  refuse then ends `failed`, saying why, unless it was forced.
- At `expires_at` what the window took out returns to service, audited as `system:scheduler`:
  only the backends still held by its operation (someone may have undrained or re-drained them
  since), through an undrain operation of its own that waits for the data planes like any other.
- An expiry can be extended, with a reason (audited as `operation.extend`).
- A layered drain of a PoP or region can have a window too: it starts layer by layer at
  `not_before`, and at `expires_at` every layer it took away comes back (DNS answers,
  announcements, backends: steering.services.layered.restore_site).

The sweeper calls `sweep` with its other timers (steering.tasks.sweeper).
"""

from __future__ import annotations

import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from steering.choices import AdminState, OperationKind, OperationStatus
from steering.models import Backend, Operation, Pool, PoP, Region
from steering.services import actions, layered
from steering.services.audit import ChangeSet
from steering.services.confirmations import finish_when_applied, layers_for
from steering.services.context import Actor
from steering.services.errors import InvalidInput, ServiceError, StateConflict
from steering.services.impact import Impact
from steering.services.kernel import enforce_guard, lock_for_write, require_reason, return_to_service, set_site_state
from steering.services.operation_lifecycle import finish_operation, open_operation
from steering.services.targets import Target

SCHEDULER = Actor.system("scheduler")
WINDOW_KINDS = (OperationKind.DRAIN, OperationKind.MAINTENANCE, OperationKind.LAYERED_DRAIN)
_SITES: dict[str, type[Pool | PoP | Region]] = {"pool": Pool, "pop": PoP, "region": Region}
_HELD = (AdminState.DRAINING, AdminState.DRAINED, AdminState.MAINT)


def _latest_end(now: datetime.datetime) -> datetime.datetime:
    return now + datetime.timedelta(days=settings.STEERING_WINDOW_MAX_DAYS)


def check_window(not_before: datetime.datetime | None, expires_at: datetime.datetime | None,
                 now: datetime.datetime | None = None) -> None:
    """400 with field errors for a window that cannot be: an end before its start or now, or
    either further ahead than STEERING_WINDOW_MAX_DAYS."""
    now = now or timezone.now()
    errors: dict[str, list[str]] = {}
    latest = _latest_end(now)
    if not_before is not None and not_before > latest:
        errors["not_before"] = [f"At most {settings.STEERING_WINDOW_MAX_DAYS} days ahead."]
    if expires_at is not None:
        if expires_at <= max(now, not_before or now):
            errors["expires_at"] = ["The window must end after it starts, and in the future."]
        elif expires_at > latest:
            errors["expires_at"] = [f"At most {settings.STEERING_WINDOW_MAX_DAYS} days ahead."]
    if errors:
        raise InvalidInput(errors)


def schedule(kind: str, target: Target, *, actor: Actor, reason: str, not_before: datetime.datetime,
             expires_at: datetime.datetime | None = None, grace_seconds: int | None = None, force: bool = False,
             force_reason: str = "", expected_revision: int | None = None,
             ttl_factor: float | None = None) -> tuple[Operation, Impact]:
    """A drain, layered drain (`ttl_factor`) or maintenance that starts at `not_before`: judged
    now, started by the scheduler."""
    reason = require_reason(reason)
    check_window(not_before, expires_at)
    with transaction.atomic():
        locked = lock_for_write(target, expected_revision)
        if kind == OperationKind.LAYERED_DRAIN:
            assert isinstance(locked, (PoP, Region))
            impact = layered.preview_layered_drain(locked, ttl_factor=ttl_factor or 2.0)
        else:
            impact = actions.impact_of(locked, "drain" if kind == OperationKind.DRAIN else "maintenance")
        forced = enforce_guard(impact, force=force, force_reason=force_reason)
        op = open_operation(kind, locked, actor=actor, reason=reason, forced=forced, deadline=not_before,
                            params={"grace_seconds": grace_seconds, "force": force, "force_reason": force_reason,
                                    **({"ttl_factor": ttl_factor} if ttl_factor is not None else {}),
                                    "impact": impact.as_json()}, status=OperationStatus.SCHEDULED)
        op.not_before, op.expires_at = not_before, expires_at
        op.steps = [{"name": f"{kind} at {not_before.isoformat(timespec='seconds')}", "status": "scheduled"}]
        op.save(update_fields=["not_before", "expires_at", "steps"])
        changes = ChangeSet(actor, reason, operation_id=op.pk, forced=forced, force_reason=force_reason)
        changes.record("operation.schedule", op, before=None, after=_window(op), related=locked)
        return op, impact


def _window(op: Operation) -> dict[str, Any]:
    def iso(value: datetime.datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {"status": op.status, "not_before": iso(op.not_before), "expires_at": iso(op.expires_at)}


@transaction.atomic
def do_extend(op: Operation, *, actor: Actor, reason: str, expires_at: datetime.datetime,
              expected_revision: int | None = None) -> Operation:
    """Move a window's end (later or sooner), with a reason."""
    reason = require_reason(reason)
    locked = lock_for_write(op, expected_revision)
    if locked.kind not in WINDOW_KINDS or locked.expired_at is not None or locked.status in (
            OperationStatus.ABORTED, OperationStatus.FAILED):
        raise StateConflict(f"operation {locked.pk} has no window still open to extend.", code="no_open_window")
    check_window(locked.not_before if locked.status == OperationStatus.SCHEDULED else None, expires_at)
    before = _window(locked)
    locked.expires_at = expires_at
    locked.revision += 1
    locked.save(update_fields=["expires_at", "revision"])
    ChangeSet(actor, reason, operation_id=locked.pk).record("operation.extend", locked, before=before,
                                                           after=_window(locked))
    return locked


def sweep(now: datetime.datetime | None = None) -> dict[str, int]:
    """Start the windows due to start, end the windows due to end."""
    now = now or timezone.now()
    due = list(Operation.objects.filter(status=OperationStatus.SCHEDULED, not_before__lte=now)
               .values_list("pk", flat=True)[:100])
    ending = list(Operation.objects.filter(expired_at__isnull=True, expires_at__lte=now, kind__in=WINDOW_KINDS)
                  .exclude(status=OperationStatus.SCHEDULED).values_list("pk", flat=True)[:100])
    return {"windows_started": sum(_start(pk) for pk in due),
            "windows_ended": sum(_end(pk, now) for pk in ending)}


def _target(op: Operation) -> Target | None:
    model = Backend if op.target_type == "backend" else _SITES.get(op.target_type)
    return model._default_manager.filter(pk=op.target_id).first() if model is not None else None  # type: ignore[union-attr]


def _start(op_id: int) -> int:
    with transaction.atomic():
        op = Operation.objects.select_for_update().filter(pk=op_id, status=OperationStatus.SCHEDULED).first()
        if op is None:
            return 0
        target = _target(op)
        why = f"scheduled by {op.actor_name}: {op.reason}"
        try:
            if target is None:
                raise StateConflict(f"{op.target_repr} no longer exists.", code="gone")
            with transaction.atomic():  # a refusal rolls back this start only, not the failure we record
                force, force_reason = bool(op.params.get("force")), str(op.params.get("force_reason") or "")
                if op.kind == OperationKind.LAYERED_DRAIN:
                    assert isinstance(target, (PoP, Region))
                    layered.do_layered_drain(target, actor=SCHEDULER, reason=why,
                                             grace_seconds=op.params.get("grace_seconds"),
                                             ttl_factor=float(op.params.get("ttl_factor") or 2.0), force=force,
                                             force_reason=force_reason, expires_at=op.expires_at, operation=op)
                elif op.kind == OperationKind.DRAIN:
                    actions.do_drain(target, actor=SCHEDULER, reason=why, grace_seconds=op.params.get("grace_seconds"),
                                     force=force, force_reason=force_reason, expires_at=op.expires_at, operation=op)
                else:
                    actions.do_maintenance(target, actor=SCHEDULER, reason=why, force=force,
                                           force_reason=force_reason, expires_at=op.expires_at, operation=op)
        except ServiceError as exc:
            op.refresh_from_db()
            finish_operation(op, OperationStatus.FAILED, {"error": exc.code, "detail": exc.message,
                                                          "when": "at its scheduled start"})
            ChangeSet(SCHEDULER, f"could not start: {exc.message}").touch(op)
        return 1


def _end(op_id: int, now: datetime.datetime) -> int:
    """Return what the window still holds to service; mark the window ended either way."""
    with transaction.atomic():
        op = Operation.objects.select_for_update().filter(pk=op_id, expired_at__isnull=True).first()
        if op is None:
            return 0
        why = f"maintenance window ended (operation {op.pk}, {op.actor_name}: {op.reason})"
        changes = ChangeSet(SCHEDULER, why)
        before = _window(op)
        op.expired_at = now
        op.save(update_fields=["expired_at"])
        returned = _return_held(op, changes, why, now) if op.status not in (
            OperationStatus.ABORTED, OperationStatus.FAILED) else 0
        changes.record("operation.expire", op, before=before, after={**_window(op), "returned": returned},
                       operation_id=op.pk)
        return 1


def _return_held(op: Operation, changes: ChangeSet, why: str, now: datetime.datetime) -> int:
    held = list(Backend.objects.select_for_update().select_related("pool")
                .filter(operation=op, admin_state__in=_HELD).order_by("pk"))
    target = _target(op)
    site_held = target is not None and not isinstance(target, Backend) and target.admin_state in _HELD
    if not held and not site_held:
        return 0  # someone brought it back (or moved it on) already
    assert target is not None or held
    undrain = open_operation(OperationKind.UNDRAIN, target or held[0], actor=SCHEDULER, reason=why,
                             params={"backends_total": len(held), "window_of": op.pk})
    changes.operation_id = undrain.pk
    if op.kind == OperationKind.LAYERED_DRAIN and isinstance(target, (PoP, Region)):
        return _return_layered(op, target, undrain, changes, len(held))
    for backend in held:
        return_to_service(backend, changes, now=now, operation=undrain)
    if site_held and target is not None and not isinstance(target, Backend):
        locked = lock_for_write(target)
        set_site_state(locked, AdminState.READY, changes, operation_id=undrain.pk)
    if op.status == OperationStatus.RUNNING:  # a drain still under way is over: its window ended first
        finish_operation(op, OperationStatus.SUCCEEDED, {**(op.result or {}), "ended_by_window": undrain.pk})
    sites = isinstance(target, (PoP, Region))
    finish_when_applied(undrain, changes, {"returned_to_service": len(held), "window_of": op.pk},
                        layers_for(target or held[0], sites=sites))
    return len(held)


def _return_layered(op: Operation, site: PoP | Region, undrain: Operation, changes: ChangeSet, held: int) -> int:
    """A layered drain's window ends: every layer it took away comes back (its DNS answers, its
    announcements, its backends), and the site is ready again."""
    running = op.status == OperationStatus.RUNNING
    layered.restore_site(site, undrain, changes)
    locked = lock_for_write(site)
    if locked.admin_state != AdminState.READY:
        set_site_state(locked, AdminState.READY, changes, operation_id=undrain.pk)
    if running:  # still in a layer when its window ended: over, and saying why
        op.refresh_from_db()
        Operation.objects.filter(pk=op.pk).update(status=OperationStatus.SUCCEEDED,
                                                  result={**(op.result or {}), "ended_by_window": undrain.pk})
    finish_when_applied(undrain, changes, {"returned_to_service": held, "window_of": op.pk},
                        layers_for(site, sites=True))
    return held
