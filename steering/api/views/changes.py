"""The audit log: read-only, filterable, exportable as CSV; its hash chain verified on request (admin)."""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Iterator
from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from steering.api.filters import ChangeFilter
from steering.models import Change
from steering.readmodels.audit_verify import CHAIN_BROKEN, CONTENT_ALTERED, ROW_MISSING, verify_chain

CSV_COLUMNS = ["id", "time", "actor_name", "source", "request_id", "action", "object_type", "object_id",
               "object_repr", "related_type", "related_id", "related_repr", "operation_id", "reason", "forced", "force_reason",
               "version", "before", "after", "token_id", "token_name", "prev_hash", "hash"]


class ChangeSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    class Meta:
        model = Change
        fields = CSV_COLUMNS
        read_only_fields = fields


class BrokenLinkSerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.IntegerField(help_text="The first Change whose link does not hold.")
    problem = serializers.ChoiceField(choices=[CONTENT_ALTERED, ROW_MISSING, CHAIN_BROKEN])


class ChainVerdictSerializer(serializers.Serializer):  # type: ignore[type-arg]
    ok = serializers.BooleanField()
    checked = serializers.IntegerField(help_text="Changes checked, the broken one included.")
    first_broken = BrokenLinkSerializer(allow_null=True)


def _csv_safe(value: Any) -> Any:
    # A cell starting with = + - @ runs as a formula in spreadsheets; quote it so it stays text.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


class _Echo:
    def write(self, value: str) -> str:
        return value


class ChangeViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):  # type: ignore[type-arg]
    queryset = Change.objects.all()
    serializer_class = ChangeSerializer
    filterset_class = ChangeFilter
    search_fields = ["object_repr", "reason", "actor_name"]
    ordering_fields = ["time", "id"]
    required_roles = {"verify": "admin"}

    @extend_schema(responses={200: ChainVerdictSerializer}, filters=False)
    @action(detail=False, methods=["get"], url_path="verify", filter_backends=[], pagination_class=None)
    def verify(self, request: Request) -> Response:
        """Check the whole log's hash chain, oldest first: ok, or the first broken link."""
        return Response(ChainVerdictSerializer(dataclasses.asdict(verify_chain())).data)

    @extend_schema(responses={(200, "text/csv"): OpenApiResponse(description="The filtered changes as CSV")})
    @action(detail=False, methods=["get"], url_path="export")
    def export(self, request: Request) -> StreamingHttpResponse:
        queryset = self.filter_queryset(self.get_queryset())
        writer = csv.writer(_Echo())

        def rows() -> Iterator[Any]:
            yield writer.writerow(CSV_COLUMNS)
            for change in queryset.iterator(chunk_size=2000):
                row = []
                for col in CSV_COLUMNS:
                    value = getattr(change, col)
                    if col in ("before", "after"):
                        value = "" if value is None else json.dumps(value, sort_keys=True)
                    elif col == "time":
                        value = value.isoformat()
                    row.append(_csv_safe(value))
                yield writer.writerow(row)

        response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="changes.csv"'
        return response
