"""The fleet's demo data: tasks for the SLAMon agent's handlers, queued once."""

from __future__ import annotations

import io

from fleet.demo import seed_fleet
from fleet.models import Task
from portal import demo


def test_it_queues_the_demo_tasks_once(db, settings):
    settings.SITE_URL = "http://127.0.0.1:8123"
    first, second = io.StringIO(), io.StringIO()

    seed_fleet(first)
    seed_fleet(second)

    tasks = {task.type: task for task in Task.objects.all()}
    assert Task.objects.count() == 2
    assert set(tasks) == {"wait", "url_http_status"}
    assert tasks["url_http_status"].data == {"url": "http://127.0.0.1:8123/healthz"}
    assert tasks["wait"].data == {"time": 3}
    assert all(t.version == 1 for t in tasks.values())
    assert all(t.created_by == "demo" for t in tasks.values())
    assert all(t.state == Task.State.PENDING for t in tasks.values())
    assert first.getvalue().count("(created)") == 2
    assert "2 demo task(s) (exist)" in second.getvalue()


def test_it_leaves_other_tasks_alone_and_keeps_handled_demo_tasks(db):
    seed_fleet(io.StringIO())
    # an agent ran one demo task; an operator queued another task
    done = Task.objects.get(type="wait")
    Task.objects.filter(pk=done.pk).update(state=Task.State.COMPLETED)
    Task.objects.create(type="wait", version=1, created_by="admin")

    seed_fleet(io.StringIO())

    assert Task.objects.filter(created_by="demo").count() == 2
    assert Task.objects.count() == 3
    done.refresh_from_db()
    assert done.state == Task.State.COMPLETED


def test_it_tells_how_to_run_the_real_agent(db, settings):
    settings.SITE_URL = "http://127.0.0.1:8123"
    out = io.StringIO()

    seed_fleet(out)

    assert (
        "pip install slamon-agent==1.1.0 && slamon-agent "
        "-u http://127.0.0.1:8123/fleet -l slamon_agent.handlers -x 2 -v\n"
    ) in out.getvalue()


def test_it_is_registered_after_the_logins():
    seeders = {seeder.key: seeder for seeder in demo.seeders()}

    assert seeders["fleet"].func is seed_fleet
    assert seeders["fleet"].order == 30
    assert seeders["fleet"].order > seeders["portal"].order
