"""The site's icon at /favicon.ico: every page links it, and browsers ask for it by default on the
pages that do not (the admin's), so no page load ends in a 404 on the console."""

from __future__ import annotations

from functools import cache

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_safe


@cache
def _svg() -> bytes:
    return (settings.BASE_DIR / "steering" / "static" / "steering" / "favicon.svg").read_bytes()


@require_safe
@cache_control(public=True, max_age=86400)
def favicon(request: HttpRequest) -> HttpResponse:
    """An SVG (the Content-Security-Policy allows img-src 'self'); no sign-in needed."""
    return HttpResponse(_svg(), content_type="image/svg+xml")
