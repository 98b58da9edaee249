"""Request id everywhere: taken from X-Request-ID when sane, else made; returned, logged, audited.

AccessMiddleware, inside RequestIdMiddleware, times each request for /metrics and logs it with
that id, so a log line and the audit's Change rows of one request share it."""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_SANE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def current_request_id() -> str:
    return _request_id.get()


def new_request_id() -> str:
    return uuid.uuid4().hex


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _SANE.match(incoming) else new_request_id()
        request.request_id = request_id  # type: ignore[attr-defined]
        token = _request_id.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            _request_id.reset(token)
        response["X-Request-ID"] = request_id
        return response


class RequestIdLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        request_id = _request_id.get()
        if request_id == "-":
            # django.request logs a 4xx/5xx after the middleware chain returned, with the request
            # attached: its id is still the one this request's lines and Change rows carry.
            request_id = getattr(getattr(record, "request", None), "request_id", "-")
        record.request_id = request_id
        return True


access_logger = logging.getLogger("steering.request")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class AccessMiddleware:
    """One latency observation (steering.metrics: by route pattern, method, status class) and one
    line on the `steering.request` logger per request. Writes are logged at INFO (what the audit
    records, under the same request id); reads and the agents' routine traffic (/api/v1/agent/:
    reports every second) at DEBUG. Long-polls answered outside Django (steering.api.longpoll,
    operation_wait) do not pass here."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        from steering import metrics  # here, not at import: LOGGING loads this module before the apps

        self.get_response = get_response
        self.metrics = metrics

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        seconds = time.perf_counter() - started
        route = self.metrics.route_of(request)
        method = request.method or "GET"
        self.metrics.observe_request(route, method, response.status_code, seconds)
        level = logging.INFO if method not in _SAFE_METHODS and not route.startswith("/api/v1/agent/") else logging.DEBUG
        if access_logger.isEnabledFor(level):
            user = getattr(request, "user", None)
            ms = round(seconds * 1000, 1)  # one value for the message and the field: they never disagree
            access_logger.log(
                level, "%s %s %s (%.0f ms)", method, request.path, response.status_code, ms,
                extra={"method": method, "path": request.path, "route": route, "status": response.status_code,
                       "duration_ms": ms,
                       "user": user.get_username() if user is not None and user.is_authenticated else ""})
        return response
