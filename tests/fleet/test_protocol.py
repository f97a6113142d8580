"""The SLAMon protocol endpoints, row by row of the spec's tables."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import pytest

from fleet.models import Agent, Task
from tests.fleet.conftest import poll_body, post_json

pytestmark = pytest.mark.django_db

POLL_PATHS = ["/fleet/tasks", "/fleet/tasks/"]


# --- Poll -----------------------------------------------------------------------


@pytest.mark.parametrize("path", POLL_PATHS)
def test_it_answers_a_poll_with_tasks_and_a_return_time(client, make_task, path):
    task = make_task(data={"time": 1})

    response = post_json(client, path, poll_body())

    assert response.status_code == 200
    body = response.json()
    assert body["tasks"] == [
        {
            "task_id": str(task.uuid),
            "task_type": "wait",
            "task_version": 1,
            "task_data": {"time": 1},
        }
    ]
    # The agent exits on a return_time without a UTC offset.
    returned = datetime.fromisoformat(body["return_time"])
    assert returned.utcoffset() is not None
    assert 59 <= (returned - datetime.now(returned.tzinfo)).total_seconds() <= 61
    task.refresh_from_db()
    assert task.state == Task.State.CLAIMED
    assert task.attempts == 1


def test_it_sends_the_configured_return_time(client, settings):
    settings.AGENT_RETURN_TIME = 5
    response = post_json(client, "/fleet/tasks", poll_body())
    returned = datetime.fromisoformat(response.json()["return_time"])
    assert 4 <= (returned - datetime.now(returned.tzinfo)).total_seconds() <= 6


def test_it_gives_task_data_as_an_empty_object_by_default(client, make_task):
    make_task(data=None)
    response = post_json(client, "/fleet/tasks", poll_body())
    assert response.json()["tasks"][0]["task_data"] == {}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"protocol": "1"}, "protocol"),
        ({"protocol": 0}, "protocol"),
        ({"protocol": 2}, "protocol"),
        ({"protocol": True}, "protocol"),
        ({"protocol": ...}, "protocol"),
        ({"agent_id": "not-a-uuid"}, "agent_id"),
        ({"agent_id": 12}, "agent_id"),
        ({"agent_id": ...}, "agent_id"),
        ({"agent_name": 5}, "agent_name"),
        ({"agent_name": ...}, "agent_name"),
        ({"agent_time": None}, "agent_time"),
        ({"agent_time": ...}, "agent_time"),
        ({"agent_capabilities": []}, "agent_capabilities"),
        ({"agent_capabilities": {"wait": 1}}, "agent_capabilities.wait.version"),
        ({"agent_capabilities": {"wait": {}}}, "agent_capabilities.wait.version"),
        (
            {"agent_capabilities": {"wait": {"version": "1"}}},
            "agent_capabilities.wait.version",
        ),
        (
            {"agent_capabilities": {"wait": {"version": 1.5}}},
            "agent_capabilities.wait.version",
        ),
        ({"agent_capabilities": ...}, "agent_capabilities"),
        ({"max_tasks": "2"}, "max_tasks"),
        ({"max_tasks": 2.0}, "max_tasks"),
        ({"max_tasks": None}, "max_tasks"),
        ({"max_tasks": ...}, "max_tasks"),
        ({"agent_location": "FI"}, "agent_location"),
        ({"agent_location": {"country": "FIN"}}, "agent_location.country"),
        ({"agent_location": {"region": "X"}}, "agent_location.region"),
        ({"agent_location": {"region": "ABCDE"}}, "agent_location.region"),
        ({"agent_location": {"latitude": "60"}}, "agent_location.latitude"),
        ({"agent_location": {"longitude": 200}}, "agent_location.longitude"),
        ({"agent_location": {"city": "Oulu"}}, "agent_location.city"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_it_refuses_a_bad_poll_naming_the_field(client, make_task, overrides, field):
    task = make_task()

    response = post_json(client, "/fleet/tasks", poll_body(**overrides))

    assert response.status_code == 400
    assert response.json()["field"] == field
    assert response.json()["error"]
    task.refresh_from_db()
    assert task.state == Task.State.PENDING  # nothing was claimed
    assert not Agent.objects.exists()


@pytest.mark.parametrize(
    ("data", "content_type", "fragment"),
    [
        ("{not json", "application/json", "not valid JSON"),
        ("[1, 2]", "application/json", "JSON object"),
        ('{"protocol": 1}', "text/plain", "Content-Type"),
        ("protocol=1", "application/x-www-form-urlencoded", "Content-Type"),
        (b"\xff\xfe", "application/json", "not valid JSON"),
    ],
)
def test_it_refuses_a_body_that_is_not_a_json_object(
    client, data, content_type, fragment
):
    response = client.post("/fleet/tasks", data, content_type=content_type)
    assert response.status_code == 400
    assert fragment in response.json()["error"]


def test_it_accepts_a_json_content_type_with_a_charset(client):
    response = client.post(
        "/fleet/tasks",
        json.dumps({**poll_body(agent_capabilities={}), "max_tasks": 1}),
        content_type="application/json; charset=utf-8",
    )
    assert response.status_code == 200
    assert response.json()["tasks"] == []


def test_it_accepts_a_full_location(client):
    location = {"country": "FI", "region": "OULU", "latitude": 65.0, "longitude": 25.5}
    body = poll_body(agent_location=location)
    response = post_json(client, "/fleet/tasks", body)
    assert response.status_code == 200
    assert Agent.objects.get(uuid=body["agent_id"]).location == location


@pytest.mark.parametrize("max_tasks", [0, -1])
def test_it_gives_no_tasks_for_zero_or_negative_max_tasks(client, make_task, max_tasks):
    task = make_task()
    response = post_json(client, "/fleet/tasks", poll_body(max_tasks=max_tasks))
    assert response.status_code == 200
    assert response.json()["tasks"] == []
    task.refresh_from_db()
    assert task.state == Task.State.PENDING


def test_it_updates_the_name_and_replaces_capabilities_on_every_poll(client):
    body = poll_body(
        agent_name="first",
        agent_capabilities={"wait": {"version": 1}, "x": {"version": 2}},
    )
    post_json(client, "/fleet/tasks", body)
    body.update(
        agent_name="second", agent_capabilities={"url_http_status": {"version": 1}}
    )

    post_json(client, "/fleet/tasks", body)

    agent = Agent.objects.get(uuid=body["agent_id"])
    assert agent.name == "second"  # the original kept the first name
    assert agent.capabilities == {"url_http_status": 1}
    assert agent.state == Agent.State.ONLINE
    assert agent.last_seen_at is not None


def test_agent_ids_are_compared_lowercased(client):
    agent_id = str(uuid.uuid4())
    post_json(client, "/fleet/tasks", poll_body(agent_id=agent_id))
    post_json(client, "/fleet/tasks", poll_body(agent_id=agent_id.upper()))
    assert Agent.objects.count() == 1


@pytest.mark.parametrize(
    "path",
    [
        "/fleet/tasks",
        "/fleet/tasks/",
        "/fleet/tasks/response",
        "/fleet/tasks/response/",
        "/fleet/task",
        "/fleet/task/",
    ],
)
def test_it_answers_get_on_post_endpoints_with_405_not_a_redirect(client, path):
    response = client.get(path)
    assert response.status_code == 405
    assert "POST" in response["Allow"]
    assert "error" in response.json()


def test_it_needs_no_csrf_token(make_task):
    from django.test import Client

    make_task()
    response = post_json(Client(enforce_csrf_checks=True), "/fleet/tasks", poll_body())
    assert response.status_code == 200
    assert len(response.json()["tasks"]) == 1


def test_an_unknown_fleet_path_is_a_json_404(client):
    response = client.post("/fleet/nothing/here", "{}", content_type="application/json")
    assert response.status_code == 404
    assert response.json()


# --- Result ---------------------------------------------------------------------


def _claim(client, make_task, **task_kwargs) -> Task:
    task = make_task(**task_kwargs)
    response = post_json(client, "/fleet/tasks", poll_body(max_tasks=1))
    assert [t["task_id"] for t in response.json()["tasks"]] == [str(task.uuid)]
    return task


@pytest.mark.parametrize("path", ["/fleet/tasks/response", "/fleet/tasks/response/"])
def test_it_records_a_result(client, make_task, path):
    task = _claim(client, make_task)

    response = post_json(
        client, path, {"protocol": 1, "task_id": str(task.uuid), "task_data": {"t": 1}}
    )

    assert response.status_code == 200
    task.refresh_from_db()
    assert task.state == Task.State.COMPLETED
    assert task.result == {"t": 1}
    assert task.finished_at is not None


def test_it_records_an_error(client, make_task):
    task = _claim(client, make_task)

    response = post_json(
        client,
        "/fleet/tasks/response",
        {"protocol": 1, "task_id": str(task.uuid).upper(), "task_error": "boom"},
    )

    assert response.status_code == 200
    task.refresh_from_db()
    assert task.state == Task.State.FAILED
    assert task.error == "boom"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"task_data": {"a": 1}, "task_error": "x"}, "task_error"),
        ({}, "task_data"),
        ({"task_data": [1]}, "task_data"),
        ({"task_data": "done"}, "task_data"),
        ({"task_error": 5}, "task_error"),
        ({"task_error": "x", "protocol": 2}, "protocol"),
        ({"task_error": "x", "task_id": "nope"}, "task_id"),
        ({"task_error": "x", "task_id": ...}, "task_id"),
        ({"task_error": "x", "agent_id": str(uuid.uuid4())}, "agent_id"),
    ],
)
def test_it_refuses_a_bad_result_naming_the_field(client, make_task, body, field):
    task = _claim(client, make_task)
    full = {"protocol": 1, "task_id": str(task.uuid), **body}
    full = {k: v for k, v in full.items() if v is not ...}

    response = post_json(client, "/fleet/tasks/response", full)

    assert response.status_code == 400
    assert response.json()["field"] == field
    task.refresh_from_db()
    assert task.state == Task.State.CLAIMED


def test_a_result_for_an_unknown_task_is_a_400(client):
    response = post_json(
        client,
        "/fleet/tasks/response",
        {"protocol": 1, "task_id": str(uuid.uuid4()), "task_data": {}},
    )
    assert response.status_code == 400
    assert "Unknown task" in response.json()["error"]


def test_a_result_for_a_task_never_claimed_is_a_400(client, make_task):
    task = make_task()
    response = post_json(
        client,
        "/fleet/tasks/response",
        {"protocol": 1, "task_id": str(task.uuid), "task_data": {}},
    )
    assert response.status_code == 400
    assert "not claimed" in response.json()["error"]
    task.refresh_from_db()
    assert task.state == Task.State.PENDING


def test_the_same_result_posted_again_is_a_200(client, make_task):
    task = _claim(client, make_task)
    body = {"protocol": 1, "task_id": str(task.uuid), "task_data": {"time": 1.2}}
    assert post_json(client, "/fleet/tasks/response", body).status_code == 200

    again = post_json(client, "/fleet/tasks/response", body)

    assert again.status_code == 200
    assert again.json()["status"] == "duplicate"
    task.refresh_from_db()
    assert task.result == {"time": 1.2}


def test_a_different_result_for_a_finished_task_is_a_400(client, make_task):
    task = _claim(client, make_task)
    body = {"protocol": 1, "task_id": str(task.uuid), "task_data": {"time": 1.2}}
    post_json(client, "/fleet/tasks/response", body)

    other = post_json(
        client,
        "/fleet/tasks/response",
        {"protocol": 1, "task_id": str(task.uuid), "task_error": "late"},
    )

    assert other.status_code == 400
    assert "already completed" in other.json()["error"]
    task.refresh_from_db()
    assert task.state == Task.State.COMPLETED
    assert task.result == {"time": 1.2}


@pytest.mark.parametrize("how", ["cancel", "expire"])
def test_a_result_for_a_cancelled_or_expired_task_is_accepted_and_discarded(
    client, make_task, how
):
    task = _claim(client, make_task)
    if how == "cancel":
        assert task.cancel()
    else:
        Task.objects.filter(pk=task.pk).update(state=Task.State.EXPIRED)

    response = post_json(
        client,
        "/fleet/tasks/response",
        {"protocol": 1, "task_id": str(task.uuid), "task_data": {"late": True}},
    )

    assert response.status_code == 200  # the agent carries on
    assert response.json()["status"] == "discarded"
    task.refresh_from_db()
    assert task.result is None
    assert task.state in (Task.State.CANCELLED, Task.State.EXPIRED)


# --- Create and status (BPMS) ----------------------------------------------------


def _create_body(**overrides) -> dict:
    body = {
        "task_id": str(uuid.uuid4()),
        "test_id": str(uuid.uuid4()),
        "task_type": "wait",
        "task_version": 1,
        "task_data": {"time": 3},
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not ...}


@pytest.mark.parametrize("path", ["/fleet/task", "/fleet/task/"])
def test_it_creates_a_task(client, open_bpms, path):
    body = _create_body()

    response = post_json(client, path, body)

    assert response.status_code == 200
    assert response.json()["task_id"] == body["task_id"]
    task = Task.objects.get(uuid=body["task_id"])
    assert (task.type, task.version, task.data) == ("wait", 1, {"time": 3})
    assert str(task.test_id) == body["test_id"]
    assert task.state == Task.State.PENDING


def test_task_data_is_optional_on_create(client, open_bpms):
    body = _create_body(task_data=...)
    assert post_json(client, "/fleet/task", body).status_code == 200
    assert Task.objects.get(uuid=body["task_id"]).data == {}


def test_a_duplicate_task_id_is_a_400_compared_lowercased(client, open_bpms):
    body = _create_body()
    assert post_json(client, "/fleet/task", body).status_code == 200

    again = post_json(
        client, "/fleet/task", {**body, "task_id": body["task_id"].upper()}
    )

    assert again.status_code == 400
    assert again.json()["field"] == "task_id"
    assert Task.objects.count() == 1


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"task_id": ...}, "task_id"),
        ({"task_id": "x"}, "task_id"),
        ({"test_id": ...}, "test_id"),
        ({"test_id": 5}, "test_id"),
        ({"task_type": ...}, "task_type"),
        ({"task_type": ""}, "task_type"),
        ({"task_type": 3}, "task_type"),
        ({"task_type": "x" * 101}, "task_type"),
        ({"task_version": "1"}, "task_version"),
        ({"task_version": ...}, "task_version"),
        ({"task_version": 2**40}, "task_version"),
        ({"task_data": [1]}, "task_data"),
        ({"task_data": {"a": "\u0000"}}, "task_data"),
        ({"priority": 5}, "priority"),
    ],
)
def test_it_refuses_a_bad_task_naming_the_field(client, open_bpms, overrides, field):
    response = post_json(client, "/fleet/task", _create_body(**overrides))
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert not Task.objects.exists()


def test_bpms_endpoints_need_an_api_key_unless_open(client, make_api_key, settings):
    settings.FLEET_OPEN_BPMS = False
    body = _create_body()
    assert post_json(client, "/fleet/task", body).status_code == 401
    _, read_key = make_api_key("fleet:read")
    refused = post_json(client, "/fleet/task", body, HTTP_X_API_KEY=read_key)
    assert refused.status_code == 403
    _, other_key = make_api_key("packages:write")
    assert (
        post_json(client, "/fleet/task", body, HTTP_X_API_KEY=other_key).status_code
        == 403
    )
    assert not Task.objects.exists()

    _, write_key = make_api_key("fleet:write")
    assert (
        post_json(client, "/fleet/task", body, HTTP_X_API_KEY=write_key).status_code
        == 200
    )
    path = f"/fleet/task/{body['task_id']}"
    assert client.get(path).status_code == 401
    assert client.get(path, HTTP_X_API_KEY=read_key).status_code == 200
    bad = client.get(path, HTTP_X_API_KEY="opk_" + "x" * 43)
    assert bad.status_code == 401


def test_it_reports_a_completed_task_in_the_original_format(
    client, make_task, open_bpms
):
    task = _claim(client, make_task, test_id=uuid.uuid4())
    post_json(
        client,
        "/fleet/tasks/response",
        {"protocol": 1, "task_id": str(task.uuid), "task_data": {"time": 1}},
    )

    response = client.get(f"/fleet/task/{str(task.uuid).upper()}")

    assert response.status_code == 200
    body = response.json()
    assert body["task_id"] == str(task.uuid)
    assert body["test_id"] == str(task.test_id)
    assert (body["task_type"], body["task_version"]) == ("wait", 1)
    assert body["task_result"] == {"time": 1}
    # naive UTC, YYYY-MM-DD HH:MM:SS.ffffff
    datetime.strptime(body["task_completed"], "%Y-%m-%d %H:%M:%S.%f")
    assert "task_failed" not in body and "task_error" not in body
    assert body["state"] == "completed"


def test_it_reports_a_failed_task(client, make_task, open_bpms):
    task = _claim(client, make_task)
    post_json(
        client,
        "/fleet/tasks/response",
        {"protocol": 1, "task_id": str(task.uuid), "task_error": "boom"},
    )
    body = client.get(f"/fleet/task/{task.uuid}/").json()
    assert body["task_error"] == "boom"
    datetime.strptime(body["task_failed"], "%Y-%m-%d %H:%M:%S.%f")
    assert "task_completed" not in body and "task_result" not in body


def test_a_pending_task_has_neither_result_nor_error(client, make_task, open_bpms):
    task = make_task()
    body = client.get(f"/fleet/task/{task.uuid}").json()
    assert body["state"] == "pending"
    assert not {"task_completed", "task_result", "task_failed", "task_error"} & set(
        body
    )


def test_an_unknown_task_is_a_404_and_a_bad_id_a_400(client, open_bpms):
    assert client.get(f"/fleet/task/{uuid.uuid4()}").status_code == 404
    bad = client.get("/fleet/task/not-a-uuid")
    assert bad.status_code == 400
    assert bad.json()["field"] == "task_id"


# --- Status ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/fleet/status", "/fleet/status/"])
def test_status_counts_active_agents_and_waiting_tasks(client, make_task, path):
    for _ in range(3):
        make_task()
    post_json(client, "/fleet/tasks", poll_body(max_tasks=1))
    post_json(client, "/fleet/tasks", poll_body(max_tasks=0))
    Agent.objects.create(name="gone", state=Agent.State.LOST)

    response = client.get(path)

    assert response.status_code == 200
    # the original always said tasks_waiting: 0
    assert response.json() == {"agents": 2, "tasks_waiting": 2}


def test_a_body_over_the_upload_limit_is_a_json_400(client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = poll_body(agent_name="x" * 2000)
    response = post_json(client, "/fleet/tasks", body)
    assert response.status_code == 400
    assert "too large" in response.json()["error"]


def test_a_deeply_nested_body_is_a_400_not_a_500(client):
    response = client.post(
        "/fleet/tasks", "[" * 100_000 + "]" * 100_000, content_type="application/json"
    )
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["error"]
