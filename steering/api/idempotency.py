"""Idempotency-Key on actions: a retry with the same key gets the first answer, and changes nothing.

The first successful answer is stored in the same transaction as the action itself, so either
both happen or neither does. A concurrent retry collides on the unique (user, key) and is
answered with the stored response.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from rest_framework.request import Request
from rest_framework.response import Response

from steering.models import IdempotencyRecord
from steering.services.errors import ServiceError

_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _body_digest(request: Request) -> str:
    data = json.dumps(request.data, sort_keys=True, cls=DjangoJSONEncoder, default=str)
    return hashlib.sha256(data.encode()).hexdigest()


def _replay(record: IdempotencyRecord, request: Request, digest: str) -> Response:
    if record.path != request.path or record.method != request.method or record.body_digest != digest:
        return Response(
            {"code": "idempotency_key_reused",
             "detail": "This Idempotency-Key was already used for a different request; use a new key."},
            status=422,
        )
    response = Response(record.response_body, status=record.status_code)
    response["Idempotent-Replayed"] = "true"
    return response


def idempotent(view: Callable[..., Response]) -> Callable[..., Response]:
    @functools.wraps(view)
    def wrapper(self: Any, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return view(self, request, *args, **kwargs)
        if not _KEY.match(key):
            return Response(
                {"code": "invalid", "detail": "Invalid input.",
                 "errors": {"Idempotency-Key": ["1-128 characters of letters, digits, . _ : -"]}},
                status=400,
            )
        digest = _body_digest(request)
        user_pk = request.user.pk or 0  # authenticated: RolePermission ran before any action
        existing = IdempotencyRecord.objects.filter(user_id=user_pk, key=key).first()
        if existing is not None:
            return _replay(existing, request, digest)
        try:
            with transaction.atomic():
                response = view(self, request, *args, **kwargs)
                if 200 <= response.status_code < 300:
                    body = json.loads(json.dumps(response.data, cls=DjangoJSONEncoder))
                    IdempotencyRecord.objects.create(
                        user_id=user_pk, key=key, method=request.method or "POST", path=request.path,
                        body_digest=digest, status_code=response.status_code, response_body=body,
                    )
                return response
        except (IntegrityError, ServiceError):
            # A concurrent request with the same key won: answer as it did.
            winner = IdempotencyRecord.objects.filter(user_id=user_pk, key=key).first()
            if winner is None:
                raise
            return _replay(winner, request, digest)

    return wrapper
