"""Agents going silent, tasks past their TTL or execution timeout, with time moved."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from fleet import services
from fleet.models import LOST_AGENT_ERROR, Agent, Task
from portal.ticks import get_tick
from tests.fleet.conftest import poll_body, post_json

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fresh_poll_cleanup(monkeypatch):
    monkeypatch.setattr(services, "_last_poll_cleanup", None)


def _poll(client, agent_id: str, max_tasks: int = 1) -> list[str]:
    response = post_json(
        client, "/fleet/tasks", poll_body(agent_id=agent_id, max_tasks=max_tasks)
    )
    assert response.status_code == 200
    return [t["task_id"] for t in response.json()["tasks"]]


def test_a_lost_agents_task_is_requeued_then_failed_when_attempts_run_out(
    client, make_task, settings
):
    settings.AUTO_CLEANUP = False
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    with time_machine.travel(NOW, tick=False):
        task = make_task(max_attempts=2)
        assert _poll(client, a) == [str(task.uuid)]
    with time_machine.travel(NOW + timedelta(seconds=299), tick=False):
        assert services.fleet_cleanup().agents_lost == 0

    with time_machine.travel(NOW + timedelta(seconds=301), tick=False):
        summary = services.fleet_cleanup()

    assert (summary.agents_lost, summary.tasks_requeued) == (1, 1)
    assert Agent.objects.get(uuid=a).state == Agent.State.LOST
    task.refresh_from_db()
    assert task.state == Task.State.PENDING
    assert task.agent is None
    assert task.attempts == 1

    with time_machine.travel(NOW + timedelta(seconds=302), tick=False):
        assert _poll(client, b) == [str(task.uuid)]
    with time_machine.travel(NOW + timedelta(seconds=700), tick=False):
        summary = services.fleet_cleanup()

    assert (summary.agents_lost, summary.tasks_failed) == (1, 1)
    task.refresh_from_db()
    assert task.state == Task.State.FAILED
    assert task.attempts == 2
    assert task.error == LOST_AGENT_ERROR  # the original's text
    assert task.finished_at == NOW + timedelta(seconds=700)


def test_a_lost_agent_that_polls_again_is_online(client, settings):
    settings.AUTO_CLEANUP = False
    agent_id = str(uuid.uuid4())
    with time_machine.travel(NOW, tick=False):
        _poll(client, agent_id)
    with time_machine.travel(NOW + timedelta(seconds=400), tick=False):
        services.fleet_cleanup()
        assert Agent.objects.get(uuid=agent_id).state == Agent.State.LOST
        _poll(client, agent_id)
    agent = Agent.objects.get(uuid=agent_id)
    assert agent.state == Agent.State.ONLINE
    assert agent.last_seen_at == NOW + timedelta(seconds=400)


def test_an_agent_silent_past_the_drop_threshold_is_dropped_and_hidden(
    client, settings
):
    settings.AUTO_CLEANUP = False
    agent_id = str(uuid.uuid4())
    with time_machine.travel(NOW, tick=False):
        _poll(client, agent_id)
    with time_machine.travel(NOW + timedelta(seconds=3599), tick=False):
        services.fleet_cleanup()
        assert Agent.objects.get(uuid=agent_id).state == Agent.State.LOST
    with time_machine.travel(NOW + timedelta(seconds=3601), tick=False):
        summary = services.fleet_cleanup()

    assert summary.agents_dropped == 1
    agent = Agent.objects.get(uuid=agent_id)  # kept for history
    assert agent.state == Agent.State.DROPPED
    assert not Agent.objects.visible().filter(pk=agent.pk).exists()


def test_an_online_agent_silent_past_both_thresholds_is_dropped_in_one_cleanup(
    client, make_task, settings
):
    settings.AUTO_CLEANUP = False
    agent_id = str(uuid.uuid4())
    with time_machine.travel(NOW, tick=False):
        task = make_task(max_attempts=1)
        _poll(client, agent_id)
    with time_machine.travel(NOW + timedelta(hours=2), tick=False):
        summary = services.fleet_cleanup()
    assert (summary.agents_lost, summary.agents_dropped, summary.tasks_failed) == (
        1,
        1,
        1,
    )
    task.refresh_from_db()
    assert task.state == Task.State.FAILED


def test_thresholds_come_from_settings(client, settings):
    settings.AUTO_CLEANUP = False
    settings.AGENT_ACTIVE_THRESHOLD = 30
    agent_id = str(uuid.uuid4())
    with time_machine.travel(NOW, tick=False):
        _poll(client, agent_id)
    with time_machine.travel(NOW + timedelta(seconds=31), tick=False):
        assert services.fleet_cleanup().agents_lost == 1


def test_a_pending_task_past_its_ttl_expires(client, make_task, settings):
    settings.AUTO_CLEANUP = False
    with time_machine.travel(NOW, tick=False):
        task = make_task(ttl=60)
        keeps = make_task(ttl=None)
    with time_machine.travel(NOW + timedelta(seconds=59), tick=False):
        assert services.fleet_cleanup().tasks_expired == 0
    with time_machine.travel(NOW + timedelta(seconds=61), tick=False):
        # even before the cleanup runs, an expired task is not handed out
        assert _poll(client, str(uuid.uuid4()), max_tasks=5) == [str(keeps.uuid)]
        summary = services.fleet_cleanup()

    assert summary.tasks_expired == 1
    task.refresh_from_db()
    assert task.state == Task.State.EXPIRED
    assert task.finished_at == NOW + timedelta(seconds=61)
    assert "TTL" in task.error


def test_a_claimed_task_past_its_execution_timeout_is_requeued_then_failed(
    client, make_task, settings
):
    settings.AUTO_CLEANUP = False
    agent_id = str(uuid.uuid4())
    with time_machine.travel(NOW, tick=False):
        task = make_task(timeout=30, max_attempts=2)
        _poll(client, agent_id)
    with time_machine.travel(NOW + timedelta(seconds=29), tick=False):
        _poll(client, agent_id, max_tasks=0)  # the agent is alive, just slow
        assert services.fleet_cleanup().tasks_requeued == 0
    with time_machine.travel(NOW + timedelta(seconds=31), tick=False):
        summary = services.fleet_cleanup()
        assert summary.tasks_requeued == 1
        task.refresh_from_db()
        assert task.state == Task.State.PENDING
        assert _poll(client, agent_id) == [str(task.uuid)]
    with time_machine.travel(NOW + timedelta(seconds=62), tick=False):
        summary = services.fleet_cleanup()

    assert summary.tasks_failed == 1
    task.refresh_from_db()
    assert task.state == Task.State.FAILED
    assert "execution timeout" in task.error
    assert Agent.objects.get(uuid=agent_id).state == Agent.State.ONLINE


def test_a_requeued_task_with_a_ttl_gets_a_new_window(client, make_task, settings):
    settings.AUTO_CLEANUP = False
    with time_machine.travel(NOW, tick=False):
        task = make_task(ttl=600, timeout=30, max_attempts=3)
        _poll(client, str(uuid.uuid4()))
    with time_machine.travel(NOW + timedelta(seconds=31), tick=False):
        services.fleet_cleanup()
    task.refresh_from_db()
    assert task.state == Task.State.PENDING
    assert task.expires_at == NOW + timedelta(seconds=31 + 600)


def test_the_cleanup_rides_on_polls_when_auto_cleanup_is_on(
    client, make_task, settings
):
    settings.AUTO_CLEANUP = True
    with time_machine.travel(NOW, tick=False):
        task = make_task(ttl=60)
    with time_machine.travel(NOW + timedelta(seconds=61), tick=False):
        _poll(client, str(uuid.uuid4()), max_tasks=0)
    task.refresh_from_db()
    assert task.state == Task.State.EXPIRED


def test_the_cleanup_does_not_ride_on_polls_when_auto_cleanup_is_off(
    client, make_task, settings
):
    settings.AUTO_CLEANUP = False
    with time_machine.travel(NOW, tick=False):
        task = make_task(ttl=60)
    with time_machine.travel(NOW + timedelta(seconds=61), tick=False):
        _poll(client, str(uuid.uuid4()), max_tasks=0)
    task.refresh_from_db()
    assert task.state == Task.State.PENDING


def test_the_cleanup_is_a_periodic_tick(settings, make_task):
    tick = get_tick("fleet.cleanup")
    assert tick is not None
    assert tick.cron == "* * * * *"
    assert (tick.cron, "fleet.tasks.cleanup") in settings.CRONJOBS
    from fleet import tasks

    with time_machine.travel(NOW, tick=False):
        task = make_task(ttl=1)
    with time_machine.travel(NOW + timedelta(seconds=2), tick=False):
        assert "tasks expired: 1" in tasks.cleanup()
    task.refresh_from_db()
    assert task.state == Task.State.EXPIRED


def test_a_late_result_for_a_requeued_task_is_refused_and_the_task_runs_again(
    client, make_task, settings
):
    settings.AUTO_CLEANUP = False
    with time_machine.travel(NOW, tick=False):
        task = make_task(max_attempts=2)
        _poll(client, str(uuid.uuid4()))
    with time_machine.travel(NOW + timedelta(seconds=400), tick=False):
        services.fleet_cleanup()
        response = post_json(
            client,
            "/fleet/tasks/response",
            {"protocol": 1, "task_id": str(task.uuid), "task_data": {}},
        )
    assert response.status_code == 400
    assert "handed back" in response.json()["error"]
    task.refresh_from_db()
    assert task.state == Task.State.PENDING


def test_cancel_by_delete_then_a_late_result_is_discarded(client, make_task, open_bpms):
    task = make_task()
    _poll(client, str(uuid.uuid4()))

    response = client.delete(f"/fleet/task/{task.uuid}")

    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"
    task.refresh_from_db()
    assert task.state == Task.State.CANCELLED
    assert client.delete(f"/fleet/task/{task.uuid}/").status_code == 409
    late = post_json(
        client,
        "/fleet/tasks/response",
        {"protocol": 1, "task_id": str(task.uuid), "task_data": {}},
    )
    assert late.status_code == 200
    task.refresh_from_db()
    assert task.state == Task.State.CANCELLED


def test_a_cancelled_pending_task_is_never_handed_out(client, make_task, open_bpms):
    task = make_task()
    assert client.delete(f"/fleet/task/{task.uuid}").status_code == 200
    assert _poll(client, str(uuid.uuid4())) == []


def test_requeue_resets_attempts_and_clears_the_outcome(make_task):
    task = make_task()
    Task.objects.filter(pk=task.pk).update(
        state=Task.State.FAILED, attempts=2, error="boom"
    )
    task.refresh_from_db()

    assert task.requeue()

    task.refresh_from_db()
    assert (task.state, task.attempts, task.error, task.finished_at) == (
        Task.State.PENDING,
        0,
        "",
        None,
    )
    assert not task.requeue()  # already pending


def test_an_agent_added_ahead_of_its_first_poll_is_never_lost(settings):
    settings.AUTO_CLEANUP = False
    with time_machine.travel(NOW, tick=False):
        agent = Agent.objects.create(name="edge-9")
    with time_machine.travel(NOW + timedelta(days=2), tick=False):
        summary = services.fleet_cleanup()
    assert (summary.agents_lost, summary.agents_dropped) == (0, 0)
    agent.refresh_from_db()
    assert agent.state == Agent.State.ONLINE
