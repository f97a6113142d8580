"""The admin index is the operations dashboard, built from registered panels."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from django_q.models import Task

from portal import dashboard


def make_task(name: str, *, success: bool, minutes_ago: int) -> Task:
    stopped = timezone.now() - timedelta(minutes=minutes_ago)
    return Task.objects.create(
        id=f"{name}-{minutes_ago}"[:32],
        name=name,
        func="portal.tasks.prune_task_history",
        started=stopped - timedelta(seconds=5),
        stopped=stopped,
        success=success,
        result=None if success else "Traceback: boom",
    )


def test_index_is_the_branded_dashboard(admin_client):
    response = admin_client.get("/admin/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<title>Operations dashboard | Ops Portal</title>" in html
    assert 'id="panel-health"' in html and 'id="panel-tasks"' in html
    assert 'data-refresh-url="/admin/dashboard/panels/"' in html
    assert "portal/dashboard.js" in html


def test_tasks_panel_counts_lists_failures_and_charts(admin_client):
    make_task("nightly-ok", success=True, minutes_ago=30)
    make_task("nightly-broken", success=False, minutes_ago=10)
    make_task("ancient-failure", success=False, minutes_ago=60 * 30)
    html = admin_client.get("/admin/dashboard/panels/").content.decode()
    assert "nightly-broken failed 10" in html
    assert "ancient-failure" not in html
    assert '<svg class="portal-chart"' in html
    assert "ok 1" in html and "bad 1" in html


def test_panels_fragment_needs_a_login(client):
    response = client.get("/admin/dashboard/panels/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_a_broken_panel_does_not_hide_the_others(admin_client):
    @dashboard.register("broken", title="Broken panel", order=1)
    def broken(request, now):
        raise RuntimeError("boom")

    try:
        html = admin_client.get("/admin/dashboard/panels/").content.decode()
    finally:
        dashboard._registry.pop("broken")
    assert "This panel could not be loaded" in html
    assert 'id="panel-health"' in html


def test_panels_are_filtered_by_permission(client, viewer_user, django_user_model):
    @dashboard.register("secret", title="Secret", permission="portal.run_tick")
    def secret(request, now):
        return dashboard.PanelData(counts=[dashboard.Count("Hidden", 1)])

    try:
        client.force_login(viewer_user)
        html = client.get("/admin/dashboard/panels/").content.decode()
    finally:
        dashboard._registry.pop("secret")
    assert 'id="panel-health"' in html
    assert 'id="panel-secret"' not in html


def test_bar_chart_scales_and_escapes():
    svg = dashboard.bar_chart(
        [{"ok": 2, "bad": 2}, {"ok": 1}], labels=["<b>", "later"], height=40
    )
    assert svg.count("<rect") == 3
    assert 'height="20.0"' in svg  # 2 of a peak of 4 in 40 px
    assert "&lt;b&gt;" in svg and "<b>" not in svg
    assert dashboard.bar_chart([]) == ""
