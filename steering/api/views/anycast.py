"""Anycast: desired vs observed announcements per PoP.

GET /api/v1/anycast/   desired (DB) beside observed (the agents' reports) for every PoP; any role

Each PoP's ExaBGP agent follows the agent contract with its PoP's agent token: it reads its desired
announcements from GET /api/v1/agent/desired/?layer=anycast&pop=<slug>, acknowledges the versions
ExaBGP announces in full (POST /api/v1/agent/ack/) and reports what ExaBGP announces (POST
/api/v1/agent/report/ {layer: "anycast", pop, observed, session}); see steering.api.views.agent.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from steering.readmodels import announcements


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


class AnycastView(APIView):
    @extend_schema(responses={200: AnycastOverview}, summary="Desired vs observed anycast announcements per PoP")
    def get(self, request: Request) -> Response:
        return Response(announcements.overview())
