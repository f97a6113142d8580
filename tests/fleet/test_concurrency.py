"""Many agents polling at once never get the same task, and no task is lost.

Real threads with their own database connections, on SQLite (IMMEDIATE
transactions, conditional UPDATE) and on PostgreSQL (FOR UPDATE SKIP LOCKED).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter

import pytest
from django.db import connection
from django.test import Client

from fleet import services
from fleet.models import Agent, Task

THREADS = 20
TASKS = 400


def _agent_loop(barrier: threading.Barrier, got: list[str], errors: list[str], n: int):
    client = Client()
    body = {
        "protocol": 1,
        "agent_id": str(uuid.uuid4()),
        "agent_name": f"agent-{n}",
        "agent_time": "",
        "agent_capabilities": {"wait": {"version": 1}},
        "max_tasks": 1 + n % 5,
    }
    try:
        barrier.wait(timeout=30)
        empty = 0
        while empty < 3:
            response = client.post(
                "/fleet/tasks", json.dumps(body), content_type="application/json"
            )
            if response.status_code != 200:
                errors.append(f"{response.status_code} {response.content[:200]!r}")
                return
            ids = [t["task_id"] for t in response.json()["tasks"]]
            empty = 0 if ids else empty + 1
            got.extend(ids)
            for task_id in ids:
                result = client.post(
                    "/fleet/tasks/response",
                    json.dumps({"protocol": 1, "task_id": task_id, "task_data": {}}),
                    content_type="application/json",
                )
                if result.status_code != 200:
                    errors.append(f"result {result.status_code} {result.content!r}")
    except Exception as exc:  # reported by the test, not lost in the thread
        errors.append(repr(exc))
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_twenty_agents_polling_at_once_never_share_a_task(settings):
    settings.AUTO_CLEANUP = True
    ids = {
        str(services.task_create(task_type="wait", version=1).uuid)
        for _ in range(TASKS)
    }
    barrier = threading.Barrier(THREADS)
    got: list[list[str]] = [[] for _ in range(THREADS)]
    errors: list[str] = []
    threads = [
        threading.Thread(target=_agent_loop, args=(barrier, got[n], errors, n))
        for n in range(THREADS)
    ]

    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not any(t.is_alive() for t in threads)
    assert errors == []
    handed_out = Counter(task_id for per_agent in got for task_id in per_agent)
    assert [tid for tid, n in handed_out.items() if n > 1] == []  # no double claims
    assert set(handed_out) == ids  # nothing lost
    assert sum(1 for per_agent in got if per_agent) > 1  # the work was shared
    states = Counter(Task.objects.values_list("state", "attempts"))
    assert states == {(Task.State.COMPLETED, 1): TASKS}
    assert Agent.objects.count() == THREADS


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_through_the_service_split_the_queue_exactly():
    """The claim alone, without HTTP: 20 agents, one burst each."""
    for _ in range(60):
        services.task_create(task_type="wait", version=1)
    agents = [
        Agent.objects.create(uuid=uuid.uuid4(), name=f"a{n}") for n in range(THREADS)
    ]
    barrier = threading.Barrier(THREADS)
    got: dict[int, list[int]] = {}
    errors: list[str] = []

    def claim(agent: Agent) -> None:
        try:
            barrier.wait(timeout=30)
            from django.utils import timezone

            tasks = services.task_claim(
                agent=agent,
                capabilities={"wait": 1},
                max_tasks=5,
                now=timezone.now(),
            )
            got[agent.pk] = [t.pk for t in tasks]
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=claim, args=(a,)) for a in agents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    claimed = [pk for pks in got.values() for pk in pks]
    assert len(claimed) == len(set(claimed)) == 60
    for agent in agents:
        held = set(
            Task.objects.filter(agent=agent, state=Task.State.CLAIMED).values_list(
                "pk", flat=True
            )
        )
        assert held == set(got[agent.pk])
