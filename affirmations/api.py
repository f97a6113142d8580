"""The affirmations API (DRF), mounted under /api/v1/affirmations/: affirm (one
event or a batch), checks with their status and last results, a check's
evaluations, and affirmations by name."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet
from drf_spectacular.utils import (
    OpenApiParameter,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from affirmations import services
from affirmations.models import Affirmation, Check, Evaluation
from affirmations.serializers import (
    LAST_RESULTS,
    AffirmationFilterErrorSerializer,
    AffirmationFilterSerializer,
    AffirmationSerializer,
    AffirmBatchInputSerializer,
    AffirmBatchResultSerializer,
    AffirmErrorSerializer,
    AffirmInputSerializer,
    CheckSerializer,
    EvaluationSerializer,
)
from portal.api import JSONParser, optional_slash_router
from portal.serializers import DENIED, NOT_FOUND

CHECK_KEY_REGEX = r"[A-Za-z0-9_-]+"
CHECK_KEY_PARAMETER = OpenApiParameter(
    "key",
    str,
    OpenApiParameter.PATH,
    pattern=f"^{CHECK_KEY_REGEX}$",
    description="The check's key, e.g. af-k3m9xq2p.",
)


def _item_errors(detail) -> list[str]:
    """A batch's per-item errors ({3: {"name": [...]}}) as the service words them:
    ``item 3: name: ...``, so that both kinds of 400 read alike."""
    if not isinstance(detail, dict):
        return [str(message) for message in detail]
    lines = []
    for index, problems in detail.items():
        if isinstance(problems, dict):
            text = "; ".join(
                f"{field}: {' '.join(str(m) for m in messages)}"
                for field, messages in problems.items()
            )
        else:
            text = " ".join(str(m) for m in problems)
        lines.append(f"item {index}: {text}")
    return lines


class AffirmViewSet(viewsets.ViewSet):
    """Affirm events: scripts say "X happened"."""

    api_scope = "affirmations"
    write_perm = "affirmations.add_affirmation"
    read_perm = "affirmations.view_check"
    parser_classes = [JSONParser]

    @extend_schema(
        operation_id="v1_affirmations_affirm",
        request=PolymorphicProxySerializer(
            component_name="Affirm",
            serializers=[AffirmInputSerializer, AffirmBatchInputSerializer],
            resource_type_field_name=None,
        ),
        responses={
            201: PolymorphicProxySerializer(
                component_name="AffirmResult",
                serializers=[AffirmationSerializer, AffirmBatchResultSerializer],
                resource_type_field_name=None,
            ),
            400: AffirmErrorSerializer,
            **DENIED,
        },
    )
    def create(self, request):
        """One event ``{name, data?, time?}``, or a batch ``{events: [...]}``
        stored all or nothing (a 400 names the item)."""
        body = request.data
        common = {
            "source": Affirmation.Source.API,
            "user": request.user,
            "remote_addr": request.META.get("REMOTE_ADDR") or None,
        }
        if isinstance(body, dict) and "events" in body:
            batch = AffirmBatchInputSerializer(data=body)
            if not batch.is_valid():
                errors = dict(batch.errors)
                if "events" in errors:
                    errors["events"] = _item_errors(errors["events"])
                raise ValidationError(errors)
            stored = services.affirm_batch(
                events=[
                    {
                        "name": item["name"],
                        "data": item["data"],
                        "client_time": item["time"],
                    }
                    for item in batch.validated_data["events"]
                ],
                **common,
            )
            result = {"stored": len(stored), "affirmations": stored}
            return Response(AffirmBatchResultSerializer(result).data, status=201)
        one = AffirmInputSerializer(data=body)
        one.is_valid(raise_exception=True)
        affirmation = services.affirm(**one.service_kwargs(), **common)
        return Response(AffirmationSerializer(affirmation).data, status=201)


@extend_schema_view(
    list=extend_schema(responses={200: CheckSerializer(many=True), **DENIED}),
    retrieve=extend_schema(
        parameters=[CHECK_KEY_PARAMETER],
        responses={200: CheckSerializer, **DENIED, **NOT_FOUND},
    ),
)
class CheckViewSet(viewsets.ReadOnlyModelViewSet):
    """Checks by event name, with status, next due time, rule and last results."""

    api_scope = "affirmations"
    read_perm = "affirmations.view_check"
    serializer_class = CheckSerializer
    lookup_field = "key"
    lookup_value_regex = CHECK_KEY_REGEX

    def get_queryset(self) -> QuerySet[Check]:
        # Prefetch slices per check (a window function): one query for the page.
        recent = Evaluation.objects.order_by("-occurrence", "-id")
        return Check.objects.order_by("name", "id").prefetch_related(
            Prefetch(
                "evaluations",
                queryset=recent[:LAST_RESULTS],
                to_attr="recent_evaluations",
            )
        )

    @extend_schema(
        parameters=[CHECK_KEY_PARAMETER],
        responses={200: EvaluationSerializer(many=True), **DENIED, **NOT_FOUND},
    )
    @action(detail=True, methods=["get"])
    def evaluations(self, request, key=None):
        """The check's evaluations, newest first."""
        check = self.get_object()
        page = self.paginate_queryset(
            check.evaluations.select_related("owner").order_by("-occurrence", "-id")
        )
        return self.get_paginated_response(EvaluationSerializer(page, many=True).data)


@extend_schema_view(
    list=extend_schema(
        parameters=[AffirmationFilterSerializer],
        responses={
            200: AffirmationSerializer(many=True),
            400: AffirmationFilterErrorSerializer,
            **DENIED,
        },
    ),
)
class AffirmationViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Affirmations, newest first; ``?name=`` for one event's."""

    api_scope = "affirmations"
    read_perm = "affirmations.view_check"
    serializer_class = AffirmationSerializer

    def get_queryset(self) -> QuerySet[Affirmation]:
        affirmations = Affirmation.objects.order_by("-occurred_at", "-id")
        filters = AffirmationFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        wanted = filters.validated_data
        if "name" in wanted:
            affirmations = affirmations.filter(name=wanted["name"])
        if "source" in wanted:
            affirmations = affirmations.filter(source=wanted["source"])
        return affirmations


# SimpleRouter: the portal's router already serves the /api/v1/ root view.
router = optional_slash_router()
router.register("affirm", AffirmViewSet, basename="affirm")
router.register("checks", CheckViewSet, basename="check")
router.register("affirmations", AffirmationViewSet, basename="affirmation")
