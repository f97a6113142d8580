"""The released SLAMon Python agent (slamon-agent 1.1.0), unmodified, against the
portal served on a loopback port: anonymous, with a token in the URL path, and
with the token in Basic auth."""

from __future__ import annotations

import subprocess
import urllib.parse

import pytest

from fleet import services
from fleet.models import Agent, Task
from tests.fixtures.processes import stop_process, wait_for

pytestmark = pytest.mark.xdist_group("slamon-agent")


def _agent_url(live_server, mode: str, token: str) -> str:
    if mode == "anonymous":
        return f"{live_server.url}/fleet"
    if mode == "path-token":
        return f"{live_server.url}/fleet/a/{token}"
    parts = urllib.parse.urlsplit(live_server.url)
    return f"{parts.scheme}://edge:{token}@{parts.netloc}/fleet"


@pytest.mark.parametrize("mode", ["anonymous", "path-token", "basic-auth"])
def test_the_real_agent_runs_its_tasks_and_keeps_running(
    live_server, transactional_db, settings, slamon_agent, tmp_path, mode
):
    settings.AGENT_RETURN_TIME = 1  # the agent sleeps until return_time
    settings.FLEET_REQUIRE_TOKEN = mode != "anonymous"
    token = ""
    if mode != "anonymous":
        token = Agent.objects.create(name="edge").issue_token()
    waits = [
        services.task_create(task_type="wait", version=1, data={"time": 1})
        for _ in range(2)
    ]
    status = services.task_create(
        task_type="url_http_status",
        version=1,
        data={"url": f"{live_server.url}/fleet/status"},
    )
    lacking = services.task_create(task_type="nmap_scan", version=1, data={})
    wrong_version = services.task_create(task_type="wait", version=2, data={})
    log = tmp_path / "agent.log"

    with open(log, "wb") as out:
        agent = subprocess.Popen(
            [
                str(slamon_agent),
                "-u",
                _agent_url(live_server, mode, token),
                "-l",
                "slamon_agent.handlers",
                "-x",
                "2",
                "-v",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        done = [*waits, status]
        wait_for(
            lambda: (
                Task.objects.filter(
                    pk__in=[t.pk for t in done], state=Task.State.COMPLETED
                ).count()
                == len(done)
                or agent.poll() is not None
            ),
            timeout=60,
        )
        # A couple more polls after the work is done: the agent must carry on.
        seen = Agent.objects.get().last_seen_at
        wait_for(
            lambda: Agent.objects.get().last_seen_at > seen or agent.poll() is not None,
            timeout=30,
        )
        assert agent.poll() is None, log.read_text()
    finally:
        stop_process(agent)

    for task in waits:
        task.refresh_from_db()
        assert task.state == Task.State.COMPLETED, task.error
        assert 0.4 <= task.result["time"] <= 1.6
    status.refresh_from_db()
    assert status.state == Task.State.COMPLETED
    assert status.result == {"status": 200}
    for task in (lacking, wrong_version):
        task.refresh_from_db()
        assert task.state == Task.State.PENDING  # no agent can run it
        assert task.attempts == 0
    registered = Agent.objects.get()
    assert registered.capabilities == {"wait": 1, "url_http_status": 1}
    assert registered.state == Agent.State.ONLINE
    assert registered.name == "Python Agent 1.0"
    assert "Traceback" not in log.read_text()
