"""The packages API: packages (read, run now) and their runs (read, cancel)."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.response import Response

from packages_app import services
from packages_app.models import Package, PackageRun
from packages_app.serializers import (
    PackageRunDetailSerializer,
    PackageRunSerializer,
    PackageSerializer,
    RunFilterErrorSerializer,
    RunFilterSerializer,
    RunInputErrorSerializer,
    RunInputSerializer,
    RunRefusedSerializer,
)
from portal.api import error_response
from portal.models import ApiKey
from portal.serializers import ErrorSerializer

# Every operation may answer these; the fuzz test holds the schema to them.
DENIED = {
    401: OpenApiResponse(ErrorSerializer, description="No or an invalid API key."),
    403: OpenApiResponse(ErrorSerializer, description="Scope or permission missing."),
}
NOT_FOUND = {404: ErrorSerializer}
SLUG_REGEX = r"[-a-zA-Z0-9_]+"
SLUG_PARAMETER = OpenApiParameter(
    "slug", str, OpenApiParameter.PATH, pattern=f"^{SLUG_REGEX}$"
)
RUN_ID_PARAMETER = OpenApiParameter(
    "id", int, OpenApiParameter.PATH, description="The run's id."
)


def caller_name(request) -> str:
    """Who started a run: the API key's name, else the session's username."""
    if isinstance(request.auth, ApiKey):
        return request.auth.name
    return request.user.get_username()


@extend_schema_view(
    list=extend_schema(responses={200: PackageSerializer(many=True), **DENIED}),
    retrieve=extend_schema(
        parameters=[SLUG_PARAMETER],
        responses={200: PackageSerializer, **DENIED, **NOT_FOUND},
    ),
)
class PackageViewSet(viewsets.ReadOnlyModelViewSet):
    """Analytics packages; ``run`` starts one now on the workers."""

    api_scope = "packages"
    read_perm = "packages_app.view_package"
    write_perm = "packages_app.run_package"
    serializer_class = PackageSerializer
    lookup_field = "slug"
    lookup_value_regex = SLUG_REGEX
    parser_classes = [JSONParser]

    def get_queryset(self) -> QuerySet[Package]:
        return Package.objects.with_last_run()

    @extend_schema(
        request=RunInputSerializer,
        parameters=[SLUG_PARAMETER],
        responses={
            202: PackageRunDetailSerializer,
            400: RunInputErrorSerializer,
            **DENIED,
            **NOT_FOUND,
            409: OpenApiResponse(
                RunRefusedSerializer,
                description="Disabled, or running with the policy skip if running.",
            ),
        },
    )
    @action(detail=True, methods=["post"])
    def run(self, request, slug=None):
        """Queue a run of the package now (trigger ``api``)."""
        data = RunInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        package = self.get_object()
        try:
            run = services.package_run_now(
                package=package,
                trigger=PackageRun.Trigger.API,
                triggered_by=caller_name(request),
                **data.validated_data,
            )
        except services.RunRefused as exc:
            return error_response(409, str(exc), code=exc.code)
        return Response(PackageRunDetailSerializer(run).data, status=202)


@extend_schema_view(
    list=extend_schema(
        parameters=[RunFilterSerializer],
        responses={
            200: PackageRunSerializer(many=True),
            400: RunFilterErrorSerializer,
            **DENIED,
        },
    ),
    retrieve=extend_schema(
        parameters=[RUN_ID_PARAMETER],
        responses={200: PackageRunDetailSerializer, **DENIED, **NOT_FOUND},
    ),
)
class PackageRunViewSet(viewsets.ReadOnlyModelViewSet):
    """Runs of packages, newest first; ``cancel`` stops a queued or running one."""

    api_scope = "packages"
    read_perm = "packages_app.view_package"
    write_perm = "packages_app.run_package"
    lookup_value_regex = r"[0-9]+"

    def get_serializer_class(self):
        if self.action == "list":
            return PackageRunSerializer
        return PackageRunDetailSerializer

    def get_queryset(self) -> QuerySet[PackageRun]:
        runs = PackageRun.objects.select_related("package").defer("log_head")
        if self.action != "list":
            return runs
        filters = RunFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        if "package" in filters.validated_data:
            runs = runs.filter(package__slug=filters.validated_data["package"])
        if "status" in filters.validated_data:
            runs = runs.filter(status=filters.validated_data["status"])
        # The list shows no output: leave the big columns in the database.
        return runs.defer("log_tail")

    @extend_schema(
        request=None,
        parameters=[RUN_ID_PARAMETER],
        responses={
            202: PackageRunDetailSerializer,
            **DENIED,
            **NOT_FOUND,
            409: OpenApiResponse(ErrorSerializer, description="Already finished."),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Cancel a queued run at once, or ask a running one to stop."""
        run = self.get_object()
        if not services.run_cancel(run) and run.is_terminal:
            return error_response(
                409, f"Run #{run.pk} has already ended ({run.status})."
            )
        run.refresh_from_db()
        return Response(PackageRunDetailSerializer(run).data, status=202)
