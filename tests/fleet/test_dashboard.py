"""The agent fleet panel of the dashboard, and its display helpers."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import time_machine
from django.test import RequestFactory

from fleet.dashboard import fleet_panel, format_age, time_ago
from fleet.models import Agent, Task

NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)
PANELS = "/admin/dashboard/panels/"


def count(html: str, label: str) -> tuple[str, str]:
    """The value and tone of a count of the fleet panel."""
    panel = html.split('id="panel-fleet"')[1].split("</article>")[0]
    match = re.search(
        r'<li class="portal-count portal-tone-(\w+)"><a href="[^"]*">'
        r'<span class="portal-count-value">(\d+)</span>'
        rf'<span class="portal-count-label">{label}</span>',
        panel,
    )
    assert match, label
    return match.group(2), match.group(1)


def make_agent(name: str, state: str, minutes_ago: int = 1) -> Agent:
    return Agent.objects.create(
        name=name, state=state, last_seen_at=NOW - timedelta(minutes=minutes_ago)
    )


def make_task(state: str, *, minutes_ago: int = 1, **fields) -> Task:
    return Task.objects.create(
        type="wait",
        version=1,
        state=state,
        created_at=NOW - timedelta(minutes=minutes_ago),
        **fields,
    )


@time_machine.travel(NOW, tick=False)
def test_it_counts_agents_and_tasks_and_lists_what_needs_attention(admin_client):
    make_agent("edge-1", Agent.State.ONLINE)
    make_agent("edge-2", Agent.State.ONLINE)
    older = make_agent("edge-3", Agent.State.LOST, minutes_ago=40)
    recent = make_agent("edge-4", Agent.State.LOST, minutes_ago=12)
    make_agent("edge-5", Agent.State.DROPPED, minutes_ago=600)
    make_task(Task.State.PENDING, minutes_ago=15)
    make_task(Task.State.PENDING, minutes_ago=2)
    make_task(Task.State.CLAIMED, minutes_ago=3)
    make_task(Task.State.FAILED, finished_at=NOW - timedelta(hours=2))
    make_task(Task.State.FAILED, finished_at=NOW - timedelta(hours=23))
    make_task(Task.State.FAILED, finished_at=NOW - timedelta(hours=30))  # too old

    html = admin_client.get(PANELS).content.decode()

    assert "<h2>Agent fleet</h2>" in html
    assert count(html, "Agents online") == ("2", "ok")
    assert count(html, "Agents lost") == ("2", "warn")
    assert count(html, "Waiting, oldest 15 min") == ("2", "info")
    assert count(html, "Running") == ("1", "info")
    assert count(html, "Failed 24 h") == ("2", "bad")
    assert '<a href="/admin/fleet/agent/?state=lost">' in html
    assert '<a href="/admin/fleet/task/?state__exact=failed&amp;finished=24h">' in html
    # lost agents, most recently seen first, then the old queue
    lost = [
        f'<a href="/admin/fleet/agent/{recent.pk}/change/">'
        "edge-4: lost, last seen 12 min ago</a>",
        f'<a href="/admin/fleet/agent/{older.pk}/change/">'
        "edge-3: lost, last seen 40 min ago</a>",
        '<a href="/admin/fleet/task/?state__exact=pending">'
        "2 task(s) waiting, the oldest for 15 min</a>",
    ]
    positions = [html.index(item) for item in lost]
    assert positions == sorted(positions)


@time_machine.travel(NOW, tick=False)
def test_it_warns_when_tasks_wait_and_no_agent_is_online(admin_client):
    make_task(Task.State.PENDING, minutes_ago=90)

    html = admin_client.get(PANELS).content.decode()

    assert count(html, "Agents online") == ("0", "bad")
    assert count(html, "Waiting, oldest 1 h") == ("1", "info")
    assert (
        '<li class="portal-tone-bad"><a href="/admin/fleet/task/?state__exact=pending">'
        "1 task(s) waiting, the oldest for 1 h; no agent is online</a></li>"
    ) in html


@time_machine.travel(NOW, tick=False)
def test_it_shows_a_quiet_panel_to_a_viewer(client, viewer_user):
    make_agent("edge-1", Agent.State.ONLINE)
    make_task(Task.State.PENDING, minutes_ago=2)  # not old enough to mention
    client.force_login(viewer_user)

    html = client.get(PANELS).content.decode()

    assert 'id="panel-fleet"' in html
    assert count(html, "Failed 24 h") == ("0", "muted")
    assert count(html, "Waiting, oldest 2 min") == ("1", "info")
    assert "No lost agents, no task waiting long." in html


def test_it_renders_in_a_few_queries(db, admin_user, django_assert_max_num_queries):
    for i in range(5):
        agent = make_agent(f"edge-{i}", Agent.State.LOST)
        make_task(Task.State.CLAIMED, agent=agent)
        make_task(Task.State.PENDING)
    request = RequestFactory().get(PANELS)
    request.user = admin_user

    with django_assert_max_num_queries(4):
        data = fleet_panel(request, NOW)

    assert [c.value for c in data.counts] == [0, 5, 5, 5, 0]
    assert len(data.attention) == 5


def test_it_formats_ages_and_relative_times():
    assert format_age(-3) == "0 s"
    assert format_age(42.7) == "42 s"
    assert format_age(185) == "3 min"
    assert format_age(7620) == "2 h"
    assert format_age(3 * 86400 + 5) == "3 d"
    assert time_ago(None) == "never"
    assert time_ago(NOW - timedelta(minutes=3), NOW) == (
        '<time datetime="2026-03-10T12:27:00+00:00" '
        'title="2026-03-10 12:27:00 UTC">3 min ago</time>'
    )
