"""The freeze switch: one row. While it is on, the API refuses every change except an admin's
with a reason (steering.api.permissions); the system's own work (timers already running, the
prober, the agents) goes on."""

from __future__ import annotations

from django.db import models

from steering.models.base import TrackedModel


class ChangeFreeze(TrackedModel):
    frozen = models.BooleanField(default=False)
    reason = models.TextField(blank=True, default="")
    since = models.DateTimeField(null=True, blank=True)
    by = models.CharField(max_length=150, blank=True, default="")

    def __str__(self) -> str:
        return "changes frozen" if self.frozen else "changes allowed"
