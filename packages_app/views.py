"""The packages API: packages (read, run now) and their runs (read, cancel)."""

from __future__ import annotations

from django.conf import settings
from django.db.models import QuerySet
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
from rest_framework.response import Response
from rest_framework.views import APIView

from packages_app import services
from packages_app.models import Package, PackageRun, PipelineRun
from packages_app.serializers import (
    PackageRunDetailSerializer,
    PackageRunSerializer,
    PackageSerializer,
    PipelineRefusedSerializer,
    PipelineRequestSerializer,
    PipelineRunFilterSerializer,
    PipelineRunListSerializer,
    PipelineRunOutSerializer,
    RunFilterErrorSerializer,
    RunFilterSerializer,
    RunInputErrorSerializer,
    RunInputSerializer,
    RunRefusedSerializer,
    pipeline_run_json,
)
from portal.api import JSONParser, PortalPermission, caller_name, error_response
from portal.models import ApiKey
from portal.serializers import DENIED, NOT_FOUND, ErrorSerializer

SLUG_REGEX = r"[-a-zA-Z0-9_]+"
SLUG_PARAMETER = OpenApiParameter(
    "slug", str, OpenApiParameter.PATH, pattern=f"^{SLUG_REGEX}$"
)
RUN_ID_PARAMETER = OpenApiParameter(
    "id", int, OpenApiParameter.PATH, description="The run's id."
)


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


# --- Pipelines -------------------------------------------------------------------

RUN_UUID_PARAMETER = OpenApiParameter(
    "run_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The run_id."
)
REFUSED = OpenApiResponse(
    PipelineRefusedSerializer,
    description="Nothing runs: a bad URL or ref, a failed clone, no or an invalid "
    "fxq-pipeline.yml. Field errors of the body come as {field: [messages]}.",
)


class PipelineAccess(PortalPermission):
    """The portal's permission, or anyone when PIPELINE_OPEN_REQUEST is on."""

    def has_permission(self, request, view) -> bool:
        if settings.PIPELINE_OPEN_REQUEST:
            return True
        return super().has_permission(request, view)


class PipelineApiMixin:
    api_scope = "pipelines"
    read_perm = "packages_app.view_pipelinerun"
    write_perm = "packages_app.run_pipeline"
    permission_classes = [PipelineAccess]
    parser_classes = [JSONParser]

    def request_pipeline(self, request, *, status: int) -> Response:
        data = PipelineRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        who = (
            caller_name(request)
            if request.user.is_authenticated or isinstance(request.auth, ApiKey)
            else "anonymous"
        )
        try:
            run = services.pipeline_request(
                **data.service_kwargs(),
                trigger=PipelineRun.Trigger.API,
                triggered_by=who,
            )
        except services.PipelineRefused as exc:
            return Response(
                {
                    "error": exc.message,
                    "field": exc.field,
                    "run_id": str(exc.run.uuid) if exc.run else None,
                },
                status=400,
            )
        return Response(pipeline_run_json(run), status=status)

    def cancel_pipeline(self, run: PipelineRun) -> Response:
        if not services.pipeline_cancel(run):
            run.refresh_from_db()
            if run.is_terminal:
                return error_response(409, f"The run has already ended ({run.status}).")
        run.refresh_from_db()
        return Response(pipeline_run_json(run), status=202)


class PipelineRequestView(PipelineApiMixin, APIView):
    """The FX Quants runner's endpoint, for its existing callers."""

    @extend_schema(
        operation_id="pipeline_request",
        request=PipelineRequestSerializer,
        responses={200: PipelineRunOutSerializer, 400: REFUSED, **DENIED},
    )
    def post(self, request):
        """Clone ``url``, read its ``fxq-pipeline.yml``, queue the run; the answer is
        the run JSON (steps and commands, no output yet)."""
        return self.request_pipeline(request, status=200)


class PipelineRequestRunView(PipelineApiMixin, APIView):
    @extend_schema(
        operation_id="pipeline_request_status",
        parameters=[RUN_UUID_PARAMETER],
        responses={200: PipelineRunOutSerializer, **DENIED, **NOT_FOUND},
    )
    def get(self, request, run_id):
        """The run JSON with each command's output so far."""
        return Response(pipeline_run_json(get_object_or_404(PipelineRun, uuid=run_id)))


class PipelineRequestCancelView(PipelineApiMixin, APIView):
    @extend_schema(
        operation_id="pipeline_request_cancel",
        request=None,
        parameters=[RUN_UUID_PARAMETER],
        responses={
            202: PipelineRunOutSerializer,
            **DENIED,
            **NOT_FOUND,
            409: OpenApiResponse(ErrorSerializer, description="Already ended."),
        },
    )
    def post(self, request, run_id):
        """Stop a run: a pending one at once, a running one within about a second."""
        return self.cancel_pipeline(get_object_or_404(PipelineRun, uuid=run_id))


@extend_schema_view(
    list=extend_schema(
        parameters=[PipelineRunFilterSerializer],
        responses={
            200: PipelineRunListSerializer(many=True),
            400: RunFilterErrorSerializer,
            **DENIED,
        },
    ),
    retrieve=extend_schema(
        parameters=[RUN_UUID_PARAMETER],
        responses={200: PipelineRunOutSerializer, **DENIED, **NOT_FOUND},
    ),
    create=extend_schema(
        request=PipelineRequestSerializer,
        responses={201: PipelineRunOutSerializer, 400: REFUSED, **DENIED},
    ),
)
class PipelineRunViewSet(PipelineApiMixin, viewsets.GenericViewSet):
    """Pipeline runs, newest first; ``create`` is ``POST /api/request``."""

    permission_classes = [PortalPermission]
    lookup_field = "uuid"
    lookup_url_kwarg = "run_id"
    lookup_value_regex = r"[0-9a-fA-F-]{32,36}"
    queryset = PipelineRun.objects.all()
    serializer_class = PipelineRunListSerializer

    def list(self, request):
        filters = PipelineRunFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        runs = PipelineRun.objects.defer("log")
        if "status" in filters.validated_data:
            runs = runs.filter(status=filters.validated_data["status"])
        if "name" in filters.validated_data:
            runs = runs.filter(name=filters.validated_data["name"])
        page = self.paginate_queryset(runs)
        if page is not None:
            data = PipelineRunListSerializer(page, many=True).data
            return self.get_paginated_response(data)
        return Response(PipelineRunListSerializer(runs, many=True).data)

    def retrieve(self, request, run_id=None):
        return Response(pipeline_run_json(self.get_object()))

    def create(self, request):
        """Clone, parse and queue a pipeline run (the body of ``POST /api/request``)."""
        return self.request_pipeline(request, status=201)

    @extend_schema(
        request=None,
        parameters=[RUN_UUID_PARAMETER],
        responses={
            202: PipelineRunOutSerializer,
            **DENIED,
            **NOT_FOUND,
            409: OpenApiResponse(ErrorSerializer, description="Already ended."),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, run_id=None):
        """Stop a run: a pending one at once, a running one within about a second."""
        return self.cancel_pipeline(self.get_object())

    @extend_schema(
        request=None,
        parameters=[RUN_UUID_PARAMETER],
        responses={201: PipelineRunOutSerializer, 400: REFUSED, **DENIED, **NOT_FOUND},
    )
    @action(detail=True, methods=["post"])
    def rerun(self, request, run_id=None):
        """The same repository at the same commit, as a new run."""
        run = self.get_object()
        try:
            new = services.pipeline_rerun(run, triggered_by=caller_name(request))
        except services.PipelineRefused as exc:
            return Response(
                {"error": exc.message, "field": exc.field, "run_id": str(exc.run.uuid)},
                status=400,
            )
        return Response(pipeline_run_json(new), status=201)
