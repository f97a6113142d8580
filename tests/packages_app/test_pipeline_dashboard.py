"""The pipelines panel of the dashboard: runs of the last 24 h, what runs now."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from packages_app.dashboard import pipelines_panel
from packages_app.models import PipelineRun, PipelineStep

Status = PipelineRun.Status
NOW = datetime(2025, 3, 10, 12, 30, tzinfo=UTC)

pytestmark = pytest.mark.django_db


def make_run(status: str, *, minutes_ago: int = 10, **fields) -> PipelineRun:
    values = {
        "name": "acme-etl",
        "url": "https://git.example.com/acme/etl.git",
        "trigger": PipelineRun.Trigger.API,
        "status": status,
        "created_at": NOW - timedelta(minutes=minutes_ago),
        **fields,
    }
    return PipelineRun.objects.create(**values)


def running(name: str, *, seconds: int, statuses: list[str]) -> PipelineRun:
    run = make_run(
        Status.IN_PROGRESS, name=name, started_at=NOW - timedelta(seconds=seconds)
    )
    for step_no, status in enumerate(statuses, start=1):
        PipelineStep.objects.create(
            run=run, step_no=step_no, name=f"s{step_no}", image="alpine", status=status
        )
    return run


def panel(html: str) -> str:
    """The pipelines panel alone: the packages panel has counts of the same names."""
    match = re.search(r'<article [^>]*id="panel-pipelines".*?</article>', html, re.S)
    assert match, "no pipelines panel"
    return match.group(0)


def count(html: str, label: str) -> str:
    match = re.search(
        r'<span class="portal-count-value">(\d+)</span>'
        rf'<span class="portal-count-label">{label}</span>',
        html,
    )
    assert match, label
    return match.group(1)


@time_machine.travel(NOW, tick=False)
def test_it_counts_runs_by_status_and_lists_failed_and_running(admin_client):
    make_run(Status.SUCCESSFUL, minutes_ago=50)
    make_run(Status.SUCCESSFUL, minutes_ago=20)
    make_run(Status.SUCCESSFUL, minutes_ago=60 * 30)  # too old to count
    failed = make_run(
        Status.FAILED,
        name="acme-report",
        minutes_ago=16,
        finished_at=NOW - timedelta(minutes=15),
        error="Step 2 (test) failed: exit code 1\nmore detail",
    )
    make_run(Status.STOPPED, minutes_ago=5)
    make_run(Status.PENDING, minutes_ago=1)
    now_running = running(
        "acme-build",
        seconds=54,
        statuses=[Status.SUCCESSFUL, Status.IN_PROGRESS, Status.PENDING],
    )

    html = panel(admin_client.get("/admin/dashboard/panels/").content.decode())

    assert count(html, "Successful 24 h") == "2"
    assert count(html, "Failed 24 h") == "1"
    assert count(html, "Aborted 24 h") == "0"
    assert count(html, "Stopped 24 h") == "1"
    assert count(html, "In progress 24 h") == "1"
    assert count(html, "Pending 24 h") == "1"
    assert (
        '<li class="portal-count portal-tone-bad">'
        '<a href="/admin/packages_app/pipelinerun/?status__exact=FAILED">'
    ) in html
    assert (
        f'<li class="portal-tone-bad"><a href="/admin/packages_app/pipelinerun/'
        f'{failed.pk}/change/">acme-report failed 15\xa0minutes ago: '
        "Step 2 (test) failed: exit code 1</a></li>"
    ) in html
    assert (
        f'<li class="portal-tone-info"><a href="/admin/packages_app/pipelinerun/'
        f'{now_running.pk}/change/">acme-build running step 2 of 3, 54 s</a></li>'
    ) in html
    assert "Pipeline runs per hour, last 24 h" in html


@time_machine.travel(NOW, tick=False)
def test_it_says_when_a_run_was_asked_to_stop_or_runs_long(admin_client):
    stopping = running("acme-a", seconds=30, statuses=[Status.IN_PROGRESS])
    stopping.cancel_requested_at = NOW
    stopping.save()
    late = running("acme-b", seconds=100, statuses=[Status.SUCCESSFUL])
    late.timeout = 120
    late.save()

    data = pipelines_panel(None, NOW)

    texts = {item.text: item.tone for item in data.attention}
    assert texts == {
        "acme-a running step 1 of 1, 30 s, stopping": "info",
        # past 80 % of its timeout; with every step ended, it shows the last one
        "acme-b running step 1 of 1, 1 min 40 s": "warn",
    }


@time_machine.travel(NOW, tick=False)
def test_it_needs_a_constant_number_of_queries(django_assert_max_num_queries):
    for i in range(6):
        running(f"acme-{i}", seconds=10 * i, statuses=[Status.SUCCESSFUL] * 3)
        make_run(Status.FAILED, name=f"acme-f{i}", minutes_ago=i, error="boom")

    with django_assert_max_num_queries(4):
        data = pipelines_panel(None, NOW)

    assert len(data.attention) == 5 + 6  # at most five failures, every run
    assert [c.value for c in data.counts if c.label == "In progress 24 h"] == [6]


def test_it_shows_the_panel_to_a_viewer(client, viewer_user):
    client.force_login(viewer_user)

    html = panel(client.get("/admin/dashboard/panels/").content.decode())

    assert "No failed pipelines, nothing running." in html


def test_it_hides_the_panel_without_the_view_permission(client, django_user_model):
    user = django_user_model.objects.create_user(
        username="nobody", password="pw", is_staff=True
    )
    client.force_login(user)

    html = client.get("/admin/dashboard/panels/").content.decode()

    assert 'id="panel-pipelines"' not in html
