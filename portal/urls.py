"""Top-level URLs: admin (the main UI), /healthz, the API and its docs, and the
SLAMon-compatible fleet protocol."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from affirmations.urls import compat_urlpatterns as affirmative_compat
from affirmations.urls import oneliner_urlpatterns as affirm_oneliner
from fleet.urls import protocol_urlpatterns as fleet_protocol
from packages_app.urls import compat_urlpatterns as pipeline_compat
from portal import views
from portal.api import optional_slash_router

router = optional_slash_router("DefaultRouter")
router.register("ticks", views.TickViewSet, basename="tick")

api_v1 = [
    path("whoami/", views.WhoAmIView.as_view(), name="whoami"),
    path("", include(router.urls)),
    path("", include("packages_app.urls")),
    path("fleet/", include("fleet.urls")),
    path("affirmations/", include("affirmations.urls")),
]

handler404 = "portal.views.page_not_found"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("api/v1/", include((api_v1, "portal-api"))),
    # The FX Quants runner's POST /api/request (and its run's status and cancel).
    path("api/", include((pipeline_compat, "pipelines"))),
    # The SLAMon Agent Fleet Manager's protocol; agents use http://host/fleet.
    path("fleet/", include((fleet_protocol, "fleet"))),
    # The original Affirmative's API; clients that only take a base URL carry an
    # API key in it: http://host/k/<key> (redacted from logs).
    path("affirmative/", include((affirmative_compat, "affirmative"))),
    re_path(
        r"^k/(?P<api_key>[^/]+)/affirmative/",
        include((affirmative_compat, "affirmative-keyed")),
    ),
    # curl from anywhere: the check's key is the credential.
    path("affirm/", include((affirm_oneliner, "affirm"))),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path(
        "api/docs/",
        SpectacularSwaggerView.as_view(url_name="schema"),
        name="swagger-ui",
    ),
]
