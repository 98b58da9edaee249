"""Sign-in with failed attempts limited: the dashboard's /accounts/login/ and the admin's.

After STEERING_LOGIN_MAX_FAILURES failed sign-ins for a username, or from a client address, within
STEERING_LOGIN_WINDOW_SECONDS, the next attempts are refused without checking the password: the
form comes back saying why, with status 429 and `Retry-After`. A success clears the username's
count, not the address's (one address trying many usernames stays limited). Each count is a fixed
window from its first failure, kept in the default cache (Redis) so every process shares it;
while Redis does not answer, sign-in works unlimited (logged), so people can still get in during
an outage. Failures are logged as warnings; they change nothing, so they are not audited.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, cast

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponseBase
from django.views.decorators.debug import sensitive_variables
from redis.exceptions import RedisError
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from steering.redis_keys import SIGNIN_ADDRESS, SIGNIN_UNTIL_SUFFIX, SIGNIN_USER

logger = logging.getLogger(__name__)


def client_address(request: HttpRequest | None) -> str:
    """The address the API's throttles count by (REMOTE_ADDR, or NUM_PROXIES deep into X-Forwarded-For)."""
    if request is None:
        return ""
    # get_ident reads only .headers and .META, which a Django request has as DRF's does.
    return BaseThrottle().get_ident(cast(Request, request)) or ""


def _counters(username: str, address: str) -> list[str]:
    """Cache keys of the counts that apply; the username is hashed (any characters, any length)."""
    keys = []
    if username:
        digest = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
        keys.append(SIGNIN_USER.format(digest=digest))
    if address:
        keys.append(SIGNIN_ADDRESS.format(address=address))
    return keys


def retry_after(username: str, address: str) -> int:
    """Seconds until a sign-in for `username` from `address` may be tried again (0: now)."""
    keys = _counters(username, address)
    found = cache.get_many([*keys, *(key + SIGNIN_UNTIL_SUFFIX for key in keys)])
    now = time.time()
    waits = [
        max(1, math.ceil(found.get(key + SIGNIN_UNTIL_SUFFIX, now + settings.STEERING_LOGIN_WINDOW_SECONDS) - now))
        for key in keys
        if found.get(key, 0) >= settings.STEERING_LOGIN_MAX_FAILURES
    ]
    return max(waits, default=0)


def record_failure(username: str, address: str) -> None:
    window = settings.STEERING_LOGIN_WINDOW_SECONDS
    for key in _counters(username, address):
        # add() only starts a window; incr() is atomic across processes and keeps the expiry.
        cache.add(key + SIGNIN_UNTIL_SUFFIX, time.time() + window, timeout=window)
        cache.add(key, 0, timeout=window)
        try:
            cache.incr(key)
        except ValueError:  # the window ended between add() and incr(): this failure starts the next
            cache.set(key, 1, timeout=window)


def clear(username: str) -> None:
    keys = _counters(username, "")
    cache.delete_many([*keys, *(key + SIGNIN_UNTIL_SUFFIX for key in keys)])


def _quietly(count: Callable[..., None], *args: str) -> None:
    try:
        count(*args)
    except RedisError as exc:
        logger.warning("sign-in counts unavailable: %s", exc)


class LimitedAuthenticationForm(AuthenticationForm):
    """AuthenticationForm that refuses to check a password past the limit, and counts failures."""

    retry_after = 0  # > 0 when this attempt was refused: the view answers 429

    @sensitive_variables("password")
    def clean(self) -> dict[str, Any]:
        username = str(self.cleaned_data.get("username") or "")
        password = self.cleaned_data.get("password")
        if username and password:
            address = client_address(self.request)
            try:
                self.retry_after = retry_after(username, address)
            except RedisError as exc:
                logger.warning("sign-in counts unavailable, %r let through unlimited: %s", username, exc)
            if self.retry_after:
                logger.warning("sign-in refused for %r from %s: too many failures (retry in %d s)",
                               username, address, self.retry_after)
                minutes = math.ceil(self.retry_after / 60)
                raise ValidationError(
                    f"Too many failed sign-ins. Try again in {minutes} minute{'s' if minutes != 1 else ''}.",
                    code="throttled")
            try:
                cleaned: dict[str, Any] = super().clean()
            except ValidationError as exc:
                if exc.code == "invalid_login":
                    _quietly(record_failure, username, address)
                    logger.warning("sign-in failed for %r from %s", username, address)
                raise
            _quietly(clear, username)
            return cleaned
        return super().clean()  # type: ignore[no-any-return]


class LimitedAdminAuthenticationForm(LimitedAuthenticationForm, AdminAuthenticationForm):
    """The admin's form (staff only) with the same limit."""


def answers_429_when_refused(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """A login view whose refused attempt (the form's retry_after) answers 429 with Retry-After."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = view(request, *args, **kwargs)
        form = (getattr(response, "context_data", None) or {}).get("form")
        wait = getattr(form, "retry_after", 0)
        if wait:
            response.status_code = 429
            response["Retry-After"] = str(wait)
        return response

    return wrapped


login_view = answers_429_when_refused(
    LoginView.as_view(template_name="steering/login.html", authentication_form=LimitedAuthenticationForm))
