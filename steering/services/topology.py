"""Create, update and delete topology objects, audited."""

from __future__ import annotations

from typing import Any, TypeVar

from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.db.models import ProtectedError

from steering.models import Backend, Pool, PoP, Region
from steering.services.allowlist import allowlist_error
from steering.services.audit import ChangeSet, object_type, snapshot
from steering.services.context import Actor
from steering.services.errors import InUse, InvalidInput, StateConflict
from steering.services.kernel import lock_for_write

M = TypeVar("M", bound=models.Model)

# Fields only the state actions may change (drain, weight, health...), never a plain edit.
STATE_FIELDS: dict[type[models.Model], frozenset[str]] = {
    Backend: frozenset({"admin_state", "health", "health_changed_at", "drain_started_at", "drain_deadline", "ready_since", "operation"}),
    Pool: frozenset({"in_panic", "admin_state"}),
    PoP: frozenset({"admin_state", "announce"}),
    Region: frozenset({"admin_state"}),
}


def _validation_errors(exc: ValidationError) -> dict[str, list[str]]:
    if hasattr(exc, "error_dict"):
        return {
            ("non_field_errors" if field == "__all__" else field): [str(m) for e in errs for m in e.messages]
            for field, errs in exc.error_dict.items()
        }
    return {"non_field_errors": [str(m) for m in exc.messages]}


def _cross_checks(obj: models.Model) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    if isinstance(obj, Backend):
        why = allowlist_error(obj.address) if obj.address else None
        if why:
            errors["address"] = [why]
    if isinstance(obj, Pool):
        if obj.backup_pool_id is not None:
            if obj.pk is not None and obj.backup_pool_id == obj.pk:
                errors["backup_pool"] = ["A pool cannot be its own backup."]
            elif obj.backup_pool and obj.backup_pool.pop_id != obj.pop_id:
                errors["backup_pool"] = ["The backup pool must be in the same PoP."]
            elif obj.backup_pool and obj.backup_pool.service_id != obj.service_id:
                errors["backup_pool"] = ["The backup pool must serve the same service."]
        if obj.pk is not None:
            # The same rule seen from the backup's side: moving it must not break the pools it backs.
            primaries = Pool.objects.filter(backup_pool=obj.pk).exclude(pop_id=obj.pop_id, service_id=obj.service_id)
            names = sorted(str(p) for p in primaries.select_related("pop")[:10])
            if names:
                errors["pop"] = [f"{', '.join(names)} use this pool as backup; it must stay in their PoP and service."]
        if obj.mode == "l4" and (obj.match_path_prefix or obj.match_host):
            errors["mode"] = ["An L4 pool cannot match on Host or path; use L7."]
    return errors


def _validate(obj: models.Model) -> None:
    errors: dict[str, list[str]] = {}
    try:
        obj.full_clean()
    except ValidationError as exc:
        errors.update(_validation_errors(exc))
    for field, msgs in _cross_checks(obj).items():
        errors.setdefault(field, []).extend(msgs)
    if errors:
        raise InvalidInput(errors)


def _related(obj: models.Model) -> models.Model | None:
    for attr in ("pool", "pop", "region", "service"):
        if hasattr(obj, f"{attr}_id") and getattr(obj, f"{attr}_id", None):
            return getattr(obj, attr)  # type: ignore[no-any-return]
    return None


@transaction.atomic
def do_create(model: type[M], data: dict[str, Any], *, actor: Actor, reason: str = "",
              operation_id: int | None = None) -> M:
    obj = model(**data)
    _validate(obj)
    try:
        with transaction.atomic():
            obj.save()
    except IntegrityError as exc:
        raise InvalidInput({"non_field_errors": [f"Conflicts with an existing object: {exc}"]}) from exc
    changes = ChangeSet(actor, reason, operation_id=operation_id)  # an operation's when it is one's part
    changes.record(f"{object_type(obj)}.create", obj, before=None, after=snapshot(obj), related=_related(obj))
    return obj


@transaction.atomic
def do_update(
    obj: M, data: dict[str, Any], *, actor: Actor, reason: str = "", expected_revision: int | None = None,
    operation_id: int | None = None,
) -> M:
    model = type(obj)
    # If-Match is compared under the row lock, so a concurrent write cannot slip in between.
    locked = lock_for_write(obj, expected_revision)
    forbidden = set(data) & STATE_FIELDS.get(model, frozenset())
    if forbidden:
        raise InvalidInput({f: ["Changed only by its action (drain, undrain, maintenance, weight...)."] for f in forbidden})
    before = snapshot(locked)
    for field, value in data.items():
        setattr(locked, field, value)
    if snapshot(locked) == before:
        return locked  # nothing to change, nothing to audit
    _validate(locked)
    locked.revision += 1  # type: ignore[attr-defined]
    try:
        with transaction.atomic():
            locked.save()
    except IntegrityError as exc:
        raise InvalidInput({"non_field_errors": [f"Conflicts with an existing object: {exc}"]}) from exc
    changes = ChangeSet(actor, reason, operation_id=operation_id)  # an operation's when it is one's part
    changes.record(f"{object_type(locked)}.update", locked, before=before, after=snapshot(locked), related=_related(locked))
    return locked


@transaction.atomic
def do_delete(obj: models.Model, *, actor: Actor, reason: str = "", expected_revision: int | None = None,
              operation_id: int | None = None) -> None:
    locked = lock_for_write(obj, expected_revision)
    _refuse_delete_while_acting(locked)
    before = snapshot(locked)
    related = _related(locked)
    pk = locked.pk
    try:
        with transaction.atomic():
            locked.delete()
    except ProtectedError as exc:
        users = sorted({f"{object_type(o)} {o}" for o in exc.protected_objects})[:10]
        raise _in_use(locked, users) from exc
    locked.pk = pk  # Change needs the id of what was deleted
    changes = ChangeSet(actor, reason, operation_id=operation_id)  # an operation's when it is one's part
    changes.record(f"{object_type(locked)}.delete", locked, before=before, after=None, related=related)


def _refuse_delete_while_acting(obj: models.Model) -> None:
    """A backend a drain or weight ramp is acting on is not deleted under it: the operation would
    never finish (and the audit would lose what it did)."""
    if not isinstance(obj, Backend):
        return
    from steering.choices import AdminState, OperationStatus
    from steering.models import Operation
    from steering.services.confirmations import awaiting

    # An operation only awaiting the data planes' acknowledgement has done its work: it holds nothing up.
    running = Operation.objects.filter(status__in=[OperationStatus.RUNNING, OperationStatus.PAUSED]).filter(
        models.Q(backends=obj) | models.Q(target_type="backend", target_id=obj.pk)).exclude(
        awaiting()).values_list("pk", flat=True)
    if obj.admin_state == AdminState.DRAINING or running:
        raise StateConflict(
            f"{obj} has a running operation ({', '.join(map(str, running)) or 'drain'}); abort it or let it finish "
            "before deleting the backend.", code="operation_running")


def _in_use(obj: models.Model, users: list[str]) -> InUse:
    return InUse(
        f"{object_type(obj)} {obj} is still used by: {', '.join(users)}. Remove or move those first.",
        extra={"used_by": users},
    )
