"""Demo tasks for the handlers of the SLAMon Python agent, and how to run it."""

from __future__ import annotations

from django.conf import settings

from fleet import services
from fleet.models import Task
from portal import demo

DEMO = "demo"
AGENT_REQUIREMENT = "slamon-agent==1.1.0"


def demo_tasks() -> list[tuple[str, int, dict]]:
    """(type, version, data) of the demo tasks: one per handler the agent ships."""
    return [
        ("wait", 1, {"time": 3}),
        ("url_http_status", 1, {"url": f"{settings.SITE_URL}/healthz"}),
    ]


@demo.register("fleet", order=30)
def seed_fleet(stdout) -> None:
    """Queue the demo tasks once (none marked ``created_by="demo"`` yet), and tell
    how to run the real agent against the portal."""
    existing = Task.objects.filter(created_by=DEMO).count()
    if existing:
        stdout.write(f"  fleet: {existing} demo task(s) (exist)\n")
    else:
        for task_type, version, data in demo_tasks():
            task = services.task_create(
                task_type=task_type, version=version, data=data, created_by=DEMO
            )
            stdout.write(f"  task {task.type} v{task.version} {task.uuid} (created)\n")
    stdout.write(
        f"  run an agent: pip install {AGENT_REQUIREMENT} && slamon-agent "
        f"-u {settings.SITE_URL}/fleet -l slamon_agent.handlers -x 2 -v\n"
    )
