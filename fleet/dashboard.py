"""The agent fleet panel of the dashboard, and the display helpers the fleet admin
shares with it: state tones and badges, ages ("3 min"), relative times."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Count as DbCount
from django.db.models import Min
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from fleet.models import Agent, Task
from portal import dashboard
from portal.dashboard import format_age

AgentState = Agent.State
TaskState = Task.State

AGENT_TONES = {
    AgentState.ONLINE: "ok",
    AgentState.LOST: "warn",
    AgentState.DISABLED: "muted",
    AgentState.DROPPED: "muted",
}
TASK_TONES = {
    TaskState.PENDING: "muted",
    TaskState.CLAIMED: "info",
    TaskState.COMPLETED: "ok",
    TaskState.FAILED: "bad",
    TaskState.CANCELLED: "muted",
    TaskState.EXPIRED: "warn",
}
# A task waiting longer than this gets a line in the panel's attention list.
OLD_PENDING = timedelta(minutes=10)
# Lost agents listed in the panel, most recently seen first.
LOST_SHOWN = 5


def agent_badge(state: str | None) -> SafeString:
    label = AgentState(state).label if state in AgentState.values else state
    return dashboard.badge(
        state, label or "", AGENT_TONES.get(state, "muted"), data="state"
    )


def task_badge(state: str | None) -> SafeString:
    label = TaskState(state).label if state in TaskState.values else state
    return dashboard.badge(
        state, label or "", TASK_TONES.get(state, "muted"), data="state"
    )


def time_ago(value: datetime | None, now: datetime | None = None) -> SafeString:
    """``3 min ago``, with the absolute local time as its tooltip; ``never``."""
    if value is None:
        return mark_safe("never")
    now = now or timezone.now()
    local = timezone.localtime(value)
    return format_html(
        '<time datetime="{}" title="{}">{} ago</time>',
        value.isoformat(),
        local.strftime("%Y-%m-%d %H:%M:%S %Z"),
        format_age((now - value).total_seconds()),
    )


def agent_url(agent_id: int) -> str:
    return reverse("admin:fleet_agent_change", args=[agent_id])


def _lost_agents(now: datetime) -> list[dashboard.Attention]:
    lost = (
        Agent.objects.filter(state=AgentState.LOST)
        .only("id", "uuid", "name", "last_seen_at")
        .order_by("-last_seen_at", "-id")[:LOST_SHOWN]
    )
    items = []
    for agent in lost:
        seen = (
            f"last seen {format_age((now - agent.last_seen_at).total_seconds())} ago"
            if agent.last_seen_at
            else "never seen"
        )
        items.append(
            dashboard.Attention(
                f"{agent}: lost, {seen}",
                url=agent_url(agent.pk),
                tone="warn",
                when=agent.last_seen_at,
            )
        )
    return items


@dashboard.register(
    "fleet", title="Agent fleet", permission="fleet.view_task", order=30
)
def fleet_panel(request, now) -> dashboard.PanelData:
    """Agents online and lost, tasks waiting (and for how long), running, failed in
    the last 24 h; the lost agents and an old queue need attention.

    Four queries, however many agents and tasks: agents by state, open tasks by
    state, failures of the last 24 h, the lost agents listed."""
    agents = dict(
        Agent.objects.order_by().values_list("state").annotate(n=DbCount("id"))
    )
    open_tasks = {
        row["state"]: row
        for row in Task.objects.filter(state__in=Task.OPEN)
        .order_by()
        .values("state")
        .annotate(n=DbCount("id"), oldest=Min("created_at"))
    }
    failed = Task.objects.filter(
        state=TaskState.FAILED, finished_at__gte=now - timedelta(hours=24)
    ).count()
    online = agents.get(AgentState.ONLINE, 0)
    lost = agents.get(AgentState.LOST, 0)
    pending = open_tasks.get(TaskState.PENDING, {"n": 0, "oldest": None})
    claimed = open_tasks.get(TaskState.CLAIMED, {"n": 0})["n"]
    waited = (now - pending["oldest"]).total_seconds() if pending["oldest"] else None

    agents_url = reverse("admin:fleet_agent_changelist")
    tasks_url = reverse("admin:fleet_task_changelist")
    data = dashboard.PanelData(empty_text="No lost agents, no task waiting long.")
    data.counts = [
        dashboard.Count(
            "Agents online",
            online,
            "ok" if online else ("bad" if pending["n"] else "muted"),
            f"{agents_url}?state={AgentState.ONLINE}",
        ),
        dashboard.Count(
            "Agents lost",
            lost,
            "warn" if lost else "muted",
            f"{agents_url}?state={AgentState.LOST}",
        ),
        dashboard.Count(
            f"Waiting, oldest {format_age(waited)}"
            if waited is not None
            else "Waiting",
            pending["n"],
            "info" if pending["n"] else "muted",
            f"{tasks_url}?state__exact={TaskState.PENDING}",
        ),
        dashboard.Count(
            "Running",
            claimed,
            "info" if claimed else "muted",
            f"{tasks_url}?state__exact={TaskState.CLAIMED}",
        ),
        dashboard.Count(
            "Failed 24 h",
            failed,
            "bad" if failed else "muted",
            f"{tasks_url}?state__exact={TaskState.FAILED}&finished=24h",
        ),
    ]
    data.attention = _lost_agents(now) if lost else []
    if waited is not None and waited >= OLD_PENDING.total_seconds():
        nobody = "" if online else "; no agent is online"
        data.attention.append(
            dashboard.Attention(
                f"{pending['n']} task(s) waiting, the oldest for "
                f"{format_age(waited)}{nobody}",
                url=f"{tasks_url}?state__exact={TaskState.PENDING}",
                tone="warn" if online else "bad",
                when=pending["oldest"],
            )
        )
    data.links = [(agents_url, "Agents"), (tasks_url, "Tasks")]
    return data
