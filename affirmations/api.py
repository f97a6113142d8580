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
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from affirmations import services
from affirmations.models import Affirmation, Check, Evaluation
from affirmations.serializers import (
    LAST_RESULTS,
    MAX_BATCH,
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
from portal.middleware import api_key_sent
from portal.serializers import DENIED, NOT_FOUND

CHECK_KEY_REGEX = r"[A-Za-z0-9_-]+"
CHECK_KEY_PARAMETER = OpenApiParameter(
    "key",
    str,
    OpenApiParameter.PATH,
    pattern=f"^{CHECK_KEY_REGEX}$",
    description="The check's key, e.g. af-k3m9xq2p.",
)


# A batch's "time" values: DRF's own parsing and messages, without a serializer
# per item (the nested serializers were a third of a 50-event request).
_TIME = serializers.DateTimeField(allow_null=True)


def _event(item: dict) -> tuple[dict, dict[str, str]]:
    """An event's shape, ``(the service's event, problems by field)``: types, and
    the time parsed. The service then checks names and data with the same rules
    as every other way of affirming."""
    problems = {}
    name = item.get("name")
    if name is None:
        problems["name"] = "This field is required."
    elif not isinstance(name, str):
        problems["name"] = "Not a valid string."
    data = item.get("data", "")
    if not isinstance(data, str):
        problems["data"] = "Not a valid string."
    client_time = item.get("time")
    if client_time is not None:
        try:
            client_time = _TIME.run_validation(client_time)
        except ValidationError as exc:
            problems["time"] = " ".join(str(m) for m in exc.detail)
    return {"name": name, "data": data, "client_time": client_time}, problems


def _batch_item(index: int, item: object) -> dict:
    if not isinstance(item, dict):
        raise ValidationError(
            {"events": [f"item {index}: Must be an object {{name, data?, time?}}."]}
        )
    event, problems = _event(item)
    if problems:
        text = "; ".join(f"{field}: {message}" for field, message in problems.items())
        raise ValidationError({"events": [f"item {index}: {text}"]})
    return event


def _batch_events(events: object) -> list[dict]:
    if not isinstance(events, list):
        raise ValidationError({"events": ["Must be a list of events."]})
    if not 1 <= len(events) <= MAX_BATCH:
        raise ValidationError({"events": [f"From 1 to {MAX_BATCH} events."]})
    return [_batch_item(index, item) for index, item in enumerate(events)]


class AffirmViewSet(viewsets.ViewSet):
    """Affirm events: scripts say "X happened"."""

    api_scope = "affirmations"
    write_perm = "affirmations.add_affirmation"
    read_perm = "affirmations.view_check"
    parser_classes = [JSONParser]
    # Scripts affirming with an API key need none of the browser middleware.
    fast_lane = staticmethod(api_key_sent)

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
            stored = services.affirm_batch(
                events=_batch_events(body["events"]), **common
            )
            return Response({"stored": len(stored), "ids": stored}, status=201)
        if not isinstance(body, dict):
            raise ValidationError(
                {"non_field_errors": ["Must be an object {name, data?, time?}."]}
            )
        event, problems = _event(body)
        if problems:
            raise ValidationError({f: [message] for f, message in problems.items()})
        affirmation = services.affirm(**event, **common)
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
