"""Operations: list, follow (?wait=N blocks until the end), abort, resume, extend a window."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from steering.api.action_serializers import ActionInput, ExtendInput, OperationSerializer
from steering.api.filters import OperationFilter
from steering.api.idempotency import idempotent
from steering.api.request_context import actor_for, expected_revision
from steering.choices import OPERATION_FINAL_STATES, Role
from steering.models import Operation
from steering.services import windows
from steering.services.operations import do_abort_operation
from steering.services.weights import do_resume_operation

_POLL_SECONDS = 0.2


class OperationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):  # type: ignore[type-arg]
    queryset = Operation.objects.all()
    serializer_class = OperationSerializer
    filterset_class = OperationFilter
    ordering_fields = ["created_at", "id", "status"]
    required_roles = {"abort": Role.OPERATOR, "resume": Role.OPERATOR, "extend": Role.OPERATOR}

    @extend_schema(parameters=[OpenApiParameter("wait", int, description="Wait up to N seconds for the operation to end.")])
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        op = self.get_object()
        raw_wait = request.query_params.get("wait")
        if raw_wait is not None:
            try:
                wait = float(raw_wait)
            except ValueError:
                raise ValidationError({"wait": ["A number of seconds."]}) from None
            if not 0 <= wait <= settings.STEERING_MAX_WAIT_SECONDS:
                raise ValidationError({"wait": [f"Between 0 and {settings.STEERING_MAX_WAIT_SECONDS} seconds."]})
            # Polling the row keeps this independent of Redis; 5 queries a second per waiter is cheap.
            deadline = time.monotonic() + wait
            while op.status not in OPERATION_FINAL_STATES and time.monotonic() < deadline:
                time.sleep(min(_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
                op.refresh_from_db()
        response = Response(self.get_serializer(op).data)
        response["ETag"] = op.etag
        return response

    @extend_schema(request=ActionInput, responses={200: OperationSerializer})
    @action(detail=True, methods=["post"])
    @idempotent
    def abort(self, request: Request, pk: Any = None) -> Response:
        op = self.get_object()
        data = ActionInput(data=request.data)
        data.is_valid(raise_exception=True)
        op = do_abort_operation(op, actor=actor_for(request), reason=data.validated_data["reason"],
                                expected_revision=expected_revision(request, "operation", op.pk))
        return Response(self.get_serializer(op).data)

    @extend_schema(request=ActionInput, responses={200: OperationSerializer})
    @action(detail=True, methods=["post"])
    @idempotent
    def resume(self, request: Request, pk: Any = None) -> Response:
        """Resume a paused weight ramp (refused while the backend is unhealthy)."""
        op = self.get_object()
        data = ActionInput(data=request.data)
        data.is_valid(raise_exception=True)
        op = do_resume_operation(op, actor=actor_for(request), reason=data.validated_data["reason"],
                                 expected_revision=expected_revision(request, "operation", op.pk))
        return Response(self.get_serializer(op).data)

    @extend_schema(request=ExtendInput, responses={200: OperationSerializer})
    @action(detail=True, methods=["post"])
    @idempotent
    def extend(self, request: Request, pk: Any = None) -> Response:
        """Move a maintenance window's end (`expires_at`), with a reason."""
        op = self.get_object()
        data = ExtendInput(data=request.data)
        data.is_valid(raise_exception=True)
        op = windows.do_extend(op, actor=actor_for(request), reason=data.validated_data["reason"],
                               expires_at=data.validated_data["expires_at"],
                               expected_revision=expected_revision(request, "operation", op.pk))
        return Response(self.get_serializer(op).data)
