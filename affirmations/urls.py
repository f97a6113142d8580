"""Affirmations URLs: the API router (mounted under /api/v1/affirmations/), the
original Affirmative's endpoints (mounted at /affirmative/ and, with an API key
in the path, /k/<key>/affirmative/) and the one-liner (mounted at /affirm/)."""

from __future__ import annotations

from django.urls import re_path

from affirmations import api, views
from portal.middleware import api_key_sent, fast_lane

app_name = "affirmations-api"
urlpatterns = api.router.urls
# Scripts affirming with an API key need none of the browser middleware.
for _pattern in urlpatterns:
    if _pattern.name == "affirm-list":
        fast_lane(_pattern.callback, when=api_key_sent)

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
