"""API representations of checks, their evaluations and affirmations; the affirm
input (one event or a batch) and the list filters."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from affirmations.models import MAX_NAME_LENGTH, Affirmation, Check, Evaluation
from affirmations.schedule import explain

MAX_BATCH = 1000
LAST_RESULTS = 10


class EvaluationSerializer(serializers.ModelSerializer):
    """One occurrence evaluated: the window, the rule then, what was observed."""

    check_key = serializers.CharField(source="owner.key", read_only=True)
    skipped = serializers.SerializerMethodField()

    class Meta:
        model = Evaluation
        fields = [
            "id",
            "check_key",
            "occurrence",
            "window_start",
            "window_end",
            "min_count",
            "max_count",
            "observed",
            "passed",
            "skipped",
            "skipped_reason",
            "evaluated_at",
        ]
        read_only_fields = fields

    def get_skipped(self, evaluation: Evaluation) -> bool:
        return bool(evaluation.skipped_reason)


class LastResultSerializer(serializers.ModelSerializer):
    """A dot of the dashboard: an occurrence and whether it passed."""

    class Meta:
        model = Evaluation
        fields = ["occurrence", "observed", "passed"]
        read_only_fields = fields


class CheckSerializer(serializers.ModelSerializer):
    """A check: its rule, schedule, status, next due time and last results."""

    rule = serializers.CharField(read_only=True, help_text="E.g. '≥ 3 in 20 min'.")
    schedule_text = serializers.SerializerMethodField()
    lookback_seconds = serializers.SerializerMethodField()
    grace_seconds = serializers.SerializerMethodField()
    last_results = serializers.SerializerMethodField()

    class Meta:
        model = Check
        fields = [
            "key",
            "name",
            "description",
            "schedule",
            "schedule_text",
            "tz",
            "lookback_seconds",
            "grace_seconds",
            "min_count",
            "max_count",
            "rule",
            "status",
            "consecutive_failures",
            "failures_before_alert",
            "next_occurrence",
            "next_due_at",
            "last_evaluated_at",
            "last_error",
            "last_results",
            "created_at",
        ]
        read_only_fields = fields

    def get_schedule_text(self, check: Check) -> str:
        return explain(check.schedule)

    def get_lookback_seconds(self, check: Check) -> int:
        return int(check.lookback.total_seconds())

    def get_grace_seconds(self, check: Check) -> int:
        return int(check.grace.total_seconds())

    @extend_schema_field(LastResultSerializer(many=True))
    def get_last_results(self, check: Check) -> list[dict]:
        """The last evaluations, newest first (prefetched by the view)."""
        recent = getattr(check, "recent_evaluations", None)
        if recent is None:
            recent = check.evaluations.order_by("-occurrence", "-id")[:LAST_RESULTS]
        return LastResultSerializer(recent, many=True).data


class AffirmationSerializer(serializers.ModelSerializer):
    """One affirmed event: when it happened (the client's time when within the
    allowed skew), when it arrived, and from where."""

    class Meta:
        model = Affirmation
        fields = [
            "id",
            "name",
            "data",
            "truncated",
            "source",
            "occurred_at",
            "client_time",
            "received_at",
            "remote_addr",
            "note",
        ]
        read_only_fields = fields


class AffirmInputSerializer(serializers.Serializer):
    """One event to affirm (the schema; affirmations.api checks the shape by hand,
    a serializer per event being a third of a batch's time)."""

    name = serializers.CharField(max_length=MAX_NAME_LENGTH, trim_whitespace=False)
    data = serializers.CharField(
        required=False,
        default="",
        allow_blank=True,
        trim_whitespace=False,
        help_text="Any text; longer than 10,000 characters is cut and marked.",
    )
    time = serializers.DateTimeField(
        required=False,
        allow_null=True,
        default=None,
        help_text="When the event happened (ISO 8601); kept when within the allowed "
        "clock skew of the server's time, else the server's time is used.",
    )


class AffirmBatchInputSerializer(serializers.Serializer):
    """Several events, all or nothing."""

    events = serializers.ListField(
        child=AffirmInputSerializer(), min_length=1, max_length=MAX_BATCH
    )


class AffirmBatchResultSerializer(serializers.Serializer):
    """A stored batch: how many, and their ids in the order sent (an id is the
    affirmation's in ``GET affirmations/``)."""

    stored = serializers.IntegerField()
    ids = serializers.ListField(child=serializers.IntegerField())


def _messages() -> serializers.ListField:
    return serializers.ListField(child=serializers.CharField(), required=False)


class AffirmErrorSerializer(serializers.Serializer):
    """A 400 from affirm: each field in error; for a batch, ``events`` says which
    item (``item 3: name: ...``)."""

    name = _messages()
    data = _messages()
    time = _messages()
    events = _messages()
    non_field_errors = _messages()
    detail = serializers.CharField(required=False, help_text="E.g. malformed JSON.")


class AffirmationFilterSerializer(serializers.Serializer):
    """The query parameters of ``GET affirmations/``."""

    name = serializers.CharField(
        max_length=MAX_NAME_LENGTH, required=False, trim_whitespace=False
    )
    source = serializers.ChoiceField(choices=Affirmation.Source.choices, required=False)


class AffirmationFilterErrorSerializer(serializers.Serializer):
    name = _messages()
    source = _messages()
