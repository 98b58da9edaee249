"""The plain-dict form of each object in the topology snapshot and in live deltas.

One function per type, so the snapshot (/api/v1/topology/) and a delta over the WebSocket
describe an object identically and the browser can apply either. A read model (ARCHITECTURE.md §2):
services use it (a Change's before/after is `snapshot`), it never imports them.
"""

from __future__ import annotations

import datetime
import decimal
import uuid
from collections.abc import Iterable
from typing import Any, Protocol

from django.db import models
from django.utils import timezone

from steering import capacity
from steering.models import VIP, AnycastPrefix, Backend, ClientNetwork, Monitor, Operation, Pool, PoP, Region, Service

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

# Fields that are bookkeeping, not state an operator reasons about.
SKIP_FIELDS = frozenset({"created_at", "updated_at"})


def jsonable(value: Any) -> Any:
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def snapshot(obj: models.Model) -> dict[str, Any]:
    """The object's own fields as JSON-safe values (foreign keys as ids): a Change's before/after."""
    data: dict[str, Any] = {}
    for f in obj._meta.concrete_fields:
        if f.name in SKIP_FIELDS:
            continue
        data[f.attname] = jsonable(getattr(obj, f.attname))
    return data


def ejection_left(ejected_at: Any, ejected_until: Any, now: Any) -> float | None:
    """Seconds of outlier ejection left, None when the backend is not ejected."""
    if ejected_at is None or ejected_until is None:
        return None
    left = (ejected_until - now).total_seconds()
    return left if left > 0 else None


_EJECTION_FIELDS = frozenset({"ejected_at", "ejected_until", "ejection_reason"})


class WeightFields(Protocol):
    """What the effective weight is computed from: a Backend, or a row of just these columns."""

    weight: int
    admin_state: str
    health: str
    slow_start_seconds: int
    ready_since: Any
    ejected_at: Any
    ejected_until: Any
    ejection_reason: str


def weight_inputs(backend: Backend, *, pool_in_panic: bool, now: Any = None) -> capacity.WeightInputs:
    # A queryset narrowed with .only() that left the ejection out must not cost a query per row:
    # it reads as "not ejected", which is safe (an ejection never takes a pool's last capacity).
    ejection_loaded = not (_EJECTION_FIELDS & backend.get_deferred_fields())
    return weight_inputs_of(backend, pool_in_panic=pool_in_panic, now=now, ejection_loaded=ejection_loaded)


def weight_inputs_of(row: WeightFields, *, pool_in_panic: bool, now: Any = None,
                     ejection_loaded: bool = True) -> capacity.WeightInputs:
    now = now or timezone.now()
    since = (now - row.ready_since).total_seconds() if row.ready_since else None
    left, reason = None, ""
    if ejection_loaded:
        left = ejection_left(row.ejected_at, row.ejected_until, now)
        reason = row.ejection_reason if left is not None else ""
    return capacity.WeightInputs(
        weight=row.weight,
        admin_state=row.admin_state,
        health=row.health,
        slow_start_seconds=row.slow_start_seconds,
        seconds_since_ready=since,
        pool_in_panic=pool_in_panic,
        ejected_seconds_left=left,
        ejection_reason=reason,
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


def represent_rows(model: type[models.Model], qs: models.QuerySet[Any], *,
                   pools_in_panic: set[int]) -> list[dict[str, Any]]:
    """`represent` for a whole queryset, from value rows instead of model instances: the same
    dicts (a test holds them equal), several times faster for the 20,000 backends of a big fleet."""
    fields = [f for f in model._meta.concrete_fields if f.name not in SKIP_FIELDS]
    names = [f.attname for f in fields]
    # Only these columns can hold a value JSON cannot carry as it is: converting every value of
    # 20,000 rows was half of a big fleet's topology snapshot.
    converted = [(i, f.attname) for i, f in enumerate(fields) if isinstance(f, _NOT_JSON_AS_IS)]
    times_at = [(name, names.index(name)) for name in _WEIGHT_TIMES] if model is Backend else []
    out = []
    now = timezone.now()
    for row in qs.values_list(*names):
        data = dict(zip(names, row, strict=True))
        for i, name in converted:
            if row[i] is not None:
                data[name] = jsonable(row[i])
        if model is Backend:
            times = {name: row[i] for name, i in times_at}
            add_effective_weight(data, pool_in_panic=data["pool_id"] in pools_in_panic, now=now, times=times)
        if model is Operation:
            data.pop("params", None)
        out.append(data)
    return out


_WEIGHT_TIMES = ("ready_since", "ejected_at", "ejected_until")
# The model fields whose values `jsonable` converts (a DateTimeField is a DateField).
_NOT_JSON_AS_IS = (models.DateField, models.DecimalField, models.UUIDField)


def add_effective_weight(data: dict[str, Any], *, pool_in_panic: bool, now: datetime.datetime,
                         times: dict[str, Any] | None = None) -> None:
    """Set a backend row's `effective_weight` and its reason as of `now`. `times` holds the row's
    datetimes as datetimes; without it they are read from `data`, where a snapshot (or a Change's
    before/after) keeps them as ISO strings."""
    if times is None:
        times = {name: _as_datetime(data.get(name)) for name in _WEIGHT_TIMES}
    ready_since = times["ready_since"]
    left = ejection_left(times["ejected_at"], times["ejected_until"], now)
    explained = capacity.explain_effective_weight(capacity.WeightInputs(
        weight=data["weight"], admin_state=data["admin_state"], health=data["health"],
        slow_start_seconds=data["slow_start_seconds"],
        seconds_since_ready=(now - ready_since).total_seconds() if ready_since else None,
        pool_in_panic=pool_in_panic,
        ejected_seconds_left=left, ejection_reason=data["ejection_reason"] if left is not None else "",
    ))
    data["effective_weight"] = explained.effective
    data["effective_weight_reason"] = explained.reason


def _as_datetime(value: Any) -> datetime.datetime | None:
    if value is None or isinstance(value, datetime.datetime):
        return value
    return datetime.datetime.fromisoformat(str(value))


def represent_many(type_key: str, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    model, _ = TYPES[type_key]
    qs = model._default_manager.filter(pk__in=list(ids))
    panic: set[int] | None = None
    if model is Backend:
        panic = set(Pool.objects.filter(in_panic=True).values_list("pk", flat=True))
    return {obj.pk: represent(obj, pools_in_panic=panic) for obj in qs}
