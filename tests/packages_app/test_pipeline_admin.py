"""The pipeline runs admin: the list, the run page, its live JSON, Cancel, Re-run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from unittest.mock import patch

import pytest
import time_machine
from django.contrib.messages import get_messages

from packages_app import services
from packages_app.callbacks import safe_url
from packages_app.models import (
    PipelineCommand,
    PipelineOutput,
    PipelineRun,
    PipelineStep,
)

Status = PipelineRun.Status
NOW = datetime(2025, 3, 10, 12, 30, tzinfo=UTC)
ADMIN = "/admin/packages_app/pipelinerun"

pytestmark = pytest.mark.django_db


def make_run(status: str = Status.SUCCESSFUL, **fields) -> PipelineRun:
    values = {
        "name": "acme-etl",
        "url": "https://git.example.com/acme/etl.git",
        "ref": "main",
        "commit": "3f2a9c1d0e",
        "trigger": PipelineRun.Trigger.API,
        "status": status,
        **fields,
    }
    return PipelineRun.objects.create(**values)


def add_step(run: PipelineRun, step_no: int, status: str, **fields) -> PipelineStep:
    values = {"name": f"step-{step_no}", "image": "python:3.12-slim", **fields}
    return PipelineStep.objects.create(
        run=run, step_no=step_no, status=status, **values
    )


def add_command(
    step: PipelineStep, cmd_no: int, instruction: str, *chunks: str, **fields
) -> PipelineCommand:
    command = PipelineCommand.objects.create(
        step=step, cmd_no=cmd_no, instruction=instruction, **fields
    )
    for seq, text in enumerate(chunks):
        PipelineOutput.objects.create(command=command, seq=seq, text=text)
    return command


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def running_run() -> tuple[PipelineRun, PipelineCommand]:
    """A run in its second step, whose first command has printed two chunks."""
    run = make_run(Status.IN_PROGRESS, started_at=NOW - timedelta(seconds=42))
    build = add_step(run, 1, Status.SUCCESSFUL, duration=3.0)
    add_command(build, 1, "make build", "built\n", exit_code=0)
    test = add_step(run, 2, Status.IN_PROGRESS, started_at=NOW - timedelta(seconds=5))
    command = add_command(
        test, 1, "pytest", "hello\n", "world\n", started_at=NOW - timedelta(seconds=5)
    )
    add_step(run, 3, Status.PENDING)
    return run, command


@time_machine.travel(NOW, tick=False)
def test_it_lists_runs_with_status_and_duration(
    admin_client, django_assert_max_num_queries
):
    make_run(Status.FAILED, duration=184.0, log="x" * 10_000)
    make_run(Status.SUCCESSFUL, duration=1.23)
    make_run(Status.IN_PROGRESS, started_at=NOW - timedelta(seconds=42))
    make_run(Status.PENDING)

    # the columns need no query per row
    with django_assert_max_num_queries(8):
        response = admin_client.get(f"{ADMIN}/")

    assert response.status_code == 200
    html = response.content.decode()
    assert (
        '<span class="portal-badge portal-badge-bad" data-status="FAILED">Failed</span>'
    ) in html
    assert (
        '<span class="portal-badge portal-badge-info" data-status="IN_PROGRESS">'
        "In progress</span>"
    ) in html
    assert "3 min 04 s" in html
    assert "1.2 s" in html
    assert "42 s so far" in html
    assert html.count("acme-etl") >= 4


def test_it_searches_and_filters_runs(admin_client):
    wanted = make_run(Status.FAILED, name="acme-etl", commit="feedbeef01")
    make_run(Status.SUCCESSFUL, name="acme-report", commit="0badcafe02")

    by_commit = admin_client.get(f"{ADMIN}/?q=feedbeef")
    by_uuid = admin_client.get(f"{ADMIN}/?q={wanted.uuid}")
    by_status = admin_client.get(f"{ADMIN}/?status__exact=SUCCESSFUL")

    assert "acme-etl" in by_commit.content.decode()
    assert "acme-report" not in by_commit.content.decode()
    assert "acme-etl" in by_uuid.content.decode()
    assert "acme-report" not in by_uuid.content.decode()
    assert "acme-report" in by_status.content.decode()
    assert "acme-etl" not in by_status.content.decode()


def test_it_shows_steps_commands_and_escaped_output(admin_client):
    run = make_run(
        Status.FAILED,
        duration=12.0,
        error="Step 2 (test) failed: exit 2",
        environment={"MODE": "full"},
        pipeline_callback_url="https://hooks.example.com/run?token=s3cret",
        cmd_callback_url="https://user:pw@hooks.example.com/cmd#frag",
        log="12:00:00 cloned at 3f2a9c1d0e\n",
        executor="docker",
        host="worker-1",
    )
    build = add_step(run, 1, Status.SUCCESSFUL, name="build", duration=3.0)
    add_command(build, 1, "make build", "built\n", exit_code=0)
    test = add_step(
        run, 2, Status.FAILED, name="test", image="node:20", error="exit code 2"
    )
    add_command(test, 1, "echo '<b>hi</b>'", "<script>alert(1)</script>\n", exit_code=2)
    add_command(test, 2, "never reached")

    response = admin_client.get(f"{ADMIN}/{run.pk}/change/")

    assert response.status_code == 200
    html = response.content.decode()
    assert html.index("Step 1: build") < html.index("Step 2: test")
    assert '<code class="pipe-step-image">node:20</code>' in html
    assert "$ echo &#x27;&lt;b&gt;hi&lt;/b&gt;&#x27;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)" not in html
    assert "exit 0" in html and "exit 2" in html and "not run" in html
    assert "exit code 2" in html
    assert "Step 2 (test) failed: exit 2" in html
    assert "cloned at 3f2a9c1d0e" in html
    assert "worker-1" in html and str(run.uuid) in html
    assert "&quot;MODE&quot;: &quot;full&quot;" in html
    # callback URLs without their query strings, fragments or credentials
    assert "<code>https://hooks.example.com/run</code>" in html
    assert "<code>https://hooks.example.com/cmd</code>" in html
    assert "s3cret" not in html and "pw@" not in html and "frag" not in html
    # an ended run is not refreshed; it can be re-run, not cancelled
    assert 'data-active="false"' in html
    assert f'action="{ADMIN}/{run.pk}/rerun/"' in html
    assert "Cancel run" not in html


@time_machine.travel(NOW, tick=False)
def test_it_refreshes_a_running_run_page(admin_client):
    run, _ = running_run()

    response = admin_client.get(f"{ADMIN}/{run.pk}/change/")

    html = response.content.decode()
    assert 'data-active="true"' in html
    assert f'data-live-url="{ADMIN}/{run.pk}/live/"' in html
    assert "packages_app/pipeline.js" in html
    assert "42 s so far" in html and "5.0 s so far" in html
    assert "1 of 3 steps ended" in html
    assert "hello\nworld\n" in html
    assert f'action="{ADMIN}/{run.pk}/cancel/"' in html
    assert "Re-run</button>" not in html


@time_machine.travel(NOW, tick=False)
def test_it_returns_live_statuses_and_new_output(admin_client):
    run, command = running_run()

    first = admin_client.get(f"{ADMIN}/{run.pk}/live/")
    data = first.json()
    PipelineOutput.objects.create(command=command, seq=2, text="again\n")
    second = admin_client.get(f"{ADMIN}/{run.pk}/live/?after={data['after']}")

    assert "no-store" in first["Cache-Control"]
    assert data["status"] == "IN_PROGRESS" and data["active"] is True
    assert data["elapsed_display"] == "42 s so far"
    assert [s["status"] for s in data["steps"]] == [
        "SUCCESSFUL",
        "IN_PROGRESS",
        "PENDING",
    ]
    assert data["steps"][0]["commands"][0]["output"] == "built\n"
    assert data["steps"][0]["commands"][0]["exit_display"] == "exit 0"
    running = data["steps"][1]["commands"][0]
    assert running["output"] == "hello\nworld\n"
    assert running["exit_display"] == "running"
    # only what came after the last chunk the page has
    again = second.json()
    assert again["steps"][1]["commands"][0]["output"] == "again\n"
    assert again["steps"][0]["commands"][0]["output"] == ""
    assert again["after"] > data["after"]


def test_it_ignores_a_bad_after(admin_client):
    run, _ = running_run()

    response = admin_client.get(f"{ADMIN}/{run.pk}/live/?after=nope")

    assert response.status_code == 200
    assert response.json()["steps"][1]["commands"][0]["output"] == "hello\nworld\n"


def test_it_asks_a_running_run_to_stop(admin_client):
    run, _ = running_run()

    response = admin_client.post(f"{ADMIN}/{run.pk}/cancel/")

    assert response.status_code == 302
    assert response["Location"] == f"{ADMIN}/{run.pk}/change/"
    assert messages_of(response) == [
        f"Asked {run} to stop; it ends within a few seconds."
    ]
    run.refresh_from_db()
    assert run.cancel_requested_at is not None
    assert run.status == Status.IN_PROGRESS  # the worker stops it


def test_it_stops_a_pending_run_at_once(admin_client):
    run = make_run(Status.PENDING)
    step = add_step(run, 1, Status.PENDING)

    response = admin_client.post(f"{ADMIN}/{run.pk}/cancel/")

    assert messages_of(response) == [f"Stopped {run} before it started."]
    run.refresh_from_db()
    step.refresh_from_db()
    assert run.status == Status.STOPPED
    assert step.status == Status.ABORTED


def test_it_has_nothing_to_cancel_on_an_ended_run(admin_client):
    run = make_run(Status.SUCCESSFUL)

    response = admin_client.post(f"{ADMIN}/{run.pk}/cancel/")

    assert messages_of(response) == [f"{run} is successful: nothing to cancel."]
    run.refresh_from_db()
    assert run.status == Status.SUCCESSFUL and run.cancel_requested_at is None


def test_it_cancels_and_reruns_only_on_post(admin_client):
    run, _ = running_run()

    cancel = admin_client.get(f"{ADMIN}/{run.pk}/cancel/")
    rerun = admin_client.get(f"{ADMIN}/{run.pk}/rerun/")

    assert cancel.status_code == 405 and rerun.status_code == 405
    run.refresh_from_db()
    assert run.cancel_requested_at is None


def test_it_reruns_and_redirects_to_the_new_run(admin_client):
    run = make_run(Status.FAILED, environment={"MODE": "full"})
    new_run = make_run(Status.PENDING, trigger=PipelineRun.Trigger.RERUN, rerun_of=run)

    # the real service clones the repository: the boundary here
    with patch(
        "packages_app.services.pipeline_rerun", autospec=True, return_value=new_run
    ) as rerun:
        response = admin_client.post(f"{ADMIN}/{run.pk}/rerun/")

    rerun.assert_called_once_with(run, triggered_by="admin")
    assert response.status_code == 302
    assert response["Location"] == f"{ADMIN}/{new_run.pk}/change/"
    assert messages_of(response) == [f"Re-running {run} as {new_run}."]
    page = admin_client.get(response["Location"]).content.decode()
    assert f'<a href="{ADMIN}/{run.pk}/change/">{run}</a>' in page


def test_it_reports_a_refused_rerun(admin_client):
    run = make_run(Status.SUCCESSFUL)
    refused = services.PipelineRefused("could not clone: not found", field="url")

    with patch(
        "packages_app.services.pipeline_rerun", autospec=True, side_effect=refused
    ):
        response = admin_client.post(f"{ADMIN}/{run.pk}/rerun/")

    assert response["Location"] == f"{ADMIN}/{run.pk}/change/"
    assert messages_of(response) == [
        f"Could not re-run {run}: could not clone: not found"
    ]


def test_it_does_not_rerun_a_run_still_in_progress(admin_client):
    run, _ = running_run()

    with patch("packages_app.services.pipeline_rerun", autospec=True) as rerun:
        response = admin_client.post(f"{ADMIN}/{run.pk}/rerun/")

    rerun.assert_not_called()
    assert messages_of(response) == [
        f"{run} has not ended yet: cancel it, or wait, before re-running it."
    ]


def test_it_lets_a_viewer_watch_but_not_cancel_or_rerun(client, viewer_user):
    running, _ = running_run()
    ended = make_run(Status.FAILED)
    client.force_login(viewer_user)

    running_page = client.get(f"{ADMIN}/{running.pk}/change/").content.decode()
    ended_page = client.get(f"{ADMIN}/{ended.pk}/change/").content.decode()
    live = client.get(f"{ADMIN}/{running.pk}/live/")
    with patch("packages_app.services.pipeline_rerun", autospec=True) as rerun:
        cancel = client.post(f"{ADMIN}/{running.pk}/cancel/")
        again = client.post(f"{ADMIN}/{ended.pk}/rerun/")

    assert "hello\nworld\n" in running_page
    assert "Cancel run" not in running_page and "/cancel/" not in running_page
    assert "Re-run</button>" not in ended_page and "/rerun/" not in ended_page
    assert live.status_code == 200
    assert cancel.status_code == 403 and again.status_code == 403
    rerun.assert_not_called()
    running.refresh_from_db()
    assert running.cancel_requested_at is None


def test_it_shows_the_buttons_to_an_operator(client, operator_user):
    running, _ = running_run()
    ended = make_run(Status.FAILED)
    client.force_login(operator_user)

    running_page = client.get(f"{ADMIN}/{running.pk}/change/").content.decode()
    ended_page = client.get(f"{ADMIN}/{ended.pk}/change/").content.decode()

    assert "Cancel run</button>" in running_page
    assert "Re-run</button>" in ended_page


def test_it_is_read_only_with_no_pages_for_steps_or_commands(admin_client):
    run = make_run(Status.SUCCESSFUL)

    add = admin_client.get(f"{ADMIN}/add/")
    change = admin_client.post(f"{ADMIN}/{run.pk}/change/", {"name": "renamed"})
    steps = admin_client.get("/admin/packages_app/pipelinestep/")
    commands = admin_client.get("/admin/packages_app/pipelinecommand/")
    index = admin_client.get("/admin/packages_app/").content.decode()

    assert add.status_code == 403
    assert change.status_code == 403
    assert steps.status_code == 404 and commands.status_code == 404
    assert "Pipeline runs" in index and "Pipeline steps" not in index
    run.refresh_from_db()
    assert run.name == "acme-etl"


def test_it_deletes_only_ended_runs(admin_client):
    running, _ = running_run()
    ended = make_run(Status.FAILED)
    step = add_step(ended, 1, Status.FAILED)
    add_command(step, 1, "false", *[f"line {i}\n" for i in range(50)])

    refused = admin_client.get(f"{ADMIN}/{running.pk}/delete/")
    page = admin_client.get(f"{ADMIN}/{ended.pk}/delete/")
    deleted = admin_client.post(f"{ADMIN}/{ended.pk}/delete/", {"post": "yes"})

    assert refused.status_code == 403
    html = page.content.decode()
    # the output chunks are counted, not listed one by one
    assert "Pipeline outputs: 50" in html
    assert "line 7" not in html and html.count("<li>") < 20
    assert deleted.status_code == 302
    assert not PipelineRun.objects.filter(pk=ended.pk).exists()
    assert not PipelineOutput.objects.filter(command__step__run=ended).exists()


def test_it_needs_a_login_for_the_live_view(client):
    run = make_run(Status.IN_PROGRESS)

    response = client.get(f"{ADMIN}/{run.pk}/live/")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_it_answers_404_for_an_unknown_run(admin_client):
    response = admin_client.get(f"{ADMIN}/999999/live/")

    assert response.status_code == 404


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example.com/cb?token=x#top", "https://hooks.example.com/cb"),
        ("http://u:p@[::1]:8080/a/b?x=1", "http://[::1]:8080/a/b"),
        ("", ""),
    ],
)
def test_it_shows_callback_urls_without_secrets(url, shown):
    assert safe_url(url) == shown
