"""Serializers for topology resources. Writes go through services, never serializer.save()."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from steering import capacity
from steering.models import (
    VIP,
    AnycastPrefix,
    Backend,
    ClientNetwork,
    Monitor,
    Pool,
    PoP,
    Region,
    SafetyRule,
    Service,
)
from steering.representation import weight_inputs
from steering.services.allowlist import allowlist_error
from steering.validators import validate_monitor_path

COMMON_READ_ONLY = ("id", "revision", "created_at", "updated_at")


class StrictMixin(serializers.Serializer):  # type: ignore[type-arg]
    """Unknown fields and attempts to write read-only fields are errors, not silently dropped."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            writable = {name for name, f in self.fields.items() if not f.read_only}
            errors = {}
            for key in data:
                if key in writable:
                    continue
                if key in self.fields:
                    hint = getattr(getattr(self, "Meta", None), "read_only_hints", {}).get(key, "This field is read-only.")
                    errors[key] = [hint]
                else:
                    errors[key] = ["Unknown field."]
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


class BaseModelSerializer(StrictMixin, serializers.ModelSerializer):  # type: ignore[type-arg]
    pass


class RegionSerializer(BaseModelSerializer):
    class Meta:
        model = Region
        fields = [*COMMON_READ_ONLY, "slug", "name", "latitude", "longitude", "admin_state"]
        read_only_fields = [*COMMON_READ_ONLY, "admin_state"]
        read_only_hints = {"admin_state": "Changed by the drain, undrain and maintenance actions."}


class PoPSerializer(BaseModelSerializer):
    class Meta:
        model = PoP
        fields = [*COMMON_READ_ONLY, "region", "slug", "name", "city", "latitude", "longitude",
                  "admin_state", "announce", "capacity_rps"]
        read_only_fields = [*COMMON_READ_ONLY, "admin_state", "announce"]
        read_only_hints = {
            "admin_state": "Changed by the drain, undrain and maintenance actions.",
            "announce": "Changed by the announce and withdraw actions.",
        }


class AnycastPrefixSerializer(BaseModelSerializer):
    class Meta:
        model = AnycastPrefix
        fields = [*COMMON_READ_ONLY, "prefix", "description"]
        read_only_fields = COMMON_READ_ONLY


class ServiceSerializer(BaseModelSerializer):
    class Meta:
        model = Service
        fields = [*COMMON_READ_ONLY, "slug", "fqdn", "port", "protocol", "dns_policy", "ttl", "anycast_prefix"]
        read_only_fields = COMMON_READ_ONLY


class VIPSerializer(BaseModelSerializer):
    class Meta:
        model = VIP
        fields = [*COMMON_READ_ONLY, "service", "region", "address", "weight", "priority", "enabled"]
        read_only_fields = COMMON_READ_ONLY


class ClientNetworkSerializer(BaseModelSerializer):
    class Meta:
        model = ClientNetwork
        fields = [*COMMON_READ_ONLY, "cidr", "region", "description"]
        read_only_fields = COMMON_READ_ONLY


class MonitorSerializer(BaseModelSerializer):
    class Meta:
        model = Monitor
        fields = [*COMMON_READ_ONLY, "slug", "kind", "method", "path", "host_header", "expected_status",
                  "body_match", "tls_verify", "interval_seconds", "timeout_seconds", "rise", "fall"]
        read_only_fields = COMMON_READ_ONLY
        # What the prober can send once percent-encoded (steering.health.checks.request_target).
        extra_kwargs = {"path": {"validators": [validate_monitor_path]}}

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        instance = self.instance
        interval = attrs.get("interval_seconds", getattr(instance, "interval_seconds", 2.0))
        timeout = attrs.get("timeout_seconds", getattr(instance, "timeout_seconds", 1.0))
        if timeout > interval:
            raise serializers.ValidationError({"timeout_seconds": ["The timeout cannot exceed the interval."]})
        return attrs


class SafetyRuleSerializer(BaseModelSerializer):
    """An assertion the guard holds every action to; the kind names which scope it needs
    (min_dns_regions: service; min_announcing_pops: prefix; max_pool_out_percent: pool, or none
    for every pool)."""

    class Meta:
        model = SafetyRule
        fields = [*COMMON_READ_ONLY, "slug", "kind", "service", "prefix", "pool", "threshold", "enabled",
                  "description"]
        read_only_fields = COMMON_READ_ONLY


# Passive health per pool (steering.models.Pool): the data plane's retries and observe, and the
# control plane's outlier ejection. Ranges come from the model's validators (400 with field errors).
PASSIVE_HEALTH_FIELDS = ("retries", "redispatch", "retry_on", "observe", "error_limit", "outlier_detection",
                         "outlier_failure_percent", "outlier_window_seconds", "outlier_min_requests",
                         "outlier_ejection_seconds", "outlier_max_ejection_seconds", "outlier_max_ejected_percent")


class PoolSerializer(BaseModelSerializer):
    pop_slug = serializers.CharField(source="pop.slug", read_only=True)

    class Meta:
        model = Pool
        fields = [*COMMON_READ_ONLY, "pop", "pop_slug", "service", "slug", "mode", "match_host",
                  "match_path_prefix", "rule_priority", "algorithm", "monitor", "backup_pool",
                  "min_healthy_percent", "panic_threshold_percent", "admin_state", "in_panic",
                  "default_grace_seconds", "expected_rps", *PASSIVE_HEALTH_FIELDS, "outlier_panic",
                  "outlier_panic_reason"]
        read_only_fields = [*COMMON_READ_ONLY, "admin_state", "in_panic", "outlier_panic", "outlier_panic_reason"]
        read_only_hints = {"in_panic": "Set by the health engine.",
                           "admin_state": "Changed by the drain, undrain and maintenance actions.",
                           "outlier_panic": "Set by outlier ejection when its bounds keep failing backends in.",
                           "outlier_panic_reason": "Set by outlier ejection."}
        extra_kwargs = {"outlier_max_ejected_percent": {"help_text": (
            "At most this share of the pool's backends taken out by live traffic at once, and at least one "
            "backend when the pool has fewer than 100/N backends, like Envoy; never below min_healthy_percent "
            "of the pool's capacity. HAProxy's own observe is held to the same bound by its agent. 0 only "
            "watches (verdicts shown, nobody ejected).")}}

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        instance = self.instance

        def value(name: str) -> Any:
            if name in attrs:
                return attrs[name]
            if instance is not None:
                return getattr(instance, name)
            return Pool._meta.get_field(name).default  # type: ignore[union-attr]

        if value("outlier_max_ejection_seconds") < value("outlier_ejection_seconds"):
            raise serializers.ValidationError({"outlier_max_ejection_seconds": [
                "The longest ejection cannot be shorter than the first (outlier_ejection_seconds)."]})
        return attrs


class BackendSerializer(BaseModelSerializer):
    path = serializers.CharField(read_only=True)
    effective_weight = serializers.SerializerMethodField()
    effective_weight_reason = serializers.SerializerMethodField()

    class Meta:
        model = Backend
        fields = [*COMMON_READ_ONLY, "pool", "name", "path", "address", "port", "weight", "effective_weight",
                  "effective_weight_reason", "admin_state", "health", "health_changed_at", "backup",
                  "capacity_rps", "slow_start_seconds", "ready_since", "drain_started_at", "drain_deadline",
                  "version", "operation", "ejected_at", "ejected_until", "ejection_count", "ejection_reason"]
        read_only_fields = [*COMMON_READ_ONLY, "admin_state", "health", "health_changed_at", "ready_since",
                            "drain_started_at", "drain_deadline", "operation", "ejected_at", "ejected_until",
                            "ejection_count", "ejection_reason"]
        read_only_hints = {
            "admin_state": "Changed by the drain, undrain and maintenance actions.",
            "health": "Set by the health checks.",
            **{name: "Set by outlier ejection (live traffic)." for name in
               ("ejected_at", "ejected_until", "ejection_count", "ejection_reason")},
        }

    def _explained(self, obj: Backend) -> capacity.WeightExplanation:
        cache = self.context.setdefault("_explained", {})  # type: ignore[attr-defined]  # DRF context is a dict
        if obj.pk not in cache:
            cache[obj.pk] = capacity.explain_effective_weight(weight_inputs(obj, pool_in_panic=obj.pool.in_panic))
        return cache[obj.pk]  # type: ignore[no-any-return]

    def get_effective_weight(self, obj: Backend) -> int:
        return self._explained(obj).effective

    def get_effective_weight_reason(self, obj: Backend) -> str:
        return self._explained(obj).reason

    def validate_address(self, value: str) -> str:
        why = allowlist_error(value)
        if why:
            raise serializers.ValidationError(why)
        return value
