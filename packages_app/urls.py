"""The packages API router, mounted under /api/v1/ by portal/urls.py."""

from __future__ import annotations

from rest_framework.routers import SimpleRouter

from packages_app import views

app_name = "packages-api"

# SimpleRouter: the portal's router already serves the /api/v1/ root view.
router = SimpleRouter(trailing_slash="/?")
router.register("packages", views.PackageViewSet, basename="package")
router.register("package-runs", views.PackageRunViewSet, basename="package-run")

urlpatterns = router.urls
