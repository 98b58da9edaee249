"""Bearer tokens for tools: `Authorization: Bearer <token>`, looked up by SHA-256 digest."""

from __future__ import annotations

import datetime
from typing import Any

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from steering.models import ApiToken
from steering.models.tokens import hash_token

# Writing last_used_at on every request would make every read a write; a minute is precise enough.
_LAST_USED_RESOLUTION = datetime.timedelta(seconds=60)


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        return self.authenticate_value(authentication.get_authorization_header(request).decode("latin-1"))

    def authenticate_value(self, header: str) -> tuple[Any, ApiToken] | None:
        """The user and token an `Authorization` header value names (None: not a bearer header)."""
        parts = header.split()
        if not parts:  # empty, or only whitespace (e.g. a lone no-break space)
            return None
        if parts[0].lower() != self.keyword.lower():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <token>'.")
        token = ApiToken.objects.select_related("user", "pop").filter(digest=hash_token(parts[1])).first()
        if token is None:
            raise exceptions.AuthenticationFailed("Unknown token.")
        if token.revoked_at is not None:
            raise exceptions.AuthenticationFailed("This token has been revoked.")
        if token.expires_at <= timezone.now():
            raise exceptions.AuthenticationFailed("This token has expired.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("This token's user is disabled.")
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at > _LAST_USED_RESOLUTION:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return self.keyword
