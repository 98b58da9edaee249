"""What serves traffic inside a PoP: pools (with L7 match rules) and their backends."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from steering.choices import AdminState, Algorithm, Health, PoolMode
from steering.models.base import PORT_VALIDATORS, WEIGHT_VALIDATORS, TrackedModel
from steering.models.monitor import Monitor
from steering.models.topology import PoP, Service
from steering.validators import validate_address_or_hostname, validate_hostname, validate_path_prefix

PERCENT_VALIDATORS = [MinValueValidator(0), MaxValueValidator(100)]

# HAProxy `retry-on` keywords we render (steering.dataplane.haproxy.render). Only these: each is a
# failure after which the request can be replayed elsewhere; L7 ones are replayed for idempotent
# methods only (the rendered `http-request disable-l7-retry` says so).
RETRY_ON_KEYWORDS = ("conn-failure", "empty-response", "junk-response", "response-timeout", "0rtt-rejected",
                     "404", "408", "425", "500", "502", "503", "504")
DEFAULT_RETRY_ON = "conn-failure empty-response response-timeout"


def validate_retry_on(value: str) -> None:
    words = value.split()
    unknown = [w for w in words if w not in RETRY_ON_KEYWORDS]
    if unknown:
        raise ValidationError(f"Unknown retry-on keyword(s): {', '.join(unknown)}. "
                              f"Use any of: {' '.join(RETRY_ON_KEYWORDS)} (or leave empty: connection failures only).")
    if len(set(words)) != len(words):
        raise ValidationError("Each retry-on keyword at most once.")


class Observe(models.TextChoices):
    """HAProxy watching live traffic (`observe`): layer 4 takes a server out after consecutive
    failed connections. HTTP-status verdicts are the control plane's, bounded (steering.services.outliers)."""

    OFF = "off", "off"
    LAYER4 = "layer4", "layer 4 (failed connections)"


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

    # --- passive health in the data plane (HAProxy): a failed request is replayed elsewhere ----
    retries = models.PositiveSmallIntegerField(
        default=3, validators=[MaxValueValidator(10)],
        help_text="Attempts after the first when a connection fails (HAProxy `retries`); 0 disables.")
    redispatch = models.BooleanField(
        default=True, help_text="Retry on another server, never the one that just failed (`option redispatch 1`).")
    retry_on = models.CharField(
        max_length=200, blank=True, default=DEFAULT_RETRY_ON, validators=[validate_retry_on],
        help_text="HAProxy `retry-on` keywords, space separated (L7 pools). Anything past a refused "
                  "connection is replayed for idempotent methods only.")
    observe = models.CharField(
        max_length=8, choices=Observe.choices, default=Observe.LAYER4,
        help_text="HAProxy watches live traffic: `layer4` takes a server out after `error_limit` "
                  "consecutive failed connections, and puts it back once it accepts connections again.")
    error_limit = models.PositiveSmallIntegerField(
        default=5, validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="Consecutive failures before HAProxy (observe) and the outlier policy act.")
    # --- outlier ejection (steering.services.outliers): the control plane's passive verdicts ----
    outlier_detection = models.BooleanField(
        default=True,
        help_text="Eject backends that fail live traffic (consecutive failures, or a share of 5xx and failed "
                  "attempts over a window).")
    outlier_failure_percent = models.PositiveSmallIntegerField(
        default=25, validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="Eject when 5xx answers and failed attempts reach this share of a backend's requests "
                  "over the window.")
    outlier_window_seconds = models.PositiveSmallIntegerField(
        default=10, validators=[MinValueValidator(2), MaxValueValidator(300)],
        help_text="The window the failure share is measured over.")
    outlier_min_requests = models.PositiveIntegerField(
        default=10, validators=[MinValueValidator(1), MaxValueValidator(1_000_000)],
        help_text="Fewer requests than this in the window: too little evidence for the share rule.")
    outlier_ejection_seconds = models.PositiveIntegerField(
        default=30, validators=[MinValueValidator(1), MaxValueValidator(3600)],
        help_text="First ejection's length; each repeat adds as much again (Envoy's base ejection time).")
    outlier_max_ejection_seconds = models.PositiveIntegerField(
        default=300, validators=[MinValueValidator(1), MaxValueValidator(86400)],
        help_text="An ejection never lasts longer than this.")
    outlier_max_ejected_percent = models.PositiveSmallIntegerField(
        default=10, validators=PERCENT_VALIDATORS,
        help_text="At most this share of the pool's backends ejected at once (at least one, as in Envoy); "
                  "0 only watches (verdicts shown, nobody ejected). The pool's min_healthy_percent of "
                  "its capacity always stays in.")
    # Set by steering.services.outliers: more backends fail live traffic than the bounds let it eject.
    outlier_panic = models.BooleanField(default=False, editable=False)
    outlier_panic_reason = models.CharField(max_length=300, blank=True, default="", editable=False)

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
            models.CheckConstraint(
                condition=models.Q(retries__lte=10, error_limit__gte=1, error_limit__lte=100,
                                   outlier_failure_percent__gte=1, outlier_failure_percent__lte=100,
                                   outlier_max_ejected_percent__lte=100, outlier_window_seconds__gte=2,
                                   outlier_ejection_seconds__gte=1,
                                   outlier_max_ejection_seconds__gte=models.F("outlier_ejection_seconds")),
                name="%(app_label)s_%(class)s_passive_health_range",
                violation_error_message="Passive health settings out of range (and the longest ejection "
                                        "cannot be shorter than the first).",
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
    # The state version that carried the drain: the PoP's HAProxy confirms the drain by
    # acknowledging this version (or a later one), and only then may the drain complete.
    drain_version = models.BigIntegerField(null=True, blank=True, editable=False)
    version = models.CharField(max_length=64, blank=True, help_text="Software version deployed on it.")
    # Outlier ejection (steering.services.outliers): out of new traffic while ejected_until is ahead,
    # whatever the prober says; ejected_at is cleared when it returns (ejected_until then tells when).
    ejected_at = models.DateTimeField(null=True, blank=True, editable=False)
    ejected_until = models.DateTimeField(null=True, blank=True, editable=False)
    ejection_count = models.PositiveIntegerField(default=0, editable=False,
                                                 help_text="Ejections in a row; each lasts longer.")
    ejection_reason = models.CharField(max_length=300, blank=True, default="", editable=False)
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
