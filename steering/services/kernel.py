"""The steps every action is built from, in one leaf module (it imports no action module).

A `do_<verb>` locks what it acts on (`lock_for_write`), insists on a reason (`require_reason`),
asks the capacity guard (`enforce_guard`), changes fields together with their audit
(`set_fields`: snapshot before, set, revision + 1, save, one Change row), takes backends out
of new traffic (`start_draining`, with `suggest_grace`) or brings them back
(`return_to_service`). A preview (dry run, impact) reads with `read_current` instead: no row
lock, nothing written.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from django.conf import settings
from django.db import models
from django.db.models import F

from steering import capacity
from steering.choices import AdminState
from steering.dataplane.stats import read_backend_stats
from steering.models import Backend, Change, Operation, Pool, PoP, Region
from steering.models.base import TrackedModel
from steering.services.audit import ChangeSet, object_type, snapshot
from steering.services.errors import CapacityGuardRefused, InvalidInput, SafetyRuleRefused, StaleWrite
from steering.services.guard import Impact

# Any row with a `revision` (every TrackedModel, and Operation): what If-Match compares.
Revisioned = TypeVar("Revisioned", bound=models.Model)
Site = Pool | PoP | Region

DRAIN_BUFFER_SECONDS = 15


def check_revision(obj: models.Model, expected_revision: int | None) -> None:
    """If-Match: refuse a write based on a revision the row has moved past."""
    revision = getattr(obj, "revision", None)
    if expected_revision is not None and revision != expected_revision:
        raise StaleWrite(
            f"{object_type(obj)} {obj.pk} changed since you read it (revision {revision}).",
            extra={"current_etag": getattr(obj, "etag", None)},
        )


def lock_for_write(obj: Revisioned, expected_revision: int | None = None) -> Revisioned:
    """The row as it is now, locked until the transaction ends (checked against If-Match)."""
    model: type[Revisioned] = type(obj)
    locked = model._default_manager.select_for_update().get(pk=obj.pk)
    check_revision(locked, expected_revision)
    return locked


def read_current(obj: Revisioned, expected_revision: int | None = None) -> Revisioned:
    """The row as it is now, for a preview: no lock, so a dry run never holds up a writer."""
    model: type[Revisioned] = type(obj)
    current = model._default_manager.get(pk=obj.pk)
    check_revision(current, expected_revision)
    return current


def require_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput({"reason": ["Say why: the reason goes into the audit log."]})
    return reason


def enforce_guard(impact: Impact, *, force: bool, force_reason: str) -> bool:
    """Refuse what the capacity guard judged unsafe, or what breaks a safety rule, unless forced
    with its own reason. A broken rule is named first: it is the operator's own assertion.

    Returns whether the action goes ahead past the guard (the operation is then `forced`)."""
    if impact.safe:
        return False
    if not force:
        raise SafetyRuleRefused(impact) if impact.safety_rules else CapacityGuardRefused(impact)
    if not force_reason.strip():
        raise InvalidInput({"force_reason": ["Forcing past the capacity guard needs its own reason."]})
    return True


def set_fields(obj: TrackedModel, values: Mapping[str, Any], changes: ChangeSet, action: str, *,
               related: TrackedModel | None = None, reason: str | None = None,
               operation_id: int | None = None) -> Change:
    """Change these fields of a locked row and audit it: one Change with the row before and after."""
    before = snapshot(obj)
    for name, value in values.items():
        setattr(obj, name, value)
    obj.revision += 1
    obj.save(update_fields=[*values, "revision", "updated_at"])
    return changes.record(action, obj, before=before, after=snapshot(obj), related=related, reason=reason,
                          operation_id=operation_id)


_STATE_VERBS = {AdminState.DRAINING: "drain", AdminState.DRAINED: "drained", AdminState.READY: "undrain",
                AdminState.MAINT: "maintenance"}


def state_verb(state: str) -> str:
    """How the audit names a move to `state`: the backend's verbs for every target (`pop.drain`,
    `pool.drained`, `region.undrain`, `pop.maintenance`; steering.choices.ChangeAction)."""
    return _STATE_VERBS[AdminState(state)]


def set_site_state(site: Site, state: str, changes: ChangeSet, *, operation_id: int | None = None) -> None:
    set_fields(site, {"admin_state": state}, changes, f"{object_type(site)}.{state_verb(state)}",
               operation_id=operation_id)


def start_draining(backend: Backend, operation: Operation, changes: ChangeSet, *, now: datetime.datetime,
                   deadline: datetime.datetime) -> bool:
    """Ready -> draining until `deadline`, audited. False when the backend was no longer ready."""
    before = snapshot(backend)
    # Compare-and-set: only a backend still ready moves (an operator may have acted on it meanwhile).
    moved = Backend.objects.filter(pk=backend.pk, admin_state=AdminState.READY).update(
        admin_state=AdminState.DRAINING, drain_started_at=now, drain_deadline=deadline,
        drain_version=changes.version, operation=operation, revision=F("revision") + 1, updated_at=now,
    )
    if moved != 1:
        return False
    backend.refresh_from_db()
    changes.record("backend.drain", backend, before=before, after=snapshot(backend), related=backend.pool)
    return True


def return_to_service(backend: Backend, changes: ChangeSet, *, now: datetime.datetime,
                      operation: Operation | None = None) -> None:
    """Back to ready (from draining, drained or maintenance), slow start from now, audited."""
    values: dict[str, Any] = {"admin_state": AdminState.READY, "drain_deadline": None, "drain_started_at": None,
                              "ready_since": now}
    if operation is not None:
        values["operation"] = operation
    set_fields(backend, values, changes, "backend.undrain", related=backend.pool)


def _default_grace(target: TrackedModel) -> tuple[int, str]:
    if isinstance(target, Backend):
        return target.pool.default_grace_seconds, f"pool {target.pool} default"
    if isinstance(target, Pool):
        return target.default_grace_seconds, f"pool {target} default"
    return settings.STEERING_DEFAULT_GRACE_SECONDS, "site default"


def suggest_grace(target: TrackedModel, backends: Iterable[Backend]) -> dict[str, Any]:
    """The grace a drain should get: from live session figures where the data plane reports
    them (sessions / completion rate + buffer, the longest backend wins), else the default."""
    backends = list(backends)
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
