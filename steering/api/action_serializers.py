"""Inputs of the actions (drain, undrain, maintenance, weight, abort) and token issuing."""

from __future__ import annotations

from django.utils import timezone
from rest_framework import serializers

from steering.api.serializers import StrictMixin
from steering.choices import Role
from steering.models import ApiToken, Operation, PoP


class ActionInput(StrictMixin, serializers.Serializer):  # type: ignore[type-arg]
    reason = serializers.CharField(max_length=1000, help_text="Why: goes into the audit log.")

    class Meta:
        read_only_hints: dict[str, str] = {}


class GuardedActionInput(ActionInput):
    force = serializers.BooleanField(default=False, help_text="Proceed past the capacity guard.")
    force_reason = serializers.CharField(max_length=1000, required=False, default="", allow_blank=True)
    dry_run = serializers.BooleanField(default=False, help_text="Only compute the impact.")


class DrainInput(GuardedActionInput):
    grace_seconds = serializers.IntegerField(min_value=0, max_value=86400, required=False, allow_null=True,
                                             help_text="Time allowed for sessions to finish (default: the pool's).")
    layered = serializers.BooleanField(default=False, help_text=(
        "PoPs and regions: leave DNS first, wait out the TTL, withdraw anycast, then drain locally."))
    ttl_factor = serializers.FloatField(min_value=1.0, max_value=10.0, default=2.0,
                                        help_text="Layered drain: wait this many TTLs after leaving DNS.")


class WeightInput(GuardedActionInput):
    weight = serializers.IntegerField(min_value=0, max_value=256, help_text="The weight to end at.")
    ramp_seconds = serializers.IntegerField(min_value=0, max_value=86400, required=False, default=0,
                                            help_text="Reach the weight gradually over this long (up to 10 even steps).")
    steps = serializers.ListField(child=serializers.IntegerField(min_value=0, max_value=256), required=False,
                                  min_length=1, max_length=20,
                                  help_text="Explicit weights to pass through, e.g. [5, 25, 100] for a canary.")
    step_seconds = serializers.IntegerField(min_value=1, max_value=86400, required=False,
                                            help_text="Seconds between explicit steps.")


class ImpactQuery(serializers.Serializer):  # type: ignore[type-arg]
    action = serializers.ChoiceField(choices=["drain", "maintenance", "undrain", "withdraw"], default="drain")


class OperationSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    impact = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()

    class Meta:
        model = Operation
        fields = ["id", "kind", "status", "target_type", "target_id", "target_repr", "actor_name", "source",
                  "request_id", "reason", "forced", "steps", "progress", "result", "impact", "deadline",
                  "created_at", "finished_at", "revision"]
        read_only_fields = fields

    def get_progress(self, obj: Operation) -> dict:  # type: ignore[type-arg]
        # Time left is computed on read, so pollers see it move between sweeps.
        progress = dict(obj.progress or {})
        if obj.status in ("running", "paused") and obj.deadline is not None:
            progress["seconds_left"] = max(0, int((obj.deadline - timezone.now()).total_seconds()))
        return progress

    def get_impact(self, obj: Operation) -> dict | None:  # type: ignore[type-arg]
        return obj.params.get("impact") if isinstance(obj.params, dict) else None


class TokenSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    user = serializers.CharField(source="user.username", read_only=True)
    pop: serializers.SlugRelatedField = serializers.SlugRelatedField(slug_field="slug", read_only=True,  # type: ignore[type-arg]
                                       help_text="Agent tokens: the PoP they serve (none: the DNS layer).")

    class Meta:
        model = ApiToken
        fields = ["id", "user", "name", "role", "pop", "hint", "created_at", "expires_at", "last_used_at", "revoked_at"]
        read_only_fields = fields


class TokenCreateInput(StrictMixin, serializers.Serializer):  # type: ignore[type-arg]
    name = serializers.CharField(max_length=100)
    role = serializers.ChoiceField(choices=Role.choices)
    user = serializers.CharField(max_length=150, required=False, help_text="Username (default: yourself).")
    pop = serializers.SlugRelatedField(slug_field="slug", queryset=PoP.objects.all(), required=False, allow_null=True,
                                       help_text="Role agent only: the PoP the agent serves (omit for the DNS layer).")
    expires_in_days = serializers.IntegerField(min_value=1, max_value=3650, required=False)

    class Meta:
        read_only_hints: dict[str, str] = {}
