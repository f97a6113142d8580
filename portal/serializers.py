from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    """The body of an error that is not about one field, e.g. a 404."""

    detail = serializers.CharField()


# Every API operation may answer these; the fuzz test holds the schema to them.
DENIED = {
    401: OpenApiResponse(ErrorSerializer, description="No or an invalid API key."),
    403: OpenApiResponse(ErrorSerializer, description="Scope or permission missing."),
}
NOT_FOUND = {404: ErrorSerializer}


class HealthCheckSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    error = serializers.CharField(required=False)


class WhoAmISerializer(serializers.Serializer):
    authenticated_by = serializers.ChoiceField(choices=["session", "api_key"])
    username = serializers.CharField(allow_null=True)
    key_name = serializers.CharField(allow_null=True)
    key_prefix = serializers.CharField(allow_null=True)
    scopes = serializers.ListField(child=serializers.CharField())
    roles = serializers.ListField(child=serializers.CharField())


class TickSerializer(serializers.Serializer):
    name = serializers.CharField()
    func = serializers.CharField()
    cron = serializers.CharField()
    description = serializers.CharField()
    crontab_guru = serializers.URLField()
    next_run = serializers.DateTimeField(allow_null=True)
    scheduled = serializers.BooleanField()


class TickRunSerializer(serializers.Serializer):
    name = serializers.CharField()
    task_id = serializers.CharField()
