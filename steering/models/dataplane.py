"""What each data plane has applied: one row per layer, PoP and agent instance.

Agents acknowledge (ACK) the desired-state version they applied, or refuse it (NACK) with the
data plane's own error. Written on an ACK/NACK that moves the version, never per request: the
agent's last contact ("seen") is a heartbeat kept in Redis and copied here at most every
SEEN_RESOLUTION so it survives a Redis restart.
"""

from __future__ import annotations

from django.db import models

from steering.choices import DataplaneLayer


class DataplaneState(models.Model):
    layer = models.CharField(max_length=16, choices=DataplaneLayer.choices)
    pop = models.ForeignKey("steering.PoP", on_delete=models.CASCADE, null=True, blank=True,
                            related_name="dataplane_states", help_text="None for the DNS layer.")
    # Several agents may serve one PoP's layer (two HAProxy hosts); each names itself.
    instance = models.CharField(max_length=100, default="default")
    applied_version = models.BigIntegerField(default=0)
    applied_etag = models.CharField(max_length=80, blank=True)
    applied_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, help_text="The data plane's own error for the refused version.")
    error_version = models.BigIntegerField(null=True, blank=True)
    error_at = models.DateTimeField(null=True, blank=True)
    seen_at = models.DateTimeField(null=True, blank=True)
    agent_token_name = models.CharField(max_length=100, blank=True)
    agent_info = models.JSONField(default=dict, blank=True, help_text="What the agent says of itself.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["layer", "pop_id", "instance"]
        constraints = [
            models.UniqueConstraint(
                fields=["layer", "pop", "instance"], condition=models.Q(pop__isnull=False),
                name="%(app_label)s_%(class)s_unique_pop_layer_instance",
                violation_error_message="This agent instance already reports for this PoP and layer.",
            ),
            models.UniqueConstraint(
                fields=["layer", "instance"], condition=models.Q(pop__isnull=True),
                name="%(app_label)s_%(class)s_unique_global_layer_instance",
                violation_error_message="This agent instance already reports for this layer.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.pop.slug if self.pop is not None else 'fleet'} {self.layer} ({self.instance})"

    @property
    def scope(self) -> str:
        return self.pop.slug if self.pop is not None else "dns"
