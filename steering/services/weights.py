"""Weights: set at once, or ramped in steps (a canary 0 -> 5 -> 25 -> 100) as an Operation.

A ramp applies its first step now and each next step when its deadline comes (the 1 s
sweeper); it pauses itself, and records why, when the backend's health degrades or the next
step would pass the capacity guard; it can be resumed or aborted (abort restores the weight
it started from).
"""

from __future__ import annotations

import datetime
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from steering.choices import AdminState, Health, OperationKind, OperationStatus
from steering.models import Backend, Operation
from steering.services import guard, notifications
from steering.services.audit import ChangeSet
from steering.services.confirmations import awaiting, finish_when_applied, layers_for
from steering.services.context import Actor
from steering.services.errors import InvalidInput, StateConflict
from steering.services.impact import Impact, WeightPlan
from steering.services.kernel import enforce_guard, lock_for_write, read_current, require_reason, set_fields
from steering.services.operation_lifecycle import SWEEPER, open_operation

MAX_STEPS = 20


def plan_ramp(start: int, target: int, *, ramp_seconds: int = 0, steps: list[int] | None = None,
              step_seconds: int | None = None) -> tuple[list[int], int]:
    """The weights to pass through (ending at `target`) and the seconds between them."""
    if steps:
        plan = [int(w) for w in steps]
        if plan[-1] != target:
            plan.append(target)
        if len(plan) > MAX_STEPS:
            raise InvalidInput({"steps": [f"At most {MAX_STEPS} steps."]})
        if any(not 0 <= w <= 256 for w in plan):
            raise InvalidInput({"steps": ["Each step is a weight between 0 and 256."]})
        interval = step_seconds or (max(1, ramp_seconds // len(plan)) if ramp_seconds else 0)
        if interval <= 0:
            raise InvalidInput({"step_seconds": ["Give step_seconds (or ramp_seconds) for a stepped ramp."]})
        return plan, interval
    count = max(1, min(10, ramp_seconds))
    plan = [round(start + (target - start) * i / count) for i in range(1, count + 1)]
    return plan, max(1, ramp_seconds // count)


def weight_impact(backend: Backend, new_weight: int, *, plan: WeightPlan | None = None) -> Impact:
    """A weight change as a partial removal: the share it loses moves to its pool mates (or
    the share it gains comes from them), judged against each backend's capacity."""
    return guard.assess_weight(backend, new_weight, plan=plan)


def _apply_weight(backend: Backend, weight: int, changes: ChangeSet) -> None:
    set_fields(backend, {"weight": weight}, changes, "backend.weight", related=backend.pool)


def _steps_view(plan: list[int], done: int, status: str = "next") -> list[dict[str, Any]]:
    view = []
    for i, w in enumerate(plan):
        state = "done" if i < done else (status if i == done else "pending")
        view.append({"name": f"weight {w}", "weight": w, "status": state})
    return view


def _check_weight(backend: Backend, weight: int, steps: list[int] | None) -> None:
    if backend.weight == weight and not steps:
        raise StateConflict(f"{backend.path} already has weight {weight}.", code="unchanged")


def _plan_and_impact(backend: Backend, weight: int, ramp_seconds: int, steps: list[int] | None,
                     step_seconds: int | None) -> tuple[list[int], int, Impact]:
    ramping = bool(steps) or ramp_seconds > 0
    plan, interval = plan_ramp(backend.weight, weight, ramp_seconds=ramp_seconds, steps=steps,
                               step_seconds=step_seconds) if ramping else ([weight], 0)
    return plan, interval, weight_impact(backend, weight, plan=WeightPlan(steps=plan, step_seconds=interval))


def _check_weight_range(weight: int) -> None:
    if not 0 <= int(weight) <= 256:
        raise InvalidInput({"weight": ["Weight must be between 0 and 256."]})


def preview_weight(backend: Backend, *, weight: int, ramp_seconds: int = 0, steps: list[int] | None = None,
                   step_seconds: int | None = None, expected_revision: int | None = None) -> Impact:
    """A weight change's dry run: its impact and plan, read without locks."""
    _check_weight_range(weight)
    current = read_current(backend, expected_revision)
    _check_weight(current, weight, steps)
    return _plan_and_impact(current, weight, ramp_seconds, steps, step_seconds)[2]


def do_set_weight(
    backend: Backend,
    *,
    actor: Actor,
    reason: str,
    weight: int,
    ramp_seconds: int = 0,
    steps: list[int] | None = None,
    step_seconds: int | None = None,
    force: bool = False,
    force_reason: str = "",
    dry_run: bool = False,
    expected_revision: int | None = None,
) -> tuple[Operation | None, Impact]:
    """Set a backend's configured weight (0-256), at once or as a ramp."""
    reason = require_reason(reason)
    if dry_run:
        return None, preview_weight(backend, weight=weight, ramp_seconds=ramp_seconds, steps=steps,
                                    step_seconds=step_seconds, expected_revision=expected_revision)
    _check_weight_range(weight)
    with transaction.atomic():
        locked = lock_for_write(backend, expected_revision)
        _check_weight(locked, weight, steps)
        plan, interval, impact = _plan_and_impact(locked, weight, ramp_seconds, steps, step_seconds)
        forced = enforce_guard(impact, force=force, force_reason=force_reason)
        if steps or ramp_seconds > 0:
            _refuse_a_second_ramp(locked)
        now = timezone.now()
        op = open_operation(
            OperationKind.WEIGHT, locked, actor=actor, reason=reason, forced=forced,
            params={"from": locked.weight, "to": weight, "plan": plan, "step_seconds": interval, "done": 1,
                    "force_reason": force_reason, "impact": impact.as_json()},
            deadline=now + datetime.timedelta(seconds=interval) if len(plan) > 1 else None,
        )
        changes = ChangeSet(actor, reason, operation_id=op.pk, forced=op.forced, force_reason=force_reason)
        _apply_weight(locked, plan[0], changes)
        op.steps = _steps_view(plan, 1)
        if len(plan) == 1:
            op.save(update_fields=["steps"])
            finish_when_applied(op, changes, {"weight": weight}, layers_for(locked))
        else:
            op.progress = {"step": 1, "steps": len(plan), "weight": plan[0], "percent": int(100 / len(plan))}
            op.save(update_fields=["steps", "progress"])
            changes.touch(op)
        return op, impact


def _refuse_a_second_ramp(backend: Backend) -> None:
    if Operation.objects.filter(kind=OperationKind.WEIGHT, target_type="backend", target_id=backend.pk,
                                status__in=[OperationStatus.RUNNING, OperationStatus.PAUSED]).exclude(awaiting()).exists():
        raise StateConflict(f"{backend.path} already has a weight ramp; abort it first.", code="ramp_in_progress")


def _pause(op: Operation, why: str, changes: ChangeSet) -> None:
    # Compare-and-set: only a running ramp pauses; a concurrent abort wins cleanly.
    if Operation.objects.filter(pk=op.pk, status=OperationStatus.RUNNING).update(
        status=OperationStatus.PAUSED, result={"paused_because": why}, revision=F("revision") + 1
    ):
        op.refresh_from_db()
        op.steps = _steps_view(op.params["plan"], op.params["done"], status="paused")
        op.save(update_fields=["steps"])
        notifications.operation_changed(op)
        changes.record("operation.pause", op, before={"status": "running"},
                       after={"status": "paused", "result": op.result}, reason=why)


def _health_problem(backend: Backend) -> str | None:
    if backend.admin_state != AdminState.READY:
        return f"backend is {backend.admin_state}"
    if backend.health == Health.DOWN:
        return "backend health went down"
    return None


def advance_ramp(op_id: int, now: datetime.datetime | None = None) -> str:
    """One sweeper visit to a running ramp: pause it, apply its next step, or leave it."""
    now = now or timezone.now()
    with transaction.atomic():
        op = Operation.objects.select_for_update().filter(pk=op_id, status=OperationStatus.RUNNING).first()
        if op is None:
            return "gone"
        backend = Backend.objects.select_for_update().select_related("pool").get(pk=op.target_id)
        problem = _health_problem(backend)
        if problem:
            _pause(op, problem, ChangeSet(SWEEPER, problem, operation_id=op.pk))
            return "paused"
        if op.deadline is None or op.deadline > now:
            return "waiting"
        plan, done = op.params["plan"], int(op.params["done"])
        next_weight = plan[done]
        impact = weight_impact(backend, next_weight)
        if not impact.safe and not op.forced:
            _pause(op, f"next step (weight {next_weight}) would pass the capacity guard: {impact.explain}",
                   ChangeSet(SWEEPER, "capacity guard", operation_id=op.pk))
            return "paused"
        why = f"ramp step {done + 1}/{len(plan)} of operation {op.pk} ({op.actor_name}: {op.reason})"
        changes = ChangeSet(SWEEPER, why, operation_id=op.pk)
        _apply_weight(backend, next_weight, changes)
        done += 1
        op.params = {**op.params, "done": done}
        op.steps = _steps_view(plan, done)
        op.progress = {"step": done, "steps": len(plan), "weight": next_weight, "percent": int(100 * done / len(plan))}
        last = done >= len(plan)
        op.deadline = None if last else now + datetime.timedelta(seconds=int(op.params["step_seconds"]))
        op.revision += 1
        op.save(update_fields=["params", "steps", "progress", "deadline", "revision"])
        if last:
            finish_when_applied(op, changes, {"weight": next_weight}, layers_for(backend))
        else:
            changes.touch(op)
        return "stepped"


def advance_ramps(now: datetime.datetime | None = None) -> int:
    """Visit every running ramp (health is checked every sweep, steps when due)."""
    ids = list(Operation.objects.filter(kind=OperationKind.WEIGHT, status=OperationStatus.RUNNING,
                                        deadline__isnull=False).values_list("pk", flat=True))
    return sum(1 for pk in ids if advance_ramp(pk, now) in ("stepped", "paused"))


@transaction.atomic
def do_resume_operation(op: Operation, *, actor: Actor, reason: str, expected_revision: int | None = None) -> Operation:
    reason = require_reason(reason)
    locked = lock_for_write(op, expected_revision)
    if locked.status != OperationStatus.PAUSED:
        raise StateConflict(f"operation {locked.pk} is {locked.status}, not paused.", code="not_paused")
    backend = Backend.objects.select_for_update().get(pk=locked.target_id)
    problem = _health_problem(backend)
    if problem:
        raise StateConflict(f"cannot resume: {problem}.", code="unhealthy")
    locked.status = OperationStatus.RUNNING
    locked.deadline = timezone.now()  # the next step is due now
    locked.result = {}
    locked.steps = _steps_view(locked.params["plan"], int(locked.params["done"]))
    locked.revision += 1
    locked.save(update_fields=["status", "deadline", "result", "steps", "revision"])
    ChangeSet(actor, reason, operation_id=locked.pk).record(
        "operation.resume", locked, before={"status": "paused"}, after={"status": "running"})
    return locked


def roll_back(op: Operation, changes: ChangeSet) -> int:
    """Abort of a ramp: the backend returns to the weight it started from. Returns 0: no backend
    changes its admin state."""
    backend = Backend.objects.select_for_update().select_related("pool").get(pk=op.target_id)
    start = int(op.params.get("from", backend.weight))
    if backend.weight != start:
        _apply_weight(backend, start, changes)
    return 0
