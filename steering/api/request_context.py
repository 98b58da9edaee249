"""What the API passes to services: the actor (with source and request id), If-Match, the reason."""

from __future__ import annotations

import re

from django.http import HttpRequest
from rest_framework.request import Request

from steering.choices import ChangeSource
from steering.models import ApiToken
from steering.services.context import Actor
from steering.services.errors import StaleWrite

_ETAG = re.compile(r'^(?:W/)?"(?P<model>[a-z]+)-(?P<pk>\d+)-r(?P<rev>\d+)"$')


def actor_for(request: Request) -> Actor:
    """Who acts, and from where by how they authenticated: a token is `api`, a signed-in session `ui`.

    Never by what the client says about itself (a header or User-Agent can claim anything), so an
    API request is never `cli`, steerctl's included: `cli` is left to manage.py commands run on the
    server (create_token) and to older rows."""
    token = request.auth if isinstance(request.auth, ApiToken) else None
    if token is None:
        return session_actor(request._request)
    return Actor(
        name=request.user.get_username(),
        source=ChangeSource.API,
        user=request.user,
        request_id=getattr(request._request, "request_id", ""),
        token_id=token.pk,
        token_name=token.name,
    )


def session_actor(request: HttpRequest) -> Actor:
    """A signed-in browser: the dashboard through the API, or the admin site."""
    return Actor(
        name=request.user.get_username(),
        source=ChangeSource.UI,
        user=request.user,
        request_id=getattr(request, "request_id", ""),
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
