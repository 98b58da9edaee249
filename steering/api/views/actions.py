"""Drain, undrain, maintenance, impact (and weight on backends) as POST …/{id}/<action>/."""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from steering.api.action_serializers import (
    ActionConflictSerializer,
    ActionInput,
    DrainInput,
    GuardedActionInput,
    ImpactQuery,
    ImpactSerializer,
    MaintenanceInput,
    OperationSerializer,
    WeightInput,
)
from steering.api.idempotency import idempotent
from steering.api.request_context import actor_for, expected_revision
from steering.choices import OperationKind, Role
from steering.services import actions, anycast, layered, weights, windows
from steering.services.impact import Impact

OPERATOR_ACTIONS = {"drain": Role.OPERATOR, "undrain": Role.OPERATOR, "maintenance": Role.OPERATOR,
                    "weight": Role.OPERATOR, "withdraw": Role.OPERATOR, "announce": Role.OPERATOR,
                    "impact": Role.VIEWER}

_IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key", str, OpenApiParameter.HEADER, required=False,
    description="Makes a retry safe: the same key returns the first answer and changes nothing.",
)


class ActionResultSerializer(serializers.Serializer):  # type: ignore[type-arg]
    operation = OperationSerializer()
    impact = ImpactSerializer()


def _preview(impact: Impact) -> Response:
    return Response(ImpactSerializer(impact).data)


def _accepted(op: Any, impact: Impact) -> Response:
    response = Response({"operation": OperationSerializer(op).data, "impact": ImpactSerializer(impact).data},
                        status=status.HTTP_202_ACCEPTED)
    response["Location"] = f"/api/v1/operations/{op.pk}/"
    return response


_RESPONSES = {
    202: ActionResultSerializer,
    200: OpenApiResponse(ImpactSerializer, description="dry_run: the impact only"),
    409: OpenApiResponse(ActionConflictSerializer, description="capacity_guard (with the impact) or a state conflict"),
    412: OpenApiResponse(description="If-Match does not match"),
}


def _scheduled(v: dict[str, Any]) -> bool:
    """A start ahead makes a scheduled operation (a dry run of it is the impact now)."""
    start = v.get("not_before")
    return start is not None and start > timezone.now() and not v["dry_run"]


def _check_window(v: dict[str, Any]) -> None:
    windows.check_window(None, v.get("expires_at"))


class TargetActionsMixin:
    """Actions on a backend, pool, PoP or region; on an aggregate they apply to every backend under it."""

    required_roles = OPERATOR_ACTIONS

    def _revision(self, request: Request, target: Any) -> int | None:
        return expected_revision(request, target._meta.model_name, target.pk)

    @extend_schema(request=DrainInput, responses=_RESPONSES, parameters=[_IDEMPOTENCY_HEADER])
    @action(detail=True, methods=["post"])
    @idempotent
    def drain(self, request: Request, pk: Any = None) -> Response:
        target = self.get_object()  # type: ignore[attr-defined]
        data = DrainInput(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        if v["layered"]:
            if target._meta.model_name not in ("pop", "region"):
                raise ValidationError({"layered": ["A layered drain applies to PoPs and regions."]})
            if _scheduled(v):
                scheduled, impact = windows.schedule(
                    OperationKind.LAYERED_DRAIN, target, actor=actor_for(request), reason=v["reason"],
                    not_before=v["not_before"], expires_at=v.get("expires_at"), grace_seconds=v.get("grace_seconds"),
                    force=v["force"], force_reason=v["force_reason"], ttl_factor=v["ttl_factor"],
                    expected_revision=self._revision(request, target))
                return _accepted(scheduled, impact)
            _check_window(v)
            op, impact = layered.do_layered_drain(
                target, actor=actor_for(request), reason=v["reason"], grace_seconds=v.get("grace_seconds"),
                ttl_factor=v["ttl_factor"], force=v["force"], force_reason=v["force_reason"], dry_run=v["dry_run"],
                expected_revision=self._revision(request, target), expires_at=v.get("expires_at"),
            )
            return _preview(impact) if op is None else _accepted(op, impact)
        if _scheduled(v):
            scheduled, impact = windows.schedule(
                "drain", target, actor=actor_for(request), reason=v["reason"], not_before=v["not_before"],
                expires_at=v.get("expires_at"), grace_seconds=v.get("grace_seconds"), force=v["force"],
                force_reason=v["force_reason"], expected_revision=self._revision(request, target))
            return _accepted(scheduled, impact)
        _check_window(v)
        op, impact = actions.do_drain(
            target, actor=actor_for(request), reason=v["reason"], grace_seconds=v.get("grace_seconds"),
            force=v["force"], force_reason=v["force_reason"], dry_run=v["dry_run"],
            expected_revision=self._revision(request, target), expires_at=v.get("expires_at"),
        )
        return _preview(impact) if op is None else _accepted(op, impact)

    @extend_schema(request=ActionInput, responses=_RESPONSES, parameters=[_IDEMPOTENCY_HEADER])
    @action(detail=True, methods=["post"])
    @idempotent
    def undrain(self, request: Request, pk: Any = None) -> Response:
        target = self.get_object()  # type: ignore[attr-defined]
        data = ActionInput(data=request.data)
        data.is_valid(raise_exception=True)
        op, impact = actions.do_undrain(target, actor=actor_for(request), reason=data.validated_data["reason"],
                                        expected_revision=self._revision(request, target))
        return _accepted(op, impact)

    @extend_schema(request=MaintenanceInput, responses=_RESPONSES, parameters=[_IDEMPOTENCY_HEADER])
    @action(detail=True, methods=["post"])
    @idempotent
    def maintenance(self, request: Request, pk: Any = None) -> Response:
        target = self.get_object()  # type: ignore[attr-defined]
        data = MaintenanceInput(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        if _scheduled(v):
            scheduled, impact = windows.schedule(
                "maintenance", target, actor=actor_for(request), reason=v["reason"], not_before=v["not_before"],
                expires_at=v.get("expires_at"), force=v["force"], force_reason=v["force_reason"],
                expected_revision=self._revision(request, target))
            return _accepted(scheduled, impact)
        _check_window(v)
        op, impact = actions.do_maintenance(
            target, actor=actor_for(request), reason=v["reason"], force=v["force"],
            force_reason=v["force_reason"], dry_run=v["dry_run"], expected_revision=self._revision(request, target),
            expires_at=v.get("expires_at"),
        )
        return _preview(impact) if op is None else _accepted(op, impact)

    @extend_schema(parameters=[ImpactQuery], responses={200: ImpactSerializer})
    @action(detail=True, methods=["get"])
    def impact(self, request: Request, pk: Any = None) -> Response:
        target = self.get_object()  # type: ignore[attr-defined]
        query = ImpactQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        wanted = query.validated_data["action"]
        if wanted == "withdraw":
            if target._meta.model_name != "pop":
                raise ValidationError({"action": ["withdraw applies to PoPs."]})
            return _preview(anycast.withdraw_impact(target))
        return _preview(actions.impact_of(target, wanted))


class AnycastActionMixin:
    """POST /api/v1/pops/{id}/withdraw/ and …/announce/: the PoP's anycast announcement."""

    @extend_schema(request=GuardedActionInput, responses=_RESPONSES, parameters=[_IDEMPOTENCY_HEADER])
    @action(detail=True, methods=["post"])
    @idempotent
    def withdraw(self, request: Request, pk: Any = None) -> Response:
        pop = self.get_object()  # type: ignore[attr-defined]
        data = GuardedActionInput(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        op, impact = anycast.do_withdraw(
            pop, actor=actor_for(request), reason=v["reason"], force=v["force"], force_reason=v["force_reason"],
            dry_run=v["dry_run"], expected_revision=expected_revision(request, "pop", pop.pk),
        )
        return _preview(impact) if op is None else _accepted(op, impact)

    @extend_schema(request=ActionInput, responses=_RESPONSES, parameters=[_IDEMPOTENCY_HEADER])
    @action(detail=True, methods=["post"])
    @idempotent
    def announce(self, request: Request, pk: Any = None) -> Response:
        pop = self.get_object()  # type: ignore[attr-defined]
        data = ActionInput(data=request.data)
        data.is_valid(raise_exception=True)
        op, impact = anycast.do_announce(pop, actor=actor_for(request), reason=data.validated_data["reason"],
                                         expected_revision=expected_revision(request, "pop", pop.pk))
        return _accepted(op, impact)


class WeightActionMixin:
    @extend_schema(request=WeightInput, responses=_RESPONSES, parameters=[_IDEMPOTENCY_HEADER])
    @action(detail=True, methods=["post"])
    @idempotent
    def weight(self, request: Request, pk: Any = None) -> Response:
        backend = self.get_object()  # type: ignore[attr-defined]
        data = WeightInput(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        op, impact = weights.do_set_weight(
            backend, actor=actor_for(request), reason=v["reason"], weight=v["weight"],
            ramp_seconds=v["ramp_seconds"], steps=v.get("steps"), step_seconds=v.get("step_seconds"),
            force=v["force"], force_reason=v["force_reason"], dry_run=v["dry_run"],
            expected_revision=expected_revision(request, "backend", backend.pk),
        )
        return _preview(impact) if op is None else _accepted(op, impact)
