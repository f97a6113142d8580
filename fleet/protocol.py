"""The SLAMon agent protocol (version 1): request parsing and response shapes.

Parsing checks each field like the protocol's schema does and raises
``ProtocolError`` naming the first field that is wrong, so a view answers 400 with
``{"error": ..., "field": ...}`` and never 500. See ``shared/specs/fleet-protocol.md``.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from portal.lib import jsonvalues
from portal.lib.jsonvalues import json_problem

PROTOCOL_VERSION = 1
MAX_BODY_BYTES = 1024 * 1024
MAX_NAME_LENGTH = 200
MAX_TYPE_LENGTH = 100
MAX_ERROR_LENGTH = 64 * 1024
MAX_CAPABILITIES = 1000

POLL_FIELDS = {
    "protocol",
    "agent_id",
    "agent_name",
    "agent_time",
    "agent_capabilities",
    "max_tasks",
    "agent_location",
}
POLL_REQUIRED = POLL_FIELDS - {"agent_location"}
LOCATION_FIELDS = {"country", "region", "latitude", "longitude"}
RESULT_FIELDS = {"protocol", "task_id", "task_data", "task_error"}
CREATE_FIELDS = {"task_id", "test_id", "task_type", "task_version", "task_data"}
CREATE_REQUIRED = CREATE_FIELDS - {"task_data"}
# Task model fields under their protocol (and API) names, for errors that name them.
WIRE_NAMES = {
    "uuid": "task_id",
    "type": "task_type",
    "version": "task_version",
    "data": "task_data",
}


class ProtocolError(Exception):
    """A request that breaks the protocol; ``field`` names the offending field."""

    def __init__(self, message: str, field: str = "", status: int = 400):
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status

    def as_json(self) -> dict:
        body = {"error": self.message}
        if self.field:
            body["field"] = self.field
        return body


@dataclass(frozen=True)
class Poll:
    agent_id: uuid.UUID
    agent_name: str
    agent_time: str
    capabilities: dict[str, int]
    max_tasks: int
    location: dict | None


@dataclass(frozen=True)
class Result:
    task_id: uuid.UUID
    data: dict | None = None
    error: str | None = None


@dataclass(frozen=True)
class NewTask:
    task_id: uuid.UUID
    test_id: uuid.UUID
    type: str
    version: int
    data: dict = field(default_factory=dict)


def load_json(body: bytes, content_type: str) -> dict:
    """The request body as a JSON object, or a ProtocolError saying why not."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise ProtocolError(
            f"Content-Type must be application/json, not {media_type or 'missing'}."
        )
    if len(body) > MAX_BODY_BYTES:
        raise ProtocolError(f"The body is larger than {MAX_BODY_BYTES} bytes.")
    try:
        value = jsonvalues.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"The body is not valid JSON: {exc}.") from exc
    if not isinstance(value, dict):
        raise ProtocolError("The body must be a JSON object.")
    return value


def _keys(body: dict, allowed: set[str], required: set[str], where: str = "") -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise ProtocolError(
            f"Unknown field {extra[0]!r}; allowed: {', '.join(sorted(allowed))}.",
            where + extra[0],
        )
    missing = sorted(required - set(body))
    if missing:
        raise ProtocolError(f"{missing[0]!r} is required.", where + missing[0])


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _protocol(body: dict) -> None:
    value = body["protocol"]
    if not _is_int(value) or value != PROTOCOL_VERSION:
        raise ProtocolError(
            f"Unsupported protocol {value!r}: this server speaks protocol 1 "
            "(an integer).",
            "protocol",
        )


def _uuid(value: object, name: str) -> uuid.UUID:
    if not isinstance(value, str):
        raise ProtocolError(f"{name} must be a UUID string.", name)
    try:
        return uuid.UUID(value.strip())
    except ValueError as exc:
        raise ProtocolError(
            f"{name} is not a valid UUID: {value[:64]!r}.", name
        ) from exc


def _string(value: object, name: str, max_length: int, *, empty: bool = True) -> str:
    if not isinstance(value, str):
        raise ProtocolError(f"{name} must be a string.", name)
    if len(value) > max_length:
        raise ProtocolError(f"{name} is longer than {max_length} characters.", name)
    if not empty and not value.strip():
        raise ProtocolError(f"{name} must not be empty.", name)
    if "\x00" in value:
        raise ProtocolError(f"{name} must not contain NUL characters.", name)
    return value


def _object(value: object, name: str) -> dict:
    if not isinstance(value, dict):
        raise ProtocolError(f"{name} must be a JSON object.", name)
    if problem := json_problem(value):
        raise ProtocolError(f"{name}: {problem}", name)
    return value


def parse_poll(body: dict) -> Poll:
    _keys(body, POLL_FIELDS, POLL_REQUIRED)
    _protocol(body)
    agent_id = _uuid(body["agent_id"], "agent_id")
    name = _string(body["agent_name"], "agent_name", MAX_NAME_LENGTH)
    agent_time = _string(body["agent_time"], "agent_time", 100)
    raw_caps = body["agent_capabilities"]
    if not isinstance(raw_caps, dict):
        raise ProtocolError(
            'agent_capabilities must be an object like {"wait": {"version": 1}}.',
            "agent_capabilities",
        )
    if len(raw_caps) > MAX_CAPABILITIES:
        raise ProtocolError(
            f"At most {MAX_CAPABILITIES} capabilities.", "agent_capabilities"
        )
    capabilities = {}
    for task_type, spec in raw_caps.items():
        where = f"agent_capabilities.{task_type}"
        if not task_type or len(task_type) > MAX_TYPE_LENGTH or "\x00" in task_type:
            raise ProtocolError(
                f"A task type must have 1 to {MAX_TYPE_LENGTH} characters.", where
            )
        if not isinstance(spec, dict) or not _is_int(spec.get("version")):
            raise ProtocolError(
                f'{where} must be an object with an integer "version".',
                f"{where}.version",
            )
        capabilities[task_type] = spec["version"]
    max_tasks = body["max_tasks"]
    if not _is_int(max_tasks):
        raise ProtocolError("max_tasks must be an integer.", "max_tasks")
    location = None
    if "agent_location" in body:
        location = _location(body["agent_location"])
    return Poll(
        agent_id=agent_id,
        agent_name=name,
        agent_time=agent_time,
        capabilities=capabilities,
        max_tasks=max_tasks,
        location=location,
    )


def _location(value: object) -> dict:
    name = "agent_location"
    if not isinstance(value, dict):
        raise ProtocolError(f"{name} must be an object.", name)
    _keys(value, LOCATION_FIELDS, set(), f"{name}.")
    location = {}
    if "country" in value:
        country = value["country"]
        if not isinstance(country, str) or len(country) != 2:
            raise ProtocolError(
                "country must be a 2-character code.", f"{name}.country"
            )
        location["country"] = country
    if "region" in value:
        region = value["region"]
        if not isinstance(region, str) or not 2 <= len(region) <= 4:
            raise ProtocolError(
                "region must be a code of 2 to 4 characters.", f"{name}.region"
            )
        location["region"] = region
    for key, bound in (("latitude", 90), ("longitude", 180)):
        if key in value:
            number = value[key]
            if (
                not isinstance(number, int | float)
                or isinstance(number, bool)
                or not math.isfinite(number)
                or not -bound <= number <= bound
            ):
                raise ProtocolError(
                    f"{key} must be a number between -{bound} and {bound}.",
                    f"{name}.{key}",
                )
            location[key] = number
    return location


def parse_result(body: dict) -> Result:
    _keys(body, RESULT_FIELDS, {"protocol", "task_id"})
    _protocol(body)
    task_id = _uuid(body["task_id"], "task_id")
    has_data, has_error = "task_data" in body, "task_error" in body
    if has_data == has_error:
        raise ProtocolError(
            "Exactly one of task_data (an object) or task_error (a string) is "
            "required.",
            "task_error" if has_data else "task_data",
        )
    if has_data:
        return Result(task_id=task_id, data=_object(body["task_data"], "task_data"))
    error = body["task_error"]
    if not isinstance(error, str):
        raise ProtocolError("task_error must be a string.", "task_error")
    if "\x00" in error:
        raise ProtocolError("task_error must not contain NUL characters.", "task_error")
    return Result(task_id=task_id, error=error[:MAX_ERROR_LENGTH])


def parse_create(body: dict) -> NewTask:
    _keys(body, CREATE_FIELDS, CREATE_REQUIRED)
    task_id = _uuid(body["task_id"], "task_id")
    test_id = _uuid(body["test_id"], "test_id")
    task_type = _string(body["task_type"], "task_type", MAX_TYPE_LENGTH, empty=False)
    version = body["task_version"]
    if not _is_int(version) or not -(2**31) <= version < 2**31:
        raise ProtocolError("task_version must be an integer.", "task_version")
    data = body.get("task_data")
    data = {} if data is None else _object(data, "task_data")
    return NewTask(
        task_id=task_id, test_id=test_id, type=task_type, version=version, data=data
    )


def return_time(now: datetime, seconds: int) -> str:
    """When the agent should poll again, ISO-8601 with a UTC offset (the agent
    exits on a time without one)."""
    return (now + timedelta(seconds=seconds)).isoformat()


def task_json(task) -> dict:
    """A task as handed to an agent."""
    return {
        "task_id": str(task.uuid),
        "task_type": task.type,
        "task_version": task.version,
        "task_data": task.data if isinstance(task.data, dict) else {},
    }


def naive_utc(value: datetime) -> str:
    """The original's time format: naive UTC, ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def task_status_json(task) -> dict:
    """``GET /task/<id>``: the original's fields, plus state, agent and times."""
    body = {
        "task_id": str(task.uuid),
        "test_id": str(task.test_id) if task.test_id else None,
        "task_type": task.type,
        "task_version": task.version,
        "task_data": task.data,
        "state": task.state,
        "priority": task.priority,
        "attempts": task.attempts,
        "agent_id": str(task.agent.uuid) if task.agent and task.agent.uuid else None,
        "agent_name": task.agent.name if task.agent else None,
        "created": task.created_at.isoformat(),
        "claimed": task.claimed_at.isoformat() if task.claimed_at else None,
    }
    if task.state == "completed":
        body["task_completed"] = naive_utc(task.finished_at)
        body["task_result"] = task.result
    elif task.state == "failed":
        body["task_failed"] = naive_utc(task.finished_at)
        body["task_error"] = task.error
    elif task.finished_at:
        body["finished"] = task.finished_at.isoformat()
        if task.error:
            body["error"] = task.error
    return body
