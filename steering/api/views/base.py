"""The base viewset: reads are plain DRF; writes call the topology services with audit and If-Match."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils.cache import get_conditional_response
from rest_framework import status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from steering.api.request_context import actor_for, change_reason, expected_revision
from steering.services import topology


class AuditedModelViewSet(viewsets.ModelViewSet):  # type: ignore[type-arg]
    """CRUD where every write is a service call that writes its Change row."""

    http_method_names = ["get", "post", "put", "patch", "delete", "head", "options"]

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        instance = self.get_object()
        etag = getattr(instance, "etag", None)
        if etag:
            not_modified = get_conditional_response(request._request, etag=etag)
            if not_modified is not None and not_modified.status_code == 304:
                response = Response(status=status.HTTP_304_NOT_MODIFIED)
                response["ETag"] = etag
                return response
        response = Response(self.get_serializer(instance).data)
        if etag:
            response["ETag"] = etag
        return response

    def _model_name(self) -> str:
        return self.get_queryset().model._meta.model_name  # type: ignore[no-any-return]

    def perform_create(self, serializer: Any) -> None:
        model: type[models.Model] = serializer.Meta.model
        serializer.instance = topology.do_create(
            model, dict(serializer.validated_data), actor=actor_for(self.request), reason=change_reason(self.request)
        )

    def perform_update(self, serializer: Any) -> None:
        instance = serializer.instance
        serializer.instance = topology.do_update(
            instance,
            dict(serializer.validated_data),
            actor=actor_for(self.request),
            reason=change_reason(self.request),
            expected_revision=expected_revision(self.request, self._model_name(), instance.pk),
        )

    def perform_destroy(self, instance: models.Model) -> None:
        topology.do_delete(
            instance,
            actor=actor_for(self.request),
            reason=change_reason(self.request),
            expected_revision=expected_revision(self.request, self._model_name(), instance.pk),
        )

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        response = super().create(request, *args, **kwargs)
        self._add_etag(response, getattr(response, "data", None))
        return response

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        response = super().update(request, *args, **kwargs)
        self._add_etag(response, getattr(response, "data", None))
        return response

    def _add_etag(self, response: Response, data: Any) -> None:
        if isinstance(data, dict) and "id" in data and "revision" in data:
            response["ETag"] = f'"{self._model_name()}-{data["id"]}-r{data["revision"]}"'
