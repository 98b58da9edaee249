"""GET /api/v1/live/deltas/?after=V: what the live feed published after version V, as one delta.

A browser that notices a gap in the feed (a message the channel layer dropped) catches up with
this instead of refetching the whole topology (steering.readmodels.live_deltas). 410 `gone` when
the versions after V are not all kept: then, and only then, the topology is refetched.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from steering.live.coalesce import coalesce
from steering.readmodels import live_deltas


class DeltasQuery(serializers.Serializer):  # type: ignore[type-arg]
    after = serializers.IntegerField(min_value=0, help_text="The version of the picture the client holds.")


class LiveDeltasView(APIView):
    @extend_schema(
        summary="The live feed's deltas after a version, merged into one (catch-up after a gap)",
        parameters=[DeltasQuery],
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description=(
                       "{type: delta, from_version: after + 1, version, changes}: changes keep the latest of "
                       "each object, as the feed's own messages do; no changes when nothing is newer")),
                   400: OpenApiResponse(description="invalid: `after` missing or not a version"),
                   410: OpenApiResponse(description="gone: not every version after `after` is kept; refetch "
                                                    "the topology")},
    )
    def get(self, request: Request) -> Response:
        query = DeltasQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        after = int(query.validated_data["after"])
        deltas = live_deltas.kept_after(after)
        if deltas is None:
            return Response({"code": "gone", "detail": f"The changes after version {after} are no longer all "
                                                       "kept; fetch the topology instead."}, status=status.HTTP_410_GONE)
        message = coalesce(deltas, after=after) or {"type": "delta", "from_version": after + 1, "version": after,
                                                    "changes": []}
        return Response(message)
