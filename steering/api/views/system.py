"""The topology snapshot, who-am-I, the state table, and liveness/readiness probes."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from steering.api.permissions import request_role
from steering.choices import STATE_STYLES
from steering.models import ApiToken
from steering.topology import topology_snapshot


class TopologyView(APIView):
    @extend_schema(responses={200: inline_serializer("Topology", {"version": serializers.IntegerField()})})
    def get(self, request: Request) -> Response:
        return Response(topology_snapshot())


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
