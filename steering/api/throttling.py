"""Request rates per identity: 429 with `Retry-After` past them (DRF's throttling).

The identity is the API token when the request carries one, else the signed-in user, else the
client address (DRF's get_ident, NUM_PROXIES deep into X-Forwarded-For). Reads, writes and agents
each have their own rate, read from settings at every request so a test can set its own:
STEERING_THROTTLE_READ, STEERING_THROTTLE_WRITE, STEERING_THROTTLE_AGENT ("off": no limit).
The counts live in the default cache (Redis), so every web process sees the same ones; while
Redis does not answer, requests are let through (logged): an outage of the counts must not take
the API down with it.

Agents' long-polls for desired state are served by steering.api.longpoll outside DRF and are
not counted: a waiter costs nothing and the token is scoped to its PoP.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from redis.exceptions import RedisError
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from steering.models import ApiToken
from steering.redis_keys import THROTTLE

logger = logging.getLogger(__name__)


def is_agent(request: Request) -> bool:
    return isinstance(request.auth, ApiToken) and request.auth.is_agent


class IdentityThrottle(SimpleRateThrottle):
    """A rate per token, user or address for the requests `applies` picks; the rate comes from the
    Django setting named by `setting`."""

    setting = ""
    cache_format = THROTTLE  # every count key starts with THROTTLE_PREFIX (the tests clear them between tests)

    def get_rate(self) -> str | None:
        rate: str | None = getattr(settings, self.setting)
        return rate

    def applies(self, request: Request) -> bool:
        raise NotImplementedError

    def identity(self, request: Request) -> str:
        if isinstance(request.auth, ApiToken):
            return f"token:{request.auth.pk}"
        if request.user is not None and request.user.is_authenticated:
            return f"user:{request.user.pk}"
        return f"ip:{self.get_ident(request)}"

    def allow_request(self, request: Request, view: Any) -> bool:
        try:
            return super().allow_request(request, view)
        except RedisError as exc:
            logger.warning("request counts unavailable, %s let through: %s", request.path, exc)
            return True

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if not self.applies(request):
            return None
        return self.cache_format % {"scope": self.scope, "ident": self.identity(request)}


class ReadThrottle(IdentityThrottle):
    scope = "read"
    setting = "STEERING_THROTTLE_READ"

    def applies(self, request: Request) -> bool:
        return request.method in SAFE_METHODS and not is_agent(request)


class WriteThrottle(IdentityThrottle):
    scope = "write"
    setting = "STEERING_THROTTLE_WRITE"

    def applies(self, request: Request) -> bool:
        return request.method not in SAFE_METHODS and not is_agent(request)


class AgentThrottle(IdentityThrottle):
    scope = "agent"
    setting = "STEERING_THROTTLE_AGENT"

    def applies(self, request: Request) -> bool:
        return is_agent(request)
