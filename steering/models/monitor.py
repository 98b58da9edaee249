"""How a backend's health is checked (as HAProxy operators know it: inter, rise, fall)."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from steering.choices import HttpMethod, MonitorKind
from steering.models.base import TrackedModel
from steering.validators import validate_hostname, validate_path_prefix, validate_status_range


class Monitor(TrackedModel):
    slug = models.SlugField(max_length=50, unique=True)
    kind = models.CharField(max_length=8, choices=MonitorKind.choices, default=MonitorKind.TCP)
    method = models.CharField(max_length=8, choices=HttpMethod.choices, default=HttpMethod.GET)
    path = models.CharField(max_length=400, default="/", validators=[validate_path_prefix])
    host_header = models.CharField(max_length=253, blank=True, validators=[validate_hostname])
    expected_status = models.CharField(max_length=64, default="200-399", validators=[validate_status_range])
    body_match = models.CharField(max_length=200, blank=True)
    tls_verify = models.BooleanField(default=True)
    interval_seconds = models.FloatField(default=2.0, validators=[MinValueValidator(1.0), MaxValueValidator(3600.0)])
    timeout_seconds = models.FloatField(default=1.0, validators=[MinValueValidator(0.05), MaxValueValidator(60.0)])
    rise = models.PositiveSmallIntegerField(default=2, validators=[MinValueValidator(1), MaxValueValidator(100)])
    fall = models.PositiveSmallIntegerField(default=3, validators=[MinValueValidator(1), MaxValueValidator(100)])

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(interval_seconds__gte=1.0),
                name="%(app_label)s_%(class)s_interval_at_least_1s",
                violation_error_message="The check interval must be at least 1 second.",
            ),
            models.CheckConstraint(
                condition=models.Q(timeout_seconds__lte=models.F("interval_seconds")),
                name="%(app_label)s_%(class)s_timeout_within_interval",
                violation_error_message="The timeout cannot exceed the interval.",
            ),
            models.CheckConstraint(
                condition=models.Q(rise__gte=1, fall__gte=1),
                name="%(app_label)s_%(class)s_rise_fall_positive",
                violation_error_message="Rise and fall must be at least 1.",
            ),
        ]

    def __str__(self) -> str:
        return self.slug
