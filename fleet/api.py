"""The fleet management API (DRF), mounted under /api/v1/fleet/: tasks (list,
create, read, cancel, requeue), agents (list, read) and the fleet's figures."""

from __future__ import annotations

import uuid

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Count, F, Q, QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from fleet import services
from fleet.models import Agent, Task
from fleet.serializers import (
    AgentFilterErrorSerializer,
    AgentFilterSerializer,
    AgentSerializer,
    FleetStatsSerializer,
    TaskCreateErrorSerializer,
    TaskCreateInputSerializer,
    TaskFilterErrorSerializer,
    TaskFilterSerializer,
    TaskRefusedSerializer,
    TaskSerializer,
)
from portal.api import JSONParser, caller_name, error_response, optional_slash_router
from portal.serializers import DENIED, NOT_FOUND

TASK_ID_PARAMETER = OpenApiParameter(
    "task_id",
    OpenApiTypes.UUID,
    OpenApiParameter.PATH,
    description="The task id, in any letter case.",
)
AGENT_ID_PARAMETER = OpenApiParameter(
    "id",
    int,
    OpenApiParameter.PATH,
    description="The agent's id: the integer, which stays the same when the agent "
    "restarts (its agent id does not).",
)


@extend_schema_view(
    list=extend_schema(
        parameters=[TaskFilterSerializer],
        responses={
            200: TaskSerializer(many=True),
            400: TaskFilterErrorSerializer,
            **DENIED,
        },
    ),
    retrieve=extend_schema(
        parameters=[TASK_ID_PARAMETER],
        responses={200: TaskSerializer, **DENIED, **NOT_FOUND},
    ),
    create=extend_schema(
        request=TaskCreateInputSerializer,
        responses={201: TaskSerializer, 400: TaskCreateErrorSerializer, **DENIED},
    ),
)
class TaskViewSet(viewsets.ReadOnlyModelViewSet):
    """Tasks, newest first; ``create`` queues one, ``cancel`` and ``requeue``
    change its state."""

    api_scope = "fleet"
    read_perm = "fleet.view_task"
    serializer_class = TaskSerializer
    lookup_field = "uuid"
    lookup_url_kwarg = "task_id"
    lookup_value_regex = r"[0-9a-fA-F-]{32,36}"
    parser_classes = [JSONParser]

    @property
    def write_perm(self) -> str:
        # Queuing work and stopping it are separate rights in the admin too.
        return "fleet.add_task" if self.action == "create" else "fleet.cancel_task"

    def get_queryset(self) -> QuerySet[Task]:
        tasks = Task.objects.select_related("agent").order_by("-created_at", "-id")
        if self.action != "list":
            return tasks
        filters = TaskFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        wanted = filters.validated_data
        if "state" in wanted:
            tasks = tasks.filter(state=wanted["state"])
        if "type" in wanted:
            tasks = tasks.filter(type=wanted["type"])
        if "version" in wanted:
            tasks = tasks.filter(version=wanted["version"])
        if isinstance(wanted.get("agent"), int):
            tasks = tasks.filter(agent_id=wanted["agent"])
        elif "agent" in wanted:
            tasks = tasks.filter(agent__uuid=wanted["agent"])
        if "test_id" in wanted:
            tasks = tasks.filter(test_id=wanted["test_id"])
        return tasks

    def get_object(self) -> Task:
        # Compared as UUIDs, so any letter case (and no dashes) finds the task.
        try:
            task_id = uuid.UUID(self.kwargs[self.lookup_url_kwarg])
        except ValueError:
            raise Http404 from None
        task = get_object_or_404(self.get_queryset(), uuid=task_id)
        self.check_object_permissions(self.request, task)
        return task

    def create(self, request):
        """Queue a task; ``task_id`` is generated when left out."""
        data = TaskCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            task = services.task_create(
                **data.service_kwargs(), created_by=caller_name(request)
            )
        except DjangoValidationError as exc:
            raise ValidationError(data.api_errors(exc)) from exc
        return Response(TaskSerializer(task).data, status=201)

    @extend_schema(
        request=None,
        parameters=[TASK_ID_PARAMETER],
        responses={
            200: TaskSerializer,
            **DENIED,
            **NOT_FOUND,
            409: OpenApiResponse(
                TaskRefusedSerializer, description="Neither pending nor claimed."
            ),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, task_id=None):
        """Cancel a pending or claimed task; a result arriving later is discarded."""
        task = self.get_object()
        if not task.cancel():
            task.refresh_from_db(fields=["state"])
            return error_response(
                409,
                f"Task {task.uuid} is {task.state}; only pending or claimed tasks "
                "can be cancelled.",
                state=task.state,
            )
        return Response(TaskSerializer(task).data)

    @extend_schema(
        request=None,
        parameters=[TASK_ID_PARAMETER],
        responses={
            200: TaskSerializer,
            **DENIED,
            **NOT_FOUND,
            409: OpenApiResponse(
                TaskRefusedSerializer, description="Pending or completed."
            ),
        },
    )
    @action(detail=True, methods=["post"])
    def requeue(self, request, task_id=None):
        """Put a claimed, failed, expired or cancelled task back in the queue, with
        its attempts counted afresh."""
        task = self.get_object()
        if not task.requeue():
            task.refresh_from_db(fields=["state"])
            return error_response(
                409,
                f"Task {task.uuid} is {task.state}; pending and completed tasks "
                "cannot be requeued.",
                state=task.state,
            )
        return Response(TaskSerializer(task).data)


@extend_schema_view(
    list=extend_schema(
        parameters=[AgentFilterSerializer],
        responses={
            200: AgentSerializer(many=True),
            400: AgentFilterErrorSerializer,
            **DENIED,
        },
    ),
    retrieve=extend_schema(
        parameters=[AGENT_ID_PARAMETER],
        responses={200: AgentSerializer, **DENIED, **NOT_FOUND},
    ),
)
class AgentViewSet(viewsets.ReadOnlyModelViewSet):
    """Agents, most recently seen first, with their task counts; dropped agents
    are listed only when asked for (a dropped agent's detail is always there)."""

    api_scope = "fleet"
    read_perm = "fleet.view_agent"
    serializer_class = AgentSerializer
    lookup_value_regex = r"[0-9]+"

    def get_queryset(self) -> QuerySet[Agent]:
        agents = Agent.objects.annotate(
            tasks_claimed=Count("tasks", filter=Q(tasks__state=Task.State.CLAIMED)),
            tasks_completed=Count("tasks", filter=Q(tasks__state=Task.State.COMPLETED)),
            tasks_failed=Count("tasks", filter=Q(tasks__state=Task.State.FAILED)),
        )
        # Never seen (created for a token) last, on SQLite and PostgreSQL alike.
        agents = agents.order_by(F("last_seen_at").desc(nulls_last=True), "-id")
        if self.action != "list":
            return agents
        filters = AgentFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        if "state" in filters.validated_data:
            return agents.filter(state=filters.validated_data["state"])
        if filters.validated_data["include_dropped"]:
            return agents
        return agents.visible()


class FleetStatsViewSet(viewsets.ViewSet):
    """The fleet's figures, for dashboards and monitoring."""

    api_scope = "fleet"
    read_perm = "fleet.view_task"

    @extend_schema(
        operation_id="v1_fleet_stats_retrieve",
        responses={200: FleetStatsSerializer, **DENIED},
    )
    def list(self, request):
        """Agents and tasks by state, tasks by type and state, the oldest pending
        task's age and the failures of the last 24 hours."""
        return Response(FleetStatsSerializer(services.fleet_stats()).data)


# SimpleRouter: the portal's router already serves the /api/v1/ root view.
router = optional_slash_router()
router.register("tasks", TaskViewSet, basename="task")
router.register("agents", AgentViewSet, basename="agent")
router.register("stats", FleetStatsViewSet, basename="stats")
