"""Webhook subscriptions (audited like any admin edit) and the sending of their deliveries.

Sending: one POST per try, with the standard library's HTTP client (urllib: the product has no
HTTP client dependency), a short timeout and no redirects followed (a signed body goes only to
the address the admin configured). The body is signed with HMAC-SHA256 over
`<timestamp>.<raw body>` with the subscription's secret:

    X-Steering-Signature: sha256=<hex>       X-Steering-Timestamp: <unix seconds>
    X-Steering-Event: <type>                 X-Steering-Event-Id: <evt_...>   X-Steering-Delivery: <id>

so a receiver can refuse a body that was altered or replayed later (docs/operator-guide.md, "Notifications: webhooks"). A 2xx
answer delivers; anything else is tried again after an exponential backoff with jitter
(STEERING_WEBHOOK_BACKOFF_SECONDS doubling, at most STEERING_WEBHOOK_BACKOFF_MAX_SECONDS) until
STEERING_WEBHOOK_MAX_ATTEMPTS, then the delivery is `dead`: a dead letter an operator can send
again (`redeliver`). A try is claimed by compare-and-set, so the enqueued task and the sweeper
never send one try twice; a worker that dies mid-try leaves a lease that runs out and the try
is made again (at least once: receivers de-duplicate on the event id).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import logging
import random
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from steering.choices import DeliveryStatus, WebhookFormat
from steering.models import Region, Service, WebhookDelivery, WebhookSubscription
from steering.models.webhooks import MAX_ERROR_CHARS
from steering.services import notifications
from steering.services.audit import ChangeSet
from steering.services.context import Actor
from steering.services.errors import InvalidInput, StateConflict
from steering.services.kernel import lock_for_write

logger = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
MIN_SECRET_CHARS = 16
USER_AGENT = "steering-webhooks/1"
_FIELDS = ("name", "url", "format", "events", "regions", "services", "enabled")
_WAITING = (DeliveryStatus.PENDING, DeliveryStatus.FAILED)


# --- subscriptions ----------------------------------------------------------------------------


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def redacted_url(url: str) -> str:
    """The URL as the audit log shows it: scheme and host only (a Slack URL's path is its key)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    rest = "/…" if (parts.path not in ("", "/") or parts.query) else "/"
    return f"{parts.scheme}://{host}{port}{rest}"


def webhook_view(sub: WebhookSubscription) -> dict[str, Any]:
    """A subscription's audit before/after: never its secret, and its URL without path or query."""
    return {"name": sub.name, "url": redacted_url(sub.url), "format": sub.format, "events": sub.events,
            "regions": sub.regions, "services": sub.services, "enabled": sub.enabled, "created_by": sub.created_by,
            "secret": "set"}


def _clean(values: Mapping[str, Any], current: WebhookSubscription | None) -> dict[str, Any]:
    """Field errors (400) for what a subscription cannot be; the values normalised otherwise."""
    errors: dict[str, list[str]] = {}
    out = dict(values)
    if "name" in out:
        out["name"] = str(out["name"] or "").strip()
        if not out["name"]:
            errors["name"] = ["Give the webhook a name, e.g. oncall-slack."]
        elif WebhookSubscription.objects.filter(name=out["name"]).exclude(
                pk=current.pk if current is not None else 0).exists():
            errors["name"] = [f"A webhook named {out['name']!r} exists already."]
    if "url" in out:
        url = str(out["url"] or "").strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            errors["url"] = ["An http:// or https:// URL with a host."]
        out["url"] = url
    if "format" in out and out["format"] not in WebhookFormat.values:
        errors["format"] = [f"One of {', '.join(WebhookFormat.values)}."]
    for name, known, what in (("events", None, "event types"), ("regions", Region, "region slugs"),
                              ("services", Service, "service slugs")):
        if name not in out:
            continue
        given = out[name] or []
        if not isinstance(given, list) or not all(isinstance(v, str) for v in given):
            errors[name] = [f"A list of {what} (empty: all)."]
            continue
        wanted = sorted(set(given))
        valid = (notifications.EVENT_TYPES if known is None
                 else set(known._default_manager.filter(slug__in=wanted).values_list("slug", flat=True)))
        unknown = [v for v in wanted if v not in valid]
        if unknown:
            errors[name] = [f"Unknown {what}: {', '.join(unknown)}."]
        out[name] = wanted
    if "secret" in out and out["secret"] is not None and len(str(out["secret"])) < MIN_SECRET_CHARS:
        errors["secret"] = [f"At least {MIN_SECRET_CHARS} characters (leave it out to have one generated)."]
    if errors:
        raise InvalidInput(errors)
    return out


@transaction.atomic
def do_create_webhook(data: Mapping[str, Any], *, actor: Actor, reason: str = "") -> tuple[WebhookSubscription, str | None]:
    """A new subscription; returns it and the secret when one was generated (shown once)."""
    values = _clean({"format": WebhookFormat.JSON, "events": [], "regions": [], "services": [], "enabled": True,
                     **data}, None)
    for required in ("name", "url"):
        if not values.get(required):
            raise InvalidInput({required: ["This field is required."]})
    generated = None if values.get("secret") else new_secret()
    secret = str(values.get("secret") or generated)
    try:
        with transaction.atomic():
            sub = WebhookSubscription.objects.create(
                **{k: values[k] for k in _FIELDS}, secret=secret, created_by=actor.name)
    except IntegrityError as exc:
        raise InvalidInput({"name": [f"Conflicts with an existing webhook: {exc}"]}) from exc
    ChangeSet(actor, reason).record("webhook.create", sub, before=None, after=webhook_view(sub))
    return sub, generated


@transaction.atomic
def do_update_webhook(sub: WebhookSubscription, data: Mapping[str, Any], *, actor: Actor, reason: str = "",
                      expected_revision: int | None = None) -> WebhookSubscription:
    """Change a subscription; a `secret` given replaces the old one (the audit says so, not what it is)."""
    locked = lock_for_write(sub, expected_revision)
    values = _clean(data, locked)
    before = webhook_view(locked)
    secret = values.pop("secret", None)
    for name, value in values.items():
        setattr(locked, name, value)
    after = webhook_view(locked)
    if secret and secret != locked.secret:
        locked.secret = secret
        after["secret"] = "replaced"
    if after == before:
        return locked
    locked.revision += 1
    locked.save()
    ChangeSet(actor, reason).record("webhook.update", locked, before=before, after=after)
    return locked


@transaction.atomic
def do_delete_webhook(sub: WebhookSubscription, *, actor: Actor, reason: str = "",
                      expected_revision: int | None = None) -> None:
    """Remove a subscription and its delivery log."""
    locked = lock_for_write(sub, expected_revision)
    before, pk = webhook_view(locked), locked.pk
    locked.delete()
    locked.pk = pk  # the Change names what was deleted
    ChangeSet(actor, reason).record("webhook.delete", locked, before=before, after=None)


@transaction.atomic
def do_send_test(sub: WebhookSubscription, *, actor: Actor) -> WebhookDelivery:
    """A `webhook.test` delivery to this subscription, whatever its filters: sent after commit."""
    event = notifications.envelope("webhook.test", f"Test delivery to {sub.name}, asked by {actor.name}",
                                   {"subscription": sub.name, "actor": actor.name, "request_id": actor.request_id})
    [pk] = notifications.deliver_to([sub], event)
    ChangeSet(actor, "test delivery").record("webhook.test", sub, before=None,
                                             after={"delivery": pk, "event_id": event["id"]})
    return WebhookDelivery.objects.select_related("subscription").get(pk=pk)


@transaction.atomic
def do_redeliver(delivery: WebhookDelivery, *, actor: Actor, reason: str = "") -> WebhookDelivery:
    """Send a dead letter (or a failed delivery waiting for its next try) again now, with its
    tries counted afresh. Its event id stays: receivers that saw it can tell."""
    before = dict(WebhookDelivery.objects.filter(pk=delivery.pk).values("status", "attempts", "last_error").first() or {})
    # Compare-and-set: a delivery a worker is sending, or one delivered meanwhile, is left alone.
    moved = WebhookDelivery.objects.filter(pk=delivery.pk, status__in=[DeliveryStatus.DEAD, DeliveryStatus.FAILED]).update(
        status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=timezone.now())
    current = WebhookDelivery.objects.select_related("subscription").get(pk=delivery.pk)
    if not moved:
        raise StateConflict(f"delivery {delivery.pk} is {current.status}; only a dead or failed one is sent again.",
                            code="not_dead")
    ChangeSet(actor, reason or "redeliver").record(
        "webhook.redeliver", current, before=before, after={"status": current.status, "attempts": 0},
        related=current.subscription)
    transaction.on_commit(lambda: notifications.enqueue([current.pk]))
    return current


# --- sending ----------------------------------------------------------------------------------


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Steering-Signature value: HMAC-SHA256 of `<timestamp>.<body>` with the secret."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={mac}"


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render(payload: Mapping[str, Any], fmt: str) -> bytes:
    """The body sent: the event envelope (json), or a Slack message made from it (slack)."""
    if fmt == WebhookFormat.SLACK:
        scope = ", ".join([*payload.get("regions", []), *payload.get("services", [])])
        text = f"[{payload.get('type')}] {payload.get('summary', '')}"
        context = f"{payload.get('time', '')} · {payload.get('id', '')}" + (f" · {scope}" if scope else "")
        body: Mapping[str, Any] = {
            "text": _slack_escape(text),
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(text)[:2900]}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": _slack_escape(context)[:2900]}]},
            ],
        }
    else:
        body = payload
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def backoff_seconds(attempt: int, rand: Callable[[], float] = random.random) -> float:
    """How long after its `attempt`-th failed try a delivery is tried again: doubling from
    STEERING_WEBHOOK_BACKOFF_SECONDS, capped, with half of it random (so receivers coming back
    are not hit by every sender at once)."""
    full = min(settings.STEERING_WEBHOOK_BACKOFF_SECONDS * 2 ** max(0, attempt - 1),
               settings.STEERING_WEBHOOK_BACKOFF_MAX_SECONDS)
    return float(full) * (0.5 + 0.5 * rand())


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx is an answer (a failed try), never a second destination


_OPENER = urllib.request.build_opener(_NoRedirects)


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> tuple[int | None, str]:
    """(status code or None, error words: empty when the answer was 2xx)."""
    request = urllib.request.Request(url, data=body, method="POST", headers=dict(headers))
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read(1024)
            return int(response.status), ""
    except urllib.error.HTTPError as exc:
        try:
            said = exc.read(200).decode("utf-8", "replace").strip()
        except Exception:
            said = ""
        return exc.code, f"HTTP {exc.code} {exc.reason}" + (f": {said}" if said else "")
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            return None, f"no answer within {timeout:g} s"
        return None, f"could not connect: {reason}"
    except TimeoutError:
        return None, f"no answer within {timeout:g} s"
    except (OSError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


def _claim(delivery_id: int, now: datetime.datetime) -> WebhookDelivery | None:
    """This worker's try of a due delivery, or None when it is not due or another worker has it."""
    lease = now + datetime.timedelta(seconds=settings.STEERING_WEBHOOK_TIMEOUT_SECONDS + 60)
    # Compare-and-set on the due time: of the enqueued task and the sweeper, one moves it.
    won = WebhookDelivery.objects.filter(pk=delivery_id, status__in=_WAITING, next_attempt_at__lte=now).update(
        attempts=F("attempts") + 1, next_attempt_at=lease, last_attempt_at=now)
    if not won:
        return None
    return WebhookDelivery.objects.select_related("subscription").get(pk=delivery_id)


def deliver(delivery_id: int, *, now: datetime.datetime | None = None) -> str:
    """One try of a due delivery: its status after it, or "skipped" (not due, or taken)."""
    now = now or timezone.now()
    d = _claim(delivery_id, now)
    if d is None:
        return "skipped"
    sub = d.subscription
    if not sub.enabled and d.event_type != "webhook.test":
        code, error = None, "the subscription is disabled"
        attempts_left = False
    else:
        body = render(d.payload, d.format)
        stamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   "X-Steering-Event": d.event_type, "X-Steering-Event-Id": d.event_id,
                   "X-Steering-Delivery": str(d.pk), "X-Steering-Timestamp": stamp,
                   "X-Steering-Signature": sign(sub.secret, stamp, body)}
        code, error = post(sub.url, body, headers, settings.STEERING_WEBHOOK_TIMEOUT_SECONDS)
        attempts_left = d.attempts < settings.STEERING_WEBHOOK_MAX_ATTEMPTS
    done = max(now, timezone.now())  # `now` may be ahead of the clock (a sweep's view of what is due)
    if not error:
        status, values = DeliveryStatus.SUCCEEDED, {"delivered_at": done, "next_attempt_at": None, "last_error": ""}
    elif attempts_left:
        status = DeliveryStatus.FAILED
        values = {"next_attempt_at": done + datetime.timedelta(seconds=backoff_seconds(d.attempts)),
                  "last_error": error[:MAX_ERROR_CHARS]}
    else:
        status, values = DeliveryStatus.DEAD, {"next_attempt_at": None, "last_error": error[:MAX_ERROR_CHARS]}
    # Only this try's result lands: a redeliver meanwhile reset the count (and owns the row now).
    WebhookDelivery.objects.filter(pk=d.pk, attempts=d.attempts, status__in=_WAITING).update(
        status=status, last_status_code=code, **values)
    if status != DeliveryStatus.SUCCEEDED:
        logger.info("webhook delivery %s to %s: try %s %s (%s)", d.pk, sub.name, d.attempts, status, error)
    return str(status)


def deliver_due(*, now: datetime.datetime | None = None, budget_seconds: float = 20.0, limit: int = 200) -> dict[str, int]:
    """Try every delivery that is due (new ones whose enqueue was lost, retries whose backoff
    ran out), oldest due first, within a time budget (what is left waits for the next sweep)."""
    now = now or timezone.now()
    started = time.monotonic()
    due = list(WebhookDelivery.objects.filter(status__in=_WAITING, next_attempt_at__lte=now)
               .order_by("next_attempt_at").values_list("pk", flat=True)[:limit])
    counts: dict[str, int] = {}
    for pk in due:
        if time.monotonic() - started > budget_seconds:
            break
        result = deliver(pk, now=max(now, timezone.now()))
        counts[result] = counts.get(result, 0) + 1
    return counts


def purge(*, now: datetime.datetime | None = None) -> int:
    """Delivered and dead deliveries older than STEERING_WEBHOOK_KEEP_DAYS go."""
    cutoff = (now or timezone.now()) - datetime.timedelta(days=settings.STEERING_WEBHOOK_KEEP_DAYS)
    deleted, _ = WebhookDelivery.objects.filter(status__in=[DeliveryStatus.SUCCEEDED, DeliveryStatus.DEAD],
                                                created_at__lt=cutoff).delete()
    return deleted
