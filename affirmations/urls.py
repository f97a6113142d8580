"""Affirmations URLs: the API router (mounted under /api/v1/affirmations/), the
original Affirmative's endpoints (mounted at /affirmative/ and, with an API key
in the path, /k/<key>/affirmative/) and the one-liner (mounted at /affirm/)."""

from __future__ import annotations

from django.urls import re_path

from affirmations import api, views

app_name = "affirmations-api"
urlpatterns = api.router.urls

# Every path with and without its trailing slash; never a redirect.
compat_urlpatterns = [
    re_path(r"^store/?$", views.store, name="store"),
    re_path(r"^simplest/?$", views.simplest, name="simplest"),
    re_path(r"^events/(?P<name>.+?)/?$", views.events, name="events"),
    re_path(
        r"^get_check_history/?$", views.get_check_history, name="get-check-history"
    ),
]
oneliner_urlpatterns = [
    re_path(r"^(?P<key>[^/]+)/?$", views.oneliner, name="affirm"),
]
