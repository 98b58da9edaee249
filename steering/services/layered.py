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

A running layered drain is in one `Phase`; it moves only along `TRANSITIONS`, and the steps the
operator sees are derived from the phase and what each layer's data plane said (`steps_view`).
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from steering import whatif
from steering.choices import AdminState, AnnounceState, DataplaneLayer, OperationKind, OperationStatus
from steering.dataplane.stats import read_backend_stats
from steering.dataplane.status import confirmed_versions, layer_status
from steering.models import VIP, Backend, Operation, Pool, PoP, Region
from steering.services import guard, safety
from steering.services.anycast import set_announce
from steering.services.audit import ChangeSet
from steering.services.context import Actor
from steering.services.errors import InvalidInput, StateConflict
from steering.services.impact import Impact, LayeredPlan
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
    SWEEPER,
    close_released_windows,
    drain_progress,
    finish_operation,
    move_target_state,
    open_or_start,
)
from steering.services.targets import target_type

STEPS = ("dns", "wait", "anycast", "local", "done")
Site = PoP | Region
_ANYCAST_NOTE = "anycast: "


class Phase(Enum):
    """Where a running layered drain is; the value is what progress["step"] says."""

    DNS_WAIT = "wait"            # DNS answers stopped: waiting for the GSLB server, then TTL x factor
    LOCAL = "local"              # announcements withdrawn: the local backends drain
    ANYCAST_CONFIRM = "anycast"  # local drains done: waiting for ExaBGP to apply the withdrawal
    DONE = "done"


TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.DNS_WAIT: frozenset({Phase.LOCAL}),
    Phase.LOCAL: frozenset({Phase.ANYCAST_CONFIRM, Phase.DONE}),
    Phase.ANYCAST_CONFIRM: frozenset({Phase.DONE}),
    Phase.DONE: frozenset(),
}
# The visible step running in each phase (every step before it is over); DONE: none is.
_RUNNING_STEP = {Phase.DNS_WAIT: STEPS.index("wait"), Phase.LOCAL: STEPS.index("local"),
                 Phase.ANYCAST_CONFIRM: STEPS.index("local"), Phase.DONE: len(STEPS)}
# params["step"] as stored since the first release (1: DNS and the wait; 3: anycast on).
_STORED_STEP = {Phase.DNS_WAIT: 1, Phase.LOCAL: 3, Phase.ANYCAST_CONFIRM: 3, Phase.DONE: 3}


class PhaseError(RuntimeError):
    """A layered drain asked to move where its transition table does not go (a bug, not input)."""


def phase_of(op: Operation) -> Phase:
    try:
        return Phase(op.progress.get("step"))
    except ValueError:
        return Phase.DNS_WAIT if op.params.get("step") == 1 else Phase.LOCAL


def steps_view(phase: Phase, params: Mapping[str, Any], progress: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The steps shown: those before the phase's running step end as their layer ended."""
    notes = list(progress.get("unconfirmed", []))
    if not params.get("vips"):
        dns = "skipped"
    else:
        dns = "unconfirmed" if params.get("dns_confirmed") is False else "done"
    if not params.get("pops"):
        anycast = "skipped"
    else:
        anycast = "unconfirmed" if any(n.startswith(_ANYCAST_NOTE) for n in notes) else "done"
    local = "unconfirmed" if any("HAProxy" in n for n in notes) else "done"
    ended = {"dns": dns, "anycast": anycast, "local": local}
    running = _RUNNING_STEP[phase]
    return [{"name": name, "status": ended.get(name, "done") if i < running else "running" if i == running else "pending"}
            for i, name in enumerate(STEPS)]


def _show(op: Operation, phase: Phase) -> None:
    op.steps = steps_view(phase, op.params, op.progress)


def _enter(op: Operation, current: Phase, to: Phase) -> None:
    if to not in TRANSITIONS[current]:
        raise PhaseError(f"layered drain {op.pk} cannot go from {current.name} to {to.name}")
    op.params = {**op.params, "step": _STORED_STEP[to]}
    op.progress = {**op.progress, "step": to.value}
    _show(op, to)


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


def layered_impact(target: Site, plan: LayeredPlan | None = None) -> Impact:
    """The end state's what-if: the site gone from DNS and anycast, its backends drained
    (with the plan that gets there, when given)."""
    pops = _pops_of(target)
    fleet, bases = guard.build_fleet(Pool.objects.select_related("pop"))
    leaving = {p.pk for p in pops}
    fleet = replace(fleet, pops=tuple(replace(p, announcing=False) if p.id in leaving else p for p in fleet.pops))
    kind = "pop" if isinstance(target, PoP) else "region"
    result = whatif.assess(fleet, whatif.Action("drain", kind, target.pk))
    backends = Backend.objects.filter(pool__pop__in=pops, admin_state=AdminState.READY).count()
    breaches = safety.breaches_of(safety.move_of(target, "layered_drain"))
    return guard.report(target, "layered_drain", result, bases, backends, plan=plan, breaches=breaches)


@dataclass(frozen=True)
class _Plan:
    vips: list[VIP]
    announcing: list[PoP]
    wait_seconds: int
    impact: Impact


def _plan(site: Site, ttl_factor: float) -> _Plan:
    pops = _pops_of(site)
    vips = _vips_to_disable(site, pops)
    ttl = max((v.service.ttl for v in vips), default=0)
    wait = math.ceil(ttl * ttl_factor)
    announcing = [p for p in pops if p.announce == AnnounceState.ANNOUNCE]
    plan = LayeredPlan(dns=[f"{v.service.slug} {v.address} ({v.region})" for v in vips], wait_seconds=wait,
                       ttl_seconds=ttl, ttl_factor=ttl_factor, withdraw=[p.slug for p in announcing])
    return _Plan(vips, announcing, wait, layered_impact(site, plan))


def _check_ttl_factor(ttl_factor: float) -> None:
    if not 1.0 <= ttl_factor <= 10.0:
        raise InvalidInput({"ttl_factor": ["Between 1 and 10: caches keep answers at least one TTL."]})


def preview_layered_drain(target: Site, *, ttl_factor: float = 2.0,
                          expected_revision: int | None = None) -> Impact:
    """A layered drain's dry run: the end state's impact and the plan, read without locks."""
    _check_ttl_factor(ttl_factor)
    return _plan(read_current(target, expected_revision), ttl_factor).impact


def _set_vip(vip: VIP, enabled: bool, changes: ChangeSet) -> None:
    set_fields(vip, {"enabled": enabled}, changes, "vip.enable" if enabled else "vip.disable", related=vip.region)


def do_layered_drain(
    target: Site, *, actor: Actor, reason: str, grace_seconds: int | None = None, ttl_factor: float = 2.0,
    force: bool = False, force_reason: str = "", dry_run: bool = False, expected_revision: int | None = None,
    expires_at: datetime.datetime | None = None, operation: Operation | None = None,
) -> tuple[Operation | None, Impact]:
    """Take a PoP or region out layer by layer (see the module). With `expires_at` every layer
    comes back by itself then (steering.services.windows); `operation`: a scheduled one this
    drain starts (else a new one is opened)."""
    reason = require_reason(reason)
    _check_ttl_factor(ttl_factor)
    if dry_run:
        return None, preview_layered_drain(target, ttl_factor=ttl_factor, expected_revision=expected_revision)
    with transaction.atomic():
        locked = lock_for_write(target, expected_revision)
        plan = _plan(locked, ttl_factor)
        impact = plan.impact
        if locked.admin_state != AdminState.READY:
            raise StateConflict(f"{locked} is {locked.admin_state}; undrain it first.", code="state_conflict")
        forced = enforce_guard(impact, force=force, force_reason=force_reason)
        now = timezone.now()
        op = open_or_start(
            operation, OperationKind.LAYERED_DRAIN, locked, actor=actor, reason=reason, forced=forced, expires_at=expires_at,
            params={"vips": [v.pk for v in plan.vips], "pops": [p.pk for p in plan.announcing],
                    "wait_seconds": plan.wait_seconds, "grace_seconds": grace_seconds,
                    "step": _STORED_STEP[Phase.DNS_WAIT], "impact": impact.as_json(), "force_reason": force_reason,
                    "backends_total": 0},
            deadline=now + datetime.timedelta(seconds=plan.wait_seconds),
        )
        changes = ChangeSet(actor, reason, operation_id=op.pk, forced=op.forced, force_reason=force_reason)
        op.params = {**op.params, "dns_version": changes.version}
        set_site_state(locked, AdminState.DRAINING, changes)
        for vip in plan.vips:
            _set_vip(vip, False, changes)
        op.progress = {"step": Phase.DNS_WAIT.value, "seconds_left": plan.wait_seconds, "percent": 10}
        _show(op, Phase.DNS_WAIT)
        op.save(update_fields=["params", "steps", "progress"])
        changes.touch(op)
        return op, impact


def _arriving_rps(op: Operation) -> float | None:
    """Traffic still arriving at the site while DNS caches expire (None without live figures)."""
    pops = [op.target_id] if op.target_type == "pop" else list(PoP.objects.filter(region_id=op.target_id).values_list("pk", flat=True))
    ids = list(Backend.objects.filter(pool__pop_id__in=pops).values_list("pk", flat=True))
    stats = read_backend_stats(ids)
    return round(sum(s.session_rate for s in stats.values()), 1) if stats else None


def _sweeper_changes(op: Operation) -> ChangeSet:
    return ChangeSet(SWEEPER, f"layered drain {op.pk} ({op.actor_name}: {op.reason})", operation_id=op.pk)


def advance_layered(op_id: int, now: datetime.datetime | None = None) -> str:
    """One sweeper visit to a running layered drain: "stepped", "waiting" or "gone"."""
    now = now or timezone.now()
    with transaction.atomic():
        op = Operation.objects.select_for_update().filter(pk=op_id, status=OperationStatus.RUNNING,
                                                           kind=OperationKind.LAYERED_DRAIN).first()
        if op is None:
            return "gone"
        phase = phase_of(op)
        if phase is Phase.ANYCAST_CONFIRM:
            # Local drains are done; the finish waits for ExaBGP to confirm the withdrawal.
            if _anycast_unconfirmed(op, now) is None:
                return "waiting"
            _finish(op, _sweeper_changes(op))
            return "stepped"
        if phase is not Phase.DNS_WAIT:
            return "gone"  # LOCAL: the backends' own deadlines move it on (complete_drains)
        if op.params.get("vips") and not op.params.get("dns_confirmed") and _wait_for_dns(op, now):
            return "waiting"
        if op.deadline and op.deadline > now:
            arriving = _arriving_rps(op)
            if arriving is not None and op.progress.get("arriving_rps") != arriving:
                Operation.objects.filter(pk=op.pk).update(progress={**op.progress, "arriving_rps": arriving})
            return "waiting"
        _withdraw_and_drain(op, now)
        return "stepped"


def _withdraw_and_drain(op: Operation, now: datetime.datetime) -> None:
    """DNS_WAIT -> LOCAL: withdraw the announcements, start draining every ready backend."""
    changes = _sweeper_changes(op)
    for pop in PoP.objects.select_for_update().filter(pk__in=op.params["pops"], announce=AnnounceState.ANNOUNCE):
        set_announce(pop, AnnounceState.WITHDRAW, changes)
    site = (PoP if op.target_type == "pop" else Region).objects.get(pk=op.target_id)
    backends = list(Backend.objects.select_for_update().select_related("pool")
                    .filter(pool__pop__in=_pops_of(site), admin_state=AdminState.READY).order_by("pk"))
    grace = op.params.get("grace_seconds")
    seconds = int(grace) if grace is not None else int(suggest_grace(site, backends)["seconds"])
    deadline = now + datetime.timedelta(seconds=seconds)
    for backend in backends:
        start_draining(backend, op, changes, now=now, deadline=deadline)
    op.params = {**op.params, "backends_total": len(backends), "local_grace_seconds": seconds,
                 "anycast_version": changes.version, "anycast_at": now.timestamp()}
    op.deadline = deadline
    op.progress = drain_progress(op)  # the local layer's figures replace the DNS wait's
    _enter(op, Phase.DNS_WAIT, Phase.LOCAL)
    op.revision += 1
    op.save(update_fields=["params", "deadline", "steps", "progress", "revision"])
    changes.touch(op)
    if not backends:
        _finish(op, changes)


def _confirm_timeout() -> datetime.timedelta:
    return datetime.timedelta(seconds=settings.STEERING_DATAPLANE_ACK_TIMEOUT_SECONDS)


def _note(op: Operation, note: str) -> None:
    notes = list(op.progress.get("unconfirmed", []))
    if note not in notes:
        op.progress = {**op.progress, "unconfirmed": [*notes, note]}


def _wait_for_dns(op: Operation, now: datetime.datetime) -> bool:
    """True while the TTL wait must not start: the GSLB server has not applied the DNS change
    yet (and the ack timeout has not passed). Moves the deadline to confirmation + the wait."""
    if not settings.STEERING_DATAPLANE_CONFIRM:
        return False
    status = layer_status(DataplaneLayer.DNS, None, now.timestamp())
    version = int(op.params.get("dns_version") or 0)
    wait = datetime.timedelta(seconds=int(op.params.get("wait_seconds") or 0))
    if status.applied_version is not None and status.applied_version >= version:
        op.params = {**op.params, "dns_confirmed": True}
        op.deadline = now + wait  # caches start expiring once the answers changed
        op.progress = {**op.progress, "dns": f"{status.detail}"}
        _show(op, Phase.DNS_WAIT)
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
    _show(op, Phase.DNS_WAIT)
    op.save(update_fields=["params", "steps", "progress"])
    return False


def _anycast_unconfirmed(op: Operation, now: datetime.datetime) -> list[str] | None:
    """The withdrawn PoPs whose ExaBGP has not applied the withdrawal; None while it may still."""
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
    return [f"{_ANYCAST_NOTE}{layer_status(DataplaneLayer.ANYCAST, pop, now.timestamp()).detail}"
            for pop in PoP.objects.filter(pk__in=missing).order_by("slug")]


def _finish(op: Operation, changes: ChangeSet) -> None:
    """All local drains done: the site is drained, once anycast confirmed (or timed out)."""
    phase = phase_of(op)
    anycast_notes = _anycast_unconfirmed(op, timezone.now())
    if anycast_notes is None:  # an ExaBGP agent may still apply the withdrawal: the next sweep looks again
        op.progress = {**op.progress, "anycast": "waiting for ExaBGP to apply the withdrawal"}
        if phase is not Phase.ANYCAST_CONFIRM:
            _enter(op, phase, Phase.ANYCAST_CONFIRM)
        op.save(update_fields=["params", "steps", "progress"])
        changes.touch(op)
        return
    for note in anycast_notes:
        _note(op, note)
    op.progress = {**op.progress, "percent": 100}
    _enter(op, phase, Phase.DONE)
    op.save(update_fields=["params", "steps", "progress"])
    notes = op.progress.get("unconfirmed", [])
    result: dict[str, Any] = {"vips_disabled": len(op.params["vips"]), "pops_withdrawn": len(op.params["pops"])}
    if notes:
        result["unconfirmed"] = notes
    if finish_operation(op, OperationStatus.UNCONFIRMED if notes else OperationStatus.SUCCEEDED, result):
        move_target_state(op, AdminState.DRAINING, AdminState.DRAINED, changes)
    changes.touch(op)


def on_backends_drained(op: Operation, changes: ChangeSet) -> None:
    """Some local backends are drained: progress, and the finish once none is left."""
    progress = drain_progress(op)
    op.progress = {**op.progress, **progress}
    op.save(update_fields=["progress"])
    if progress["backends_left"] == 0 and phase_of(op) is Phase.LOCAL:
        _finish(op, changes)
    else:
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
        set_announce(pop, AnnounceState.ANNOUNCE, changes)
        restored["pops"] += 1
    now = timezone.now()
    for backend in Backend.objects.select_for_update().filter(
            operation=op, admin_state__in=[AdminState.DRAINING, AdminState.DRAINED]):
        return_to_service(backend, changes, now=now)
        restored["backends"] += 1
    return restored


def roll_back(op: Operation, changes: ChangeSet) -> int:
    """Abort: every layer back, the site ready again. Returns the backends returned to service."""
    restored = rollback_layered(op, changes)["backends"]
    move_target_state(op, AdminState.DRAINING, AdminState.READY, changes)
    return restored


def restore_site(site: Site, undrain_op: Operation, changes: ChangeSet) -> None:
    """Undraining a site a layered drain took out also brings back its DNS answers and anycast
    announcements (the drain recorded what it took away)."""
    for drained in Operation.objects.select_for_update().filter(
            kind=OperationKind.LAYERED_DRAIN, target_type=target_type(site), target_id=site.pk,
            status__in=[OperationStatus.RUNNING, OperationStatus.SUCCEEDED]):
        if drained.result.get("restored_by"):
            continue
        restored = rollback_layered(drained, changes)
        result = {**drained.result, "restored_by": undrain_op.pk, "restored": restored}
        # Back before its window's end: the window closes now (the calendar shows what is open).
        close_released_windows({drained.pk}, changes, now=timezone.now(),
                               why=f"back in service before its end: {changes.reason}")
        status = OperationStatus.ABORTED if drained.status == OperationStatus.RUNNING else drained.status
        Operation.objects.filter(pk=drained.pk).update(result=result, status=status, revision=F("revision") + 1,
                                                       finished_at=drained.finished_at or timezone.now())
        changes.touch(drained)
