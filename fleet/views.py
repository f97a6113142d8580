"""The SLAMon protocol endpoints under ``/fleet/``, for agents and BPMS scripts.

Plain Django views (the poll is the hottest path, and the protocol is not REST):
CSRF-exempt, every path with and without its trailing slash, never a redirect, a
JSON error naming the field for anything wrong, never a 500 for bad input.
"""

from __future__ import annotations

import logging
import uuid

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, ValidationError
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from fleet import protocol, services
from fleet.authentication import AgentAuthError, authenticate_agent
from fleet.models import Task
from fleet.protocol import ProtocolError
from portal.api import api_key_caller, json_error, json_method_not_allowed
from portal.middleware import fast_lane

logger = logging.getLogger(__name__)


def _json_body(request: HttpRequest) -> dict:
    try:
        body = request.body
    except RequestDataTooBig as exc:
        raise ProtocolError("The body is too large.") from exc
    return protocol.load_json(body, request.content_type or "")


def _remote(request: HttpRequest) -> str:
    return request.META.get("REMOTE_ADDR", "")


def _agent_or_error(request: HttpRequest, token: str | None):
    try:
        return authenticate_agent(request, token), None
    except AgentAuthError as exc:
        logger.warning(
            "fleet: refused agent credentials from %s on %s: %s",
            _remote(request),
            request.path_info.split("/a/")[0] if token else request.path_info,
            exc,
        )
        return None, json_error(str(exc), status=401)


def _agent_endpoint(request: HttpRequest, token: str | None, handle) -> JsonResponse:
    """What both agent endpoints share: POST only, the agent's credentials, the
    JSON body, and protocol errors and refusals as JSON."""
    if request.method != "POST":
        return json_method_not_allowed(request, ["POST"])
    agent, refused = _agent_or_error(request, token)
    if refused:
        return refused
    try:
        return JsonResponse(handle(_json_body(request), agent))
    except ProtocolError as exc:
        return JsonResponse(exc.as_json(), status=exc.status)
    except services.AgentRefused as exc:
        logger.warning("fleet: refused from %s: %s", _remote(request), exc)
        return json_error(exc.message, status=exc.status, field=exc.field)


@fast_lane
@csrf_exempt
def poll(request: HttpRequest, token: str | None = None) -> JsonResponse:
    """``POST /fleet/tasks``: an agent's poll; claims tasks for it."""

    def handle(body: dict, agent) -> dict:
        tasks = services.agent_poll(
            poll=protocol.parse_poll(body), agent=agent, remote_addr=_remote(request)
        )
        return {
            "tasks": [protocol.task_json(task) for task in tasks],
            "return_time": protocol.return_time(
                timezone.now(), settings.AGENT_RETURN_TIME
            ),
        }

    return _agent_endpoint(request, token, handle)


@fast_lane
@csrf_exempt
def task_response(request: HttpRequest, token: str | None = None) -> JsonResponse:
    """``POST /fleet/tasks/response``: the result or error of one task."""

    def handle(body: dict, agent) -> dict:
        result = protocol.parse_result(body)
        outcome = services.task_result(result=result, agent=agent)
        return {"task_id": str(result.task_id), "status": outcome}

    return _agent_endpoint(request, token, handle)


def _bpms_refusal(request: HttpRequest, *, write: bool) -> JsonResponse | None:
    """BPMS endpoints need an API key with the fleet scope, unless FLEET_OPEN_BPMS."""
    if settings.FLEET_OPEN_BPMS:
        return None
    _user, refusal = api_key_caller(
        request, scope="fleet", write=write, anonymous=False
    )
    return refusal


@csrf_exempt
def task_create(request: HttpRequest) -> JsonResponse:
    """``POST /fleet/task``: a BPMS or a script queues a task."""
    if request.method != "POST":
        return json_method_not_allowed(request, ["POST"])
    if refused := _bpms_refusal(request, write=True):
        return refused
    try:
        new = protocol.parse_create(_json_body(request))
    except ProtocolError as exc:
        return JsonResponse(exc.as_json(), status=exc.status)
    try:
        task = services.task_create(
            task_id=new.task_id,
            test_id=new.test_id,
            task_type=new.type,
            version=new.version,
            data=new.data,
            created_by="BPMS",
        )
    except ValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        return json_error(
            " ".join(messages), field=protocol.WIRE_NAMES.get(field, field)
        )
    return JsonResponse(protocol.task_status_json(task))


def _task_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError as exc:
        raise ProtocolError(
            f"{raw[:64]!r} is not a valid task id (a UUID).", "task_id"
        ) from exc


@csrf_exempt
def task_detail(request: HttpRequest, task_id: str) -> JsonResponse:
    """``GET /fleet/task/<id>``: status and result; ``DELETE`` cancels the task."""
    if request.method not in ("GET", "HEAD", "DELETE"):
        return json_method_not_allowed(request, ["GET", "DELETE"])
    if refused := _bpms_refusal(request, write=request.method == "DELETE"):
        return refused
    try:
        task_uuid = _task_id(task_id)
    except ProtocolError as exc:
        return JsonResponse(exc.as_json(), status=exc.status)
    task = Task.objects.select_related("agent").filter(uuid=task_uuid).first()
    if task is None:
        return json_error(f"Unknown task {task_uuid}.", status=404, field="task_id")
    if request.method == "DELETE" and not task.cancel():
        task.refresh_from_db()
        return json_error(
            f"Task {task_uuid} is {task.state}; only pending or claimed tasks can be "
            "cancelled.",
            status=409,
            field="task_id",
        )
    return JsonResponse(protocol.task_status_json(task))


@csrf_exempt
def status(request: HttpRequest) -> JsonResponse:
    """``GET /fleet/status``: active agents and tasks waiting."""
    if request.method not in ("GET", "HEAD"):
        return json_method_not_allowed(request, ["GET"])
    return JsonResponse(services.fleet_status())
