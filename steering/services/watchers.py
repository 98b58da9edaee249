"""Events that are a reading of the fleet over time, not one action: health transitions grouped per
pool, data planes disconnected or lagging, drift from the fleet file. Each watcher runs on a beat
(steering.tasks.notifications), keeps what it saw last in a NotificationCursor row it holds
locked while it runs (a second worker running it at once waits, then sees nothing new), and
emits in the same transaction as it moves the cursor: an event is neither lost nor told twice.

- Health: the HealthEvent rows written since the last run, one `health.changed` per pool listing
  the backends that went down, came up or otherwise changed (a backend that flapped and came back
  says so, once). The beat period is the window (STEERING_WEBHOOK_HEALTH_WINDOW_SECONDS): a
  flapping pool makes one event a window, not one per flap, and the prober's hot path is not
  touched. HealthEvent ids are committed in order (each is written under the state version's row
  lock, steering.services.audit), so "id above the cursor" misses none.
- Data planes: each PoP layer's and the DNS layer's condition (ok, lagging, disconnected) from the
  desired-vs-applied read model; an event only when it changes.
Health and data planes are not read at all while no subscription takes their events.
- Drift: the differences from the last fleet file applied; an event when the set of objects that
  differ changes (or drops to none). Skipped while nobody subscribes to drift: it reads the fleet.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max

from steering.choices import Health
from steering.dataplane.status import all_statuses
from steering.models import HealthEvent, NotificationCursor, Pool, PoP, WebhookSubscription
from steering.services import fleet, notifications

HEALTH, DATAPLANES, DRIFT = "health", "dataplanes", "drift"
OK, LAGGING, DISCONNECTED = "ok", "lagging", "disconnected"
_BATCH = 5000


def _cursor(key: str, initial: dict[str, Any]) -> NotificationCursor:
    """The watcher's row, locked until the transaction ends (created with `initial` the first time)."""
    row = NotificationCursor.objects.select_for_update().filter(key=key).first()
    if row is not None:
        return row
    try:
        with transaction.atomic():
            NotificationCursor.objects.create(key=key, value=initial)
    except IntegrityError:  # another worker created it first
        pass
    return NotificationCursor.objects.select_for_update().get(key=key)


def _save(row: NotificationCursor, value: dict[str, Any]) -> None:
    row.value = value
    row.save(update_fields=["value", "updated_at"])


def _wanted(prefix: str) -> bool:
    """Whether any enabled subscription may take an event of this family."""
    return any(not s.events or any(e.startswith(prefix) for e in s.events)
               for s in WebhookSubscription.objects.filter(enabled=True).only("events"))


# --- health -----------------------------------------------------------------------------------


@transaction.atomic
def health_changes() -> int:
    """One `health.changed` per pool for the transitions recorded since the last run; returns
    how many events were emitted."""
    # Started from the newest event the first time: a new install does not replay history.
    newest = HealthEvent.objects.aggregate(top=Max("id"))["top"] or 0
    row = _cursor(HEALTH, {"after": newest})
    after = int(row.value.get("after", 0))
    if newest > after and not _wanted("health."):
        _save(row, {"after": newest})  # nobody listens: move on without reading what happened
        return 0
    events = list(HealthEvent.objects.filter(id__gt=after).order_by("id")
                  .values_list("id", "backend_id", "backend__name", "backend__pool_id", "from_health", "to_health",
                               "evidence")[:_BATCH])
    if not events:
        return 0
    by_pool: dict[int, dict[int, dict[str, Any]]] = defaultdict(dict)
    for _id, backend_id, name, pool_id, from_health, to_health, evidence in events:
        seen = by_pool[pool_id].get(backend_id)
        if seen is None:
            by_pool[pool_id][backend_id] = {"backend": name, "id": backend_id, "from": from_health, "to": to_health,
                                            "transitions": 1, "evidence": _short(evidence)}
        else:
            seen.update(to=to_health, transitions=seen["transitions"] + 1, evidence=_short(evidence))
    emitted = 0
    pools = Pool.objects.select_related("pop__region", "service").in_bulk(list(by_pool))
    for pool_id, backends in sorted(by_pool.items()):
        pool = pools.get(pool_id)
        if pool is not None:
            _emit_pool(pool, list(backends.values()))
            emitted += 1
    _save(row, {"after": events[-1][0]})
    return emitted


def _short(evidence: Any) -> dict[str, Any]:
    if not isinstance(evidence, dict):
        return {}
    return {k: evidence[k] for k in ("check", "result", "status", "error", "why") if k in evidence}


def _emit_pool(pool: Pool, backends: list[dict[str, Any]]) -> None:
    down = [b for b in backends if b["to"] == Health.DOWN and b["from"] != Health.DOWN]
    up = [b for b in backends if b["to"] == Health.UP and b["from"] != Health.UP]
    flapped = [b for b in backends if b["from"] == b["to"]]
    other = [b for b in backends if b not in down and b not in up and b not in flapped]
    parts = []
    for words, items in (("down", down), ("up", up), ("flapped and back", flapped), ("changed", other)):
        if items:
            names = ", ".join(b["backend"] for b in items[:10]) + (f" and {len(items) - 10} more" if len(items) > 10 else "")
            parts.append(f"{len(items)} {words} ({names})")
    name = f"{pool.pop.slug}/{pool.slug}"
    summary = f"{name}: " + "; ".join(parts) + (" — pool in panic, prober suspected" if pool.in_panic else "")
    notifications.emit("health.changed", summary, {
        "pool": {"id": pool.pk, "name": name, "pop": pool.pop.slug, "region": pool.pop.region.slug,
                 "service": pool.service.slug, "in_panic": pool.in_panic},
        "window_seconds": settings.STEERING_WEBHOOK_HEALTH_WINDOW_SECONDS,
        "down": down, "up": up, "flapped": flapped, "changed": other,
    }, regions=[pool.pop.region.slug], services=[pool.service.slug])


# --- data planes ------------------------------------------------------------------------------


def condition(status: dict[str, Any], now: float) -> str | None:
    """ok, lagging or disconnected; None for a layer no agent has ever served (nothing to lose)."""
    if status["state"] == "absent":
        return None
    seen = status.get("seen_at")
    if seen is None or now - seen > settings.STEERING_WEBHOOK_AGENT_SILENT_SECONDS:
        return DISCONNECTED
    lag = status.get("lag_seconds")
    if status["state"] in ("behind", "refused") or (lag is not None and lag > settings.STEERING_WEBHOOK_LAG_SECONDS):
        return LAGGING
    return OK


_EVENTS = {OK: "dataplane.recovered", LAGGING: "dataplane.lagging", DISCONNECTED: "dataplane.disconnected"}


@transaction.atomic
def dataplane_changes(now: float | None = None) -> int:
    """An event for each data plane whose condition changed since the last run."""
    now = now if now is not None else time.time()
    if not _wanted("dataplane."):
        return 0  # a subscriber added later hears of the planes that are down then, once
    row = _cursor(DATAPLANES, {})
    known: dict[str, str] = dict(row.value)
    statuses = all_statuses(now)
    layers: list[tuple[str, dict[str, Any]]] = [("dns", statuses["dns"])]
    for pop_slug, by_layer in statuses["pops"].items():
        layers += [(f"{layer}:{pop_slug}", s) for layer, s in by_layer.items()]
    regions = dict(PoP.objects.values_list("slug", "region__slug"))
    emitted = 0
    for key, status in layers:
        now_is = condition(status, now)
        if now_is is None or now_is == known.get(key, OK):
            continue
        known[key] = now_is
        pop = status.get("pop")
        where = [regions[pop]] if pop in regions else []
        notifications.emit(_EVENTS[now_is], f"{now_is}: {status['detail']}", {
            "layer": status["layer"], "pop": pop, "condition": now_is, "state": status["state"],
            "desired_version": status["desired_version"], "applied_version": status["applied_version"],
            "lag_seconds": status["lag_seconds"], "seen_at": status.get("seen_at"), "error": status.get("error", ""),
            "detail": status["detail"],
        }, regions=where)
        emitted += 1
    if emitted or known != row.value:
        _save(row, known)
    return emitted


# --- drift ------------------------------------------------------------------------------------


@transaction.atomic
def drift_changes() -> int:
    """`drift.detected` when the objects that differ from the fleet file change, `drift.resolved`
    when none differ any more. Nothing read while no subscription takes drift events."""
    if not _wanted("drift."):
        return 0
    row = _cursor(DRIFT, {"signature": ""})
    found = fleet.drift()
    keys = sorted(f"{d['kind']}:{d['key']}:{d['difference']}" for d in found["differences"])
    signature = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16] if keys else ""
    if signature == row.value.get("signature", ""):
        return 0
    if keys:
        differences = found["differences"]
        names = ", ".join(f"{d['kind']} {d['key']}" for d in differences[:5]) + (
            f" and {len(differences) - 5} more" if len(differences) > 5 else "")
        who = sorted({c["actor"] for d in differences for c in d["changed_by"]})
        summary = f"{len(differences)} difference(s) from the fleet file applied: {names}" + (
            f" (changed by {', '.join(who[:5])})" if who else "")
        notifications.emit("drift.detected", summary, {"operation": found["operation"], "differences": differences})
    else:
        notifications.emit("drift.resolved", "The live fleet is the fleet file applied again",
                           {"operation": found["operation"], "state": found["state"]})
    _save(row, {"signature": signature})
    return 1
