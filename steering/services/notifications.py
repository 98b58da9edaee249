"""Events for webhooks: `emit` writes a delivery per matching subscription in the caller's
transaction (an outbox: a rolled-back action tells nobody) and, after commit, asks a worker to
send them (steering.services.webhooks does the sending; the webhook sweeper catches up on any
enqueue that was lost).

Where events come from:
- operations started, finished, failed, paused: `steering.services.operation_lifecycle` (and the
  fleet apply, the weight ramp's pause) call `operation_changed`;
- a forced override: `operation_changed` when a forced operation starts or is scheduled;
- a guard refusal: its transaction rolled back, so the API's error handler calls `guard_refused`
  once the refusal is on its way to the caller;
- health, data planes and drift: watchers on a beat (steering.services.watchers), so a flapping
  fleet makes one event per pool and window, not one per probe.

A subscription's filters: event types, region slugs, service slugs, each empty for "all". An
event names the regions and services it concerns; one that names none (a fleet apply, the DNS
layer) concerns them all and reaches every subscription that takes its type.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from celery import current_app
from django.db import transaction
from django.utils import timezone

from steering.choices import OperationStatus, WebhookEvent
from steering.models import Backend, Operation, Pool, PoP, Region, WebhookDelivery, WebhookSubscription
from steering.models.webhooks import MAX_PAYLOAD_BYTES
from steering.services.context import Actor

logger = logging.getLogger(__name__)

EVENT_TYPES = frozenset(WebhookEvent.values)
DELIVER_TASK = "steering.webhook_deliver"  # steering.tasks.notifications, named so services import no task
_LIST_LIMIT = 50  # items kept of a list in an event's data when the payload is over its bound

_OPERATION_EVENTS = {
    OperationStatus.RUNNING: "operation.started",
    OperationStatus.PAUSED: "operation.paused",
    OperationStatus.SUCCEEDED: "operation.finished",
    OperationStatus.UNCONFIRMED: "operation.finished",
    OperationStatus.ABORTED: "operation.finished",
    OperationStatus.FAILED: "operation.failed",
}
_WORDS = {OperationStatus.RUNNING: "started", OperationStatus.PAUSED: "paused",
          OperationStatus.SUCCEEDED: "succeeded", OperationStatus.UNCONFIRMED: "finished unconfirmed",
          OperationStatus.ABORTED: "aborted", OperationStatus.FAILED: "failed"}


def matches(sub: WebhookSubscription, event_type: str, regions: Iterable[str], services: Iterable[str]) -> bool:
    """Whether `sub` takes this event: its type listed (or none listed), and its regions and
    services overlapping the event's (or either side naming none)."""
    if sub.events and event_type not in sub.events:
        return False
    regions, services = set(regions), set(services)
    if sub.regions and regions and not regions & set(sub.regions):
        return False
    return not (sub.services and services and not services & set(sub.services))


def envelope(event_type: str, summary: str, data: Mapping[str, Any], *, regions: Iterable[str] = (),
             services: Iterable[str] = ()) -> dict[str, Any]:
    """The event as every receiver gets it (the JSON format's body; the Slack format is made from it)."""
    return bounded({
        "id": f"evt_{uuid.uuid4().hex}",
        "type": event_type,
        "time": timezone.now().isoformat(),
        "summary": summary[:500],
        "regions": sorted(set(regions)),
        "services": sorted(set(services)),
        "data": dict(data),
    })


def bounded(event: dict[str, Any]) -> dict[str, Any]:
    """The event within MAX_PAYLOAD_BYTES: long lists in its data are cut (saying so), and data
    that is still too big is replaced by its keys."""
    if _size(event) <= MAX_PAYLOAD_BYTES:
        return event
    data = {k: _cut(v) for k, v in event["data"].items()}
    event = {**event, "data": data}
    if _size(event) > MAX_PAYLOAD_BYTES:
        event["data"] = {"truncated": True, "keys": sorted(data)[:_LIST_LIMIT]}
    return event


def _cut(value: Any) -> Any:
    if isinstance(value, list) and len(value) > _LIST_LIMIT:
        return [*value[:_LIST_LIMIT], {"truncated": len(value) - _LIST_LIMIT}]
    if isinstance(value, str) and len(value) > 2000:
        return value[:2000] + "…"
    return value


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), default=str))


def emit(event_type: str, summary: str, data: Mapping[str, Any], *, regions: Iterable[str] = (),
         services: Iterable[str] = ()) -> list[int]:
    """Record a delivery of this event for every enabled subscription that takes it, in the
    caller's transaction; they are sent after commit. Returns the deliveries' ids."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"{event_type!r} is not a webhook event: add it to steering.choices.WEBHOOK_EVENTS")
    regions, services = list(regions), list(services)
    subs = [s for s in WebhookSubscription.objects.filter(enabled=True)
            if matches(s, event_type, regions, services)]
    if not subs:
        return []
    return deliver_to(subs, envelope(event_type, summary, data, regions=regions, services=services))


def deliver_to(subs: Iterable[WebhookSubscription], event: dict[str, Any]) -> list[int]:
    """Deliveries of `event` to these subscriptions (filters already applied), sent after commit."""
    now = timezone.now()
    rows = WebhookDelivery.objects.bulk_create([
        WebhookDelivery(subscription=s, event_type=event["type"], event_id=event["id"], payload=event,
                        format=s.format, next_attempt_at=now) for s in subs])
    ids = [int(r.pk) for r in rows if r.pk is not None]
    if len(ids) < len(rows):  # a database that returns no ids from a bulk insert: look them up
        ids = list(WebhookDelivery.objects.filter(event_id=event["id"]).values_list("pk", flat=True))
    transaction.on_commit(lambda: enqueue(ids))
    return ids


def enqueue(delivery_ids: list[int]) -> None:
    """Ask a worker to send these now. Best effort: the webhook sweeper sends whatever is due."""
    if not delivery_ids:
        return
    try:
        current_app.send_task(DELIVER_TASK, args=[delivery_ids], expires=60, retry=False, ignore_result=True)
    except Exception as exc:  # the broker away: the rows are committed, the sweeper sends them
        logger.warning("webhook deliveries %s not enqueued (%s); the sweeper will send them", delivery_ids, exc)


# --- where an event concerns ------------------------------------------------------------------


def scope_of(target_type: str, target_id: int | None) -> tuple[list[str], list[str]]:
    """(region slugs, service slugs) an action on this target concerns; empty lists: everything."""
    if target_id is None:
        return [], []
    if target_type == "backend":
        row = Backend.objects.filter(pk=target_id).values_list("pool__pop__region__slug", "pool__service__slug").first()
    elif target_type == "pool":
        row = Pool.objects.filter(pk=target_id).values_list("pop__region__slug", "service__slug").first()
    elif target_type == "pop":
        region = PoP.objects.filter(pk=target_id).values_list("region__slug", flat=True).first()
        return ([region] if region else []), []
    elif target_type == "region":
        slug = Region.objects.filter(pk=target_id).values_list("slug", flat=True).first()
        return ([slug] if slug else []), []
    else:
        return [], []
    return ([row[0]], [row[1]]) if row else ([], [])


# --- operations and the guard -----------------------------------------------------------------


def _operation_data(op: Operation) -> dict[str, Any]:
    return {
        "id": op.pk, "kind": op.kind, "status": op.status,
        "target": {"type": op.target_type, "id": op.target_id, "name": op.target_repr},
        "actor": op.actor_name, "source": op.source, "request_id": op.request_id, "reason": op.reason,
        "forced": op.forced, "created_at": op.created_at.isoformat() if op.created_at else None,
        "finished_at": op.finished_at.isoformat() if op.finished_at else None,
        "progress": op.progress, "result": op.result,
    }


def _impact_summary(impact: Mapping[str, Any] | None) -> dict[str, Any]:
    if not impact:
        return {}
    return {"verdict": impact.get("verdict"), "explain": impact.get("explain"),
            "moved_rps": impact.get("moved_rps"), "unplaced_rps": impact.get("unplaced_rps"),
            "safety_rules": [{"rule": b.get("rule"), "detail": b.get("detail")}
                             for b in impact.get("safety_rules", []) or []]}


def operation_changed(op: Operation) -> None:
    """The operation reached its current status: started, paused, or ended (succeeded,
    unconfirmed, aborted: finished; failed). A forced one, when it starts or is scheduled, also
    tells of the override."""
    regions, services = scope_of(op.target_type, op.target_id)
    status = OperationStatus(op.status)
    if op.forced and status in (OperationStatus.RUNNING, OperationStatus.SCHEDULED) and not op.params.get("started_at"):
        impact = op.params.get("impact") or op.params.get("fleet_impact")
        emit("guard.forced",
             f"{op.actor_name} forced {op.kind} {op.target_repr} past the guard: “{op.params.get('force_reason', '')}”",
             {"operation": _operation_data(op), "force_reason": op.params.get("force_reason", ""),
              "impact": _impact_summary(impact)},
             regions=regions, services=services)
    event = _OPERATION_EVENTS.get(status)
    if event is None:
        return
    words = _WORDS[status]
    why = op.result.get("paused_because") or op.result.get("detail") or op.result.get("error") or ""
    summary = f"{op.kind} {op.target_repr} {words} ({op.actor_name}: “{op.reason}”)" + (f": {why}" if why else "")
    emit(event, summary, {"operation": _operation_data(op)}, regions=regions, services=services)


def guard_refused(body: Mapping[str, Any], *, actor: Actor) -> None:
    """An action the capacity guard or a safety rule refused (409 capacity_guard / safety_rule):
    `body` is the refusal as the caller got it. Written on its own: the action's transaction is
    gone, and the refusal is what the caller sees whatever happens here."""
    impact = body.get("impact") or {}
    target = impact.get("target") or {}
    regions, services = scope_of(str(target.get("type", "")), target.get("id"))
    what = f"{impact.get('action', 'action')} {target.get('name', '')}".strip()
    rules = [str(r) for r in body.get("rules", [])]
    summary = (f"{actor.name}'s {what} refused by " + (f"safety rule {', '.join(rules)}" if rules else "the capacity guard")
               + f": {body.get('detail', '')}")
    try:
        with transaction.atomic():
            emit("guard.refused", summary,
                 {"code": body.get("code"), "detail": body.get("detail"), "rules": rules, "action": impact.get("action"),
                  "target": target, "actor": actor.name, "source": actor.source, "request_id": actor.request_id,
                  "impact": _impact_summary(impact)},
                 regions=regions, services=services)
    except Exception:  # never turn a clean 409 into a 500
        logger.exception("could not record the guard.refused webhook event")
