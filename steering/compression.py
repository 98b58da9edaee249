"""Compressed API reads: the topology of a 20,000-backend fleet is megabytes of JSON.

Django's GZipMiddleware, limited to what it is safe and useful to compress: GET and HEAD answers
of the API in JSON. Never HTML pages (they carry the CSRF token: BREACH), never writes (a new
token's secret is in its creation answer). Django adds random bytes to each compressed body
against BREACH-style guessing, and makes a strong ETag weak; the API's If-Match accepts weak
ETags (steering.api.request_context), and If-None-Match compares weakly anyway.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponseBase
from django.middleware.gzip import GZipMiddleware

API_PREFIX = "/api/"


class ApiGzipMiddleware(GZipMiddleware):
    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if request.method not in ("GET", "HEAD") or not request.path.startswith(API_PREFIX):
            return response
        if not response.get("Content-Type", "").startswith("application/json"):
            return response
        return super().process_response(request, response)  # type: ignore[no-any-return]
