"""A long-running action (drain, weight ramp, layered drain): what the UI shows a progress bar for."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from steering.choices import ChangeSource, OperationKind, OperationStatus


class Operation(models.Model):
    kind = models.CharField(max_length=16, choices=OperationKind.choices)
    status = models.CharField(max_length=16, choices=OperationStatus.choices, default=OperationStatus.RUNNING)
    target_type = models.CharField(max_length=32)
    target_id = models.BigIntegerField()
    target_repr = models.CharField(max_length=300)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    actor_name = models.CharField(max_length=150)
    source = models.CharField(max_length=8, choices=ChangeSource.choices)
    request_id = models.CharField(max_length=64, blank=True)
    reason = models.TextField()
    forced = models.BooleanField(default=False)
    params = models.JSONField(default=dict, blank=True)
    # Steps shown to the operator, e.g. [{"name": "drain 12 backends", "status": "running"}].
    steps = models.JSONField(default=list, blank=True)
    progress = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    deadline = models.DateTimeField(null=True, blank=True)
    # A maintenance window (drain or maintenance): when it starts (None: at once), when its target
    # returns to service by itself (None: when someone undrains it), and when that happened.
    not_before = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    revision = models.PositiveIntegerField(default=1, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # Serves the sweeper and the dashboard's list of running operations.
            models.Index(fields=["deadline"], name="steering_operation_running", condition=models.Q(status="running")),
            models.Index(fields=["target_type", "target_id"], name="steering_operation_target"),
            # Serves the scheduler: windows still to start or to end.
            models.Index(fields=["expires_at"], name="steering_operation_window",
                         condition=models.Q(expired_at__isnull=True, expires_at__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.target_repr} ({self.status})"

    @property
    def etag(self) -> str:
        return f'"operation-{self.pk}-r{self.revision}"'
