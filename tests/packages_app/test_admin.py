"""The packages admin: list columns, the form, Run now, the run page, its endpoints."""

from __future__ import annotations

import shlex
from datetime import timedelta
from unittest.mock import patch

import pytest
from django.contrib.messages import get_messages
from django.utils import timezone

from packages_app.models import Package, PackageRun, format_command

Status = PackageRun.Status
SCRIPT = "print('hello')\n"
FORM = {
    "slug": "churn",
    "description": "",
    "enabled": "on",
    "directory": "/srv/packages/churn",
    "command": "{python} churn.py --mode 'full run'",
    "requirements_file": "",
    "timeout": "60",
    "parameters": '{"days": 7}',
    "parameters_as_argument": "on",
    "environment": '{"MODE": "full"}',
    "secret_env": "DB_PASSWORD, API_TOKEN",
    "schedule": "",
    "schedule_tz": "UTC",
    "concurrency": "allow",
    "max_retries": "0",
    "retry_backoff": "60",
    "recipients": "ops@example.com\nteam@example.com",
    "max_log_bytes": "1048576",
}


def make_run(package: Package, status: str = Status.QUEUED, **fields) -> PackageRun:
    return PackageRun.objects.create(
        package=package, trigger="admin", timeout=60, status=status, **fields
    )


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.fixture
def package(make_package) -> Package:
    return make_package(SCRIPT, parameters={"days": 7})


def test_it_lists_packages_with_last_status_and_duration(
    admin_client, package, django_assert_max_num_queries
):
    make_run(package, Status.SUCCEEDED, duration=3.0)
    last = make_run(package, Status.FAILED, duration=75.0)
    other = Package.objects.create(
        slug="other", directory="/tmp", command=["true"], timeout=10
    )
    make_run(other, Status.SUCCEEDED, duration=1.0)

    # the columns are annotated: the query count doesn't grow with the rows
    with django_assert_max_num_queries(8):
        response = admin_client.get("/admin/packages_app/package/")

    assert response.status_code == 200
    html = response.content.decode()
    assert (
        f'<a href="/admin/packages_app/packagerun/{last.pk}/change/">'
        '<span class="portal-badge '
        'portal-badge-bad" data-status="failed">Failed</span></a>'
    ) in html
    assert "1 min 15 s" in html
    assert "Run selected packages now" in html


def test_it_filters_failing_packages(admin_client, package):
    make_run(package, Status.TIMED_OUT)
    healthy = Package.objects.create(
        slug="healthy", directory="/tmp", command=["true"], timeout=10
    )
    make_run(healthy, Status.SUCCEEDED)

    response = admin_client.get("/admin/packages_app/package/?last_run=failing")

    assert list(response.context["cl"].result_list) == [package]


def test_it_shows_the_form_with_text_values(admin_client, make_package):
    package = make_package(
        SCRIPT,
        command=["{python}", "churn.py", "a b"],
        secret_env=["DB_PASSWORD", "API_TOKEN"],
        recipients=["ops@example.com"],
    )

    response = admin_client.get(f"/admin/packages_app/package/{package.pk}/change/")

    html = response.content.decode()
    assert "{python} churn.py &#x27;a b&#x27;" in html
    assert "DB_PASSWORD\nAPI_TOKEN</textarea>" in html
    assert f'href="/admin/packages_app/package/{package.pk}/run/"' in html


@pytest.mark.parametrize(
    "argv",
    [
        ["{python}", "churn.py"],
        ["/usr/bin/env", "a b", "it's", "", "--x=$HOME", "*.csv", "#1", "é"],
    ],
)
def test_it_shows_a_command_line_that_splits_back(argv):
    assert shlex.split(format_command(argv)) == argv


def test_it_saves_text_values_as_lists_and_objects(admin_client, db):
    response = admin_client.post("/admin/packages_app/package/add/", FORM)

    assert response.status_code == 302
    package = Package.objects.get(slug="churn")
    assert package.command == ["{python}", "churn.py", "--mode", "full run"]
    assert package.parameters == {"days": 7}
    assert package.environment == {"MODE": "full"}
    assert package.secret_env == ["DB_PASSWORD", "API_TOKEN"]
    assert package.recipients == ["ops@example.com", "team@example.com"]


def test_it_saves_a_package_with_a_git_source(admin_client, settings):
    settings.PIPELINE_GIT_SCHEMES = ["https"]
    form = {
        **FORM,
        "command": "",
        "directory": "",
        "git_url": "https://example.com/o/r.git",
    }
    response = admin_client.post("/admin/packages_app/package/add/", form)

    assert response.status_code == 302
    package = Package.objects.get(slug="churn")
    assert package.is_pipeline and package.command == []
    page = admin_client.get(f"/admin/packages_app/package/{package.pk}/change/")
    assert "https://example.com/o/r.git" in page.content.decode()


def test_it_refuses_a_git_source_with_credentials(admin_client, settings):
    settings.PIPELINE_GIT_SCHEMES = ["https"]
    form = {**FORM, "command": "", "git_url": "https://u:tok@example.com/o/r.git"}
    response = admin_client.post("/admin/packages_app/package/add/", form)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "Remove the credentials" in " ".join(errors["git_url"])
    assert not Package.objects.exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("command", "python 'unbalanced", "Not a valid command line: No closing"),
        ("command", "   ", "Give a command or a git source."),
        ("git_url", "https://example.com/o/r.git", "either a command or a git source"),
        ("parameters", '{"days": ', "Not valid JSON"),
        ("parameters", "[1, 2]", "Must be a JSON object"),
        # the database's JSON columns refuse these: a form error, not a 500
        ("parameters", '{"days": NaN}', "NaN is not JSON"),
        ("parameters", '{"days": 1e999}', "1e999 is out of range"),
        ("environment", '{"MODE": "a\\u0000"}', "NUL characters"),
        ("environment", '{"MODE": 1}', "The value of MODE must be a string."),
        ("secret_env", "DB PASSWORD", "is not a valid environment variable name"),
        ("recipients", "ops@example.com, not-an-address", "is not an email address"),
    ],
)
def test_it_rejects_bad_input_with_form_errors(admin_client, db, field, value, message):
    response = admin_client.post(
        "/admin/packages_app/package/add/", {**FORM, field: value}
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert message in " ".join(errors[field])
    assert not Package.objects.exists()


def test_it_shows_the_chart_of_recent_runs(admin_client, package):
    runs = [
        make_run(package, Status.SUCCEEDED, duration=10.0),
        make_run(package, Status.FAILED, duration=5.0),
    ]

    response = admin_client.get(f"/admin/packages_app/package/{package.pk}/change/")

    html = response.content.decode()
    assert '<svg class="portal-chart pkg-runs-chart"' in html
    assert html.count("<rect") == 2
    assert f'<a href="/admin/packages_app/packagerun/{runs[1].pk}/change/">' in html
    assert 'fill="#c62828"' in html  # the failure's bar is red


def test_it_renders_run_now_with_the_defaults(admin_client, package):
    response = admin_client.get(f"/admin/packages_app/package/{package.pk}/run/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "&quot;days&quot;: 7" in html
    assert 'name="timeout"' in html and 'placeholder="30"' in html
    assert 'name="notify"' in html


@patch("django_q.tasks.async_task", autospec=True)
def test_it_queues_a_run_and_redirects_to_it(
    async_task, admin_client, package, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            f"/admin/packages_app/package/{package.pk}/run/",
            {"parameters": '{"days": 1}', "timeout": "20"},
        )

    run = PackageRun.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/admin/packages_app/packagerun/{run.pk}/change/"
    assert run.status == Status.QUEUED
    assert run.parameters == {"days": 1}
    assert run.timeout == 20
    assert run.notify is False  # the box was left unticked
    assert (run.trigger, run.triggered_by) == ("admin", "admin")
    async_task.assert_called_once()
    assert async_task.call_args.args == ("packages_app.tasks.execute_run", run.pk)
    assert messages_of(response) == [f"Queued run #{run.pk} of churn."]


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"parameters": "{oops"}, "parameters", "Not valid JSON"),
        ({"parameters": '"x"'}, "parameters", "Must be a JSON object"),
        ({"parameters": '{"days": Infinity}'}, "parameters", "Infinity is not JSON"),
        ({"timeout": "0"}, "timeout", "greater than or equal to 1"),
        ({"timeout": "99999999"}, "timeout", "less than or equal to"),
    ],
)
def test_it_shows_bad_run_input_as_form_errors(
    admin_client, package, data, field, message
):
    response = admin_client.post(f"/admin/packages_app/package/{package.pk}/run/", data)

    assert response.status_code == 200
    assert message in " ".join(response.context["form"].errors[field])
    assert not PackageRun.objects.exists()


def test_it_reports_a_refused_run(admin_client, make_package):
    package = make_package(SCRIPT, enabled=False)

    response = admin_client.post(
        f"/admin/packages_app/package/{package.pk}/run/", {"parameters": "{}"}
    )

    assert response.status_code == 200
    assert "Package churn is disabled." in response.content.decode()
    assert not PackageRun.objects.exists()


@patch("django_q.tasks.async_task", autospec=True)
def test_it_bulk_queues_runs_and_reports_refusals(
    async_task, admin_client, make_package, django_capture_on_commit_callbacks
):
    churn = make_package(SCRIPT)
    busy = make_package(SCRIPT, slug="busy", concurrency=Package.Concurrency.SKIP)
    running = make_run(busy, Status.RUNNING)

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/packages_app/package/",
            {"action": "run_selected", "_selected_action": [churn.pk, busy.pk]},
            follow=True,
        )

    run = PackageRun.objects.get(package=churn)
    assert run.status == Status.QUEUED and run.trigger == "admin"
    assert PackageRun.objects.filter(package=busy).count() == 1
    assert async_task.call_count == 1
    assert messages_of(response) == [
        f"Queued 1 run(s): churn #{run.pk}.",
        f"Not run (1): Skipped: busy already has run #{running.pk} running "
        "(policy: skip if running).",
    ]


def test_it_lets_a_viewer_neither_run_nor_cancel(client, viewer_user, package):
    run = make_run(package, Status.QUEUED)
    client.force_login(viewer_user)

    changelist = client.get("/admin/packages_app/package/")
    change = client.get(f"/admin/packages_app/package/{package.pk}/change/")
    run_get = client.get(f"/admin/packages_app/package/{package.pk}/run/")
    run_post = client.post(f"/admin/packages_app/package/{package.pk}/run/", {})
    cancel = client.post(f"/admin/packages_app/packagerun/{run.pk}/cancel/")
    run_page = client.get(f"/admin/packages_app/packagerun/{run.pk}/change/")

    assert changelist.status_code == 200
    assert "Run selected packages now" not in changelist.content.decode()
    assert "/run/" not in change.content.decode()
    assert run_get.status_code == 403 and run_post.status_code == 403
    assert cancel.status_code == 403
    assert run_page.status_code == 200
    assert "Cancel run" not in run_page.content.decode()
    run.refresh_from_db()
    assert run.status == Status.QUEUED
    assert PackageRun.objects.count() == 1


def test_it_lets_an_operator_run(client, operator_user, package):
    client.force_login(operator_user)

    response = client.get(f"/admin/packages_app/package/{package.pk}/run/")

    assert response.status_code == 200


def test_it_lists_runs_with_status_and_duration(admin_client, package):
    make_run(package, Status.SUCCEEDED, duration=12.0, log_tail="x" * 1000)
    make_run(package, Status.TIMED_OUT, duration=60.0)

    response = admin_client.get(
        "/admin/packages_app/packagerun/?status__exact=timed_out"
    )

    assert response.status_code == 200
    html = response.content.decode()
    badge = '<span class="portal-badge portal-badge-warn" data-status="timed_out">'
    assert badge in html
    assert "1 min 00 s" in html
    assert "12 s" not in html
    assert 'href="/admin/packages_app/packagerun/add/"' not in html


def test_it_shows_a_read_only_run_page_with_progress(admin_client, package):
    started = timezone.now() - timedelta(seconds=30)
    run = make_run(
        package,
        Status.RUNNING,
        started_at=started,
        parameters={"days": 1, "api_token": "s3cr3t"},
        log_tail="line 1\nline 2\n",
    )

    response = admin_client.get(f"/admin/packages_app/packagerun/{run.pk}/change/")

    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-active="true"' in html
    assert 'aria-valuenow="50"' in html  # 30 s of a 60 s timeout
    assert "line 1\nline 2\n</pre>" in html
    assert "Cancel run" in html
    assert "s3cr3t" not in html  # secret-looking parameters are masked
    assert 'name="_save"' not in html
    assert "packages_app/run.js" in html


def test_it_cancels_a_queued_run(admin_client, package):
    run = make_run(package, Status.QUEUED)

    response = admin_client.post(f"/admin/packages_app/packagerun/{run.pk}/cancel/")

    assert response.status_code == 302
    run.refresh_from_db()
    assert run.status == Status.CANCELLED
    assert messages_of(response) == [f"Cancelled run #{run.pk} before it started."]


def test_it_asks_a_running_run_to_stop(admin_client, package):
    run = make_run(package, Status.RUNNING, started_at=timezone.now())

    admin_client.post(f"/admin/packages_app/packagerun/{run.pk}/cancel/")

    run.refresh_from_db()
    # the runner notices the request and kills the process group
    assert run.status == Status.RUNNING
    assert run.cancel_requested_at is not None


def test_it_cancels_only_on_post(admin_client, package):
    run = make_run(package, Status.QUEUED)

    response = admin_client.get(f"/admin/packages_app/packagerun/{run.pk}/cancel/")

    assert response.status_code == 405
    run.refresh_from_db()
    assert run.status == Status.QUEUED


def test_it_returns_the_end_of_the_log_file(admin_client, package, tmp_path):
    log = tmp_path / "run.log"
    log.write_bytes(b"".join(b"line %06d\n" % i for i in range(20000)))
    run = make_run(
        package,
        Status.RUNNING,
        started_at=timezone.now() - timedelta(seconds=6),
        log_path=str(log),
        output_bytes=log.stat().st_size,
        log_tail="stale tail from the database",
    )

    response = admin_client.get(f"/admin/packages_app/packagerun/{run.pk}/tail/")

    assert response.status_code == 200
    data = response.json()
    assert data["status"] == "running" and data["active"] is True
    assert data["timeout"] == 60 and 6 <= data["elapsed"] < 60
    assert data["output_bytes"] == 240000
    assert data["tail"].endswith("line 019999\n")
    assert data["tail"].startswith("line ")  # cut at a whole line
    assert 60 * 1024 <= len(data["tail"]) <= 64 * 1024


def test_it_falls_back_to_the_tail_in_the_database(admin_client, package):
    run = make_run(
        package, Status.LOST, log_path="/nonexistent/run.log", log_tail="kept"
    )

    data = admin_client.get(f"/admin/packages_app/packagerun/{run.pk}/tail/").json()

    assert data["tail"] == "kept" and data["active"] is False


def test_it_reads_only_the_end_of_a_log(tmp_path):
    log = tmp_path / "run.log"
    log.write_bytes(b"a" * 100 + b"\nend\n")
    run = PackageRun(log_path=str(log), output_bytes=105, log_tail="kept")

    assert run.read_log_tail(limit=10) == "end\n"
    run.log_path = str(tmp_path / "gone.log")
    assert run.read_log_tail() == "kept"


def test_it_downloads_the_full_log(admin_client, package, tmp_path):
    log = tmp_path / "run.log"
    log.write_text("first line\nlast line\n")
    run = make_run(package, Status.SUCCEEDED, log_path=str(log))

    response = admin_client.get(f"/admin/packages_app/packagerun/{run.pk}/log/")

    assert response.status_code == 200
    assert response["Content-Disposition"] == (
        f'attachment; filename="churn-run-{run.pk}.log"'
    )
    assert b"".join(response.streaming_content) == b"first line\nlast line\n"


def test_it_explains_a_missing_log_file_with_a_404(admin_client, package, tmp_path):
    run = make_run(package, Status.SUCCEEDED, log_path=str(tmp_path / "gone.log"))

    response = admin_client.get(f"/admin/packages_app/packagerun/{run.pk}/log/")

    assert response.status_code == 404
    assert f"The log file of run #{run.pk} is gone" in response.content.decode()


def test_it_needs_a_login_for_the_run_endpoints(client, package):
    run = make_run(package, Status.RUNNING)

    response = client.get(f"/admin/packages_app/packagerun/{run.pk}/tail/")

    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
