"""What serves traffic inside a PoP: pools (with L7 match rules) and their backends."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from steering.choices import AdminState, Algorithm, Health, PoolMode
from steering.models.base import PORT_VALIDATORS, WEIGHT_VALIDATORS, TrackedModel
from steering.models.monitor import Monitor
from steering.models.topology import PoP, Service
from steering.validators import validate_address_or_hostname, validate_hostname, validate_path_prefix

PERCENT_VALIDATORS = [MinValueValidator(0), MaxValueValidator(100)]


class Pool(TrackedModel):
    pop = models.ForeignKey(PoP, on_delete=models.PROTECT, related_name="pools")
    service = models.ForeignKey(Service, on_delete=models.PROTECT, related_name="pools")
    slug = models.SlugField(max_length=50)
    mode = models.CharField(max_length=4, choices=PoolMode.choices, default=PoolMode.L7)
    # L7 routing: a request whose Host and path match goes here (e.g. /payments to the PCI pool).
    match_host = models.CharField(max_length=253, blank=True, validators=[validate_hostname])
    match_path_prefix = models.CharField(max_length=200, blank=True, validators=[validate_path_prefix])
    rule_priority = models.PositiveIntegerField(default=100, help_text="Lower matches first among L7 rules.")
    algorithm = models.CharField(max_length=16, choices=Algorithm.choices, default=Algorithm.ROUNDROBIN)
    monitor = models.ForeignKey(Monitor, on_delete=models.PROTECT, null=True, blank=True, related_name="pools")
    backup_pool = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="backup_for",
        help_text="Last resort when this pool has no usable backend.",
    )
    min_healthy_percent = models.PositiveSmallIntegerField(default=50, validators=PERCENT_VALIDATORS)
    panic_threshold_percent = models.PositiveSmallIntegerField(default=50, validators=PERCENT_VALIDATORS)
    admin_state = models.CharField(max_length=16, choices=AdminState.choices, default=AdminState.READY)
    in_panic = models.BooleanField(default=False)
    default_grace_seconds = models.PositiveIntegerField(default=30, validators=[MaxValueValidator(86400)])
    # Configured expectation of load (req/s), used by the capacity guard until measured rates exist.
    expected_rps = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["pop_id", "rule_priority", "slug"]
        constraints = [
            models.UniqueConstraint(
                fields=["pop", "slug"],
                name="%(app_label)s_%(class)s_unique_slug_per_pop",
                violation_error_message="A pool with this slug already exists in this PoP.",
            ),
            models.CheckConstraint(
                condition=~models.Q(backup_pool=models.F("id")),
                name="%(app_label)s_%(class)s_not_own_backup",
                violation_error_message="A pool cannot be its own backup.",
            ),
            models.CheckConstraint(
                condition=models.Q(min_healthy_percent__lte=100, panic_threshold_percent__lte=100),
                name="%(app_label)s_%(class)s_percent_range",
                violation_error_message="Percentages must be between 0 and 100.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.pop.slug}/{self.slug}" if self.pop_id else self.slug


class Backend(TrackedModel):
    pool = models.ForeignKey(Pool, on_delete=models.PROTECT, related_name="backends")
    name = models.SlugField(max_length=63)
    address = models.CharField(max_length=253, validators=[validate_address_or_hostname])
    port = models.PositiveIntegerField(validators=PORT_VALIDATORS)
    weight = models.PositiveSmallIntegerField(default=100, validators=WEIGHT_VALIDATORS)
    admin_state = models.CharField(max_length=16, choices=AdminState.choices, default=AdminState.READY)
    health = models.CharField(max_length=16, choices=Health.choices, default=Health.UNKNOWN)
    health_changed_at = models.DateTimeField(null=True, blank=True)
    backup = models.BooleanField(default=False, help_text="Only used when no non-backup backend is usable.")
    capacity_rps = models.PositiveIntegerField(default=0, help_text="Requests/s this backend can carry.")
    slow_start_seconds = models.PositiveIntegerField(default=0, validators=[MaxValueValidator(3600)])
    ready_since = models.DateTimeField(null=True, blank=True, help_text="When it last returned to ready (slow start).")
    drain_started_at = models.DateTimeField(null=True, blank=True)
    drain_deadline = models.DateTimeField(null=True, blank=True)
    version = models.CharField(max_length=64, blank=True, help_text="Software version deployed on it.")
    operation = models.ForeignKey(
        "steering.Operation", on_delete=models.SET_NULL, null=True, blank=True, related_name="backends",
        help_text="The operation currently acting on this backend.",
    )

    class Meta:
        ordering = ["pool_id", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["pool", "name"],
                name="%(app_label)s_%(class)s_unique_name_per_pool",
                violation_error_message="A backend with this name already exists in this pool.",
            ),
            models.UniqueConstraint(
                fields=["pool", "address", "port"],
                name="%(app_label)s_%(class)s_unique_endpoint_per_pool",
                violation_error_message="This pool already has a backend at that address and port.",
            ),
            models.CheckConstraint(
                condition=models.Q(weight__lte=256),
                name="%(app_label)s_%(class)s_weight_range",
                violation_error_message="Weight must be between 0 and 256.",
            ),
            models.CheckConstraint(
                condition=models.Q(port__gte=1, port__lte=65535),
                name="%(app_label)s_%(class)s_port_range",
                violation_error_message="Port must be between 1 and 65535.",
            ),
            models.CheckConstraint(
                condition=~models.Q(admin_state=AdminState.DRAINING) | models.Q(drain_deadline__isnull=False),
                name="%(app_label)s_%(class)s_draining_has_deadline",
                violation_error_message="A draining backend needs a drain deadline.",
            ),
        ]
        indexes = [
            # Serves the 1 s drain sweeper: WHERE admin_state='draining' AND drain_deadline <= now.
            models.Index(
                fields=["drain_deadline"],
                name="steering_backend_drain_due",
                condition=models.Q(admin_state=AdminState.DRAINING),
            ),
            # Serves the dashboard's "what is unhealthy" filters and pool health summaries.
            models.Index(fields=["pool", "health"], name="steering_backend_pool_health"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def path(self) -> str:
        """How people name it: pop/pool/backend."""
        return f"{self.pool.pop.slug}/{self.pool.slug}/{self.name}"
