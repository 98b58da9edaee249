"""The dashboard shell: the Vite build's index.html, behind login."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie


@login_required
@ensure_csrf_cookie  # the app sends the CSRF cookie back as X-CSRFToken on writes
def index(request: HttpRequest) -> HttpResponse:
    built = settings.FRONTEND_DIST / "index.html"
    if not built.exists():
        return render(request, "steering/not_built.html", status=503)
    return HttpResponse(built.read_text(encoding="utf-8"))
