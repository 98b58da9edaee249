from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any

from csp.constants import UNSAFE_INLINE
from csp.decorators import csp_update
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponseBase
from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.renderers import BrowsableAPIRenderer

from steering.api import urls as api_urls
from steering.api.views.system import healthz, readyz
from steering.favicon import favicon
from steering.metrics import metrics_view
from steering.signin import LimitedAdminAuthenticationForm, answers_429_when_refused, login_view
from steering.web import index

# The admin's sign-in counts and limits failures as the dashboard's does (steering.signin).
admin.site.login_form = LimitedAdminAuthenticationForm

# DRF's browsable API (the HTML a browser gets from /api/v1/...) writes style="..." attributes in
# its templates; those pages, and only those, allow inline style attributes (not <style>, not script:
# its one <style> carries the nonce, steering/templates/rest_framework/api.html).
BROWSABLE_API_CSP = {"style-src-attr": [UNSAFE_INLINE]}


def _styles_for_browsable_api(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    @wraps(view)  # keeps csrf_exempt, cls and initkwargs, which Django and DRF read off the view
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = view(request, *args, **kwargs)
        if isinstance(getattr(response, "accepted_renderer", None), BrowsableAPIRenderer):
            response._csp_update = BROWSABLE_API_CSP  # type: ignore[attr-defined]  # django-csp reads it
        return response
    return wrapped


def _browsable_api_styles(patterns: Iterable[object]) -> None:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            _browsable_api_styles(pattern.url_patterns)
        elif isinstance(pattern, URLPattern):
            pattern.callback = _styles_for_browsable_api(pattern.callback)


_browsable_api_styles(api_urls.urlpatterns)

urlpatterns = [
    path("api/v1/", include("steering.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # Swagger UI sets element styles from script; it runs no inline script (the split view).
    path("api/docs/", csp_update({"style-src": [UNSAFE_INLINE]})(SpectacularSwaggerSplitView.as_view(url_name="schema")),
         name="docs"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("favicon.ico", favicon, name="favicon"),  # browsers ask for it on every page (the admin's too)
    path("accounts/login/", login_view, name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/login/", answers_429_when_refused(admin.site.login)),  # before admin.site.urls: its 429
    path("admin/", admin.site.urls),
    path("", index, name="index"),
]
