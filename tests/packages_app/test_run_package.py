"""python manage.py run_package: foreground output, exit codes, clear errors."""

from __future__ import annotations

import io
from unittest import mock

import pytest
from django.core.management import CommandError, call_command

from packages_app.models import Package, PackageRun


def run_cmd(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("run_package", *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue(), err.getvalue()


def test_it_runs_in_the_foreground_and_shows_the_output(make_package):
    make_package("print('scored 42 customers')")
    code, out, err = run_cmd("churn", "--param", "days=7", "--param", "name=nightly")
    assert code == 0
    assert "scored 42 customers" in out
    run = PackageRun.objects.get()
    assert run.status == "succeeded" and run.trigger == "cli"
    assert run.parameters == {"days": 7, "name": "nightly"}
    assert f"run #{run.pk} succeeded" in err


@pytest.mark.parametrize(
    ("script", "extra", "expected"),
    [
        ("raise SystemExit(9)", {}, 1),
        ("import time; time.sleep(30)", {"timeout": 1}, 3),
    ],
)
def test_exit_codes_tell_failures_apart(make_package, script, extra, expected):
    make_package(script, **extra)
    code, _, err = run_cmd("churn", "--no-notify")
    assert code == expected


def test_timeout_option_overrides_the_package(make_package):
    make_package("import time; time.sleep(30)", timeout=600)
    code, _, err = run_cmd("churn", "--timeout", "1")
    assert code == 3
    assert PackageRun.objects.get().timeout == 1


def test_params_json_and_params_merge(make_package):
    make_package("print(1)")
    run_cmd("churn", "--params-json", '{"a": 1, "b": [1, 2]}', "--param", "a=2")
    assert PackageRun.objects.get().parameters == {"a": 2, "b": [1, 2]}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "Unknown package: 'nope'"),
        (["churn", "--param", "novalue"], "'novalue' is not key=value."),
        (["churn", "--params-json", "{oops"], "--params-json is not valid JSON"),
        (["churn", "--params-json", "[1]"], "--params-json must be a JSON object."),
        (
            ["churn", "--timeout", "0"],
            "--timeout must be a positive number of seconds.",
        ),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(make_package, args, message):
    make_package("print(1)")
    with pytest.raises(CommandError) as excinfo:
        call_command("run_package", *args, stdout=io.StringIO(), stderr=io.StringIO())
    assert message in str(excinfo.value)
    assert excinfo.value.returncode == 2
    assert PackageRun.objects.count() == 0


def test_a_disabled_package_is_refused(make_package):
    make_package("print(1)", enabled=False)
    with pytest.raises(CommandError, match="Package churn is disabled.") as excinfo:
        call_command("run_package", "churn", stdout=io.StringIO(), stderr=io.StringIO())
    assert excinfo.value.returncode == 2


def test_skip_policy_exits_4(make_package):
    package = make_package("print(1)", concurrency=Package.Concurrency.SKIP)
    PackageRun.objects.create(
        package=package, trigger="admin", timeout=5, status="running"
    )
    with pytest.raises(CommandError, match="Skipped: churn already has run") as excinfo:
        call_command("run_package", "churn", stdout=io.StringIO(), stderr=io.StringIO())
    assert excinfo.value.returncode == 4


def test_queue_hands_the_run_to_the_workers(
    make_package, django_capture_on_commit_callbacks
):
    make_package("print(1)")
    with (
        mock.patch("django_q.tasks.async_task", autospec=True) as async_task,
        django_capture_on_commit_callbacks(execute=True),
    ):
        code, out, _ = run_cmd("churn", "--queue")
    run = PackageRun.objects.get()
    assert code == 0 and out.strip() == str(run.pk)
    assert run.status == "queued"
    assert async_task.call_args.args == ("packages_app.tasks.execute_run", run.pk)


def test_sigterm_to_the_command_cancels_the_run_and_kills_the_package(make_package):
    # The package signals its parent, the process running the command (this one).
    make_package(
        """
        import os, signal, subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        print("started", flush=True)
        os.kill(os.getppid(), signal.SIGTERM)
        signal.pause()  # until the runner kills it
        """
    )
    code, out, err = run_cmd("churn", "--no-notify")
    run = PackageRun.objects.get()
    assert code == 5
    assert run.status == "cancelled"
    assert run.error == "Interrupted: the runner got SIGTERM."
    assert "started" in out
    from tests.packages_app.test_runner import marker_processes

    assert marker_processes(str(run.uuid)) == []
