"""The packages panel of the dashboard, and the demo packages."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta

import time_machine
from django.core.management import call_command

from packages_app.dashboard import format_duration, runs_chart
from packages_app.models import Package, PackageRun

Status = PackageRun.Status
NOW = datetime(2025, 3, 10, 12, 30, tzinfo=UTC)


def make_run(package, status, *, minutes_ago: int = 10, **fields) -> PackageRun:
    finished = NOW - timedelta(minutes=minutes_ago)
    if status in PackageRun.TERMINAL:
        fields.setdefault("finished_at", finished)
        fields.setdefault("duration", 5.0)
    fields.setdefault("queued_at", finished - timedelta(seconds=10))
    fields.setdefault("started_at", finished - timedelta(seconds=5))
    return PackageRun.objects.create(
        package=package, trigger="admin", timeout=60, status=status, **fields
    )


def count(html: str, label: str) -> str:
    match = re.search(
        r'<span class="portal-count-value">(\d+)</span>'
        rf'<span class="portal-count-label">{label}</span>',
        html,
    )
    assert match, label
    return match.group(1)


@time_machine.travel(NOW, tick=False)
def test_it_counts_runs_and_lists_failing_and_running_packages(
    admin_client, make_package
):
    churn = make_package("", slug="churn")
    scoring = make_package("", slug="scoring")
    report = make_package("", slug="report")
    make_run(churn, Status.SUCCEEDED, minutes_ago=50)
    make_run(churn, Status.SUCCEEDED, minutes_ago=20)
    make_run(churn, Status.SUCCEEDED, minutes_ago=60 * 30)  # too old to count
    make_run(scoring, Status.SUCCEEDED, minutes_ago=120)
    failed = make_run(scoring, Status.FAILED, minutes_ago=15)
    # a queued retry doesn't hide that the package is failing
    make_run(scoring, Status.QUEUED, minutes_ago=5, started_at=None)
    make_run(report, Status.TIMED_OUT, minutes_ago=90)
    make_run(report, Status.SUCCEEDED, minutes_ago=30)  # recovered since
    running = make_run(
        report, Status.RUNNING, started_at=NOW - timedelta(seconds=54), duration=None
    )

    html = admin_client.get("/admin/dashboard/panels/").content.decode()

    assert 'id="panel-packages"' in html
    assert count(html, "Succeeded 24 h") == "4"
    assert count(html, "Failed 24 h") == "1"
    assert count(html, "Timed out 24 h") == "1"
    assert count(html, "Lost 24 h") == "0"
    assert count(html, "Running now") == "1"
    assert count(html, "Queued") == "1"
    assert (
        f'<a href="/admin/packages_app/packagerun/{failed.pk}/change/">'
        "scoring: last run failed 15\xa0minutes ago</a>"
    ) in html
    assert "churn: last run" not in html and "report: last run" not in html
    assert f"report #{running.pk} running 54 s of 1 min 00 s" in html
    assert "Package runs per hour, last 24 h" in html
    assert "ok 2" in html  # the two successes of 12:00 (11:40 is in the 11:00 bar)


def test_it_shows_the_panel_to_a_viewer(client, viewer_user):
    client.force_login(viewer_user)

    html = client.get("/admin/dashboard/panels/").content.decode()

    assert 'id="panel-packages"' in html
    assert "No failing packages, nothing running." in html


def test_it_charts_runs_with_scaled_linked_bars(db):
    package = Package.objects.create(
        slug="p", directory="/tmp", command=["true"], timeout=10
    )
    long = make_run(package, Status.SUCCEEDED, duration=40.0)
    short = make_run(package, Status.FAILED, duration=0.0)

    svg = runs_chart([long, short], height=41)

    assert svg.count("<rect") == 2
    assert 'height="40.0" fill="#2e7d32"' in svg
    assert 'height="3.0" fill="#c62828"' in svg  # a zero duration is still visible
    assert f"#{short.pk} Failed, 0.0 s" in svg
    assert runs_chart([]) == ""


def test_it_formats_durations():
    assert format_duration(None) == "—"
    assert format_duration(0.42) == "0.4 s"
    assert format_duration(42.4) == "42 s"
    assert format_duration(185) == "3 min 05 s"
    assert format_duration(7620) == "2 h 07 min"


def test_it_seeds_the_demo_packages_once(db, settings, tmp_path):
    settings.VAR_DIR = tmp_path
    out = io.StringIO()

    call_command("seed_demo", stdout=out)
    call_command("seed_demo", stdout=out)

    folder = tmp_path / "demo-packages"
    slugs = ["churn", "nightly-scoring", "slow-report"]
    assert sorted(Package.objects.values_list("slug", flat=True)) == slugs
    churn = Package.objects.get(slug="churn")
    assert churn.command == ["{python}", "churn.py"]
    assert churn.directory == str(folder)
    assert churn.recipients == ["ops@localhost"]
    assert churn.next_scheduled_at is not None
    assert Package.objects.get(slug="slow-report").timeout == 5
    assert (folder / "nightly_scoring.py").is_file()
    assert not PackageRun.objects.exists()
    output = out.getvalue()
    assert output.count("package churn") == 2
    assert "(created)" in output and "(exists)" in output
