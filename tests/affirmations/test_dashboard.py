"""The affirmations panel of the dashboard, and its display helpers."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import time_machine
from django.test import Client, RequestFactory

from affirmations.dashboard import (
    affirmations_panel,
    next_due,
    relative,
    status_badge,
)
from affirmations.models import Check
from portal import dashboard

NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)
PANELS = "/admin/dashboard/panels/"


def count(html: str, label: str) -> tuple[str, str, str]:
    """The value, tone and link of a count of the affirmations panel."""
    panel = html.split('id="panel-affirmations"')[1].split("</article>")[0]
    match = re.search(
        r'<li class="portal-count portal-tone-(\w+)"><a href="([^"]*)">'
        r'<span class="portal-count-value">(\d+)</span>'
        rf'<span class="portal-count-label">{label}</span>',
        panel,
    )
    assert match, label
    return match.group(3), match.group(1), match.group(2)


def make_check(name: str, status: str = Check.Status.PASSING, **fields) -> Check:
    fields.setdefault("schedule", "0 18 * * *")
    fields.setdefault("tz", "UTC")
    fields.setdefault("lookback", timedelta(days=1))
    check = Check.objects.create(name=name, status=status, **fields)
    check.schedule_from(NOW)
    return check


@time_machine.travel(NOW, tick=False)
def test_it_counts_checks_and_lists_failing_then_due_soon(admin_client):
    make_check("passing_1")
    make_check("passing_2")
    make_check("brand_new", Check.Status.NEW)
    make_check("on_hold", Check.Status.PAUSED)
    old = make_check("broken_old", Check.Status.FAILING, tz="Europe/Helsinki")
    Check.objects.filter(pk=old.pk).update(last_evaluated_at=NOW - timedelta(hours=2))
    new = make_check("broken_new", Check.Status.FAILING)
    Check.objects.filter(pk=new.pk).update(last_evaluated_at=NOW - timedelta(hours=1))
    soon = make_check("soon", schedule="44 14 * * *", tz="Europe/Helsinki")
    # 13:00 Helsinki (11:00 UTC) has passed: due tomorrow, not soon
    make_check("tomorrow", schedule="0 13 * * *", tz="Europe/Helsinki")

    html = admin_client.get(PANELS).content.decode()

    assert "<h2>Affirmations</h2>" in html
    changelist = "/admin/affirmations/check/"
    assert count(html, "Failing") == ("2", "bad", f"{changelist}?status__exact=failing")
    assert count(html, "Passing") == ("4", "ok", f"{changelist}?status__exact=passing")
    assert count(html, "New") == ("1", "info", f"{changelist}?status__exact=new")
    assert count(html, "Paused") == ("1", "muted", f"{changelist}?status__exact=paused")
    items = [
        f'<a href="/admin/affirmations/check/{new.pk}/change/">'
        f"broken_new [{new.key}]: failing</a>",
        f'<a href="/admin/affirmations/check/{old.pk}/change/">'
        f"broken_old [{old.key}]: failing</a>",
        f'<a href="/admin/affirmations/check/{soon.pk}/change/">'
        f"soon [{soon.key}]: due in 14 min (14:44 EET)</a>",
    ]
    positions = [html.index(item) for item in items]
    assert positions == sorted(positions)
    assert "tomorrow [" not in html
    assert '<a href="/admin/affirmations/check/monitor/">Monitor</a>' in html


@time_machine.travel(NOW, tick=False)
def test_it_takes_a_handful_of_queries(db, admin_user, django_assert_num_queries):
    for i in range(5):
        make_check(f"failing_{i}", Check.Status.FAILING)
        make_check(f"soon_{i}", schedule="45 12 * * *")
    request = RequestFactory().get("/admin/")
    request.user = admin_user

    with django_assert_num_queries(3):
        data = affirmations_panel(request, NOW)

    assert [c.value for c in data.counts] == [5, 5, 0, 0]
    assert [a.tone for a in data.attention] == ["bad"] * 5 + ["info"] * 5


@time_machine.travel(NOW, tick=False)
def test_it_says_when_nothing_needs_attention(admin_client):
    make_check("quiet")

    html = admin_client.get(PANELS).content.decode()

    assert count(html, "Failing") == (
        "0",
        "muted",
        "/admin/affirmations/check/?status__exact=failing",
    )
    assert "No check failing, none due in the hour." in html


def test_it_is_shown_to_viewers_only_with_the_permission(
    viewer_user, django_user_model
):
    nobody = django_user_model.objects.create_user(
        username="nobody", password="pw", is_staff=True
    )
    viewer, other = Client(), Client()
    viewer.force_login(viewer_user)
    other.force_login(nobody)

    assert 'id="panel-affirmations"' in viewer.get(PANELS).content.decode()
    assert 'id="panel-affirmations"' not in other.get(PANELS).content.decode()
    panel = {p.key: p for p in dashboard.panels()}["affirmations"]
    assert panel.order == 40
    assert panel.permission == "affirmations.view_check"


def test_it_tells_times_relative_to_now():
    assert relative(NOW + timedelta(minutes=14, seconds=59), NOW) == "in 14 min"
    assert relative(NOW + timedelta(seconds=5), NOW) == "in 5 s"
    assert relative(NOW - timedelta(hours=3), NOW) == "3 h ago"
    assert relative(NOW + timedelta(days=2, hours=1), NOW) == "in 2 d"


def test_it_shows_the_next_occurrence_in_the_checks_zone():
    check = Check(
        status=Check.Status.NEW,
        tz="America/New_York",
        next_occurrence=datetime(2026, 7, 1, 16, 0, tzinfo=UTC),
        next_due_at=datetime(2026, 7, 1, 16, 5, tzinfo=UTC),
    )
    paused = Check(status=Check.Status.PAUSED, tz="UTC")

    html = next_due(check, datetime(2026, 7, 1, 15, 0, tzinfo=UTC))

    assert html == (
        '<time datetime="2026-07-01T16:00:00+00:00" title="evaluated at '
        '2026-07-01 16:05 UTC, after the grace period">2026-07-01 12:00 EDT</time> '
        '<span class="aff-quiet">in 1 h</span>'
    )
    assert next_due(paused, NOW) == "paused"


def test_it_colours_statuses():
    assert status_badge(Check.Status.FAILING) == (
        '<span class="portal-badge portal-badge-bad" data-status="failing">'
        "Failing</span>"
    )
    assert 'portal-badge-ok" data-status="passing">Passing<' in status_badge(
        Check.Status.PASSING
    )
    assert 'portal-badge-muted" data-status="new">New<' in status_badge(
        Check.Status.NEW
    )
    assert 'portal-badge-muted" data-status="paused">Paused<' in status_badge(
        Check.Status.PAUSED
    )
