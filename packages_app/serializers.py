"""API representations of packages and their runs, and the run action's input."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from packages_app.models import (
    Package,
    PackageRun,
    PipelineCommand,
    PipelineRun,
    PipelineStep,
)

# What a run's detail shows of its output: the end, like `tail -c`.
LOG_TAIL_BYTES = 64 * 1024
# The largest integer every supported database stores in a PositiveIntegerField.
MAX_TIMEOUT = 2**31 - 1


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


class LastRunSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=PackageRun.Status.choices)
    finished_at = serializers.DateTimeField(allow_null=True)


class PackageSerializer(serializers.ModelSerializer):
    """A package as the API shows it: no command, environment or secrets."""

    last_run = serializers.SerializerMethodField()

    class Meta:
        model = Package
        fields = [
            "slug",
            "description",
            "enabled",
            "timeout",
            "parameters",
            "schedule",
            "schedule_tz",
            "next_scheduled_at",
            "concurrency",
            "git_url",
            "git_ref",
            "last_run",
        ]
        read_only_fields = fields

    @extend_schema_field(LastRunSerializer(allow_null=True))
    def get_last_run(self, package: Package) -> dict | None:
        # Annotated by PackageViewSet.get_queryset, one query for the whole page.
        if package.last_run_id is None:
            return None
        return LastRunSerializer(
            {
                "id": package.last_run_id,
                "status": package.last_status,
                "finished_at": package.last_finished_at,
            }
        ).data


class PackageRunSerializer(serializers.ModelSerializer):
    """A run in lists: its status and outcome, without the output."""

    package = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = PackageRun
        fields = [
            "id",
            "uuid",
            "package",
            "status",
            "trigger",
            "triggered_by",
            "parameters",
            "timeout",
            "notify",
            "attempt",
            "queued_at",
            "started_at",
            "finished_at",
            "cancel_requested_at",
            "duration",
            "exit_code",
            "signal_name",
            "output_bytes",
            "log_truncated",
            "error",
        ]
        read_only_fields = fields


class PackageRunDetailSerializer(PackageRunSerializer):
    """A run with the end of its output."""

    log_tail = serializers.SerializerMethodField()
    pipeline_run_id = serializers.UUIDField(
        source="pipeline_run.uuid",
        read_only=True,
        allow_null=True,
        default=None,
        help_text="For a package with a git source: the pipeline run it ran.",
    )

    class Meta(PackageRunSerializer.Meta):
        fields = [*PackageRunSerializer.Meta.fields, "log_tail", "pipeline_run_id"]
        read_only_fields = fields

    def get_log_tail(self, run: PackageRun) -> str:
        return run.read_log_tail(LOG_TAIL_BYTES)


class RunInputSerializer(serializers.Serializer):
    """``POST /packages/{slug}/run/``: overrides for this one run."""

    parameters = serializers.DictField(
        required=False,
        default=dict,
        help_text="Merged over the package's default parameters.",
    )
    timeout = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_TIMEOUT,
        help_text="Seconds, instead of the package's timeout.",
    )
    notify = serializers.BooleanField(
        required=False, default=True, help_text="Email the package's recipients."
    )

    def validate_parameters(self, value: dict) -> dict:
        # PostgreSQL's jsonb cannot store NUL: refuse it here rather than fail later.
        if _has_nul(value):
            raise serializers.ValidationError("Text may not contain NUL characters.")
        return value


class RunInputErrorSerializer(serializers.Serializer):
    """A 400 from the run action: each field in error with its messages."""

    parameters = serializers.ListField(child=serializers.CharField(), required=False)
    timeout = serializers.ListField(child=serializers.CharField(), required=False)
    notify = serializers.ListField(child=serializers.CharField(), required=False)
    non_field_errors = serializers.ListField(
        child=serializers.CharField(), required=False
    )
    detail = serializers.CharField(required=False, help_text="E.g. malformed JSON.")


class RunFilterSerializer(serializers.Serializer):
    """The query parameters of ``GET /package-runs/``."""

    package = serializers.SlugField(required=False, help_text="A package's slug.")
    status = serializers.ChoiceField(choices=PackageRun.Status.choices, required=False)


class RunFilterErrorSerializer(serializers.Serializer):
    """A 400 from the run list: the query parameter in error with its messages."""

    package = serializers.ListField(child=serializers.CharField(), required=False)
    status = serializers.ListField(child=serializers.CharField(), required=False)


class RunRefusedSerializer(serializers.Serializer):
    """A 409 from the run action: no run was created."""

    detail = serializers.CharField()
    code = serializers.CharField(
        help_text="`disabled`: the package is disabled; `skipped`: it is running "
        "and its policy is skip if running.",
    )


# --- Pipelines: the FX Quants runner's JSON, kept for its callers ---------------


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def pipeline_command_json(
    command: PipelineCommand, step: PipelineStep, output: list[str] | None = None
) -> dict:
    """``Command``; ``output`` is all of it, or (in callbacks) the new chunks, which
    then start at index ``output_offset`` of the whole."""
    return {
        "cmd_id": str(command.uuid),
        "step_id": str(step.uuid),
        "cmd_no": command.cmd_no,
        "instruction": command.instruction,
        "output": output
        if output is not None
        else [chunk.text for chunk in command.chunks.all()],
        "exit_code": command.exit_code,
        "output_truncated": command.output_truncated,
    }


def pipeline_step_json(
    step: PipelineStep, run: PipelineRun, *, commands: bool = True
) -> dict:
    data = {
        "step_id": str(step.uuid),
        "run_id": str(run.uuid),
        "step_no": step.step_no,
        "name": step.name,
        "image": step.image,
        "status": step.status,
        "commit_changes": False,
        "started_at": _iso(step.started_at),
        "finished_at": _iso(step.finished_at),
        "duration": step.duration,
        "error": step.error,
    }
    if commands:
        data["script"] = [
            pipeline_command_json(command, step) for command in step.commands.all()
        ]
    return data


def pipeline_run_json(run: PipelineRun, *, steps: bool = True) -> dict:
    """``Run``, with steps, commands and their output so far (one query per level)."""
    data = {
        "run_id": str(run.uuid),
        "name": run.name,
        "status": run.status,
        "commit_changes": False,
        "url": run.url,
        "ref": run.ref,
        "commit": run.commit,
        "executor": run.executor,
        "created_at": _iso(run.created_at),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "duration": run.duration,
        "error": run.error,
    }
    if steps:
        fetched = run.steps.prefetch_related("commands__chunks")
        data["steps"] = [pipeline_step_json(step, run) for step in fetched]
    return data


class PipelineRequestSerializer(serializers.Serializer):
    """``POST /api/request``: the original's ``url``, plus optional fields."""

    url = serializers.CharField(max_length=2000, help_text="The git URL to clone.")
    ref = serializers.CharField(
        max_length=250,
        required=False,
        allow_blank=True,
        default="",
        help_text="Branch, tag or commit; the default branch when empty.",
    )
    callback_url = serializers.URLField(
        max_length=2000,
        required=False,
        help_text="Receives the run, step and command callbacks (header "
        "X-Pipeline-Event: run|step|cmd) unless the specific URLs are given.",
    )
    pipeline_callback_url = serializers.URLField(max_length=2000, required=False)
    step_callback_url = serializers.URLField(max_length=2000, required=False)
    cmd_callback_url = serializers.URLField(max_length=2000, required=False)
    environment = serializers.DictField(
        child=serializers.CharField(allow_blank=True, max_length=32 * 1024),
        required=False,
        default=dict,
        help_text="Variables for every step (not secrets: they are stored).",
    )

    def validate_url(self, value: str) -> str:
        from packages_app.gitsource import SourceError, check_url

        try:
            check_url(value)
        except SourceError as exc:
            raise serializers.ValidationError(exc.message) from None
        return value

    def validate_ref(self, value: str) -> str:
        from packages_app.gitsource import SourceError, check_ref

        try:
            return check_ref(value)
        except SourceError as exc:
            raise serializers.ValidationError(exc.message) from None

    def validate_environment(self, value: dict) -> dict:
        from django.core.exceptions import ValidationError

        from packages_app.models import validate_env_map

        if _has_nul(value):
            raise serializers.ValidationError("NUL characters are not allowed.")
        try:
            validate_env_map(value)
        except ValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None
        return value

    def service_kwargs(self) -> dict:
        data = self.validated_data
        common = data.get("callback_url", "")
        return {
            "url": data["url"],
            "ref": data["ref"],
            "environment": data["environment"],
            "callback_urls": {
                "run": data.get("pipeline_callback_url", common),
                "step": data.get("step_callback_url", common),
                "cmd": data.get("cmd_callback_url", common),
            },
        }


def _messages() -> serializers.ListField:
    return serializers.ListField(child=serializers.CharField(), required=False)


class PipelineRefusedSerializer(serializers.Serializer):
    """A 400: nothing runs. Either the body's fields in error, each with its
    messages; or ``error``, ``field`` and the ``run_id`` under which the refused
    request is recorded (a bad repository or pipeline file)."""

    error = serializers.CharField(required=False)
    field = serializers.CharField(required=False)
    run_id = serializers.UUIDField(allow_null=True, required=False)
    url = _messages()
    ref = _messages()
    callback_url = _messages()
    pipeline_callback_url = _messages()
    step_callback_url = _messages()
    cmd_callback_url = _messages()
    environment = serializers.JSONField(required=False)
    non_field_errors = _messages()
    detail = serializers.CharField(required=False, help_text="E.g. malformed JSON.")


class PipelineCommandOutSerializer(serializers.Serializer):
    cmd_id = serializers.UUIDField()
    step_id = serializers.UUIDField()
    cmd_no = serializers.IntegerField()
    instruction = serializers.CharField()
    output = serializers.ListField(child=serializers.CharField(allow_blank=True))
    exit_code = serializers.IntegerField(allow_null=True)
    output_truncated = serializers.BooleanField()


class PipelineStepOutSerializer(serializers.Serializer):
    step_id = serializers.UUIDField()
    run_id = serializers.UUIDField()
    step_no = serializers.IntegerField()
    name = serializers.CharField()
    image = serializers.CharField()
    status = serializers.ChoiceField(choices=PipelineRun.Status.choices)
    commit_changes = serializers.BooleanField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    duration = serializers.FloatField(allow_null=True)
    error = serializers.CharField(allow_blank=True)
    script = PipelineCommandOutSerializer(many=True)


class PipelineRunOutSerializer(serializers.Serializer):
    """The FX Quants runner's run JSON (its callers read it), plus our fields."""

    run_id = serializers.UUIDField()
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=PipelineRun.Status.choices)
    commit_changes = serializers.BooleanField()
    url = serializers.CharField()
    ref = serializers.CharField(allow_blank=True)
    commit = serializers.CharField(allow_blank=True)
    executor = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    duration = serializers.FloatField(allow_null=True)
    error = serializers.CharField(allow_blank=True)
    steps = PipelineStepOutSerializer(many=True)


class PipelineRunListSerializer(serializers.ModelSerializer):
    run_id = serializers.UUIDField(source="uuid")

    class Meta:
        model = PipelineRun
        fields = [
            "run_id",
            "name",
            "status",
            "url",
            "ref",
            "commit",
            "trigger",
            "triggered_by",
            "executor",
            "created_at",
            "started_at",
            "finished_at",
            "duration",
            "error",
        ]


class PipelineRunFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=PipelineRun.Status.choices, required=False)
    name = serializers.CharField(max_length=100, required=False)
