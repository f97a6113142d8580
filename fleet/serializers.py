"""API representations of fleet tasks and agents, the task create input, the list
filters, and the fleet's figures."""

from __future__ import annotations

import uuid

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

from fleet.models import Agent, Task, validate_labels
from fleet.protocol import WIRE_NAMES
from portal.lib.jsonvalues import json_problem

# The bounds of the database's integer columns (IntegerField, PositiveIntegerField):
# a larger value is a 400 here rather than a database error.
MIN_INT = -(2**31)
MAX_INT = 2**31 - 1
MAX_BIGINT = 2**63 - 1
MAX_LABELS = 50
# Model field → API field, where the API keeps the SLAMon protocol's names.


class TaskSerializer(serializers.ModelSerializer):
    """A task with its state, agent, times and outcome; the protocol's field names."""

    task_id = serializers.UUIDField(source="uuid", read_only=True)
    task_type = serializers.CharField(source="type", read_only=True)
    task_version = serializers.IntegerField(source="version", read_only=True)
    task_data = serializers.DictField(source="data", read_only=True)
    required_labels = serializers.ListField(
        child=serializers.CharField(), read_only=True
    )
    agent = serializers.UUIDField(
        source="agent.uuid",
        read_only=True,
        allow_null=True,
        default=None,
        help_text="The agent id of the agent holding (or that last held) the task.",
    )
    agent_name = serializers.CharField(
        source="agent.name", read_only=True, allow_null=True, default=None
    )
    created = serializers.DateTimeField(source="created_at", read_only=True)
    claimed = serializers.DateTimeField(
        source="claimed_at", read_only=True, allow_null=True
    )
    finished = serializers.DateTimeField(
        source="finished_at", read_only=True, allow_null=True
    )
    result = serializers.JSONField(read_only=True, allow_null=True)

    class Meta:
        model = Task
        fields = [
            "task_id",
            "test_id",
            "task_type",
            "task_version",
            "task_data",
            "priority",
            "required_labels",
            "state",
            "agent",
            "agent_name",
            "attempts",
            "max_attempts",
            "ttl",
            "timeout",
            "created",
            "claimed",
            "finished",
            "expires_at",
            "deadline_at",
            "result",
            "error",
        ]
        read_only_fields = fields


class TaskCreateInputSerializer(serializers.Serializer):
    """``POST /fleet/tasks/``: a new task; what is left out takes the defaults."""

    task_id = serializers.UUIDField(
        required=False, help_text="Generated when left out."
    )
    test_id = serializers.UUIDField(required=False, allow_null=True)
    task_type = serializers.CharField(max_length=100)
    task_version = serializers.IntegerField(min_value=MIN_INT, max_value=MAX_INT)
    task_data = serializers.DictField(required=False, default=dict)
    priority = serializers.IntegerField(
        required=False,
        default=0,
        min_value=MIN_INT,
        max_value=MAX_INT,
        help_text="Higher first; equal priorities go oldest first.",
    )
    required_labels = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        default=list,
        max_length=MAX_LABELS,
        help_text="Only agents having all of these labels may take the task.",
    )
    max_attempts = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_INT
    )
    ttl = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=MAX_INT,
        help_text="Seconds within which an agent must claim the task; null: forever.",
    )
    timeout = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=MAX_INT,
        help_text="Seconds within which a claimed task must finish; null: no limit.",
    )

    def validate_task_data(self, value: dict) -> dict:
        # PostgreSQL's jsonb cannot store NUL: refuse it here rather than fail later.
        if problem := json_problem(value):
            raise serializers.ValidationError(problem)
        return value

    def validate_required_labels(self, value: list[str]) -> list[str]:
        try:
            validate_labels(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None
        return value

    def service_kwargs(self) -> dict:
        """The validated body as ``services.task_create`` keywords."""
        data = dict(self.validated_data)
        renamed = {
            "task_id": data.pop("task_id", None),
            "task_type": data.pop("task_type"),
            "version": data.pop("task_version"),
            "data": data.pop("task_data"),
        }
        return {**renamed, **data}

    @staticmethod
    def api_errors(exc: DjangoValidationError) -> dict:
        """A service's ValidationError, with the fields under their API names."""
        if not hasattr(exc, "error_dict"):
            return {"non_field_errors": exc.messages}
        return {
            WIRE_NAMES.get(field, field): messages
            for field, messages in exc.message_dict.items()
        }


def _messages() -> serializers.ListField:
    return serializers.ListField(child=serializers.CharField(), required=False)


class TaskCreateErrorSerializer(serializers.Serializer):
    """A 400 from task create: each field in error with its messages."""

    task_id = _messages()
    test_id = _messages()
    task_type = _messages()
    task_version = _messages()
    task_data = _messages()
    priority = _messages()
    required_labels = serializers.JSONField(
        required=False, help_text="Messages, or messages by list index."
    )
    max_attempts = _messages()
    ttl = _messages()
    timeout = _messages()
    non_field_errors = _messages()
    detail = serializers.CharField(required=False, help_text="E.g. malformed JSON.")


class TaskRefusedSerializer(serializers.Serializer):
    """A 409 from cancel or requeue: the task is in a state that does not allow it."""

    detail = serializers.CharField()
    state = serializers.ChoiceField(choices=Task.State.choices)


class AgentRefField(serializers.CharField):
    """An agent by its id (an integer) or its agent id (a UUID)."""

    default_error_messages = {
        "invalid": "Give an agent's id (an integer) or agent id (a UUID).",
    }

    def to_internal_value(self, data) -> int | uuid.UUID:
        value = super().to_internal_value(data).strip()
        if value.isascii() and value.isdigit():
            number = int(value)
            if 1 <= number <= MAX_BIGINT:
                return number
            self.fail("invalid")
        try:
            return uuid.UUID(value)
        except ValueError:
            self.fail("invalid")


class TaskFilterSerializer(serializers.Serializer):
    """The query parameters of ``GET /fleet/tasks/``."""

    state = serializers.ChoiceField(choices=Task.State.choices, required=False)
    type = serializers.CharField(max_length=100, required=False)
    version = serializers.IntegerField(
        min_value=MIN_INT, max_value=MAX_INT, required=False
    )
    agent = AgentRefField(
        required=False,
        help_text="The agent's id (an integer) or its agent id (a UUID).",
    )
    test_id = serializers.UUIDField(required=False)


class TaskFilterErrorSerializer(serializers.Serializer):
    """A 400 from the task list: each query parameter in error with its messages."""

    state = _messages()
    type = _messages()
    version = _messages()
    agent = _messages()
    test_id = _messages()


class AgentSerializer(serializers.ModelSerializer):
    """An agent; its token is never shown, only whether it has one."""

    agent_id = serializers.UUIDField(
        source="uuid",
        read_only=True,
        allow_null=True,
        help_text="The agent id of its latest poll; null for an agent created by "
        "an operator that has not polled yet.",
    )
    capabilities = serializers.DictField(
        child=serializers.IntegerField(),
        read_only=True,
        help_text="Task type → version, as sent by the agent's latest poll.",
    )
    labels = serializers.ListField(child=serializers.CharField(), read_only=True)
    location = serializers.JSONField(read_only=True, allow_null=True)
    last_seen = serializers.DateTimeField(
        source="last_seen_at", read_only=True, allow_null=True
    )
    has_token = serializers.BooleanField(read_only=True)
    created = serializers.DateTimeField(source="created_at", read_only=True)
    # Annotated by AgentViewSet.get_queryset: one query for the whole page.
    tasks_claimed = serializers.IntegerField(
        read_only=True, help_text="Tasks it holds now."
    )
    tasks_completed = serializers.IntegerField(read_only=True)
    tasks_failed = serializers.IntegerField(read_only=True)

    class Meta:
        model = Agent
        fields = [
            "id",
            "name",
            "agent_id",
            "state",
            "capabilities",
            "labels",
            "location",
            "last_seen",
            "has_token",
            "created",
            "tasks_claimed",
            "tasks_completed",
            "tasks_failed",
        ]
        read_only_fields = fields


class AgentFilterSerializer(serializers.Serializer):
    """The query parameters of ``GET /fleet/agents/``."""

    state = serializers.ChoiceField(
        choices=Agent.State.choices,
        required=False,
        help_text="Dropped agents are listed only with state=dropped or "
        "include_dropped=true.",
    )
    include_dropped = serializers.BooleanField(required=False, default=False)


class AgentFilterErrorSerializer(serializers.Serializer):
    """A 400 from the agent list: the query parameter in error with its messages."""

    state = _messages()
    include_dropped = _messages()


def _counts(name: str, states: list[str]) -> serializers.Serializer:
    # One field per state, so that a new state joins the schema by itself.
    fields = {state: serializers.IntegerField() for state in states}
    return type(name, (serializers.Serializer,), fields)()


# Served by a viewset's list route, yet one object, not a list of them.
@extend_schema_serializer(many=False)
class FleetStatsSerializer(serializers.Serializer):
    """``services.fleet_stats()``: agents and tasks by state, tasks by type."""

    agents = _counts("AgentCountsSerializer", Agent.State.values)
    tasks = _counts("TaskCountsSerializer", Task.State.values)
    tasks_by_type = serializers.DictField(
        child=serializers.DictField(child=serializers.IntegerField()),
        help_text='"<type> v<version>" → state → count; states without tasks are '
        "left out.",
    )
    oldest_pending_seconds = serializers.FloatField(
        allow_null=True, help_text="Age of the oldest pending task; null: none."
    )
    failed_last_24h = serializers.IntegerField()
