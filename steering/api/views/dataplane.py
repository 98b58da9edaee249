"""What the data planes report back: live HAProxy figures per backend, and which layers are connected.

Measurements, read from Redis (the agents write them); nothing here touches the relational DB
beyond naming the backends of a PoP.
"""

from __future__ import annotations

import time
from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from steering.dataplane.stats import read_backend_stats
from steering.dataplane.status import all_statuses
from steering.models import Backend, PoP
from steering.services.agent_reports import read_haproxy_status

FRESH_SECONDS = 5.0


def _redis() -> Any:
    from steering.services.effects import _redis as client

    return client()


def _fresh(at: Any, now: float) -> bool:
    try:
        return now - float(at) <= FRESH_SECONDS
    except (TypeError, ValueError):
        return False


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
        backends = Backend.objects.all()
        if pop is not None:
            backends = backends.filter(pool__pop=pop)
        stats = read_backend_stats(backends.values_list("pk", flat=True))
        now = time.time()
        reports = read_haproxy_status()
        connected = any(r.get("connected") and _fresh(r.get("at"), now)
                        for slug, r in reports.items() if pop is None or slug == pop.slug)
        return Response({
            "connected": connected,
            "backends": {str(bid): {"sessions": s.sessions, "session_rate": round(s.session_rate, 2),
                                    "completion_rate": round(s.completion_rate, 2), "rate_5xx": round(s.rate_5xx, 2),
                                    "flag_5xx": s.flag_5xx, "updated_at": s.updated_at}
                         for bid, s in stats.items()},
        })


def layer_status() -> dict[str, dict[str, Any]]:
    """Which data planes answer, in words an operator can act on."""
    redis = _redis()
    now = time.time()
    pops = list(PoP.objects.values_list("slug", flat=True))
    reports = read_haproxy_status()
    up = sorted(s for s, r in reports.items() if r.get("connected") and _fresh(r.get("at"), now))
    local = {"connected": bool(up), "pops": up,
             "detail": (f"HAProxy answering in {len(up)} of {len(pops)} PoPs" if up else
                        "no HAProxy agent reporting: the local layer is not connected (run steering-agent haproxy at each PoP)")}
    from steering.gslb.counters import is_connected

    dns_up = is_connected(redis, now)
    dns = {"connected": dns_up,
           "detail": "the PowerDNS remote backend is answering" if dns_up else
                     "no GSLB server reporting: the DNS layer is not connected (run steering-agent gslb)"}
    from steering.services.announcements import connection_summary

    anycast = connection_summary(now)
    if not anycast["connected"]:
        anycast["detail"] += ": the anycast layer is not connected"
    return {"local": local, "dns": dns, "anycast": anycast}


class DataplanesView(APIView):
    @extend_schema(responses={200: inline_serializer("Dataplanes", {
        "local": serializers.DictField(), "dns": serializers.DictField(), "anycast": serializers.DictField(),
        "applied": serializers.DictField(help_text=(
            "Desired vs applied per PoP and layer: {version, dns: {...}, pops: {slug: {local, anycast}}}, each "
            "with desired_version, applied_version, state (in_sync|applying|behind|refused|absent), lag_seconds, "
            "error, seen_at and the words an operator reads."))})})
    def get(self, request: Request) -> Response:
        return Response({**layer_status(), "applied": all_statuses()})
