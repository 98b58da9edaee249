"""Inputs of the actions (drain, undrain, maintenance, weight, abort) and token issuing; the
impact (the capacity what-if) as the answers show it."""

from __future__ import annotations

import dataclasses
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers
from rest_framework_dataclasses.serializers import DataclassSerializer

from steering.api.serializers import StrictMixin
from steering.choices import Role
from steering.models import ApiToken, Operation, PoP
from steering.services.impact import Impact, LayeredPlan, Plan, WeightPlan


class ActionInput(StrictMixin, serializers.Serializer):  # type: ignore[type-arg]
    reason = serializers.CharField(max_length=1000, help_text="Why: goes into the audit log.")

    class Meta:
        read_only_hints: dict[str, str] = {}


class GuardedActionInput(ActionInput):
    force = serializers.BooleanField(default=False, help_text="Proceed past the capacity guard.")
    force_reason = serializers.CharField(max_length=1000, required=False, default="", allow_blank=True)
    dry_run = serializers.BooleanField(default=False, help_text="Only compute the impact.")


class WindowFields(serializers.Serializer):  # type: ignore[type-arg]
    """A maintenance window: a start ahead (scheduled), an end (back in service by itself)."""

    not_before = serializers.DateTimeField(required=False, allow_null=True, help_text=(
        "Start then instead of now (the scheduler starts it, judged again by the guard)."))
    expires_at = serializers.DateTimeField(required=False, allow_null=True, help_text=(
        "Return to service then by itself (audited as system:scheduler); extend with …/operations/{id}/extend/."))


class MaintenanceInput(WindowFields, GuardedActionInput):
    pass


class DrainInput(WindowFields, GuardedActionInput):
    grace_seconds = serializers.IntegerField(min_value=0, max_value=86400, required=False, allow_null=True,
                                             help_text="Time allowed for sessions to finish (default: the pool's).")
    layered = serializers.BooleanField(default=False, help_text=(
        "PoPs and regions: leave DNS first, wait out the TTL, withdraw anycast, then drain locally."))
    ttl_factor = serializers.FloatField(min_value=1.0, max_value=10.0, default=2.0,
                                        help_text="Layered drain: wait this many TTLs after leaving DNS.")


class ExtendInput(ActionInput):
    expires_at = serializers.DateTimeField(help_text="The window's new end.")


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
                  "not_before", "expires_at", "expired_at", "created_at", "finished_at", "revision"]
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


# --- the impact: generated from its dataclasses (steering.services.impact), never copied by hand ---


class _ImpactPartSerializer(DataclassSerializer):  # type: ignore[type-arg]
    # A dataclass of the impact (no docstring: it would describe every part in the schema). A
    # field the JSON leaves out when None (`omit_if_none`) is described as optional, not
    # nullable: it is absent or has a value.

    @property
    def serializer_dataclass_field(self) -> type[serializers.Field]:  # type: ignore[type-arg]
        return _ImpactPartSerializer

    def build_typed_field(self, field_name: str, type_info: Any, extra_kwargs: dict[str, Any]) -> Any:
        field_class, kwargs = super().build_typed_field(field_name, type_info, extra_kwargs)
        if self.dataclass_definition.fields[field_name].metadata.get("omit_if_none"):
            kwargs["allow_null"] = False
        else:  # a field with a default (a list) is still always in the JSON: required in the schema
            kwargs.pop("default", None)
            kwargs["required"] = True
        return field_class, kwargs

    def get_default_field_names(self, declared_fields: Any) -> list[str]:
        # In the dataclass's order; a declared field takes its namesake's place.
        return list(self.dataclass_definition.fields)


class WeightPlanSerializer(_ImpactPartSerializer):
    class Meta:
        dataclass = WeightPlan


class LayeredPlanSerializer(_ImpactPartSerializer):
    class Meta:
        dataclass = LayeredPlan


@extend_schema_field(PolymorphicProxySerializer(
    component_name="ImpactPlan", serializers=[WeightPlanSerializer, LayeredPlanSerializer],
    resource_type_field_name=None))
class ImpactPlanField(serializers.Field):  # type: ignore[type-arg]
    """A weight change's plan (steps) or a layered drain's (DNS, wait, withdrawals)."""

    def to_representation(self, value: Plan) -> dict[str, Any]:
        return dataclasses.asdict(value)


class ImpactSerializer(_ImpactPartSerializer):
    """The capacity what-if of an action: where its traffic goes, each receiver's load and
    headroom after, and the verdict (…/impact/, a dry run, an action's answer, a capacity_guard
    refusal)."""

    # The fields (so the OpenAPI schema and the dashboard's types) come from the `Impact`
    # dataclass; the JSON is `Impact.as_json`, the one place an impact becomes JSON.

    plan = ImpactPlanField(required=False, help_text="Weight changes and layered drains: how it proceeds.")

    class Meta:
        dataclass = Impact

    def to_representation(self, instance: Impact) -> dict[str, Any]:
        return instance.as_json()


class ActionConflictSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """409: refused by the capacity guard (code `capacity_guard`, with the impact), or the target
    is not in a state the action applies to (state_conflict, already_draining, ...: no impact)."""

    code = serializers.CharField(help_text="capacity_guard, or the state conflict's code.")
    detail = serializers.CharField(help_text="capacity_guard: the impact's `explain`.")
    impact = ImpactSerializer(required=False, help_text="capacity_guard only: what the action would do.")
    running_operations = serializers.ListField(
        child=serializers.IntegerField(), required=False,
        help_text="Nothing to drain: the operations already draining the target's backends.")
