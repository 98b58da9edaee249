"""The topology snapshot, who-am-I, the state table, and liveness/readiness probes."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.renderers import BrowsableAPIRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from steering.api.permissions import request_role
from steering.api.renderers import FastJSONRenderer
from steering.choices import STATE_STYLES
from steering.models import ApiToken
from steering.readmodels.replay import ReplayRefused, topology_at
from steering.topology import topology_snapshot


class TopologyQuery(serializers.Serializer):  # type: ignore[type-arg]
    at = serializers.DateTimeField(required=False, help_text=(
        "An instant in the past (ISO 8601, e.g. 2025-03-01T10:42:00Z): the fleet as it was then, rebuilt "
        "from the audit log (a postmortem's replay). Without it: the live picture."))

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # A form field left blank reads as absent to DRF; `?at=` given empty is a mistake, not "live".
        if "at" in self.initial_data and "at" not in attrs:
            raise serializers.ValidationError({"at": ["Give an instant (ISO 8601), or leave `at` out for the live picture."]})
        return attrs


class AsOfSerializer(serializers.Serializer):  # type: ignore[type-arg]
    change_id = serializers.IntegerField(help_text="The last change at or before `at`: the picture includes it.")
    time = serializers.DateTimeField()
    version = serializers.IntegerField(help_text="The state version that change produced.")


TOPOLOGY = inline_serializer("Topology", {
    "version": serializers.IntegerField(required=False, help_text=(
        "Live only: the state version the live feed's deltas continue from. A replayed picture has none.")),
    "generated_at": serializers.DateTimeField(),
    "replayed": serializers.BooleanField(required=False, help_text="Only with ?at=: true, a picture of the past."),
    "at": serializers.DateTimeField(required=False, help_text="Only with ?at=: the instant shown."),
    "history_starts": serializers.DateTimeField(required=False, help_text=(
        "Only with ?at=: the first recorded change; the furthest back a picture can be rebuilt.")),
    "as_of": AsOfSerializer(required=False, allow_null=True, help_text=(
        "Only with ?at=: the audit position the picture corresponds to (null: before any change).")),
    "undone": serializers.IntegerField(required=False, help_text=(
        "Only with ?at=: how many later changes were undone to rebuild it.")),
})


class TopologyView(APIView):
    renderer_classes = [FastJSONRenderer, BrowsableAPIRenderer]  # 10 MB of JSON on a big fleet

    @extend_schema(parameters=[TopologyQuery], responses={200: TOPOLOGY})
    def get(self, request: Request) -> Response:
        query = TopologyQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        at = query.validated_data.get("at")
        if at is None:
            return Response(topology_snapshot())
        try:
            body = topology_at(at)
        except ReplayRefused as exc:
            starts = exc.history_starts.isoformat() if exc.history_starts else None
            return Response({"code": "invalid", "detail": "Invalid input.", "errors": {"at": [str(exc)]},
                             "history_starts": starts}, status=400)
        # A picture of the past: never cached, and no ETag (ConditionalGetMiddleware skips no-store),
        # so nothing can take it for the live one or revalidate the live one against it.
        return Response(body, headers={"Cache-Control": "no-store"})


class MeView(APIView):
    @extend_schema(responses={200: inline_serializer("Me", {
        "username": serializers.CharField(), "role": serializers.CharField(), "auth": serializers.CharField(),
        "drain_expiry_hours": serializers.IntegerField(help_text=(
            "The end the dashboard proposes for a drain or maintenance, in hours (0: none)."))})})
    def get(self, request: Request) -> Response:
        return Response({
            "username": request.user.get_username(),
            "role": request_role(request),
            "auth": "token" if isinstance(request.auth, ApiToken) else "session",
            "drain_expiry_hours": settings.STEERING_UI_DRAIN_EXPIRY_HOURS,
        })


class StatesView(APIView):
    @extend_schema(responses={200: inline_serializer("State", {"key": serializers.CharField(), "colour": serializers.CharField()}, many=True)})
    def get(self, request: Request) -> Response:
        return Response([style.__dict__ for style in STATE_STYLES])


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. Deliberately checks nothing else."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness for a load balancer: 200 while this process can take writes.

    - `ready`: the database and Redis answer.
    - `degraded` (still 200): Redis is away. Writes are committed and audited; live browsers,
      probes and timers wait for it (they resync and resume when it is back). Alert on it; do not
      take the process out of rotation, every other one sees the same Redis.
    - `down` (503): the database does not answer; nothing can be changed here.
    """
    checks: dict[str, Any] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # readiness must report, not raise
        checks["database"] = f"error: {exc}"
    try:
        from steering.redisconn import sync_client

        sync_client().ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {exc}"
    if checks["database"] != "ok":
        status = "down"
    elif checks["redis"] != "ok":
        status = "degraded"
    else:
        status = "ready"
    return JsonResponse({"status": status, "checks": checks}, status=503 if status == "down" else 200)
