"""Fleet as code under /api/v1/fleet/: export, schema, plan, apply, drift (docs/fleet-file.md).

Viewers export, read the schema, plan and see drift; applying needs the admin role (it edits
topology). The file travels as JSON: `{"fleet": TEXT}` with the file's YAML or JSON text (what
steerctl sends: the server parses, so clients need no YAML library), or `{"fleet": {...}}` with
the document itself. Export answers YAML when asked for it (`Accept: application/yaml`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import renderers, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from steering.api.action_serializers import OperationSerializer
from steering.api.idempotency import idempotent
from steering.api.permissions import RolePermission
from steering.api.request_context import actor_for
from steering.api.serializers import StrictMixin
from steering.choices import Role
from steering.fleetfile import text as fleet_text
from steering.services import fleet


class YamlRenderer(renderers.BaseRenderer):
    media_type = "application/yaml"
    format = "yaml"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None,
               renderer_context: Mapping[str, Any] | None = None) -> bytes:
        return fleet_text.dump(data).encode() if data is not None else b""


class FleetInput(StrictMixin, serializers.Serializer):  # type: ignore[type-arg]
    fleet = serializers.JSONField(help_text=(
        "The fleet file: its text (YAML or JSON), or the document as a JSON object. "
        "Its format: GET /api/v1/fleet/schema/."))

    def validate_fleet(self, value: Any) -> Any:
        if not isinstance(value, (str, dict)):
            raise serializers.ValidationError("The fleet file's text, or the document as an object.")
        return value


class FleetApplyInput(FleetInput):
    reason = serializers.CharField(max_length=1000, help_text="Why: goes into the audit log.")
    force = serializers.BooleanField(default=False, help_text="Proceed past the capacity guard.")
    force_reason = serializers.CharField(max_length=1000, required=False, default="", allow_blank=True)


FleetChangeSerializer = inline_serializer("FleetChange", {
    "op": serializers.ChoiceField(choices=["create", "update", "delete"]),
    "kind": serializers.CharField(help_text="region, pop, prefix, service, vip, client_network, monitor, pool, backend"),
    "key": serializers.CharField(help_text="How the object is named, e.g. bom1/api-web/api-3."),
    "fields": serializers.DictField(help_text='Per field {"from", "to"} (null where the object does not exist).'),
    "reduces_capacity": serializers.BooleanField(),
}, many=True)


class FleetPlanSerializer(serializers.Serializer):  # type: ignore[type-arg]
    fingerprint = serializers.CharField(help_text="The live fleet's the plan was made against: send it as If-Match.")
    file_fingerprint = serializers.CharField(help_text="The file's: the live fleet's once it is applied.")
    summary = serializers.DictField(child=serializers.IntegerField())
    changes = FleetChangeSerializer
    impact = serializers.DictField(help_text=(
        "The capacity guard's what-if of what the plan takes away: the impact of an action (verdict, safe, "
        "moved_rps, receivers, explain...) with `parts`, one per group judged."))
    safe = serializers.BooleanField()


class FleetApplyResultSerializer(serializers.Serializer):  # type: ignore[type-arg]
    operation = OperationSerializer()
    plan = FleetPlanSerializer()


class FleetDriftSerializer(serializers.Serializer):  # type: ignore[type-arg]
    state = serializers.ChoiceField(choices=["never_applied", "in_sync", "drifted"])
    operation = serializers.DictField(allow_null=True, help_text="The last fleet_apply: id, created_at, actor, reason.")
    fingerprint = serializers.CharField()
    differences = serializers.ListField(child=inline_serializer("FleetDifference", {
        "kind": serializers.CharField(),
        "key": serializers.CharField(),
        "difference": serializers.ChoiceField(choices=["added", "changed", "removed"]),
        "fields": serializers.DictField(help_text='Per field {"file", "live"}.'),
        "changed_by": serializers.ListField(child=serializers.DictField(), help_text=(
            "The latest Change rows on the object since the apply: change_id, time, actor, source, action, reason.")),
    }))


def _etag(value: str) -> str:
    return f'"{value}"'


def _if_match(request: Request) -> str | None:
    """The fingerprint an apply was planned against (If-Match), None when absent or '*'."""
    header = request.headers.get("If-Match", "").strip()
    if not header or header == "*":
        return None
    return header.removeprefix("W/").strip('"')


class PlanPermission(RolePermission):
    """A plan is a POST that changes nothing: viewers may make one."""

    @staticmethod
    def needed_role(request: Request, view: Any) -> str:
        return Role.VIEWER


class FleetSchemaView(APIView):
    @extend_schema(summary="The fleet file's JSON Schema", responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request) -> Response:
        return Response(fleet.schema())


class FleetExportView(APIView):
    renderer_classes = [renderers.JSONRenderer, YamlRenderer]

    @extend_schema(summary="The live fleet's desired configuration as a fleet file",
                   description="YAML with `Accept: application/yaml` (errors are JSON either way). "
                               "The ETag is the fleet's fingerprint.",
                   responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request) -> Response:
        document, fingerprint = fleet.export_document()
        response = Response(document)
        response["ETag"] = _etag(fingerprint)
        return response

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)
        if response.status_code >= 400 and isinstance(response, Response):
            response.accepted_renderer = renderers.JSONRenderer()
            response.accepted_media_type = "application/json"
        return response


class FleetPlanView(APIView):
    permission_classes = [PlanPermission]

    @extend_schema(summary="What applying a fleet file would change, and the what-if of what it takes away",
                   request=FleetInput, responses={
                       200: FleetPlanSerializer,
                       400: OpenApiResponse(description="invalid: errors keyed by JSON Pointer into the file"),
                   })
    def post(self, request: Request) -> Response:
        data = FleetInput(data=request.data)
        data.is_valid(raise_exception=True)
        body = fleet.plan(fleet.parse_file(data.validated_data["fleet"]))
        response = Response(body)
        response["ETag"] = _etag(body["fingerprint"])
        return response


class FleetApplyView(APIView):
    @extend_schema(
        summary="Apply a fleet file as one audited operation",
        request=FleetApplyInput,
        parameters=[
            OpenApiParameter("If-Match", str, OpenApiParameter.HEADER, required=False,
                             description="The plan's fingerprint: 412 if the fleet changed since."),
            OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=False,
                             description="Makes a retry safe: the same key returns the first answer."),
        ],
        responses={
            200: FleetApplyResultSerializer,
            400: OpenApiResponse(description="invalid: errors keyed by JSON Pointer into the file"),
            409: OpenApiResponse(description="capacity_guard (with impact), in_use, operation_running, ..."),
            412: OpenApiResponse(description="stale: the fleet changed since the plan (current_fingerprint)"),
        },
    )
    @idempotent
    def post(self, request: Request) -> Response:
        data = FleetApplyInput(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        op, body = fleet.do_apply(
            fleet.parse_file(v["fleet"]), actor=actor_for(request), reason=v["reason"], force=v["force"],
            force_reason=v["force_reason"], expected_fingerprint=_if_match(request),
        )
        response = Response({"operation": OperationSerializer(op).data, "plan": body})
        response["Location"] = f"/api/v1/operations/{op.pk}/"
        return response


class FleetDriftView(APIView):
    @extend_schema(summary="Where the live fleet differs from the last fleet file applied, and who changed it",
                   responses={200: FleetDriftSerializer})
    def get(self, request: Request) -> Response:
        return Response(fleet.drift())
