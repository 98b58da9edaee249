from csp.constants import UNSAFE_INLINE
from csp.decorators import csp_update
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from steering.api.views.system import healthz, readyz
from steering.favicon import favicon
from steering.metrics import metrics_view
from steering.signin import LimitedAdminAuthenticationForm, answers_429_when_refused, login_view
from steering.web import index

# The admin's sign-in counts and limits failures as the dashboard's does (steering.signin).
admin.site.login_form = LimitedAdminAuthenticationForm

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
