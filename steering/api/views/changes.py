"""The audit log: read-only, filterable, exportable as CSV."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request

from steering.api.filters import ChangeFilter
from steering.models import Change

CSV_COLUMNS = ["id", "time", "actor_name", "source", "request_id", "action", "object_type", "object_id",
               "object_repr", "related_type", "related_id", "related_repr", "operation_id", "reason", "forced", "force_reason",
               "version", "before", "after"]


class ChangeSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    class Meta:
        model = Change
        fields = CSV_COLUMNS
        read_only_fields = fields


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
