"""Package validation and run state changes."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django_q.signals import post_spawn

from packages_app.models import Package, PackageRun


def make(**fields) -> Package:
    values = {
        "slug": "churn",
        "directory": "/opt/churn",
        "command": ["run.sh"],
        "timeout": 60,
    }
    return Package(**{**values, **fields})


def test_a_timeout_longer_than_the_queue_retry_is_refused(settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "retry": 1000}
    settings.PACKAGES_KILL_GRACE = 5
    with pytest.raises(ValidationError) as excinfo:
        make(timeout=940).full_clean(validate_unique=False)
    assert "Q_RETRY=1000" in excinfo.value.message_dict["timeout"][0]
    make(timeout=934).full_clean(validate_unique=False)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"directory": "relative/path"}, "directory"),
        ({"command": []}, "command"),
        ({"timeout": 0}, "timeout"),
        ({"schedule": "61 * * * *"}, "schedule"),
        ({"schedule_tz": "Mars/Olympus"}, "schedule_tz"),
        ({"parameters": [1]}, "parameters"),
        ({"environment": {"1BAD": "x"}}, "environment"),
        ({"secret_env": ["OK", "not ok"]}, "secret_env"),
        ({"recipients": ["nope"]}, "recipients"),
    ],
)
def test_bad_fields_are_named(fields, field):
    with pytest.raises(ValidationError) as excinfo:
        make(**fields).full_clean(validate_unique=False)
    assert field in excinfo.value.message_dict


def test_finish_happens_once_and_only_to_terminal_states(db):
    package = make()
    package.save()
    run = PackageRun.objects.create(package=package, trigger="cli", timeout=5)
    with pytest.raises(ValueError):
        run.finish(PackageRun.Status.RUNNING)
    assert run.finish(PackageRun.Status.FAILED, error="first") is True
    assert run.finish(PackageRun.Status.SUCCEEDED) is False
    run.refresh_from_db()
    assert (run.status, run.error) == ("failed", "first")


def test_a_starting_worker_reconciles(db, time_machine):
    from datetime import timedelta

    from django.utils import timezone

    package = make()
    package.save()
    stale = timezone.now() - timedelta(hours=1)
    run = PackageRun.objects.create(
        package=package,
        trigger="cli",
        timeout=5,
        status="running",
        started_at=stale,
        heartbeat_at=stale,
        host="elsewhere",
    )
    post_spawn.send(sender="django_q", proc_name="Worker-1")
    run.refresh_from_db()
    assert run.status == PackageRun.Status.LOST


def test_a_run_timeout_beyond_the_retry_window_is_refused_everywhere(db, settings):
    from packages_app import services

    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "retry": 1000}
    settings.PACKAGES_KILL_GRACE = 5
    package = make()
    package.save()
    with pytest.raises(ValidationError) as excinfo:
        services.run_create(package=package, trigger="api", timeout=5000)
    assert "Q_RETRY=1000" in excinfo.value.message_dict["timeout"][0]
    assert not PackageRun.objects.exists()


def test_parameters_with_nul_characters_are_refused():
    with pytest.raises(ValidationError) as excinfo:
        make(parameters={"a": ["ok", "bad\x00"]}).full_clean(validate_unique=False)
    assert "NUL" in excinfo.value.message_dict["parameters"][0]
