"""One error shape: {"code", "detail", ...} with field errors under "errors"; never a 500 for input."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, InterfaceError, OperationalError, connection, transaction
from django.db.models import ProtectedError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from steering.api.request_context import actor_for
from steering.services import notifications
from steering.services.errors import CapacityGuardRefused, ServiceError


def _unavailable(exc: Exception) -> str | None:
    """Which of our own backing services an exception says is away, if any."""
    import redis
    from psycopg_pool import PoolTimeout

    if isinstance(exc, (OperationalError, InterfaceError, PoolTimeout)):
        return "The database"
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return "Redis"
    return None


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ServiceError):
        body = exc.as_dict()
        request = context.get("request")
        if isinstance(exc, CapacityGuardRefused) and request is not None:
            # Its transaction rolled back with the refusal: webhooks hear of it from here.
            notifications.guard_refused(body, actor=actor_for(request))
        return Response(body, status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        errors = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        return Response({"code": "invalid", "detail": "Invalid input.", "errors": errors}, status=400)
    if isinstance(exc, DataError):
        # The database refused a value the validation let through (an odd filter value, say):
        # still the client's input, so a 400, never a 500. PostgreSQL has aborted the transaction:
        # inside an enclosing one (a caller's atomic block), roll back to its savepoint.
        if connection.in_atomic_block:
            transaction.set_rollback(True)
        return Response({"code": "invalid", "detail": "A value was not acceptable to the database.",
                         "errors": {"non_field_errors": [str(exc).splitlines()[0][:200]]}}, status=400)
    if isinstance(exc, ProtectedError):
        return Response({"code": "in_use", "detail": str(exc.args[0])}, status=409)
    unavailable = _unavailable(exc)
    if unavailable is not None:
        if connection.in_atomic_block:
            try:
                transaction.set_rollback(True)
            except Exception:  # the connection itself is gone
                pass
        # Our own database or Redis is away (a restart, a failover): nothing was changed, and the
        # caller should retry, so a 503 with Retry-After, never a 500.
        return Response({"code": "unavailable", "detail": f"{unavailable} is not answering; try again shortly."},
                        status=503, headers={"Retry-After": "2"})
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        detail = response.data
        if isinstance(detail, list):
            detail = {"non_field_errors": detail}
        response.data = {"code": "invalid", "detail": "Invalid input.", "errors": detail}
    elif isinstance(response.data, dict) and "detail" in response.data:
        code = "not_found" if isinstance(exc, Http404) else getattr(exc, "default_code", "error")
        if isinstance(exc, exceptions.APIException) and hasattr(exc.detail, "code"):
            code = exc.detail.code or code
        response.data = {"code": code, "detail": str(response.data["detail"])}
    if response.status_code == status.HTTP_500_INTERNAL_SERVER_ERROR:  # pragma: no cover
        return response
    return response
