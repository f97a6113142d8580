"""API representations of packages and their runs, and the run action's input."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from packages_app.models import Package, PackageRun

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

    class Meta(PackageRunSerializer.Meta):
        fields = [*PackageRunSerializer.Meta.fields, "log_tail"]
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
