"""The importers panel of the dashboard: failing and late sources first, counts,
and the points sent per hour."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import time_machine
from django.test import Client, RequestFactory

from importers.dashboard import importers_panel, next_due, relative
from importers.models import GraphiteSink, ImportRun, ImportSource
from portal import dashboard

NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)
PANELS = "/admin/dashboard/panels/"
Status = ImportRun.Status


def panel_of(html: str) -> str:
    return html.split('id="panel-importers"')[1].split("</article>")[0]


def count(html: str, label: str) -> tuple[str, str, str]:
    """The value, tone and link of a count of the importers panel."""
    match = re.search(
        r'<li class="portal-count portal-tone-(\w+)"><a href="([^"]*)">'
        r'<span class="portal-count-value">(\d+)</span>'
        rf'<span class="portal-count-label">{re.escape(label)}</span>',
        panel_of(html),
    )
    assert match, label
    return match.group(3), match.group(1), match.group(2)


def make_source(name: str, *, status: str | None = None, **fields) -> ImportSource:
    sink, _ = GraphiteSink.objects.get_or_create(
        name="log", defaults={"protocol": "dummy", "host": ""}
    )
    source = ImportSource.objects.create(
        name=name, kind="pingdom_results", sink=sink, **fields
    )
    if status is not None:
        run = ImportRun.objects.create(
            source=source,
            trigger="schedule",
            status=status,
            started_at=NOW - timedelta(minutes=3),
            finished_at=NOW - timedelta(minutes=2),
            error="HTTP 401 from /token" if status == Status.FAILED else "",
            points_sent=50,
            points_pending=9 if status == Status.PARTIAL else 0,
        )
        ImportSource.objects.filter(pk=source.pk).update(last_run=run)
        source.last_run = run
    return source


@time_machine.travel(NOW, tick=False)
def test_it_lists_failing_then_late_sources_and_counts(admin_client, settings):
    settings.IMPORTERS_LOCK_STALE_MINUTES = 60
    broken = make_source("broken", status=Status.FAILED)
    partial = make_source("half", status=Status.PARTIAL)
    make_source("fine", status=Status.SUCCEEDED, next_due_at=NOW + timedelta(minutes=1))
    late = make_source("late", next_due_at=NOW - timedelta(minutes=20))
    make_source("due-now", next_due_at=NOW - timedelta(minutes=1))  # not late yet
    make_source("off", status=Status.FAILED, enabled=False)
    stuck = make_source("stuck", next_due_at=NOW + timedelta(hours=1))
    run = ImportRun.objects.create(source=stuck, trigger="schedule")
    stuck.claim(run, now=NOW - timedelta(minutes=90), stale_after=timedelta(0))

    html = admin_client.get(PANELS).content.decode()

    assert "<h2>Importers</h2>" in html
    sources = "/admin/importers/importsource/"
    assert count(html, "Failing") == ("1", "bad", f"{sources}?last_run=failed")
    assert count(html, "Partial (points kept)") == (
        "1",
        "warn",
        f"{sources}?last_run=partial",
    )
    assert count(html, "Running now") == ("1", "info", f"{sources}?running=yes")
    assert count(html, "Enabled sources")[0] == "6"
    items = [
        f'<a href="/admin/importers/importrun/{broken.last_run.pk}/change/">'
        "broken: last run failed — HTTP 401 from /token</a>",
        f'<a href="/admin/importers/importrun/{partial.last_run.pk}/change/">'
        "half: last run partial — 9 point(s) pending</a>",
        f'<a href="/admin/importers/importsource/{late.pk}/change/">'
        "late: late, due 20 min ago",
        f'<a href="/admin/importers/importsource/{stuck.pk}/change/">'
        "stuck: running for 1 h; its lock is stale",
    ]
    panel = panel_of(html)
    positions = [panel.index(item) for item in items]
    assert positions == sorted(positions)
    assert "due-now" not in panel and "off:" not in panel


@time_machine.travel(NOW, tick=False)
def test_it_charts_the_points_sent_per_hour(admin_client):
    source = make_source("daily")
    for hours_ago, sent in ((0, 100), (0, 20), (5, 7), (30, 999)):
        ImportRun.objects.create(
            source=source,
            trigger="schedule",
            status=Status.SUCCEEDED,
            started_at=NOW - timedelta(hours=hours_ago),
            points_sent=sent,
        )
    ImportRun.objects.create(  # a dry run sends nothing
        source=source, trigger="admin", dry_run=True, started_at=NOW, points_sent=0
    )

    html = admin_client.get(PANELS).content.decode()

    assert count(html, "Points sent 24 h")[:2] == ("127", "ok")
    panel = panel_of(html)
    assert 'aria-label="Points sent per hour, last 24 h"' in panel
    assert "<title>12:00 points sent: ok 120</title>" in panel
    assert "<title>07:00 points sent: ok 7</title>" in panel
    assert "999" not in panel


@time_machine.travel(NOW, tick=False)
def test_it_takes_a_handful_of_queries(db, admin_user, django_assert_max_num_queries):
    for i in range(5):
        make_source(f"failing-{i}", status=Status.FAILED)
        make_source(f"late-{i}", next_due_at=NOW - timedelta(hours=1))
    request = RequestFactory().get("/admin/")
    request.user = admin_user

    with django_assert_max_num_queries(6):
        data = importers_panel(request, NOW)

    assert [a.tone for a in data.attention] == ["bad"] * 5 + ["warn"] * 5


@time_machine.travel(NOW, tick=False)
def test_it_says_when_nothing_needs_attention(admin_client):
    make_source("fine", status=Status.SUCCEEDED, next_due_at=NOW + timedelta(hours=1))

    html = admin_client.get(PANELS).content.decode()

    assert count(html, "Failing") == (
        "0",
        "muted",
        "/admin/importers/importsource/?last_run=failed",
    )
    assert "No source failing or late." in html


def test_it_is_shown_only_with_the_permission(viewer_user, django_user_model):
    nobody = django_user_model.objects.create_user(
        username="nobody", password="pw", is_staff=True
    )
    viewer, other = Client(), Client()
    viewer.force_login(viewer_user)
    other.force_login(nobody)

    assert 'id="panel-importers"' in viewer.get(PANELS).content.decode()
    assert 'id="panel-importers"' not in other.get(PANELS).content.decode()
    panel = {p.key: p for p in dashboard.panels()}["importers"]
    assert (panel.order, panel.permission) == (50, "importers.view_importsource")


def test_it_tells_the_next_due_time():
    enabled = ImportSource(enabled=True, next_due_at=NOW + timedelta(minutes=14))

    assert 'title="2026-03-10 12:44:00 UTC">in 14 min</time>' in next_due(enabled, NOW)
    enabled.next_due_at = NOW - timedelta(minutes=1)
    assert ">due now</time>" in next_due(enabled, NOW)
    assert next_due(ImportSource(enabled=False), NOW) == "disabled"
    assert relative(NOW - timedelta(hours=3), NOW) == "3 h ago"
