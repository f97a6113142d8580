"""Fleet URLs: the SLAMon protocol (mounted at /fleet/ by portal/urls.py) and the
management API router (mounted under /api/v1/fleet/)."""

from __future__ import annotations

from django.urls import re_path

from fleet import api, views

app_name = "fleet-api"
urlpatterns = api.router.urls

UUID_ISH = r"(?P<task_id>[^/]+)"
# Agents: with or without a token in the path (/fleet/a/<token>/tasks), which the
# unmodified agent keeps from its URL.
_agent = [
    (r"tasks/?$", views.poll, "poll"),
    (r"tasks/response/?$", views.task_response, "task-response"),
]
protocol_urlpatterns = [
    *[re_path(rf"^{regex}", view, name=name) for regex, view, name in _agent],
    *[
        re_path(rf"^a/(?P<token>[^/]+)/{regex}", view, name=f"token-{name}")
        for regex, view, name in _agent
    ],
    re_path(r"^task/?$", views.task_create, name="task-create"),
    re_path(rf"^task/{UUID_ISH}/?$", views.task_detail, name="task-detail"),
    re_path(r"^status/?$", views.status, name="status"),
]
