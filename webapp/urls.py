from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path

from runs.api import views_ops
from runs.api.errors import api_not_found
from runs.api.schema import RedocView, SchemaView, SwaggerView

urlpatterns = [
    # Operations (runs/api/views_ops.py): liveness, readiness, Prometheus metrics
    path("healthz", views_ops.healthz, name="healthz"),
    path("readyz", views_ops.readyz, name="readyz"),
    path("metrics", views_ops.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # The OpenAPI schema, Swagger UI and Redoc (assets served locally): signed-in users and
    # token holders only (runs/api/schema.py)
    path("api/schema/", SchemaView.as_view(), name="api-schema"),
    path("api/docs/", SwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/redoc/", RedocView.as_view(url_name="api-schema"), name="api-redoc"),
    path("api/", include("runs.api.urls")),
    # Last under /api/: whatever no endpoint matched is a JSON 404, never an HTML page.
    re_path(r"^api(?:/|$)", api_not_found, name="api-not-found"),
    path("", include("frontend.urls")),
]

# Django's own errors: JSON under /api/, the styled pages (frontend/templates/4xx.html)
# elsewhere (runs/api/errors.py).
handler400 = "runs.api.errors.bad_request"
handler403 = "runs.api.errors.permission_denied"
handler404 = "runs.api.errors.page_not_found"
handler500 = "runs.api.errors.server_error"
