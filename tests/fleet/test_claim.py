"""Claiming: order, exact capabilities, labels, max_tasks, what is never handed out."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from fleet.models import Agent, Task
from tests.fleet.conftest import poll_body, post_json

pytestmark = pytest.mark.django_db


def _poll(client, **overrides) -> list[str]:
    response = post_json(client, "/fleet/tasks", poll_body(**overrides))
    assert response.status_code == 200, response.content
    return [t["task_id"] for t in response.json()["tasks"]]


def test_it_hands_out_highest_priority_first_then_oldest(client, make_task):
    now = timezone.now()
    with time_machine.travel(now - timedelta(minutes=3), tick=False):
        old_low = make_task(priority=0)
    with time_machine.travel(now - timedelta(minutes=2), tick=False):
        newer_high = make_task(priority=5)
    with time_machine.travel(now - timedelta(minutes=1), tick=False):
        newest_low = make_task(priority=0)
        newest_high = make_task(priority=5)

    claimed = _poll(client, max_tasks=3)

    assert claimed == [str(newer_high.uuid), str(newest_high.uuid), str(old_low.uuid)]
    assert _poll(client, max_tasks=3) == [str(newest_low.uuid)]


def test_it_matches_type_and_version_exactly(client, make_task):
    v1 = make_task("wait", 1)
    make_task("wait", 2)
    make_task("url_http_status", 1)

    claimed = _poll(client, max_tasks=10, agent_capabilities={"wait": {"version": 1}})

    assert claimed == [str(v1.uuid)]
    assert Task.objects.pending().count() == 2


def test_it_uses_the_capabilities_of_this_very_poll(client, make_task):
    body = poll_body(agent_capabilities={"wait": {"version": 1}}, max_tasks=5)
    post_json(client, "/fleet/tasks", body)
    status = make_task("url_http_status", 1)
    make_task("wait", 1)

    body["agent_capabilities"] = {"url_http_status": {"version": 1}}
    response = post_json(client, "/fleet/tasks", body)

    assert [t["task_id"] for t in response.json()["tasks"]] == [str(status.uuid)]


def test_it_takes_at_most_max_tasks(client, make_task):
    for _ in range(5):
        make_task()
    assert len(_poll(client, max_tasks=3)) == 3
    assert len(_poll(client, max_tasks=3)) == 2
    assert _poll(client, max_tasks=3) == []


def test_it_caps_a_huge_max_tasks(client, make_task):
    for _ in range(120):
        make_task()
    assert len(_poll(client, max_tasks=10_000)) == 100


def test_required_labels_must_be_a_subset_of_the_agents_labels(client, make_task):
    agent_id = poll_body()["agent_id"]
    _poll(client, agent_id=agent_id, max_tasks=0)
    Agent.objects.filter(uuid=agent_id).update(labels=["eu", "gpu"])
    eu = make_task(required_labels=["eu"])
    both = make_task(required_labels=["gpu", "eu"])
    us = make_task(required_labels=["us"])
    plain = make_task()

    claimed = _poll(client, agent_id=agent_id, max_tasks=10)

    assert set(claimed) == {str(eu.uuid), str(both.uuid), str(plain.uuid)}
    us.refresh_from_db()
    assert us.state == Task.State.PENDING


def test_an_agent_without_labels_gets_only_unlabelled_tasks(client, make_task):
    make_task(required_labels=["eu"])
    plain = make_task()
    assert _poll(client, max_tasks=10) == [str(plain.uuid)]


def test_labelled_tasks_at_the_head_do_not_block_the_queue(client, make_task):
    agent_id = poll_body()["agent_id"]
    _poll(client, agent_id=agent_id, max_tasks=0)
    Agent.objects.filter(uuid=agent_id).update(labels=["eu"])
    for _ in range(30):
        make_task(priority=9, required_labels=["us"])
    behind = make_task(priority=0)

    assert _poll(client, agent_id=agent_id, max_tasks=1) == [str(behind.uuid)]


def test_a_disabled_agent_gets_nothing_but_is_still_seen(client, make_task):
    task = make_task()
    agent_id = poll_body()["agent_id"]
    _poll(client, agent_id=agent_id, max_tasks=0)
    agent = Agent.objects.get(uuid=agent_id)
    assert agent.disable()

    assert _poll(client, agent_id=agent_id, agent_name="renamed", max_tasks=5) == []

    agent.refresh_from_db()
    assert agent.state == Agent.State.DISABLED
    assert agent.name == "renamed"
    task.refresh_from_db()
    assert task.state == Task.State.PENDING
    assert agent.enable()
    assert _poll(client, agent_id=agent_id, max_tasks=5) == [str(task.uuid)]


def test_expired_and_cancelled_tasks_are_never_handed_out(client, make_task):
    with time_machine.travel(timezone.now() - timedelta(minutes=5), tick=False):
        expired = make_task(ttl=60)
    cancelled = make_task()
    cancelled.cancel()
    live = make_task(ttl=600)

    assert _poll(client, max_tasks=10) == [str(live.uuid)]
    expired.refresh_from_db()
    assert expired.state in (Task.State.PENDING, Task.State.EXPIRED)


def test_a_claim_records_the_agent_the_time_and_the_deadline(client, make_task):
    task = make_task(timeout=120)
    body = poll_body(max_tasks=1)

    post_json(client, "/fleet/tasks", body)

    task.refresh_from_db()
    assert task.agent.uuid.hex == body["agent_id"].replace("-", "")
    assert task.claimed_at is not None
    assert task.deadline_at == task.claimed_at + timedelta(seconds=120)
    assert task.attempts == 1


def test_it_claims_tasks_with_different_timeouts_in_one_poll(client, make_task):
    short = make_task(timeout=10)
    none = make_task(timeout=None)
    long = make_task(timeout=1000)

    claimed = _poll(client, max_tasks=3)

    assert set(claimed) == {str(short.uuid), str(none.uuid), str(long.uuid)}
    none.refresh_from_db()
    long.refresh_from_db()
    assert none.deadline_at is None
    assert long.deadline_at - long.claimed_at == timedelta(seconds=1000)
