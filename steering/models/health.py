"""A backend's health transitions with their evidence (HAProxy's "check" log, healthchecks' Flip).

One row per transition, never per probe: probes live in Redis. Written by
steering.services.health in the same transaction as the transition's Change row.
"""

from __future__ import annotations

from django.db import models

from steering.choices import Health
from steering.models.pools import Backend


class HealthEvent(models.Model):
    backend = models.ForeignKey(Backend, on_delete=models.CASCADE, related_name="health_events")
    time = models.DateTimeField(auto_now_add=True)
    from_health = models.CharField(max_length=16, choices=Health.choices)
    to_health = models.CharField(max_length=16, choices=Health.choices)
    # {"check": "http", "result": "status", "status": 503, "latency_ms": 1.2, "error": "...",
    #  "ok_streak": 0, "fail_streak": 3, "rise": 2, "fall": 3}
    evidence = models.JSONField(default=dict, blank=True)
    change_id = models.BigIntegerField(null=True, blank=True, help_text="The audit Change of this transition.")
    # The prober's per-backend transition sequence (steering.health.store.APPLY_SCRIPT): a
    # transition delivered again is skipped unless newer than the highest recorded here.
    seq = models.BigIntegerField(null=True, blank=True, help_text="The prober's sequence number of this transition.")

    class Meta:
        ordering = ["-time", "-id"]
        indexes = [
            # Serves "recent health events of this backend" (backend page, samples endpoint).
            models.Index(fields=["backend", "-time"], name="steering_healthevent_recent"),
            # Serves "the newest seq recorded for these backends" (steering.services.health).
            models.Index(fields=["backend", "seq"], name="steering_healthevent_seq"),
        ]

    def __str__(self) -> str:
        return f"{self.backend_id}: {self.from_health} -> {self.to_health}"
