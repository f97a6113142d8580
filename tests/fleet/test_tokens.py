"""Agent tokens: in the URL path or Basic auth, required or not, and who may post
a task's result."""

from __future__ import annotations

import base64
import uuid

import pytest

from fleet.models import Agent, Task, hash_token
from tests.fleet.conftest import poll_body, post_json

pytestmark = pytest.mark.django_db


@pytest.fixture
def token_agent(db):
    agent = Agent.objects.create(name="edge-1", labels=["eu"])
    return agent, agent.issue_token()


def _basic(name: str, token: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{token}".encode()).decode()


def test_issue_token_stores_only_its_hash(token_agent):
    agent, token = token_agent
    agent.refresh_from_db()
    assert agent.token_hash == hash_token(token)
    assert token not in (agent.token_prefix, agent.token_hash)
    assert token.startswith(agent.token_prefix)


@pytest.mark.parametrize("suffix", ["tasks", "tasks/"])
def test_a_token_in_the_path_identifies_the_agent(
    client, make_task, token_agent, suffix
):
    agent, token = token_agent
    task = make_task(required_labels=["eu"])
    body = poll_body()

    response = post_json(client, f"/fleet/a/{token}/{suffix}", body)

    assert response.status_code == 200
    assert [t["task_id"] for t in response.json()["tasks"]] == [str(task.uuid)]
    agent.refresh_from_db()
    assert str(agent.uuid) == body["agent_id"]
    assert agent.name == body["agent_name"]
    assert Agent.objects.count() == 1
    result = post_json(
        client,
        f"/fleet/a/{token}/tasks/response",
        {"protocol": 1, "task_id": str(task.uuid), "task_data": {"ok": 1}},
    )
    assert result.status_code == 200
    task.refresh_from_db()
    assert (task.state, task.agent_id) == (Task.State.COMPLETED, agent.pk)


def test_a_token_in_basic_auth_identifies_the_agent(client, token_agent):
    agent, token = token_agent
    body = poll_body()

    response = post_json(
        client, "/fleet/tasks", body, HTTP_AUTHORIZATION=_basic("edge-1", token)
    )

    assert response.status_code == 200
    agent.refresh_from_db()
    assert str(agent.uuid) == body["agent_id"]


@pytest.mark.parametrize(
    "auth",
    [
        {"path": "/fleet/a/fat_wrong/tasks"},
        {"path": "/fleet/a/" + "fat_" + "x" * 32 + "/tasks"},
        {"HTTP_AUTHORIZATION": "Basic !!!"},
        {"HTTP_AUTHORIZATION": _basic("edge-1", "fat_" + "y" * 32)},
    ],
)
def test_an_invalid_token_is_a_401_and_registers_nothing(client, token_agent, auth):
    path = auth.pop("path", "/fleet/tasks")
    response = post_json(client, path, poll_body(), **auth)
    assert response.status_code == 401
    assert (
        "token" in response.json()["error"].lower()
        or "Basic" in response.json()["error"]
    )
    assert Agent.objects.count() == 1
    assert Agent.objects.get().uuid is None


def test_require_token_refuses_anonymous_polls_and_results(
    client, make_task, settings, token_agent
):
    settings.FLEET_REQUIRE_TOKEN = True
    _, token = token_agent
    make_task()

    anonymous = post_json(client, "/fleet/tasks", poll_body())
    assert anonymous.status_code == 401
    assert "/fleet/a/<token>" in anonymous.json()["error"]
    assert Agent.objects.count() == 1

    claimed = post_json(client, f"/fleet/a/{token}/tasks", poll_body())
    assert claimed.status_code == 200
    task_id = claimed.json()["tasks"][0]["task_id"]
    result = {"protocol": 1, "task_id": task_id, "task_data": {}}
    assert post_json(client, "/fleet/tasks/response", result).status_code == 401
    assert (
        post_json(client, f"/fleet/a/{token}/tasks/response", result).status_code == 200
    )


def test_tokens_are_optional_by_default(client):
    assert post_json(client, "/fleet/tasks", poll_body()).status_code == 200


def test_a_tokenless_poll_cannot_use_a_token_agents_id(client, token_agent):
    _, token = token_agent
    body = poll_body()
    post_json(client, f"/fleet/a/{token}/tasks", body)

    response = post_json(client, "/fleet/tasks", body)

    assert response.status_code == 401
    assert Agent.objects.count() == 1


def test_a_result_from_an_agent_not_holding_the_task_is_refused(
    client, make_task, token_agent
):
    holder, holder_token = token_agent
    other = Agent.objects.create(name="edge-2")
    other_token = other.issue_token()
    task = make_task()
    post_json(client, f"/fleet/a/{holder_token}/tasks", poll_body())
    result = {"protocol": 1, "task_id": str(task.uuid), "task_data": {"x": 1}}

    from_other = post_json(client, f"/fleet/a/{other_token}/tasks/response", result)
    anonymous = post_json(client, "/fleet/tasks/response", result)

    assert from_other.status_code == 403
    assert anonymous.status_code == 403
    task.refresh_from_db()
    assert task.state == Task.State.CLAIMED
    ok = post_json(client, f"/fleet/a/{holder_token}/tasks/response", result)
    assert ok.status_code == 200


def test_a_restarted_token_agent_keeps_its_row_and_releases_what_it_held(
    client, make_task, token_agent
):
    agent, token = token_agent
    task = make_task(max_attempts=2)
    first, second = poll_body(), poll_body()
    post_json(client, f"/fleet/a/{token}/tasks", {**first, "max_tasks": 1})
    task.refresh_from_db()
    assert task.state == Task.State.CLAIMED

    # The Python agent makes a new agent_id at every start.
    response = post_json(client, f"/fleet/a/{token}/tasks", {**second, "max_tasks": 0})

    assert response.status_code == 200
    agent.refresh_from_db()
    assert str(agent.uuid) == second["agent_id"]
    assert Agent.objects.count() == 1
    task.refresh_from_db()
    assert task.state == Task.State.PENDING  # handed out again


def test_a_new_token_replaces_the_old_one(client, token_agent):
    agent, old = token_agent
    new = agent.issue_token()
    assert post_json(client, f"/fleet/a/{old}/tasks", poll_body()).status_code == 401
    assert post_json(client, f"/fleet/a/{new}/tasks", poll_body()).status_code == 200
    assert agent.revoke_token()
    assert post_json(client, f"/fleet/a/{new}/tasks", poll_body()).status_code == 401


def test_the_token_never_reaches_the_logs(client, token_agent, caplog):
    _, token = token_agent
    bad = token[:-1] + ("A" if token[-1] != "A" else "B")
    with caplog.at_level("INFO"):
        post_json(client, f"/fleet/a/{bad}/tasks", poll_body())
        post_json(
            client, f"/fleet/a/{token}/tasks", poll_body(agent_id=str(uuid.uuid4()))
        )
    assert token not in caplog.text
    assert bad not in caplog.text
