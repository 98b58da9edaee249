"""Operations that end when the data planes say so: undrain, maintenance, weight, withdraw, announce.

Their whole change is written in their own transaction, but the change is in force only once the
data planes it concerns run its version. With confirmation on (STEERING_DATAPLANE_CONFIRM) such
an operation stays running, `awaiting` those layers, until each has acknowledged the version
(then `succeeded`, with what confirmed it) or the acknowledgement timeout passes (then
`unconfirmed`, saying in words which data plane has not applied what, for how long, and when
its agent was last seen). Nothing reports a state no data plane applied.

(Drains and layered drains confirm in their own steps: steering.services.operations and
steering.services.layered.)
"""

from __future__ import annotations

import datetime
import time
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from steering.choices import DataplaneLayer, OperationStatus
from steering.dataplane.status import NAMES, confirmed_versions, layer_status
from steering.models import VIP, Backend, Operation, Pool, PoP
from steering.services.audit import ChangeSet
from steering.services.operation_lifecycle import SWEEPER, finish_immediately, finish_operation
from steering.services.targets import Target, pools_under

# The layers an operation waits for: {layer: [PoP ids]} (the DNS layer's list is [None]).
Layers = dict[str, list[int | None]]


def awaiting() -> Q:
    """Operations whose change is written and only awaits the data planes' acknowledgement: they
    block nothing a running operation otherwise would (a second ramp, deleting the backend)."""
    return Q(params__has_key="confirm")


def layers_for(target: Target, *, sites: bool = False, anycast_only: bool = False) -> Layers:
    """Which data planes carry an action on `target`: the local HAProxy of every PoP it touches;
    for a site's own state (`sites`), also DNS (when a VIP answers for its services) and anycast
    (at its PoPs with anycast services); for a withdraw or announce, anycast only."""
    if isinstance(target, PoP) and anycast_only:
        return {DataplaneLayer.ANYCAST: [target.pk]} if _anycast_pops([target.pk]) else {}
    pools = [target.pool] if isinstance(target, Backend) else list(pools_under(target))
    pop_ids = sorted({p.pop_id for p in pools})
    layers: Layers = {DataplaneLayer.LOCAL: list(pop_ids)} if pop_ids else {}
    if sites:
        anycast = _anycast_pops(pop_ids)
        if anycast:
            layers[DataplaneLayer.ANYCAST] = list(anycast)
        if VIP.objects.filter(service__pools__pop_id__in=pop_ids, enabled=True).exists():
            layers[DataplaneLayer.DNS] = [None]
    return layers


def _anycast_pops(pop_ids: list[int]) -> list[int]:
    return sorted(set(Pool.objects.filter(pop_id__in=pop_ids, service__anycast_prefix__isnull=False)
                      .values_list("pop_id", flat=True)))


def finish_when_applied(op: Operation, changes: ChangeSet, result: dict[str, Any], layers: Layers) -> None:
    """In place of finish_immediately: succeed once every layer in `layers` runs this change's
    version (at once when confirmation is off or no data plane carries it)."""
    if not settings.STEERING_DATAPLANE_CONFIRM or not layers:
        finish_immediately(op, changes, result)
        return
    op.params = {**op.params, "confirm": {"version": changes.version, "layers": layers, "result": result,
                                          "since": time.time()}}
    op.progress = {**op.progress, "percent": 100, "awaiting": layer_names(layers)}
    op.save(update_fields=["params", "progress"])
    changes.touch(op)


def layer_names(layers: Layers) -> list[str]:
    """"fra1 HAProxy", "GSLB server": the data planes of `layers`, as the operator calls them."""
    slugs = dict(PoP.objects.filter(pk__in=[p for ids in layers.values() for p in ids if p]).values_list("pk", "slug"))
    return [f"{slugs[p] + ' ' if p else ''}{NAMES[DataplaneLayer(layer)]}" for layer, ids in layers.items() for p in ids]


def running_awaiting() -> QuerySet[Operation]:
    return Operation.objects.filter(awaiting(), status=OperationStatus.RUNNING)


def advance(now: datetime.datetime | None = None) -> int:
    """One sweeper pass: end every awaiting operation whose layers all confirmed, or whose time is
    up. Returns how many ended."""
    now = now or timezone.now()
    ended = 0
    for op_id in running_awaiting().values_list("pk", flat=True):
        ended += _visit(op_id, now)
    return ended


def _missing(confirm: dict[str, Any], now: float) -> list[tuple[str, int | None]]:
    version = int(confirm["version"])
    missing: list[tuple[str, int | None]] = []
    for layer, ids in confirm["layers"].items():
        if layer == DataplaneLayer.DNS:
            applied = layer_status(layer, None, now).applied_version
            missing += [] if applied is not None and applied >= version else [(layer, None)]
            continue
        confirmed = confirmed_versions(layer, {int(i) for i in ids}, now)
        missing += [(layer, int(i)) for i in ids if confirmed.get(int(i), -1) < version]
    return missing


def _visit(op_id: int, now: datetime.datetime) -> int:
    with transaction.atomic():
        op = Operation.objects.select_for_update().filter(awaiting(), pk=op_id, status=OperationStatus.RUNNING).first()
        if op is None:
            return 0
        confirm = op.params["confirm"]
        missing = _missing(confirm, now.timestamp())
        waited = now.timestamp() - float(confirm["since"])
        if missing and waited < settings.STEERING_DATAPLANE_ACK_TIMEOUT_SECONDS:
            names = [_label(layer, pop) for layer, pop in missing]
            if op.progress.get("awaiting") != names:  # written when it changes, not every sweep
                op.progress = {**op.progress, "awaiting": names}
                op.save(update_fields=["progress"])
            return 0
        result = dict(confirm["result"])
        if missing:
            result["unconfirmed"] = [_words(layer, pop, int(confirm["version"]), waited, now.timestamp())
                                     for layer, pop in missing]
        else:
            result["confirmed"] = layer_names(confirm["layers"])
        status = OperationStatus.UNCONFIRMED if missing else OperationStatus.SUCCEEDED
        progress = {k: v for k, v in op.progress.items() if k != "awaiting"}
        Operation.objects.filter(pk=op.pk).update(progress=progress)
        if not finish_operation(op, status, result):
            return 0
        ChangeSet(SWEEPER, "data planes confirmed" if not missing else "not confirmed in time").touch(op)
        return 1


def _label(layer: str, pop_id: int | None) -> str:
    slug = PoP.objects.filter(pk=pop_id).values_list("slug", flat=True).first() if pop_id else None
    return f"{slug + ' ' if slug else ''}{NAMES[DataplaneLayer(layer)]}"


def _words(layer: str, pop_id: int | None, version: int, waited: float, now: float) -> str:
    """"fra1 HAProxy has not applied version 812 for 30 s; agent last seen 12:03:10 UTC"."""
    pop = PoP.objects.filter(pk=pop_id).first() if pop_id else None
    status = layer_status(layer, pop, now)
    seen = (datetime.datetime.fromtimestamp(status.seen_at, tz=datetime.UTC).strftime("%H:%M:%S UTC")
            if status.seen_at else "never")
    runs = status.applied_version if status.applied_version is not None else "nothing we know of"
    return (f"{_label(layer, pop_id)} has not applied version {version} for {int(waited)} s (runs {runs}); "
            f"agent last seen {seen}")
