"""The original Affirmative's HTTP API under ``/affirmative/`` (and, with an API
key in the path for clients that only take a base URL, ``/k/<key>/affirmative/``),
and the one-liner ``/affirm/<check-key>`` for curl from anywhere.

Plain Django views, as the fleet protocol's: CSRF-exempt, every path with and
without its trailing slash, never a redirect, a JSON error ``{"error", "field"}``
for anything wrong, never a 500 for bad input. ``store`` is on the original
Python client's 0.1 s timeout: one key lookup at most, then one batch INSERT.
"""

from __future__ import annotations

import logging
import math
import re
from datetime import UTC, datetime

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, ValidationError
from django.db.models import F, Window
from django.db.models.functions import RowNumber
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from affirmations import services
from affirmations.models import Affirmation, Check, Evaluation
from portal.api import api_key_caller, json_error, json_method_not_allowed
from portal.lib import jsonvalues
from portal.middleware import fast_lane

logger = logging.getLogger(__name__)

SCOPE = "affirmations"
# Events one store request may carry (the original clients send one).
MAX_BATCH = 1000
EVENTS_LIMIT_DEFAULT = 100
EVENTS_LIMIT_MAX = 1000
HISTORY_LENGTH = 10
# "time" as a string: whole seconds since the epoch (the shell client's `date +%s`),
# a fraction tolerated.
EPOCH_STRING = re.compile(r"^\s*-?\d{1,12}(\.\d{1,9})?\s*$")
# The service's batch error: "item 3: name: Ensure this value ..."
ITEM_ERROR = re.compile(r"^item (\d+): (\w+): ")
SERVICE_TO_WIRE = {"client_time": "time"}
# PostgreSQL's text columns cannot hold NUL: refused here, not a 500 later.
NUL_MESSAGE = "Must not contain NUL characters."


class BadInput(Exception):
    def __init__(self, message: str, field: str = ""):
        super().__init__(message)
        self.message = message
        self.field = field


def _remote(request: HttpRequest) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


def _caller(request: HttpRequest, api_key: str | None, *, write: bool):
    """``(user, refusal)``: the API key in the path (always required to be valid),
    else the one in the headers, else anonymous when AFFIRMATIONS_OPEN_COMPAT."""
    user, refusal = api_key_caller(
        request,
        scope=SCOPE,
        write=write,
        anonymous=settings.AFFIRMATIONS_OPEN_COMPAT,
        key=api_key,
        hint="X-Api-Key header, or /k/<key>/affirmative/... as the base URL",
    )
    presented = api_key is not None or "HTTP_X_API_KEY" in request.META
    if refusal is not None and refusal.status_code == 401 and presented:
        # Never the path: it carries the key.
        logger.warning("affirmations: refused API key from %s", _remote(request))
    return user, refusal


# --- Parsing the original's store body ------------------------------------------


def _json_object(request: HttpRequest) -> dict:
    # The original (Flask) took the JSON whatever the Content-Type said.
    try:
        body = request.body
    except RequestDataTooBig as exc:
        raise BadInput("The body is too large.", "body") from exc
    try:
        value = jsonvalues.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"The body is not valid JSON: {exc}.", "body") from exc
    if not isinstance(value, dict):
        raise BadInput('The body must be a JSON object {"events": [...]}.', "body")
    return value


def parse_time(value, field: str = "time") -> datetime | None:
    """Epoch seconds, a number or a string of digits, as an aware UTC datetime;
    missing or null: None."""
    if value is None:
        return None
    if isinstance(value, str) and EPOCH_STRING.match(value):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadInput(
            "Must be the time in seconds since the epoch, a number or a string "
            "of digits.",
            field,
        )
    if not math.isfinite(value):
        raise BadInput("Must be a finite number of seconds since the epoch.", field)
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise BadInput("The time is out of range.", field) from exc


def parse_store(body: dict) -> list[dict]:
    """The events of a store body as ``affirm_batch`` items; extra keys (``env``)
    are ignored, as the original did."""
    events = body.get("events")
    if not isinstance(events, list):
        raise BadInput('"events" must be a list of events.', "events")
    if len(events) > MAX_BATCH:
        raise BadInput(f"At most {MAX_BATCH} events per request.", "events")
    parsed = []
    for index, event in enumerate(events):
        where = f"events[{index}]"
        if not isinstance(event, dict):
            raise BadInput("An event must be an object with a name.", where)
        name = event.get("name")
        if not isinstance(name, str):
            raise BadInput("Required: the event name, a string.", f"{where}.name")
        data = event.get("data")
        if data is None:
            data = ""
        elif not isinstance(data, str):
            raise BadInput("Must be a string.", f"{where}.data")
        elif "\x00" in data:
            raise BadInput(NUL_MESSAGE, f"{where}.data")
        parsed.append(
            {
                "name": name,
                "data": data,
                "client_time": parse_time(event.get("time"), f"{where}.time"),
            }
        )
    return parsed


def _batch_error(exc: ValidationError) -> JsonResponse:
    message = " ".join(exc.messages)
    match = ITEM_ERROR.match(message)
    if not match:
        return json_error(message, field="events")
    index, field = match.groups()
    field = SERVICE_TO_WIRE.get(field, field)
    return json_error(message, field=f"events[{index}].{field}")


# --- The original's endpoints ----------------------------------------------------


@fast_lane
@csrf_exempt
def store(request: HttpRequest, api_key: str | None = None) -> JsonResponse:
    """``POST /affirmative/store``: ``{"events": [{"name", "data", "time"}]}``,
    all or nothing."""
    if request.method != "POST":
        return json_method_not_allowed(request, ["POST"])
    user, refused = _caller(request, api_key, write=True)
    if refused:
        return refused
    try:
        events = parse_store(_json_object(request))
    except BadInput as exc:
        return json_error(exc.message, field=exc.field)
    try:
        stored = services.affirm_batch(
            events=events,
            source=Affirmation.Source.COMPAT,
            user=user,
            remote_addr=_remote(request),
        )
    except ValidationError as exc:
        return _batch_error(exc)
    return JsonResponse({"stored": len(stored)})


@fast_lane
@csrf_exempt
def simplest(request: HttpRequest, api_key: str | None = None) -> JsonResponse:
    """``POST /affirmative/simplest``: form field ``event_name``; data is "ok"."""
    if request.method != "POST":
        return json_method_not_allowed(request, ["POST"])
    user, refused = _caller(request, api_key, write=True)
    if refused:
        return refused
    try:
        name = request.POST.get("event_name")
    except RequestDataTooBig:
        return json_error("The body is too large.", field="event_name")
    if not name:
        return json_error("Required: the form field event_name.", field="event_name")
    try:
        services.affirm(
            name=name,
            data="ok",
            source=Affirmation.Source.COMPAT,
            user=user,
            remote_addr=_remote(request),
        )
    except ValidationError as exc:
        return json_error(" ".join(exc.messages), field="event_name")
    return JsonResponse({"stored": 1})


def _limit(request: HttpRequest) -> int:
    raw = request.GET.get("limit")
    if raw is None:
        return EVENTS_LIMIT_DEFAULT
    raw = raw.strip()
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise BadInput("Must be a positive whole number.", "limit")
    return min(int(raw), EVENTS_LIMIT_MAX)


@csrf_exempt
def events(request: HttpRequest, name: str, api_key: str | None = None):
    """``GET /affirmative/events/<name>``: its affirmations, newest first."""
    if request.method not in ("GET", "HEAD"):
        return json_method_not_allowed(request, ["GET"])
    _, refused = _caller(request, api_key, write=False)
    if refused:
        return refused
    try:
        limit = _limit(request)
    except BadInput as exc:
        return json_error(exc.message, field=exc.field)
    rows = Affirmation.objects.filter(name=name).order_by("-occurred_at", "-id")
    return JsonResponse(
        [
            {
                "time": row.occurred_at.isoformat(),
                "data": row.data,
                "source": row.source,
            }
            for row in rows.only("occurred_at", "data", "source")[:limit]
        ],
        safe=False,
    )


def check_history() -> dict[str, list[dict]]:
    """The last evaluations of every check, newest first, in one query."""
    ranked = (
        Evaluation.objects.annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("owner_id")],
                order_by=[F("occurrence").desc(), F("id").desc()],
            )
        )
        .filter(rank__lte=HISTORY_LENGTH)
        .select_related("owner")
        .only(
            "owner__key",
            "occurrence",
            "min_count",
            "max_count",
            "observed",
            "passed",
        )
        .order_by("owner__key", "-occurrence", "-id")
    )
    history: dict[str, list[dict]] = {
        key: [] for key in Check.objects.values_list("key", flat=True)
    }
    for evaluation in ranked:
        history.setdefault(evaluation.owner.key, []).append(
            {
                "time": evaluation.occurrence.isoformat(),
                "min": evaluation.min_count,
                "max": evaluation.max_count,
                "observed": evaluation.observed,
                "passed": evaluation.passed,
            }
        )
    return history


@csrf_exempt
def get_check_history(request: HttpRequest, api_key: str | None = None):
    """``GET /affirmative/get_check_history``: ``{key: [last evaluations]}``."""
    if request.method not in ("GET", "HEAD"):
        return json_method_not_allowed(request, ["GET"])
    _, refused = _caller(request, api_key, write=False)
    if refused:
        return refused
    return JsonResponse(check_history())


# --- The one-liner ---------------------------------------------------------------

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _oneliner_data(request: HttpRequest) -> str:
    if "data" in request.GET or request.method != "POST":
        return request.GET.get("data", "")
    if request.content_type in FORM_TYPES:
        return request.POST.get("data", "")
    try:
        return request.body.decode(request.encoding or "utf-8")
    except (UnicodeDecodeError, LookupError) as exc:
        raise BadInput("The body must be text (UTF-8).", "data") from exc


@csrf_exempt
def oneliner(request: HttpRequest, key: str) -> JsonResponse:
    """``GET|POST /affirm/<check-key>``: affirm the check's event; the key is the
    credential. ``data`` from the query string, a form field or the body text."""
    if request.method not in ("GET", "POST"):
        return json_method_not_allowed(request, ["GET", "POST"])
    name = Check.objects.filter(key=key).values_list("name", flat=True).first()
    if name is None:
        return json_error("Unknown check key.", status=404, field="key")
    try:
        data = _oneliner_data(request)
        if "\x00" in data:
            raise BadInput(NUL_MESSAGE, "data")
        affirmation = services.affirm(
            name=name,
            data=data,
            source=Affirmation.Source.ONELINER,
            remote_addr=_remote(request),
        )
    except RequestDataTooBig:
        return json_error("The body is too large.", field="data")
    except BadInput as exc:
        return json_error(exc.message, field=exc.field)
    except ValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        return json_error(" ".join(messages), field=field)
    return JsonResponse({"affirmed": name, "id": affirmation.pk})
