"""GET /api/v1/freeze/ (anyone signed in) and POST it (admin, with a reason): the freeze switch."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from steering.api.request_context import actor_for
from steering.models import ChangeFreeze
from steering.services.freeze import current, do_set_freeze


class FreezeSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    class Meta:
        model = ChangeFreeze
        fields = ["frozen", "reason", "since", "by", "revision"]
        read_only_fields = fields


class FreezeInput(serializers.Serializer):  # type: ignore[type-arg]
    frozen = serializers.BooleanField(help_text="true: refuse every change but an admin's with a reason")
    reason = serializers.CharField(max_length=1000, help_text="Why; audited, and shown to everyone refused")


class FreezeView(APIView):
    @extend_schema(responses={200: FreezeSerializer}, summary="The freeze switch")
    def get(self, request: Request) -> Response:
        return Response(FreezeSerializer(current()).data)

    @extend_schema(request=FreezeInput, responses={200: FreezeSerializer}, summary="Freeze changes, or lift the freeze")
    def post(self, request: Request) -> Response:
        given = FreezeInput(data=request.data)
        given.is_valid(raise_exception=True)
        values: dict[str, Any] = dict(given.validated_data)
        switch = do_set_freeze(values["frozen"], actor=actor_for(request), reason=values["reason"])
        return Response(FreezeSerializer(switch).data)
