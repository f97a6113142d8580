"""The fleet admin: agents (columns, filter, actions, tokens) and tasks (the add
form through the service, filters, cancel/requeue, the read-only page)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.apps import apps
from django.contrib.messages import get_messages
from django.contrib.sessions.models import Session

from fleet.models import Agent, Task, hash_token
from tests.fleet.conftest import poll_body, post_json

NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)
AGENTS = "/admin/fleet/agent/"
TASKS = "/admin/fleet/task/"
TASK_FORM = {
    "capability": "wait:1",
    "other_type": "",
    "other_version": "",
    "data": '{"time": 5}',
    "priority": "3",
    "required_labels": "gpu, eu",
    "max_attempts": "2",
    "ttl": "600",
    "timeout": "60",
    "test_id": "",
}


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def make_agent(name: str = "edge-1", **fields) -> Agent:
    fields.setdefault("capabilities", {"wait": 1, "url_http_status": 1})
    return Agent.objects.create(name=name, **fields)


def make_task(state: str = Task.State.PENDING, **fields) -> Task:
    fields.setdefault("type", "wait")
    fields.setdefault("version", 1)
    return Task.objects.create(state=state, **fields)


def action(client, url: str, name: str, objects) -> object:
    return client.post(
        url,
        {"action": name, "_selected_action": [obj.pk for obj in objects]},
        follow=True,
    )


def everything_stored() -> str:
    """Every row of every table, and every session decoded, as one text."""
    tables = [model for model in apps.get_models() if model._meta.managed]
    rows = [str(row) for model in tables for row in model.objects.values_list()]
    rows += [str(session.get_decoded()) for session in Session.objects.all()]
    return "\n".join(rows)


# --- Agents ---------------------------------------------------------------------


@time_machine.travel(NOW, tick=False)
def test_it_lists_agents_with_their_columns(
    admin_client, django_assert_max_num_queries
):
    agent = make_agent(
        labels=["eu", "gpu"],
        uuid="7c5a5c2e-0f0e-4b8e-9d3a-1b2c3d4e5f60",
        last_seen_at=NOW - timedelta(minutes=3),
    )
    agent.issue_token()
    agent.refresh_from_db()
    make_task(Task.State.CLAIMED, agent=agent)
    for state in (Task.State.COMPLETED, Task.State.COMPLETED, Task.State.FAILED):
        make_task(state, agent=agent)
    make_agent("edge-2", state=Agent.State.LOST)

    # the task counts are subqueries: the query count doesn't grow with the rows
    with django_assert_max_num_queries(6):
        response = admin_client.get(AGENTS)

    assert response.status_code == 200
    html = response.content.decode()
    online = '<span class="portal-badge portal-badge-ok" data-state="online">'
    lost = '<span class="portal-badge portal-badge-warn" data-state="lost">'
    assert online + "Online</span>" in html
    assert lost + "Lost</span>" in html
    assert 'edge-1<br><code class="pkg-quiet">7c5a5c2e-0f0e-4b8e' in html
    assert (
        '<time datetime="2026-03-10T12:27:00+00:00" title="2026-03-10 12:27:00 UTC">'
        "3 min ago</time>"
    ) in html
    assert "url_http_status v1, wait v1" in html
    assert "eu, gpu" in html
    assert (
        f'<a href="/admin/fleet/task/?agent={agent.pk}" '
        'title="claimed now / completed / failed">1 / 2 / 1</a>'
    ) in html
    assert f"<code>{agent.token_prefix}…</code>" in html
    assert agent.token_hash not in html
    assert "Disable selected agents" in html


def test_it_hides_dropped_agents_unless_asked(admin_client):
    online = make_agent("edge-1")
    dropped = make_agent("edge-old", state=Agent.State.DROPPED)

    default = admin_client.get(AGENTS)
    everything = admin_client.get(AGENTS + "?state=all")
    only_dropped = admin_client.get(AGENTS + "?state=dropped")

    assert list(default.context["cl"].result_list) == [online]
    assert set(everything.context["cl"].result_list) == {online, dropped}
    assert list(only_dropped.context["cl"].result_list) == [dropped]
    assert "Not dropped" in default.content.decode()
    assert "All, with dropped" in default.content.decode()


def test_it_searches_agents_by_name_and_agent_id(admin_client):
    edge = make_agent("edge-1", uuid="7c5a5c2e-0f0e-4b8e-9d3a-1b2c3d4e5f60")
    make_agent("core-1", uuid="0d6b2a2e-6f53-4a52-8f5c-7d4c3e2b1a00")

    by_name = admin_client.get(AGENTS + "?q=edge")
    by_id = admin_client.get(AGENTS + "?q=7c5a5c2e-0f0e-4b8e-9d3a-1b2c3d4e5f60")

    assert list(by_name.context["cl"].result_list) == [edge]
    assert list(by_id.context["cl"].result_list) == [edge]


def test_it_disables_and_enables_agents(admin_client):
    online = make_agent("edge-1")
    disabled = make_agent("edge-2", state=Agent.State.DISABLED)

    disabling = action(admin_client, AGENTS, "disable_agents", [online, disabled])

    online.refresh_from_db()
    assert online.state == Agent.State.DISABLED
    assert messages_of(disabling) == ["Disabled 1 agent(s); 1 were already disabled."]

    dropped = make_agent("edge-3", state=Agent.State.DROPPED)
    lost = make_agent("edge-4", state=Agent.State.LOST)
    # dropped agents are listed (and selected) with the filter on "all"
    enabling = action(
        admin_client, AGENTS + "?state=all", "enable_agents", [online, dropped, lost]
    )

    assert {a.name: a.state for a in Agent.objects.all()} == {
        "edge-1": Agent.State.ONLINE,
        "edge-2": Agent.State.DISABLED,
        "edge-3": Agent.State.ONLINE,
        "edge-4": Agent.State.LOST,
    }
    assert messages_of(enabling) == [
        "Enabled 2 agent(s); 1 were not disabled or dropped."
    ]


def test_it_revokes_tokens(admin_client):
    with_token = make_agent("edge-1")
    with_token.issue_token()
    without = make_agent("edge-2")

    response = action(admin_client, AGENTS, "revoke_tokens", [with_token, without])

    with_token.refresh_from_db()
    assert (with_token.token_hash, with_token.token_prefix) == ("", "")
    assert with_token.token_issued_at is None
    assert messages_of(response) == ["Revoked 1 token(s); 1 agent(s) had none."]


def test_it_asks_before_issuing_a_token(admin_client):
    agent = make_agent()

    change = admin_client.get(f"{AGENTS}{agent.pk}/change/")
    confirm = admin_client.get(f"{AGENTS}{agent.pk}/token/")

    assert f'href="/admin/fleet/agent/{agent.pk}/token/"' in change.content.decode()
    assert confirm.status_code == 200
    html = confirm.content.decode()
    assert '<form method="post">' in html and 'name="_issue"' in html
    assert "fat_" not in html
    agent.refresh_from_db()
    assert not agent.has_token  # a GET issues nothing


def test_it_shows_a_new_token_once_and_stores_only_its_hash(
    admin_client, client, settings
):
    settings.SITE_URL = "https://ops.example.com/portal"
    agent = make_agent("edge 1")

    response = admin_client.post(f"{AGENTS}{agent.pk}/token/")

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    token = re.search(r'id="agent-token">(fat_[^<]+)</p>', html).group(1)
    agent.refresh_from_db()
    assert agent.token_hash == hash_token(token)
    assert token.startswith(agent.token_prefix)
    assert f"https://ops.example.com/portal/fleet/a/{token}</p>" in html
    assert f"https://edge%201:{token}@ops.example.com/portal/fleet</p>" in html
    # nowhere else: not in the database, the session, a message or a cookie
    assert token not in everything_stored()
    assert not messages_of(response)
    assert all(token not in cookie.value for cookie in response.cookies.values())
    page = admin_client.get(f"{AGENTS}{agent.pk}/change/").content.decode()
    assert token not in page and f"<code>{agent.token_prefix}…</code>" in page
    # and the agent polls with it
    body = poll_body()
    poll = post_json(client, f"/fleet/a/{token}/tasks", body)
    assert poll.status_code == 200
    agent.refresh_from_db()
    assert str(agent.uuid) == body["agent_id"]


def test_it_lets_an_operator_issue_tokens(client, operator_user):
    agent = make_agent()
    client.force_login(operator_user)

    change = client.get(f"{AGENTS}{agent.pk}/change/")
    response = client.post(f"{AGENTS}{agent.pk}/token/")

    assert f'href="/admin/fleet/agent/{agent.pk}/token/"' in change.content.decode()
    assert response.status_code == 200
    agent.refresh_from_db()
    assert agent.has_token


def test_it_lets_a_viewer_neither_issue_tokens_nor_run_actions(client, viewer_user):
    agent = make_agent()
    client.force_login(viewer_user)

    changelist = client.get(AGENTS)
    change = client.get(f"{AGENTS}{agent.pk}/change/")
    confirm = client.get(f"{AGENTS}{agent.pk}/token/")
    issue = client.post(f"{AGENTS}{agent.pk}/token/")
    disable = action(client, AGENTS, "disable_agents", [agent])

    assert changelist.status_code == 200 and change.status_code == 200
    assert "disable_agents" not in changelist.content.decode()
    assert "/token/" not in change.content.decode()
    assert confirm.status_code == 403 and issue.status_code == 403
    assert "Disabled" not in " ".join(messages_of(disable))
    agent.refresh_from_db()
    assert agent.state == Agent.State.ONLINE
    assert not agent.has_token


def test_it_adds_an_agent_with_sorted_labels(admin_client):
    response = admin_client.post(
        AGENTS + "add/", {"name": "edge-9", "labels": "gpu, eu,eu\nbig"}
    )

    assert response.status_code == 302
    agent = Agent.objects.get(name="edge-9")
    assert agent.labels == ["big", "eu", "gpu"]
    assert (agent.uuid, agent.state, agent.has_token) == (
        None,
        Agent.State.ONLINE,
        False,
    )


def test_it_refuses_a_bad_label(admin_client):
    response = admin_client.post(
        AGENTS + "add/", {"name": "edge-9", "labels": "eu, -x"}
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "'-x' is not a valid label" in " ".join(errors["labels"])
    assert not Agent.objects.exists()


def test_it_saves_only_name_and_labels(admin_client):
    agent = make_agent(labels=["eu"])
    page = admin_client.get(f"{AGENTS}{agent.pk}/change/")
    assert 'value="eu"' in page.content.decode()
    # meanwhile, an action disables the agent and a token is issued
    Agent.objects.get(pk=agent.pk).disable()
    Agent.objects.get(pk=agent.pk).issue_token()

    response = admin_client.post(
        f"{AGENTS}{agent.pk}/change/", {"name": "edge-1", "labels": "eu, gpu"}
    )

    assert response.status_code == 302
    agent.refresh_from_db()
    assert agent.labels == ["eu", "gpu"]
    assert agent.state == Agent.State.DISABLED
    assert agent.has_token


# --- Tasks ----------------------------------------------------------------------


@time_machine.travel(NOW, tick=False)
def test_it_lists_tasks_with_their_columns(admin_client, django_assert_max_num_queries):
    agent = make_agent()
    claimed = make_task(Task.State.CLAIMED, agent=agent, attempts=1, max_attempts=2)
    make_task(Task.State.FAILED, agent=make_agent("edge-2"), type="url_http_status")
    make_task()

    with django_assert_max_num_queries(8):
        response = admin_client.get(TASKS)

    assert response.status_code == 200
    html = response.content.decode()
    assert f"<code>{claimed.uuid}</code>" in html
    assert "wait v1" in html and "url_http_status v1" in html
    assert (
        '<span class="portal-badge '
        'portal-badge-info" data-state="claimed">Claimed</span>'
    ) in html
    assert (
        '<span class="portal-badge '
        'portal-badge-bad" data-state="failed">Failed</span>' in (html)
    )
    assert f'<a href="/admin/fleet/agent/{agent.pk}/change/">edge-1</a>' in html
    assert "1 / 2" in html
    assert '<time datetime="2026-03-10T12:30:00+00:00"' in html
    assert "Cancel selected tasks" in html and "Requeue selected tasks" in html


def test_it_filters_and_searches_tasks(admin_client):
    agent = make_agent()
    wait = make_task(Task.State.CLAIMED, agent=agent)
    status = make_task(
        type="url_http_status",
        test_id="0d6b2a2e-6f53-4a52-8f5c-7d4c3e2b1a00",
    )
    old_failure = make_task(
        Task.State.FAILED, finished_at=datetime(2020, 1, 1, tzinfo=UTC)
    )

    def listed(query: str) -> list[Task]:
        response = admin_client.get(TASKS + query)
        assert response.status_code == 200
        return list(response.context["cl"].result_list)

    assert listed("?type=url_http_status") == [status]
    assert listed(f"?agent={agent.pk}") == [wait]
    assert listed("?state__exact=claimed") == [wait]
    assert listed(f"?q={wait.uuid}") == [wait]
    assert listed(f"?q={status.test_id}") == [status]
    assert listed("?q=http_st") == [status]
    assert listed("?state__exact=failed") == [old_failure]
    assert listed("?state__exact=failed&finished=24h") == []
    filters = admin_client.get(TASKS).content.decode()
    assert "?type=url_http_status" in filters and "?agent=" in filters


def test_it_offers_the_capabilities_agents_have_seen(admin_client):
    make_agent(capabilities={"wait": 1, "url_http_status": 1})
    make_agent("old", capabilities={"gone": 7}, state=Agent.State.DROPPED)

    response = admin_client.get(TASKS + "add/")

    assert response.status_code == 200
    choices = response.context["adminform"].form.fields["capability"].choices
    assert choices == [
        ("url_http_status:1", "url_http_status v1"),
        ("wait:1", "wait v1"),
        ("other", "Other type/version…"),
    ]
    assert '<option value="url_http_status:1" selected>' in response.content.decode()


@time_machine.travel(NOW, tick=False)
def test_it_queues_a_task_through_the_service(admin_client):
    make_agent()

    response = admin_client.post(TASKS + "add/", TASK_FORM)

    assert response.status_code == 302
    task = Task.objects.get()
    assert (task.type, task.version, task.state) == ("wait", 1, Task.State.PENDING)
    assert task.data == {"time": 5}
    assert task.priority == 3
    assert task.required_labels == ["eu", "gpu"]
    assert (task.max_attempts, task.ttl, task.timeout) == (2, 600, 60)
    # set by task_create only: who queued it, and when its TTL runs out
    assert task.created_by == "admin"
    assert task.expires_at == NOW + timedelta(seconds=600)
    assert response["Location"] == TASKS


def test_it_queues_a_task_of_another_type(admin_client, db):
    form = {
        **TASK_FORM,
        "capability": "other",
        "other_type": "custom_check",
        "other_version": "2",
        "ttl": "",
        "timeout": "",
    }

    response = admin_client.post(TASKS + "add/", form)

    assert response.status_code == 302
    task = Task.objects.get()
    assert (task.type, task.version) == ("custom_check", 2)
    assert (task.ttl, task.timeout, task.expires_at) == (None, None, None)


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"data": '{"time": '}, "data", "Not valid JSON"),
        ({"data": "[1, 2]"}, "data", "Must be a JSON object"),
        ({"data": '{"time": NaN}'}, "data", "NaN is not JSON"),
        ({"data": '{"url": "a\\u0000"}'}, "data", "NUL characters"),
        ({"required_labels": "eu, *"}, "required_labels", "'*' is not a valid label"),
        ({"capability": "nope:1"}, "capability", "Select a valid choice."),
        ({"capability": "other"}, "other_type", "Give a task type"),
        (
            {"capability": "other", "other_type": "x"},
            "other_version",
            "Give the version",
        ),
        ({"max_attempts": "0"}, "max_attempts", "greater than or equal to 1"),
        ({"ttl": "0"}, "ttl", "greater than or equal to 1"),
    ],
)
def test_it_rejects_bad_task_input_with_form_errors(
    admin_client, changes, field, message
):
    make_agent()

    response = admin_client.post(TASKS + "add/", {**TASK_FORM, **changes})

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert message in " ".join(errors[field])
    assert not Task.objects.exists()


def test_it_cancels_pending_and_claimed_tasks(admin_client):
    agent = make_agent()
    pending = make_task()
    claimed = make_task(Task.State.CLAIMED, agent=agent)
    completed = make_task(Task.State.COMPLETED, agent=agent, result={"ok": 1})

    response = action(
        admin_client, TASKS, "cancel_tasks", [pending, claimed, completed]
    )

    for task in (pending, claimed, completed):
        task.refresh_from_db()
    assert pending.state == claimed.state == Task.State.CANCELLED
    assert pending.finished_at is not None
    assert completed.state == Task.State.COMPLETED
    assert messages_of(response) == [
        "Cancelled 2 task(s); 1 were not pending or claimed."
    ]


def test_it_requeues_failed_tasks(admin_client):
    agent = make_agent()
    failed = make_task(
        Task.State.FAILED, agent=agent, attempts=2, error="boom", ttl=None
    )
    pending = make_task()

    response = action(admin_client, TASKS, "requeue_tasks", [failed, pending])

    failed.refresh_from_db()
    assert failed.state == Task.State.PENDING
    assert (failed.agent, failed.attempts, failed.error) == (None, 0, "")
    assert messages_of(response) == ["Requeued 1 task(s); 1 were pending or completed."]


def test_it_lets_a_viewer_neither_queue_nor_cancel(client, viewer_user):
    task = make_task()
    client.force_login(viewer_user)

    changelist = client.get(TASKS)
    add = client.get(TASKS + "add/")
    cancel = action(client, TASKS, "cancel_tasks", [task])

    assert changelist.status_code == 200
    assert "cancel_tasks" not in changelist.content.decode()
    assert add.status_code == 403
    assert "Cancelled" not in " ".join(messages_of(cancel))
    task.refresh_from_db()
    assert task.state == Task.State.PENDING


def test_it_lets_an_operator_cancel(client, operator_user):
    task = make_task()
    client.force_login(operator_user)

    response = action(client, TASKS, "cancel_tasks", [task])

    task.refresh_from_db()
    assert task.state == Task.State.CANCELLED
    assert messages_of(response) == [
        "Cancelled 1 task(s); 0 were not pending or claimed."
    ]


def test_it_shows_a_task_read_only_with_its_result_pretty_printed(admin_client):
    task = make_task(
        Task.State.COMPLETED,
        agent=make_agent(),
        data={"url": "http://example.com/<x>"},
        result={"status": 200, "headers": {"server": "nginx"}},
    )
    failed = make_task(Task.State.FAILED, error="Traceback: <boom>")

    response = admin_client.get(f"{TASKS}{task.pk}/change/")
    failed_page = admin_client.get(f"{TASKS}{failed.pk}/change/").content.decode()

    assert response.status_code == 200
    html = response.content.decode()
    assert (
        '<pre class="pkg-json">{\n  &quot;status&quot;: 200,\n'
        "  &quot;headers&quot;: {\n    &quot;server&quot;: &quot;nginx&quot;\n  }\n}"
        "</pre>"
    ) in html
    assert "http://example.com/&lt;x&gt;" in html
    assert 'name="_save"' not in html  # state changes only through the actions
    assert '<pre class="pkg-error">Traceback: &lt;boom&gt;</pre>' in failed_page


def test_it_deletes_only_finished_tasks(admin_client):
    pending = make_task()
    completed = make_task(Task.State.COMPLETED)

    refused = admin_client.post(f"{TASKS}{pending.pk}/delete/", {"post": "yes"})
    deleted = admin_client.post(f"{TASKS}{completed.pk}/delete/", {"post": "yes"})

    assert refused.status_code == 403
    assert deleted.status_code == 302
    assert list(Task.objects.all()) == [pending]


def test_saving_an_agent_with_the_same_labels_changes_nothing(admin_client):
    import json

    from django.contrib.admin.models import LogEntry

    agent = Agent.objects.create(name="edge-1", labels=["eu", "gpu"])

    response = admin_client.post(
        f"{AGENTS}{agent.pk}/change/", {"name": "edge-1", "labels": "gpu, eu"}
    )

    assert response.status_code == 302
    entry = LogEntry.objects.latest("action_time")
    assert json.loads(entry.change_message) == []  # "No fields changed."
