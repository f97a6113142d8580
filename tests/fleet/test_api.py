"""The fleet management API: tasks (list, create, read, cancel, requeue), agents
and the fleet's figures, with API-key scopes and admin roles."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth.models import Permission
from django.utils import timezone

from fleet.models import Agent, Task

pytestmark = pytest.mark.django_db

NOW = timezone.now().replace(microsecond=0)
TASKS = "/api/v1/fleet/tasks/"


@pytest.fixture
def writer(api_client, make_api_key):
    _, key = make_api_key("fleet:write", name="bpms")
    api_client.credentials(HTTP_X_API_KEY=key)
    return api_client


@pytest.fixture
def reader(api_client, make_api_key):
    _, key = make_api_key("fleet:read", name="grafana")
    api_client.credentials(HTTP_X_API_KEY=key)
    return api_client


def make_agent(name: str = "agent-1", **fields) -> Agent:
    fields.setdefault("uuid", uuid.uuid4())
    fields.setdefault("last_seen_at", timezone.now())
    return Agent.objects.create(name=name, **fields)


def make_task(state: str = Task.State.PENDING, **fields) -> Task:
    values = {"type": "wait", "version": 1, "data": {"time": 1}, "state": state}
    return Task.objects.create(**{**values, **fields})


def task_ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [row["task_id"] for row in response.json()["results"]]


# --- Create -----------------------------------------------------------------------


def test_it_creates_a_task_with_a_generated_id(writer, settings):
    settings.FLEET_TASK_MAX_ATTEMPTS = 4
    response = writer.post(
        TASKS, {"task_type": "wait", "task_version": 1}, format="json"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    task = Task.objects.get()
    assert body["task_id"] == str(task.uuid)
    assert body["state"] == "pending" and body["task_data"] == {}
    assert body["agent"] is None and body["agent_name"] is None
    assert body["max_attempts"] == 4 and body["test_id"] is None
    assert task.type == "wait" and task.version == 1
    assert task.created_by == "bpms"


def test_it_creates_a_task_with_the_given_ids_and_options(writer):
    task_id, test_id = uuid.uuid4(), uuid.uuid4()
    response = writer.post(
        TASKS,
        {
            "task_id": str(task_id),
            "test_id": str(test_id),
            "task_type": "url_http_status",
            "task_version": 2,
            "task_data": {"url": "https://example.com"},
            "priority": 5,
            "required_labels": ["gpu", "eu", "gpu"],
            "max_attempts": 3,
            "ttl": 60,
            "timeout": None,
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["task_id"] == str(task_id)
    task = Task.objects.get(uuid=task_id)
    assert task.test_id == test_id
    assert task.data == {"url": "https://example.com"}
    assert task.priority == 5 and task.required_labels == ["eu", "gpu"]
    assert task.max_attempts == 3 and task.ttl == 60 and task.timeout is None
    # the TTL window starts when the task is queued
    assert task.expires_at == task.created_at + timedelta(seconds=60)
    assert response.json()["expires_at"] is not None


def test_it_refuses_a_duplicate_task_id(writer):
    task = make_task()
    response = writer.post(
        TASKS,
        {"task_id": str(task.uuid), "task_type": "wait", "task_version": 1},
        format="json",
    )
    assert response.status_code == 400
    assert list(response.json()) == ["task_id"]
    assert "already exists" in response.json()["task_id"][0]
    assert Task.objects.count() == 1


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"task_type": None}, "task_type"),
        ({"task_type": ""}, "task_type"),
        ({"task_type": "x" * 101}, "task_type"),
        ({"task_version": "one"}, "task_version"),
        ({"task_version": 2**31}, "task_version"),
        ({"task_data": [1, 2]}, "task_data"),
        ({"task_data": {"note": "a\x00b"}}, "task_data"),
        ({"task_id": "not-a-uuid"}, "task_id"),
        ({"test_id": "not-a-uuid"}, "test_id"),
        ({"priority": 2**31}, "priority"),
        ({"required_labels": "gpu"}, "required_labels"),
        ({"required_labels": ["has space"]}, "required_labels"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"ttl": 0}, "ttl"),
        ({"timeout": -1}, "timeout"),
    ],
)
def test_it_names_the_bad_field(writer, overrides, field):
    body = {"task_type": "wait", "task_version": 1, **overrides}
    body = {k: v for k, v in body.items() if v is not None}
    response = writer.post(TASKS, body, format="json")
    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert not Task.objects.exists()


def test_it_names_every_bad_field_at_once(writer):
    response = writer.post(
        TASKS, {"task_version": "x", "ttl": "soon", "priority": 1.5}, format="json"
    )
    assert response.status_code == 400
    assert set(response.json()) == {"task_type", "task_version", "ttl", "priority"}


def test_it_refuses_a_body_that_is_not_json(writer):
    response = writer.post(TASKS, "{nope", content_type="application/json")
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]
    assert not Task.objects.exists()


def test_it_answers_without_the_trailing_slash(writer):
    response = writer.post(
        TASKS.rstrip("/"), {"task_type": "wait", "task_version": 1}, format="json"
    )
    assert response.status_code == 201
    task = Task.objects.get()
    response = writer.post(f"{TASKS}{task.uuid}/cancel")
    assert response.status_code == 200
    task.refresh_from_db()
    assert task.state == Task.State.CANCELLED


# --- List and detail -----------------------------------------------------------


def test_it_lists_tasks_newest_first(reader):
    old = make_task(created_at=NOW - timedelta(hours=2))
    new = make_task(created_at=NOW - timedelta(hours=1))
    assert task_ids(reader.get(TASKS)) == [str(new.uuid), str(old.uuid)]


def test_it_filters_tasks_by_state_type_version_and_test_id(reader):
    test_id = uuid.uuid4()
    ping_v1 = make_task(Task.State.COMPLETED, type="ping", version=1)
    done = make_task(Task.State.COMPLETED, type="ping", version=2, test_id=test_id)
    make_task(Task.State.PENDING, type="ping", version=2)
    make_task(Task.State.COMPLETED, type="wait", version=2)

    done_ping = reader.get(TASKS, {"state": "completed", "type": "ping"})
    assert task_ids(done_ping) == [str(done.uuid), str(ping_v1.uuid)]
    both = reader.get(TASKS, {"state": "completed", "type": "ping", "version": 2})
    assert task_ids(both) == [str(done.uuid)]
    assert task_ids(reader.get(TASKS, {"test_id": str(test_id)})) == [str(done.uuid)]
    assert len(task_ids(reader.get(TASKS, {"version": 2}))) == 3


def test_it_filters_tasks_by_agent_id_or_agent_uuid(reader):
    agent, other = make_agent("a"), make_agent("b")
    held = make_task(Task.State.CLAIMED, agent=agent)
    make_task(Task.State.CLAIMED, agent=other)
    make_task()
    assert task_ids(reader.get(TASKS, {"agent": agent.pk})) == [str(held.uuid)]
    upper = str(agent.uuid).upper()
    assert task_ids(reader.get(TASKS, {"agent": upper})) == [str(held.uuid)]
    body = reader.get(TASKS, {"agent": agent.pk}).json()["results"][0]
    assert body["agent"] == str(agent.uuid) and body["agent_name"] == "a"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"state": "running"}, "state"),
        ({"agent": "agent-1"}, "agent"),
        ({"agent": "0"}, "agent"),
        ({"agent": str(2**63)}, "agent"),
        ({"test_id": "nope"}, "test_id"),
        ({"version": "x"}, "version"),
        ({"version": str(2**31)}, "version"),
        ({"type": "a\x00b"}, "type"),
    ],
)
def test_it_rejects_a_bad_filter_value(reader, params, field):
    response = reader.get(TASKS, params)
    assert response.status_code == 400
    assert list(response.json()) == [field]


def test_it_shows_a_task_by_its_id_in_any_case(reader):
    agent = make_agent("runner")
    task = make_task(Task.State.COMPLETED, agent=agent, result={"ok": True})
    response = reader.get(f"{TASKS}{str(task.uuid).upper()}/")
    assert response.status_code == 200
    body = response.json()
    assert body["task_id"] == str(task.uuid)
    assert body["state"] == "completed" and body["result"] == {"ok": True}
    assert body["agent"] == str(agent.uuid) and body["agent_name"] == "runner"
    assert reader.get(f"{TASKS}{task.uuid.hex}").status_code == 200


def test_it_404s_an_unknown_task(reader):
    make_task()
    response = reader.get(f"{TASKS}{uuid.uuid4()}/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
    assert reader.get(f"{TASKS}{'-' * 36}/").status_code == 404


# --- Cancel and requeue --------------------------------------------------------


@pytest.mark.parametrize("state", [Task.State.PENDING, Task.State.CLAIMED])
def test_it_cancels_an_open_task(writer, state):
    task = make_task(state, agent=make_agent() if state == "claimed" else None)
    response = writer.post(f"{TASKS}{task.uuid}/cancel/")
    assert response.status_code == 200, response.content
    assert response.json()["state"] == "cancelled"
    task.refresh_from_db()
    assert task.state == Task.State.CANCELLED
    assert task.finished_at is not None


@pytest.mark.parametrize(
    "state",
    [Task.State.COMPLETED, Task.State.FAILED, Task.State.CANCELLED],
)
def test_it_refuses_to_cancel_a_finished_task(writer, state):
    task = make_task(state)
    response = writer.post(f"{TASKS}{task.uuid}/cancel/")
    assert response.status_code == 409
    assert response.json() == {
        "detail": f"Task {task.uuid} is {state}; only pending or claimed tasks "
        "can be cancelled.",
        "state": state,
    }
    task.refresh_from_db()
    assert task.state == state and task.finished_at is None


def test_it_requeues_a_failed_task(writer):
    agent = make_agent()
    task = make_task(
        Task.State.FAILED,
        agent=agent,
        attempts=2,
        error="boom",
        ttl=30,
        claimed_at=NOW,
        finished_at=NOW,
    )
    response = writer.post(f"{TASKS}{task.uuid}/requeue/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["state"] == "pending" and body["agent"] is None
    assert body["attempts"] == 0 and body["error"] == ""
    task.refresh_from_db()
    assert task.state == Task.State.PENDING and task.agent is None
    assert task.attempts == 0 and task.error == "" and task.finished_at is None
    # a new TTL window from now
    assert task.expires_at > timezone.now()


@pytest.mark.parametrize("state", [Task.State.PENDING, Task.State.COMPLETED])
def test_it_refuses_to_requeue_a_pending_or_completed_task(writer, state):
    task = make_task(state, result={"ok": True} if state == "completed" else None)
    response = writer.post(f"{TASKS}{task.uuid}/requeue/")
    assert response.status_code == 409
    assert response.json()["state"] == state
    assert "cannot be requeued" in response.json()["detail"]
    task.refresh_from_db()
    assert task.state == state


def test_it_404s_cancelling_an_unknown_task(writer):
    response = writer.post(f"{TASKS}{uuid.uuid4()}/cancel/")
    assert response.status_code == 404


# --- Agents ------------------------------------------------------------------------


def test_it_lists_agents_without_the_dropped_ones_and_with_task_counts(reader):
    busy = make_agent("busy", last_seen_at=NOW)
    idle = make_agent("idle", last_seen_at=NOW - timedelta(minutes=1))
    make_agent("gone", state=Agent.State.DROPPED, last_seen_at=NOW)
    make_task(Task.State.CLAIMED, agent=busy)
    make_task(Task.State.COMPLETED, agent=busy)
    make_task(Task.State.COMPLETED, agent=busy)
    make_task(Task.State.FAILED, agent=busy)
    make_task(Task.State.CANCELLED, agent=busy)

    response = reader.get("/api/v1/fleet/agents/")

    assert response.status_code == 200
    rows = response.json()["results"]
    assert [row["name"] for row in rows] == ["busy", "idle"]
    assert rows[0]["id"] == busy.pk and rows[0]["agent_id"] == str(busy.uuid)
    assert (
        rows[0]["tasks_claimed"],
        rows[0]["tasks_completed"],
        rows[0]["tasks_failed"],
    ) == (1, 2, 1)
    assert (
        rows[1]["tasks_claimed"],
        rows[1]["tasks_completed"],
        rows[1]["tasks_failed"],
    ) == (0, 0, 0)
    assert rows[1]["id"] == idle.pk


def test_it_lists_dropped_agents_when_asked(reader):
    make_agent("online")
    make_agent("gone", state=Agent.State.DROPPED)
    dropped = reader.get("/api/v1/fleet/agents/", {"state": "dropped"}).json()
    assert [row["name"] for row in dropped["results"]] == ["gone"]
    everyone = reader.get("/api/v1/fleet/agents/", {"include_dropped": "true"}).json()
    assert everyone["count"] == 2
    response = reader.get("/api/v1/fleet/agents/", {"state": "gone"})
    assert response.status_code == 400 and list(response.json()) == ["state"]


def test_it_shows_an_agent_by_id_without_its_token(reader):
    agent = make_agent(
        "eu-1",
        labels=["eu"],
        capabilities={"wait": 1},
        location={"country": "FI"},
        state=Agent.State.DROPPED,
    )
    token = agent.issue_token()
    response = reader.get(f"/api/v1/fleet/agents/{agent.pk}/")
    assert response.status_code == 200
    body = response.json()
    assert body["has_token"] is True and body["state"] == "dropped"
    assert body["labels"] == ["eu"] and body["capabilities"] == {"wait": 1}
    assert body["location"] == {"country": "FI"}
    assert token not in response.content.decode()
    assert agent.token_hash not in response.content.decode()
    assert reader.get(f"/api/v1/fleet/agents/{agent.pk + 1}/").status_code == 404


# --- Stats -------------------------------------------------------------------------


@time_machine.travel(NOW, tick=False)
def test_it_reports_the_fleet_figures(reader):
    make_agent("a")
    make_agent("b", state=Agent.State.LOST)
    make_task(created_at=NOW - timedelta(seconds=90))
    make_task(created_at=NOW - timedelta(seconds=30))
    make_task(Task.State.FAILED, finished_at=NOW - timedelta(hours=1))
    make_task(Task.State.FAILED, finished_at=NOW - timedelta(days=2))
    make_task(Task.State.COMPLETED, type="ping", version=2)

    response = reader.get("/api/v1/fleet/stats/")

    assert response.status_code == 200
    body = response.json()
    assert body["agents"] == {"online": 1, "lost": 1, "dropped": 0, "disabled": 0}
    assert body["tasks"]["pending"] == 2 and body["tasks"]["failed"] == 2
    assert body["tasks"]["completed"] == 1 and body["tasks"]["expired"] == 0
    assert body["tasks_by_type"] == {
        "ping v2": {"completed": 1},
        "wait v1": {"failed": 2, "pending": 2},
    }
    assert body["oldest_pending_seconds"] == 90.0
    assert body["failed_last_24h"] == 1


# --- Scopes and roles --------------------------------------------------------------


def test_it_requires_a_key_or_a_session(api_client):
    task = make_task()
    assert api_client.get(TASKS).status_code == 401
    assert api_client.get("/api/v1/fleet/stats/").status_code == 401
    response = api_client.post(f"{TASKS}{task.uuid}/cancel/")
    assert response.status_code == 401
    task.refresh_from_db()
    assert task.state == Task.State.PENDING


def test_a_read_key_lists_but_cannot_create_or_cancel(reader):
    task = make_task()
    assert task_ids(reader.get(TASKS)) == [str(task.uuid)]
    assert reader.get("/api/v1/fleet/agents/").status_code == 200
    response = reader.post(
        TASKS, {"task_type": "wait", "task_version": 1}, format="json"
    )
    assert response.status_code == 403
    assert response.json()["detail"] == "This API key lacks the 'fleet:write' scope."
    assert reader.post(f"{TASKS}{task.uuid}/cancel/").status_code == 403
    assert reader.post(f"{TASKS}{task.uuid}/requeue/").status_code == 403
    task.refresh_from_db()
    assert task.state == Task.State.PENDING
    assert Task.objects.count() == 1


def test_another_apps_scope_gets_nothing(api_client, make_api_key):
    _, key = make_api_key("packages:write")
    api_client.credentials(HTTP_X_API_KEY=key)
    task = make_task()
    response = api_client.get(TASKS)
    assert response.status_code == 403
    assert response.json()["detail"] == "This API key lacks the 'fleet:read' scope."
    assert api_client.get("/api/v1/fleet/agents/").status_code == 403
    assert api_client.get("/api/v1/fleet/stats/").status_code == 403
    assert api_client.post(f"{TASKS}{task.uuid}/cancel/").status_code == 403
    task.refresh_from_db()
    assert task.state == Task.State.PENDING


def test_a_viewer_can_read_but_not_cancel_or_create(api_client, viewer_user):
    task = make_task()
    api_client.force_login(viewer_user)
    assert api_client.get(f"{TASKS}{task.uuid}/").status_code == 200
    assert api_client.get("/api/v1/fleet/agents/").status_code == 200
    assert api_client.get("/api/v1/fleet/stats/").status_code == 200
    assert api_client.post(f"{TASKS}{task.uuid}/cancel/").status_code == 403
    response = api_client.post(
        TASKS, {"task_type": "wait", "task_version": 1}, format="json"
    )
    assert response.status_code == 403
    task.refresh_from_db()
    assert task.state == Task.State.PENDING
    assert Task.objects.count() == 1


def test_an_operator_can_cancel_and_create(api_client, operator_user):
    task = make_task()
    api_client.force_login(operator_user)
    assert api_client.post(f"{TASKS}{task.uuid}/cancel/").status_code == 200
    task.refresh_from_db()
    assert task.state == Task.State.CANCELLED
    response = api_client.post(
        TASKS, {"task_type": "wait", "task_version": 1}, format="json"
    )
    assert response.status_code == 201
    assert Task.objects.get(uuid=response.json()["task_id"]).created_by == "olivia"


def test_staff_with_cancel_but_not_add_cannot_create(api_client, django_user_model):
    user = django_user_model.objects.create_user("carl", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="fleet", codename__in=["view_task", "cancel_task"]
        )
    )
    task = make_task()
    api_client.force_login(user)
    response = api_client.post(
        TASKS, {"task_type": "wait", "task_version": 1}, format="json"
    )
    assert response.status_code == 403
    assert api_client.post(f"{TASKS}{task.uuid}/cancel/").status_code == 200
    assert Task.objects.count() == 1
