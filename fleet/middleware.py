"""The agents' fast lane: polls and results skip the browser-oriented middleware.

Agents post to ``/fleet/tasks`` and ``/fleet/tasks/response`` once per task and use
none of what sessions, CSRF, authentication, messages or static files middleware
prepare; skipping them is about 15 % of the CPU of a completed task under load
(bench/fleet_load.py, docs/benchmarks.md). This middleware goes first in
``MIDDLEWARE``; everything else, including the other fleet endpoints, takes the
usual path. The routes stay in ``fleet/urls.py``: this only dispatches what the
URLconf resolves to the two agent views.
"""

from __future__ import annotations

from django.urls import Resolver404, URLResolver
from django.urls.resolvers import RegexPattern

from fleet import views
from fleet.urls import protocol_urlpatterns

AGENT_VIEWS = frozenset({views.poll, views.task_response})
PREFIX = "/fleet/"
# The protocol's own routes under the prefix portal/urls.py mounts them at: resolving
# here walks a handful of patterns, not the whole URLconf.
_resolver = URLResolver(RegexPattern(f"^{PREFIX}"), protocol_urlpatterns)


class AgentFastLane:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.method == "POST" and request.path_info.startswith(PREFIX):
            try:
                match = _resolver.resolve(request.path_info)
            except Resolver404:
                match = None
            if match is not None and match.func in AGENT_VIEWS:
                request.resolver_match = match
                response = match.func(request, *match.args, **match.kwargs)
                response.headers.setdefault("X-Content-Type-Options", "nosniff")
                return response
        return self.get_response(request)
