"""The packages API router, mounted under /api/v1/ by portal/urls.py."""

from __future__ import annotations

from django.urls import re_path

from packages_app import views
from portal.api import optional_slash_router

app_name = "packages-api"

# SimpleRouter: the portal's router already serves the /api/v1/ root view.
router = optional_slash_router()
router.register("packages", views.PackageViewSet, basename="package")
router.register("package-runs", views.PackageRunViewSet, basename="package-run")
router.register("pipeline-runs", views.PipelineRunViewSet, basename="pipeline-run")

urlpatterns = router.urls

# The FX Quants runner's endpoints, mounted at /api/ by portal/urls.py; with or
# without the trailing slash, as its callers use them.
compat_urlpatterns = [
    re_path(r"^request/?$", views.PipelineRequestView.as_view(), name="request"),
    re_path(
        r"^request/(?P<run_id>[0-9a-fA-F-]{32,36})/?$",
        views.PipelineRequestRunView.as_view(),
        name="request-run",
    ),
    re_path(
        r"^request/(?P<run_id>[0-9a-fA-F-]{32,36})/cancel/?$",
        views.PipelineRequestCancelView.as_view(),
        name="request-cancel",
    ),
]
