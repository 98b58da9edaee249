"""The plain-dict form of each object in the topology snapshot and in live deltas.

One function per type, so the snapshot (/api/v1/topology/) and a delta over the WebSocket
describe an object identically and the browser can apply either.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import models
from django.utils import timezone

from steering import capacity
from steering.models import VIP, AnycastPrefix, Backend, ClientNetwork, Monitor, Operation, Pool, PoP, Region, Service
from steering.services.audit import snapshot

# Delta "type" -> (model, topology key)
TYPES: dict[str, tuple[type[models.Model], str]] = {
    "region": (Region, "regions"),
    "pop": (PoP, "pops"),
    "service": (Service, "services"),
    "vip": (VIP, "vips"),
    "anycastprefix": (AnycastPrefix, "prefixes"),
    "clientnetwork": (ClientNetwork, "client_networks"),
    "monitor": (Monitor, "monitors"),
    "pool": (Pool, "pools"),
    "backend": (Backend, "backends"),
    "operation": (Operation, "operations"),
}


def weight_inputs(backend: Backend, *, pool_in_panic: bool, now: Any = None) -> capacity.WeightInputs:
    now = now or timezone.now()
    since = (now - backend.ready_since).total_seconds() if backend.ready_since else None
    return capacity.WeightInputs(
        weight=backend.weight,
        admin_state=backend.admin_state,
        health=backend.health,
        slow_start_seconds=backend.slow_start_seconds,
        seconds_since_ready=since,
        pool_in_panic=pool_in_panic,
    )


def represent(obj: models.Model, *, pools_in_panic: set[int] | None = None) -> dict[str, Any]:
    data = snapshot(obj)
    data["revision"] = getattr(obj, "revision", None)
    if isinstance(obj, Backend):
        in_panic = obj.pool_id in pools_in_panic if pools_in_panic is not None else obj.pool.in_panic
        explained = capacity.explain_effective_weight(weight_inputs(obj, pool_in_panic=in_panic))
        data["effective_weight"] = explained.effective
        data["effective_weight_reason"] = explained.reason
    if isinstance(obj, Operation):
        data.pop("params", None)
    return data


def represent_many(type_key: str, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    model, _ = TYPES[type_key]
    qs = model._default_manager.filter(pk__in=list(ids))
    panic: set[int] | None = None
    if model is Backend:
        panic = set(Pool.objects.filter(in_panic=True).values_list("pk", flat=True))
    return {obj.pk: represent(obj, pools_in_panic=panic) for obj in qs}
