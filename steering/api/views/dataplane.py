"""What the data planes report back: live HAProxy figures per backend, and which layers are connected.

The view parses and calls; the answers are read models (steering.readmodels.dataplane,
steering.dataplane.status).
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from steering.dataplane.status import all_statuses
from steering.models import PoP
from steering.readmodels.dataplane import backend_figures, layer_connections


class PopQuery(serializers.Serializer):  # type: ignore[type-arg]
    pop = serializers.PrimaryKeyRelatedField(queryset=PoP.objects.all(), required=False)


class BackendFigures(serializers.Serializer):  # type: ignore[type-arg]
    sessions = serializers.IntegerField()
    session_rate = serializers.FloatField(help_text="New sessions per second.")
    completion_rate = serializers.FloatField(help_text="Sessions ending per second.")
    rate_5xx = serializers.FloatField(help_text="HTTP 5xx answers per second.")
    flag_5xx = serializers.BooleanField(help_text="Passive health: the 5xx share is spiking.")
    updated_at = serializers.FloatField(help_text="Unix time of the sample.")


class BackendStatsView(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("pop", int, description="Only this PoP's backends.")],
        responses={200: inline_serializer("BackendStats", {
            "connected": serializers.BooleanField(help_text="A HAProxy agent reported within 5 s."),
            "backends": serializers.DictField(child=BackendFigures(), help_text="By backend id; fresh figures only."),
        })},
    )
    def get(self, request: Request) -> Response:
        query = PopQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        pop: PoP | None = query.validated_data.get("pop")
        return Response(backend_figures(pop))


class DataplanesView(APIView):
    @extend_schema(responses={200: inline_serializer("Dataplanes", {
        "local": serializers.DictField(), "dns": serializers.DictField(), "anycast": serializers.DictField(),
        "applied": serializers.DictField(help_text=(
            "Desired vs applied per PoP and layer: {version, dns: {...}, pops: {slug: {local, anycast}}}, each "
            "with desired_version, applied_version, state (in_sync|applying|behind|refused|absent), lag_seconds, "
            "error, seen_at and the words an operator reads."))})})
    def get(self, request: Request) -> Response:
        return Response({**layer_connections(), "applied": all_statuses()})
