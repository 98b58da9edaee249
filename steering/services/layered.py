"""Layered drain of a PoP or a region: one Operation, in the order traffic leaves.

1. DNS: stop answering with the VIPs that would still send resolvers here, then wait out the
   TTL times a safety factor (caches keep old answers, some past their TTL), watching the
   traffic that still arrives;
2. anycast: withdraw the PoPs' announcements, so packets land at the next nearest PoP;
3. local: drain every backend under it (grace suggested from live sessions where known);
4. done: the PoP or region is drained. Aborted at any step, everything it did is rolled back.

Steps advance from the sweeper, by deadline, like every other timer. With confirmation on
(STEERING_DATAPLANE_CONFIRM) a layer counts as done only when its data plane acknowledged it: the
TTL wait starts when the GSLB server applied the DNS change (caches start expiring then, not at
the click), and the drain finishes only when every withdrawn PoP's ExaBGP agent applied the
withdrawal (the local layer is confirmed per backend, steering.services.operations). A layer not
acknowledged within STEERING_DATAPLANE_ACK_TIMEOUT_SECONDS is noted and the drain ends
`unconfirmed`, with the words why.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import replace
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from steering import whatif
from steering.choices import AdminState, AnnounceState, OperationKind, OperationStatus
from steering.dataplane.stats import read_backend_stats
from steering.models import VIP, Backend, Operation, Pool, PoP, Region
from steering.services import guard
from steering.services.actions import _lock_target, _require_reason, suggest_grace
from steering.services.anycast import _set_announce
from steering.services.audit import ChangeSet, snapshot
from steering.services.context import Actor
from steering.services.errors import CapacityGuardRefused, InvalidInput, StateConflict
from steering.services.operations import drain_progress, open_operation, return_to_service

SWEEPER = Actor.system("sweeper")
STEPS = ("dns", "wait", "anycast", "local", "done")
Site = PoP | Region


def _pops_of(target: Site) -> list[PoP]:
    return [target] if isinstance(target, PoP) else list(PoP.objects.filter(region=target))


def _vips_to_disable(target: Site, pops: list[PoP]) -> list[VIP]:
    """A region's VIPs; for a PoP, a service's regional VIP only when no other PoP of the
    region still serves that service (otherwise the VIP keeps answering for them)."""
    if isinstance(target, Region):
        return list(VIP.objects.filter(region=target, enabled=True).select_related("service"))
    leaving = {p.pk for p in pops}
    vips = []
    for service_id in set(Pool.objects.filter(pop__in=pops).values_list("service_id", flat=True)):
        others = Pool.objects.filter(service_id=service_id, pop__region_id=target.region_id,
                                     pop__admin_state=AdminState.READY).exclude(pop_id__in=leaving)
        if not others.exists():
            vips += list(VIP.objects.filter(service_id=service_id, region_id=target.region_id, enabled=True)
                         .select_related("service"))
    return vips


def layered_impact(target: Site) -> dict[str, Any]:
    """The end state's what-if: the site gone from DNS and anycast, its backends drained."""
    pops = _pops_of(target)
    fleet, bases = guard.build_fleet(Pool.objects.select_related("pop"))
    leaving = {p.pk for p in pops}
    fleet = replace(fleet, pops=tuple(replace(p, announcing=False) if p.id in leaving else p for p in fleet.pops))
    kind = "pop" if isinstance(target, PoP) else "region"
    result = whatif.assess(fleet, whatif.Action("drain", kind, target.pk))
    backends = Backend.objects.filter(pool__pop__in=pops, admin_state=AdminState.READY).count()
    return guard.report(target, "layered_drain", result, bases, backends)


def _step_view(current: int, statuses: dict[str, str] | None = None) -> list[dict[str, Any]]:
    statuses = statuses or {}
    view = []
    for i, name in enumerate(STEPS):
        state = statuses.get(name) or ("done" if i < current else "running" if i == current else "pending")
        view.append({"name": name, "status": state})
    return view


def _set_vip(vip: VIP, enabled: bool, changes: ChangeSet) -> None:
    before = snapshot(vip)
    vip.enabled = enabled
    vip.revision += 1
    vip.save(update_fields=["enabled", "revision", "updated_at"])
    changes.record("vip.enable" if enabled else "vip.disable", vip, before=before, after=snapshot(vip),
                   related=vip.region)


def _set_site_state(target: Site, state: str, changes: ChangeSet, verb: str) -> None:
    before = snapshot(target)
    target.admin_state = state
    target.revision += 1
    target.save(update_fields=["admin_state", "revision", "updated_at"])
    changes.record(f"{target._meta.model_name}.{verb}", target, before=before, after=snapshot(target))


@transaction.atomic
def do_layered_drain(
    target: Site, *, actor: Actor, reason: str, grace_seconds: int | None = None, ttl_factor: float = 2.0,
    force: bool = False, force_reason: str = "", dry_run: bool = False, expected_revision: int | None = None,
) -> tuple[Operation | None, dict[str, Any]]:
    reason = _require_reason(reason)
    if not 1.0 <= ttl_factor <= 10.0:
        raise InvalidInput({"ttl_factor": ["Between 1 and 10: caches keep answers at least one TTL."]})
    locked = _lock_target(target, expected_revision)
    assert isinstance(locked, (PoP, Region))
    pops = _pops_of(locked)
    vips = _vips_to_disable(locked, pops)
    ttl = max((v.service.ttl for v in vips), default=0)
    wait = math.ceil(ttl * ttl_factor)
    announcing = [p for p in pops if p.announce == AnnounceState.ANNOUNCE]
    impact = {**layered_impact(locked), "plan": {
        "dns": [f"{v.service.slug} {v.address} ({v.region})" for v in vips], "wait_seconds": wait,
        "ttl_seconds": ttl, "ttl_factor": ttl_factor, "withdraw": [p.slug for p in announcing]}}
    if dry_run:
        return None, impact
    if locked.admin_state != AdminState.READY:
        raise StateConflict(f"{locked} is {locked.admin_state}; undrain it first.", code="state_conflict")
    if not impact["safe"] and not force:
        raise CapacityGuardRefused(impact["explain"], extra={"impact": impact})
    if not impact["safe"] and not force_reason.strip():
        raise InvalidInput({"force_reason": ["Forcing past the capacity guard needs its own reason."]})
    now = timezone.now()
    op = open_operation(
        OperationKind.LAYERED_DRAIN, locked, actor=actor, reason=reason, forced=not impact["safe"],
        params={"vips": [v.pk for v in vips], "pops": [p.pk for p in announcing], "wait_seconds": wait,
                "grace_seconds": grace_seconds, "step": 1, "impact": impact, "force_reason": force_reason,
                "backends_total": 0},
        deadline=now + datetime.timedelta(seconds=wait),
    )
    changes = ChangeSet(actor, reason, operation_id=op.pk, forced=op.forced, force_reason=force_reason)
    op.params = {**op.params, "dns_version": changes.version}
    _set_site_state(locked, AdminState.DRAINING, changes, "draining")
    for vip in vips:
        _set_vip(vip, False, changes)
    op.steps = _step_view(1, {"dns": "done" if vips else "skipped"})
    op.progress = {"step": "wait", "seconds_left": wait, "percent": 10}
    op.save(update_fields=["params", "steps", "progress"])
    changes.touch(op)
    return op, impact


def _arriving_rps(op: Operation) -> float | None:
    """Traffic still arriving at the site while DNS caches expire (None without live figures)."""
    pops = [op.target_id] if op.target_type == "pop" else list(PoP.objects.filter(region_id=op.target_id).values_list("pk", flat=True))
    ids = list(Backend.objects.filter(pool__pop_id__in=pops).values_list("pk", flat=True))
    stats = read_backend_stats(ids)
    return round(sum(s.session_rate for s in stats.values()), 1) if stats else None


def advance_layered(op_id: int, now: datetime.datetime | None = None) -> str:
    now = now or timezone.now()
    with transaction.atomic():
        op = Operation.objects.select_for_update().filter(pk=op_id, status=OperationStatus.RUNNING,
                                                           kind=OperationKind.LAYERED_DRAIN).first()
        if op is not None and op.params.get("step") == 3 and op.progress.get("step") == "anycast":
            # Local drains are done; the finish waits for ExaBGP to confirm the withdrawal.
            if _anycast_unconfirmed(op, now) is None:
                return "waiting"
            changes = ChangeSet(SWEEPER, f"layered drain {op.pk} ({op.actor_name}: {op.reason})", operation_id=op.pk)
            finish_layered(op, changes)
            return "stepped"
        if op is None or op.params.get("step") != 1:
            return "gone"
        if op.params.get("vips") and not op.params.get("dns_confirmed") and _wait_for_dns(op, now):
            return "waiting"
        if op.deadline and op.deadline > now:
            arriving = _arriving_rps(op)
            if arriving is not None and op.progress.get("arriving_rps") != arriving:
                Operation.objects.filter(pk=op.pk).update(progress={**op.progress, "arriving_rps": arriving})
            return "waiting"
        changes = ChangeSet(SWEEPER, f"layered drain {op.pk} ({op.actor_name}: {op.reason})", operation_id=op.pk)
        for pop in PoP.objects.select_for_update().filter(pk__in=op.params["pops"], announce=AnnounceState.ANNOUNCE):
            _set_announce(pop, AnnounceState.WITHDRAW, changes)
        site = (PoP if op.target_type == "pop" else Region).objects.get(pk=op.target_id)
        backends = list(Backend.objects.select_for_update().select_related("pool")
                        .filter(pool__pop__in=_pops_of(site), admin_state=AdminState.READY).order_by("pk"))
        grace = op.params.get("grace_seconds")
        seconds = int(grace) if grace is not None else int(suggest_grace(site, backends)["seconds"])
        deadline = now + datetime.timedelta(seconds=seconds)
        for backend in backends:
            before = snapshot(backend)
            # CAS: only a backend still ready moves (an operator may have acted on it meanwhile).
            if Backend.objects.filter(pk=backend.pk, admin_state=AdminState.READY).update(
                admin_state=AdminState.DRAINING, drain_started_at=now, drain_deadline=deadline, operation=op,
                drain_version=changes.version, revision=F("revision") + 1, updated_at=now,
            ):
                backend.refresh_from_db()
                changes.record("backend.drain", backend, before=before, after=snapshot(backend), related=backend.pool)
        op.params = {**op.params, "step": 3, "backends_total": len(backends), "local_grace_seconds": seconds,
                     "anycast_version": changes.version, "anycast_at": now.timestamp()}
        op.deadline = deadline
        op.steps = _step_view(3, {"dns": op.steps[0]["status"], "anycast": "done" if op.params["pops"] else "skipped"})
        op.progress = {**drain_progress(op), "step": "local"}
        op.revision += 1
        op.save(update_fields=["params", "deadline", "steps", "progress", "revision"])
        changes.touch(op)
        if not backends:
            finish_layered(op, changes)
        return "stepped"


def _confirm_timeout() -> datetime.timedelta:
    return datetime.timedelta(seconds=settings.STEERING_DATAPLANE_ACK_TIMEOUT_SECONDS)


def _note(op: Operation, note: str) -> None:
    notes = list(op.progress.get("unconfirmed", []))
    if note not in notes:
        op.progress = {**op.progress, "unconfirmed": [*notes, note]}


def _wait_for_dns(op: Operation, now: datetime.datetime) -> bool:
    """True while the TTL wait must not start: the GSLB server has not applied the DNS change
    yet (and the ack timeout has not passed). Moves the deadline to confirmation + the wait."""
    from steering.choices import DataplaneLayer
    from steering.dataplane.status import layer_status

    if not settings.STEERING_DATAPLANE_CONFIRM:
        return False
    status = layer_status(DataplaneLayer.DNS, None, now.timestamp())
    version = int(op.params.get("dns_version") or 0)
    wait = datetime.timedelta(seconds=int(op.params.get("wait_seconds") or 0))
    if status.applied_version is not None and status.applied_version >= version:
        op.params = {**op.params, "dns_confirmed": True}
        op.deadline = now + wait  # caches start expiring once the answers changed
        op.steps = [{**s, "status": "done"} if s["name"] == "dns" else s for s in op.steps]
        op.progress = {**op.progress, "dns": f"{status.detail}"}
        op.save(update_fields=["params", "deadline", "steps", "progress"])
        return True
    if now - op.created_at < _confirm_timeout():
        words = f"waiting for the GSLB server to apply version {version}: {status.detail}"
        if op.progress.get("dns") != words:  # written when the words change, not every sweep
            op.progress = {**op.progress, "dns": words}
            op.save(update_fields=["progress"])
        return True
    _note(op, f"DNS: the GSLB server has not applied version {version} ({status.detail})")
    op.params = {**op.params, "dns_confirmed": False}
    op.steps = [{**s, "status": "unconfirmed"} if s["name"] == "dns" else s for s in op.steps]
    op.save(update_fields=["params", "steps", "progress"])
    return False


def _anycast_unconfirmed(op: Operation, now: datetime.datetime) -> list[str] | None:
    """The withdrawn PoPs whose ExaBGP has not applied the withdrawal; None while it may still."""
    from steering.choices import DataplaneLayer
    from steering.dataplane.status import confirmed_versions, layer_status

    pops = list(op.params.get("pops") or [])
    if not settings.STEERING_DATAPLANE_CONFIRM or not pops:
        return []
    version = int(op.params.get("anycast_version") or 0)
    confirmed = confirmed_versions(DataplaneLayer.ANYCAST, set(pops), now.timestamp())
    missing = [pk for pk in pops if confirmed.get(pk, -1) < version]
    if not missing:
        return []
    started = datetime.datetime.fromtimestamp(float(op.params.get("anycast_at") or now.timestamp()), tz=datetime.UTC)
    if now - started < _confirm_timeout():
        return None
    return [f"anycast: {layer_status(DataplaneLayer.ANYCAST, pop, now.timestamp()).detail}"
            for pop in PoP.objects.filter(pk__in=missing).order_by("slug")]


def finish_layered(op: Operation, changes: ChangeSet) -> None:
    """All local drains done: the site is drained, once anycast confirmed (or timed out)."""
    from steering.services.operations import _finish, _set_target_state

    anycast_notes = _anycast_unconfirmed(op, timezone.now())
    if anycast_notes is None:  # an ExaBGP agent may still apply the withdrawal: the next sweep looks again
        op.progress = {**op.progress, "step": "anycast", "anycast": "waiting for ExaBGP to apply the withdrawal"}
        op.save(update_fields=["progress"])
        changes.touch(op)
        return
    for note in anycast_notes:
        _note(op, note)
    anycast_step = op.steps[2]["status"] if not anycast_notes else "unconfirmed"
    local_unconfirmed = any("HAProxy" in n for n in op.progress.get("unconfirmed", []))
    op.steps = _step_view(len(STEPS), {"dns": op.steps[0]["status"], "anycast": anycast_step,
                                       **({"local": "unconfirmed"} if local_unconfirmed else {})})
    op.progress = {**op.progress, "percent": 100, "step": "done"}
    op.save(update_fields=["steps", "progress"])
    notes = op.progress.get("unconfirmed", [])
    result: dict[str, Any] = {"vips_disabled": len(op.params["vips"]), "pops_withdrawn": len(op.params["pops"])}
    if notes:
        result["unconfirmed"] = notes
    if _finish(op, OperationStatus.UNCONFIRMED if notes else OperationStatus.SUCCEEDED, result):
        _set_target_state(op, AdminState.DRAINING, AdminState.DRAINED, changes)
    changes.touch(op)


def advance_layered_drains(now: datetime.datetime | None = None) -> int:
    ids = list(Operation.objects.filter(kind=OperationKind.LAYERED_DRAIN, status=OperationStatus.RUNNING)
               .values_list("pk", flat=True))
    return sum(1 for pk in ids if advance_layered(pk, now) == "stepped")


def rollback_layered(op: Operation, changes: ChangeSet) -> dict[str, int]:
    """Undo what a layered drain did: DNS answers back, announcements back, backends ready."""
    restored = {"vips": 0, "pops": 0, "backends": 0}
    for vip in VIP.objects.select_for_update().filter(pk__in=op.params.get("vips", []), enabled=False):
        _set_vip(vip, True, changes)
        restored["vips"] += 1
    for pop in PoP.objects.select_for_update().filter(pk__in=op.params.get("pops", []), announce=AnnounceState.WITHDRAW):
        _set_announce(pop, AnnounceState.ANNOUNCE, changes)
        restored["pops"] += 1
    now = timezone.now()
    for backend in Backend.objects.select_for_update().filter(
            operation=op, admin_state__in=[AdminState.DRAINING, AdminState.DRAINED]):
        return_to_service(backend, changes, now=now)
        restored["backends"] += 1
    return restored
