"""The fast lane: machine endpoints skip the browser-oriented middleware.

Agents, scripts and the original clients post to a few endpoints at high rates
(the fleet's polls and results, the affirmations' store) and use none of what the
sessions, CSRF, authentication, messages, static files and frame-options
middleware prepare; skipping them is about 15 % of the CPU of such a request
(bench/fleet_load.py, bench/affirmations.py; docs/benchmarks.md). A view opts in
with ``@fast_lane`` and must then rely on nothing those middleware set (no
``request.user``, no session, no CSRF: it authenticates on its own, by token or
API key). A DRF view opts in by a class attribute ``fast_lane``: a predicate
on the request (``api_key_sent`` for the affirm endpoint: a request carrying an
API key, whose authentication then never looks at a session). ``FastLane`` goes first in
``MIDDLEWARE``: for a POST it resolves the path against the URLconf and calls an
opted-in view directly; anything else takes the usual path. The routes stay in
the apps' ``urls.py``.
"""

from __future__ import annotations

from collections.abc import Callable

from django.urls import Resolver404, get_resolver

FAST_LANE_ATTRIBUTE = "fast_lane"


def fast_lane(view: Callable) -> Callable:
    """Mark a plain view as one that needs no browser middleware."""
    setattr(view, FAST_LANE_ATTRIBUTE, True)
    return view


def api_key_sent(request) -> bool:
    """The request carries an API key header: the portal's API authenticates it
    by that key alone (an invalid one is a 401), never by a session."""
    meta = request.META
    return (
        "HTTP_X_API_KEY" in meta
        or meta.get("HTTP_AUTHORIZATION", "")[:6].lower() == "token "
    )


def _takes_the_lane(func: Callable, request) -> bool:
    # A plain view marked @fast_lane, or a DRF view whose class sets the
    # attribute (``fast_lane = api_key_sent``).
    marker = getattr(func, FAST_LANE_ATTRIBUTE, None) or getattr(
        getattr(func, "cls", None), FAST_LANE_ATTRIBUTE, None
    )
    return marker is True or (callable(marker) and bool(marker(request)))


class FastLane:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.method == "POST":
            try:
                match = get_resolver().resolve(request.path_info)
            except Resolver404:
                match = None
            if match is not None and _takes_the_lane(match.func, request):
                request.resolver_match = match
                response = match.func(request, *match.args, **match.kwargs)
                if callable(getattr(response, "render", None)):
                    # A DRF/template response: what the handler does after a view.
                    response = response.render()
                # What SecurityMiddleware would have added for a JSON answer.
                response.headers.setdefault("X-Content-Type-Options", "nosniff")
                return response
        return self.get_response(request)
