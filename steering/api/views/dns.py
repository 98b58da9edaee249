"""GET /api/v1/dns/answers/: answers PowerDNS handed out in the last 60 s, by service and region.

Measurements from Redis (the GSLB server flushes its counters every second); no DB query.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from steering.gslb.counters import read_answers
from steering.redisconn import sync_client


class RegionAnswers(serializers.Serializer):  # type: ignore[type-arg]
    answers = serializers.IntegerField(help_text="Answers naming this region's VIPs in the window.")
    share = serializers.FloatField(help_text="Fraction (0..1) of the service's answers.")


class ServiceAnswers(serializers.Serializer):  # type: ignore[type-arg]
    total = serializers.IntegerField(help_text="Answers for the service in the window.")
    qps = serializers.FloatField(help_text="total / window_seconds.")
    regions = serializers.DictField(child=RegionAnswers(), help_text="By region id.")


class DnsAnswersView(APIView):
    @extend_schema(responses={200: inline_serializer("DnsAnswers", {
        "connected": serializers.BooleanField(help_text="The GSLB server's heartbeat is fresh (5 s)."),
        "window_seconds": serializers.IntegerField(),
        "services": serializers.DictField(child=ServiceAnswers(), help_text="By service id."),
    })})
    def get(self, request: Request) -> Response:
        return Response(read_answers(sync_client()))
