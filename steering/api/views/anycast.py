"""Anycast: desired vs observed announcements per PoP, the agents' instructions, and their reports.

GET  /api/v1/anycast/                    desired (DB) beside observed (Redis) for every PoP; any role
GET  /api/v1/anycast/desired/?pop=<slug> one PoP's desired announcements, as its agent polls them
POST /api/v1/anycast/report/             an agent reports what its ExaBGP announces (operator token)
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from steering.api.permissions import RolePermission
from steering.choices import Role
from steering.models import PoP
from steering.services import announcements

MAX_PREFIXES = 1000


class _PopAnycast(serializers.Serializer):  # type: ignore[type-arg]
    slug = serializers.CharField()
    desired = serializers.ListField(child=serializers.CharField(), help_text="Prefixes the PoP should announce.")
    observed = serializers.ListField(child=serializers.CharField(), help_text="Prefixes its ExaBGP announces, as its agent last reported.")
    observed_at = serializers.FloatField(allow_null=True, help_text="Unix time of the agent's last report.")
    agent = serializers.ChoiceField(["connected", "stale", "absent"],
                                    help_text=f"connected: reported within {announcements.CONNECTED_WITHIN_SECONDS:g} s; "
                                              "stale: reported before that; absent: never.")
    session = serializers.ChoiceField(["up", "down"], allow_null=True,
                                      help_text="The BGP session to the router, as the agent last saw it.")
    reason = serializers.CharField(help_text="Why desired is what it is.")


AnycastOverview = inline_serializer("AnycastOverview", {
    "pops": serializers.DictField(child=_PopAnycast(), help_text="By PoP id."),
})


class _PrefixDecision(serializers.Serializer):  # type: ignore[type-arg]
    prefix = serializers.CharField()
    announce = serializers.BooleanField()
    reason = serializers.CharField()
    services = serializers.ListField(child=serializers.CharField())


class DesiredSerializer(serializers.Serializer):  # type: ignore[type-arg]
    pop = serializers.CharField()
    id = serializers.IntegerField()
    desired = serializers.ListField(child=serializers.CharField())
    reason = serializers.CharField()
    prefixes = _PrefixDecision(many=True)
    managed = serializers.ListField(child=serializers.CharField(),
                                    help_text="Every anycast prefix the control plane knows: the agent withdraws only these.")
    at = serializers.FloatField()


class DesiredQuery(serializers.Serializer):  # type: ignore[type-arg]
    pop = serializers.SlugField(max_length=50, help_text="The PoP's slug.")

    def validate_pop(self, value: str) -> PoP:
        pop = PoP.objects.select_related("region").filter(slug=value).first()
        if pop is None:
            raise serializers.ValidationError(f"No PoP with slug {value!r}.")
        return pop


class ReportInput(DesiredQuery):
    observed = serializers.ListField(child=serializers.CharField(max_length=64), max_length=MAX_PREFIXES,
                                     help_text="Prefixes ExaBGP announces now (empty when the BGP session is down).")
    session = serializers.ChoiceField(["up", "down"], required=False, allow_null=True, default=None)

    def validate_observed(self, value: list[str]) -> list[str]:
        prefixes, errors = [], []
        for item in value:
            try:
                prefixes.append(announcements.normalise_prefix(item))
            except ValueError:
                errors.append(f"{item!r} is not an IP prefix.")
        if errors:
            raise serializers.ValidationError(errors)
        return prefixes


class ReportResult(serializers.Serializer):  # type: ignore[type-arg]
    observed = serializers.ListField(child=serializers.CharField())
    at = serializers.FloatField()
    session = serializers.CharField(allow_null=True)


class OperatorPermission(RolePermission):
    """Reports come from agents with an operator token (or higher); no new role is needed."""

    @staticmethod
    def needed_role(request: Request, view: Any) -> str:
        return Role.OPERATOR


class AnycastView(APIView):
    @extend_schema(responses={200: AnycastOverview}, summary="Desired vs observed anycast announcements per PoP")
    def get(self, request: Request) -> Response:
        return Response(announcements.overview())


class AnycastDesiredView(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("pop", str, required=True, description="The PoP's slug.")],
        responses={200: DesiredSerializer, 400: OpenApiResponse(description="missing or unknown pop")},
        summary="One PoP's desired announcements (what its ExaBGP agent polls)",
    )
    def get(self, request: Request) -> Response:
        query = DesiredQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(announcements.desired_payload(query.validated_data["pop"]))


class AnycastReportView(APIView):
    permission_classes = [OperatorPermission]

    @extend_schema(request=ReportInput, responses={200: ReportResult, 400: OpenApiResponse(description="invalid")},
                   summary="An agent reports what its PoP's ExaBGP announces")
    def post(self, request: Request) -> Response:
        data = ReportInput(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        report = announcements.record_agent_report(v["pop"], v["observed"], session=v["session"])
        return Response(report)
