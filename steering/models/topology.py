"""Where traffic lands: regions, PoPs, services, their DNS answers and anycast prefixes."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from steering.choices import AdminState, AnnounceState, DnsPolicy, ServiceProtocol
from steering.models.base import (
    LATITUDE_VALIDATORS,
    LONGITUDE_VALIDATORS,
    PORT_VALIDATORS,
    WEIGHT_VALIDATORS,
    TrackedModel,
)
from steering.validators import validate_cidr, validate_fqdn


class Region(TrackedModel):
    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=100)
    latitude = models.FloatField(validators=LATITUDE_VALIDATORS)
    longitude = models.FloatField(validators=LONGITUDE_VALIDATORS)
    admin_state = models.CharField(max_length=16, choices=AdminState.choices, default=AdminState.READY)

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(latitude__gte=-90, latitude__lte=90, longitude__gte=-180, longitude__lte=180),
                name="%(app_label)s_%(class)s_coordinates_in_range",
                violation_error_message="Latitude must be within ±90 and longitude within ±180.",
            ),
        ]

    def __str__(self) -> str:
        return self.slug


class PoP(TrackedModel):
    # PoP codes are unique across the fleet (like airport codes), so `pop/pool/backend` names a backend.
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="pops")
    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=100)
    city = models.CharField(max_length=100)
    latitude = models.FloatField(validators=LATITUDE_VALIDATORS)
    longitude = models.FloatField(validators=LONGITUDE_VALIDATORS)
    admin_state = models.CharField(max_length=16, choices=AdminState.choices, default=AdminState.READY)
    # What the operator wants ExaBGP to do with this PoP's anycast prefixes.
    announce = models.CharField(max_length=16, choices=AnnounceState.choices, default=AnnounceState.ANNOUNCE)
    capacity_rps = models.PositiveIntegerField(default=0, help_text="Requests/s the PoP can carry (0 = sum of its pools).")

    class Meta:
        ordering = ["slug"]
        verbose_name = "PoP"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(latitude__gte=-90, latitude__lte=90, longitude__gte=-180, longitude__lte=180),
                name="%(app_label)s_%(class)s_coordinates_in_range",
                violation_error_message="Latitude must be within ±90 and longitude within ±180.",
            ),
        ]

    def __str__(self) -> str:
        return self.slug


class AnycastPrefix(TrackedModel):
    prefix = models.CharField(max_length=64, unique=True, validators=[validate_cidr])
    description = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["prefix"]
        verbose_name_plural = "anycast prefixes"

    def __str__(self) -> str:
        return self.prefix


class Service(TrackedModel):
    slug = models.SlugField(max_length=50, unique=True)
    fqdn = models.CharField(max_length=253, unique=True, validators=[validate_fqdn])
    port = models.PositiveIntegerField(validators=PORT_VALIDATORS, default=443)
    protocol = models.CharField(max_length=8, choices=ServiceProtocol.choices, default=ServiceProtocol.HTTP)
    dns_policy = models.CharField(max_length=16, choices=DnsPolicy.choices, default=DnsPolicy.WEIGHTED)
    ttl = models.PositiveIntegerField(default=30, validators=[MinValueValidator(1), MaxValueValidator(86400)])
    anycast_prefix = models.ForeignKey(
        AnycastPrefix, on_delete=models.PROTECT, null=True, blank=True, related_name="services"
    )

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(ttl__gte=1, ttl__lte=86400),
                name="%(app_label)s_%(class)s_ttl_range",
                violation_error_message="TTL must be between 1 and 86400 seconds.",
            ),
            models.CheckConstraint(
                condition=models.Q(port__gte=1, port__lte=65535),
                name="%(app_label)s_%(class)s_port_range",
                violation_error_message="Port must be between 1 and 65535.",
            ),
        ]

    def __str__(self) -> str:
        return self.slug


class VIP(TrackedModel):
    """The address DNS hands out for a service in a region."""

    service = models.ForeignKey(Service, on_delete=models.PROTECT, related_name="vips")
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="vips")
    address = models.GenericIPAddressField()
    weight = models.PositiveIntegerField(default=100, validators=WEIGHT_VALIDATORS)
    priority = models.PositiveIntegerField(default=1, help_text="Failover order: lower answers first.")
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["service_id", "priority", "region_id"]
        verbose_name = "VIP"
        constraints = [
            models.UniqueConstraint(
                fields=["service", "region", "address"],
                name="%(app_label)s_%(class)s_unique_service_region_address",
                violation_error_message="This service already has that address in that region.",
            ),
            models.CheckConstraint(
                condition=models.Q(weight__lte=256),
                name="%(app_label)s_%(class)s_weight_range",
                violation_error_message="Weight must be between 0 and 256.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.service_id}@{self.region_id}:{self.address}"


class ClientNetwork(TrackedModel):
    """A resolver or client subnet (EDNS client subnet) steered to a region by geo policy."""

    cidr = models.CharField(max_length=64, unique=True, validators=[validate_cidr])
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="client_networks")
    description = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["cidr"]

    def __str__(self) -> str:
        return self.cidr
