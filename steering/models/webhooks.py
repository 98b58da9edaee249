"""Webhooks: who is told what (WebhookSubscription), and each try at telling them (WebhookDelivery).

A delivery row is written in the same transaction as the event it reports (an outbox): a rolled
back action tells nobody, a committed one is delivered even if the worker that was to send it
dies (the webhook sweeper picks up what is due). Retries wait in `next_attempt_at`, a column, not
a Celery countdown (ARCHITECTURE.md §4). The secret signs each body (HMAC-SHA256) and is never
shown by the API after it was set.
"""

from __future__ import annotations

from django.db import models

from steering.choices import DeliveryStatus, WebhookFormat
from steering.models.base import TrackedModel

# Bounds that keep a delivery row small whatever the event carries (steering.services.notifications).
MAX_PAYLOAD_BYTES = 16_000
MAX_ERROR_CHARS = 500


class WebhookSubscription(TrackedModel):
    name = models.CharField(max_length=100, unique=True)
    url = models.URLField(max_length=2000, help_text="http or https; the receiver the operator configured.")
    # Kept as given: the HMAC needs it. The API never returns it (write-only, shown once when generated).
    secret = models.CharField(max_length=200)
    format = models.CharField(max_length=8, choices=WebhookFormat.choices, default=WebhookFormat.JSON)
    # Filters, each a list (empty: everything). Region and service slugs are kept as slugs, not
    # foreign keys: deleting a region must neither be blocked by a webhook nor widen its filter.
    events = models.JSONField(default=list, blank=True, help_text="Event types (empty: all).")
    regions = models.JSONField(default=list, blank=True, help_text="Region slugs (empty: all).")
    services = models.JSONField(default=list, blank=True, help_text="Service slugs (empty: all).")
    enabled = models.BooleanField(default=True)
    created_by = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class WebhookDelivery(models.Model):
    subscription = models.ForeignKey(WebhookSubscription, on_delete=models.CASCADE, related_name="deliveries")
    event_type = models.CharField(max_length=40)
    event_id = models.CharField(max_length=40)
    # The event envelope (bounded by MAX_PAYLOAD_BYTES); the body sent is rendered from it in the
    # format copied here, so a later format change does not rewrite what was recorded.
    payload = models.JSONField(default=dict)
    format = models.CharField(max_length=8, choices=WebhookFormat.choices, default=WebhookFormat.JSON)
    status = models.CharField(max_length=12, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=MAX_ERROR_CHARS, blank=True, default="")
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # Serves the webhook sweeper: deliveries still to try, by when they are due.
            models.Index(fields=["next_attempt_at"], name="steering_webhook_due",
                         condition=models.Q(status__in=["pending", "failed"])),
            # Serves a subscription's delivery log, newest first.
            models.Index(fields=["subscription", "-created_at"], name="steering_webhook_log"),
            # Serves the dead-letter list.
            models.Index(fields=["status", "-created_at"], name="steering_webhook_status"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id} to {self.subscription_id} ({self.status})"


class NotificationCursor(models.Model):
    """What a notification watcher saw last (steering.services.watchers): the last health event
    reported, each data plane's condition, the drift signature. One row per watcher, locked while it runs."""

    key = models.CharField(max_length=40, unique=True)
    value = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.key
