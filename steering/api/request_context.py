"""What the API passes to services: the actor (with source and request id), If-Match, the reason."""

from __future__ import annotations

import re

from rest_framework.request import Request

from steering.choices import ChangeSource
from steering.models import ApiToken
from steering.services.context import Actor
from steering.services.errors import StaleWrite

_ETAG = re.compile(r'^(?:W/)?"(?P<model>[a-z]+)-(?P<pk>\d+)-r(?P<rev>\d+)"$')


def actor_for(request: Request) -> Actor:
    if isinstance(request.auth, ApiToken):
        client = request.headers.get("X-Steering-Client", "") or request.headers.get("User-Agent", "")
        source = ChangeSource.CLI if client.lower().startswith("steerctl") else ChangeSource.API
    else:
        source = ChangeSource.UI
    return Actor(
        name=request.user.get_username(),
        source=source,
        user=request.user,
        request_id=getattr(request._request, "request_id", ""),
    )


def expected_revision(request: Request, model_name: str, pk: int) -> int | None:
    """The revision an If-Match header names, None when absent or '*'; 412 when it names another object."""
    header = request.headers.get("If-Match", "").strip()
    if not header or header == "*":
        return None
    for candidate in (part.strip() for part in header.split(",")):
        match = _ETAG.match(candidate)
        if match and match["model"] == model_name and int(match["pk"]) == int(pk):
            return int(match["rev"])
    raise StaleWrite(f"If-Match {header} does not match the current {model_name} {pk}.")


def change_reason(request: Request) -> str:
    """Optional reason for topology edits: the X-Change-Reason header."""
    return request.headers.get("X-Change-Reason", "")[:1000]
