"""The portal's own endpoints: /healthz and the /api/v1/ basics."""

from __future__ import annotations

from django.http import Http404, JsonResponse
from django.views import defaults
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from portal import services
from portal.models import ApiKey
from portal.roles import OPERATORS, VIEWERS
from portal.serializers import (
    ErrorSerializer,
    TickRunSerializer,
    TickSerializer,
    WhoAmISerializer,
)
from portal.ticks import TICKS, get_tick

# Paths answered in JSON even when no route matches: API clients parse the body.
JSON_PATH_PREFIXES = ("/api/", "/fleet/", "/affirmative/", "/k/", "/affirm/")


def page_not_found(request, exception):
    """handler404: JSON under the API prefixes, the normal page elsewhere."""
    if request.path.startswith(JSON_PATH_PREFIXES):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


@never_cache
@require_GET
def healthz(request):
    """200 when the database, the broker and the workers are healthy, else 503.

    ``?checks=database,broker`` limits the report, e.g. for a load balancer that
    should keep serving while the workers restart.
    """
    raw = request.GET.get("checks", "")
    only = [c.strip() for c in raw.split(",") if c.strip()]
    unknown = sorted(set(only) - set(services.HEALTH_CHECKS))
    if unknown:
        return JsonResponse(
            {
                "detail": f"Unknown check(s): {', '.join(unknown)}.",
                "checks": [f"choose from {', '.join(services.HEALTH_CHECKS)}"],
            },
            status=400,
        )
    report = services.health_check(only=only or None)
    return JsonResponse(report, status=200 if report["status"] == "ok" else 503)


class WhoAmIView(APIView):
    """Who the API thinks you are: session user or API key, roles and scopes."""

    @extend_schema(responses=WhoAmISerializer)
    def get(self, request):
        key = request.auth if isinstance(request.auth, ApiKey) else None
        user = request.user if request.user.is_authenticated else None
        roles = []
        if key is None and user is not None:
            if user.is_superuser:
                roles.append("superuser")
            roles += list(
                user.groups.filter(name__in=[OPERATORS, VIEWERS]).values_list(
                    "name", flat=True
                )
            )
        data = {
            "authenticated_by": "api_key" if key else "session",
            "username": user.get_username() if user else None,
            "key_name": key.name if key else None,
            "key_prefix": key.prefix if key else None,
            "scopes": list(key.scopes) if key else [],
            "roles": roles,
        }
        return Response(WhoAmISerializer(data).data)


def _tick_data(tick, schedules: dict) -> dict:
    schedule = schedules.get(services.SCHEDULE_PREFIX + tick.name)
    return {
        "name": tick.name,
        "func": tick.func,
        "cron": tick.cron,
        "description": tick.description,
        "crontab_guru": tick.crontab_guru,
        "next_run": schedule.next_run if schedule else None,
        "scheduled": schedule is not None,
    }


def _schedules() -> dict:
    from django_q.models import Schedule

    return {
        s.name: s
        for s in Schedule.objects.filter(name__startswith=services.SCHEDULE_PREFIX)
    }


TICK_NAME_REGEX = r"[A-Za-z0-9_.-]+"
# The route's own pattern (a name outside it never reaches the view), and a real
# tick, so that Swagger's "Try it out" and the API fuzz test can hit the 2xx path.
TICK_NAME_PARAMETER = OpenApiParameter(
    "name",
    str,
    OpenApiParameter.PATH,
    pattern=f"^{TICK_NAME_REGEX}$",
    examples=[OpenApiExample("A tick", value=TICKS[0].name)],
)


class TickViewSet(viewsets.ViewSet):
    """The portal's periodic jobs (one list, run by django-q2 or system cron)."""

    api_scope = "portal"
    read_perm = "portal.view_dashboard"
    write_perm = "portal.run_tick"
    lookup_field = "name"
    lookup_value_regex = TICK_NAME_REGEX
    serializer_class = TickSerializer

    @extend_schema(responses=TickSerializer(many=True))
    def list(self, request):
        schedules = _schedules()
        return Response(
            TickSerializer([_tick_data(t, schedules) for t in TICKS], many=True).data
        )

    @extend_schema(
        responses={200: TickSerializer, 404: ErrorSerializer},
        parameters=[TICK_NAME_PARAMETER],
    )
    def retrieve(self, request, name=None):
        tick = get_tick(name)
        if tick is None:
            raise Http404
        return Response(TickSerializer(_tick_data(tick, _schedules())).data)

    @extend_schema(
        request=None,
        responses={202: TickRunSerializer, 404: ErrorSerializer},
        parameters=[TICK_NAME_PARAMETER],
    )
    @action(detail=True, methods=["post"])
    def run(self, request, name=None):
        """Queue the job to run now on the workers."""
        if get_tick(name) is None:
            raise Http404
        task_id = services.tick_enqueue(name=name)
        return Response(
            TickRunSerializer({"name": name, "task_id": task_id}).data, status=202
        )
