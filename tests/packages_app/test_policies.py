"""Concurrency policies, retries with backoff, and schedules enqueued once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from django.utils import timezone

from packages_app import services
from packages_app.models import Package, PackageRun

Status = PackageRun.Status
NOW = datetime(2026, 11, 22, 10, 0, 30, tzinfo=UTC)


def running_run(package) -> PackageRun:
    run = services.run_create(package=package, trigger="admin")
    assert services.run_claim(run)
    return run


def test_allow_runs_in_parallel(make_package):
    package = make_package("print(1)", concurrency=Package.Concurrency.ALLOW)
    running_run(package)
    second = services.run_create(package=package, trigger="admin")
    assert services.run_claim(second) is True


def test_skip_refuses_a_second_run(make_package):
    package = make_package("print(1)", concurrency=Package.Concurrency.SKIP)
    first = running_run(package)
    with pytest.raises(services.RunRefused) as excinfo:
        services.run_create(package=package, trigger="admin")
    assert excinfo.value.code == "skipped"
    assert f"run #{first.pk}" in str(excinfo.value)
    assert PackageRun.objects.count() == 1


def test_queue_waits_for_the_running_run_then_goes(make_package):
    package = make_package(
        "print('queued one ran')", concurrency=Package.Concurrency.QUEUE
    )
    first = running_run(package)
    waiting = services.run_create(package=package, trigger="admin")
    assert services.run_claim(waiting) is False
    # executing it while the first runs changes nothing
    assert services.run_execute(waiting).status == Status.QUEUED
    first.finish(Status.SUCCEEDED)
    nxt = services.run_dispatch_next(package)
    assert nxt == waiting
    assert services.run_execute(waiting).status == Status.SUCCEEDED


def test_a_disabled_package_is_refused(make_package):
    package = make_package("print(1)", enabled=False)
    with pytest.raises(services.RunRefused, match="is disabled"):
        services.run_create(package=package, trigger="cli")


def test_failures_are_retried_with_exponential_backoff(make_package, time_machine):
    time_machine.move_to(NOW, tick=False)
    package = make_package("raise SystemExit(1)", max_retries=2, retry_backoff=10)
    run = services.run_execute(services.run_create(package=package, trigger="cli"))
    assert run.status == Status.FAILED
    retry1 = PackageRun.objects.get(retry_of=run)
    assert (retry1.trigger, retry1.attempt) == ("retry", 2)
    assert retry1.not_before == NOW + timedelta(seconds=10)

    retry1 = services.run_execute(retry1)
    retry2 = PackageRun.objects.get(retry_of=retry1)
    assert retry2.attempt == 3
    assert retry2.not_before == NOW + timedelta(seconds=20)

    services.run_execute(retry2)
    # max_retries reached: no fourth attempt
    assert PackageRun.objects.filter(package=package).count() == 3


def test_a_cancelled_run_is_not_retried(make_package):
    package = make_package("print(1)", max_retries=3)
    run = services.run_create(package=package, trigger="cli")
    services.run_cancel(run)
    services.run_after_finish(PackageRun.objects.get(pk=run.pk))
    assert PackageRun.objects.count() == 1


def test_retry_is_enqueued_with_a_delay(
    make_package, django_capture_on_commit_callbacks
):
    package = make_package("raise SystemExit(1)", max_retries=1, retry_backoff=30)
    with (
        mock.patch("django_q.tasks.schedule", autospec=True) as schedule,
        django_capture_on_commit_callbacks(execute=True),
    ):
        services.run_execute(services.run_create(package=package, trigger="cli"))
    retry = PackageRun.objects.get(trigger="retry")
    assert schedule.call_args.args == ("packages_app.tasks.execute_run", retry.pk)
    assert schedule.call_args.kwargs["next_run"] == retry.not_before


def test_a_queued_run_is_sent_to_the_workers_with_a_task_timeout(
    make_package, django_capture_on_commit_callbacks, settings
):
    settings.PACKAGES_KILL_GRACE = 5
    package = make_package("print(1)", timeout=600)
    with (
        mock.patch("django_q.tasks.async_task", autospec=True) as async_task,
        django_capture_on_commit_callbacks(execute=True),
    ):
        run = services.package_run_now(
            package=package, trigger="api", triggered_by="key"
        )
    assert async_task.call_args.args == ("packages_app.tasks.execute_run", run.pk)
    # longer than the package timeout plus the kill grace
    assert async_task.call_args.kwargs["timeout"] == 600 + 5 + 60


def test_a_schedule_is_enqueued_once_per_occurrence(make_package, time_machine):
    time_machine.move_to(datetime(2026, 11, 22, 9, 59, 0, tzinfo=UTC), tick=False)
    package = make_package("print(1)", schedule="0 * * * *", schedule_tz="Europe/Riga")
    package.full_clean()
    package.save()
    assert package.next_scheduled_at == datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    stale_copy = Package.objects.get(pk=package.pk)

    time_machine.move_to(NOW, tick=False)
    first = services.schedules_enqueue()
    # a second scheduler, which read the package before the first advanced it
    with mock.patch.object(Package.objects, "filter") as filter_:
        filter_.return_value.exclude.return_value = [stale_copy]
        second = services.schedules_enqueue()
    again = services.schedules_enqueue()

    assert [r.scheduled_for for r in first] == [
        datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    ]
    assert second == [] and again == []
    assert PackageRun.objects.filter(package=package, trigger="schedule").count() == 1
    package.refresh_from_db()
    assert package.next_scheduled_at == datetime(2026, 11, 22, 11, 0, tzinfo=UTC)


def test_after_downtime_only_the_latest_missed_occurrence_runs(
    make_package, time_machine
):
    time_machine.move_to(datetime(2026, 11, 22, 6, 59, tzinfo=UTC), tick=False)
    package = make_package("print(1)", schedule="0 * * * *")
    package.full_clean()
    package.save()
    time_machine.move_to(
        NOW, tick=False
    )  # 10:00:30; 07:00, 08:00, 09:00, 10:00 are due
    runs = services.schedules_enqueue()
    assert [r.scheduled_for.hour for r in runs] == [10]
    package.refresh_from_db()
    assert package.next_scheduled_at.hour == 11


def test_schedule_respects_the_packages_time_zone(make_package):
    package = make_package(
        "print(1)", schedule="30 2 * * *", schedule_tz="America/New_York"
    )
    with mock.patch("packages_app.models.timezone.now", return_value=NOW):
        package.full_clean()
    assert package.next_scheduled_at == datetime(2026, 11, 23, 7, 30, tzinfo=UTC)
    assert timezone.is_aware(package.next_scheduled_at)


def test_the_reconciler_hands_out_a_queued_run_nobody_dispatched(
    make_package, django_capture_on_commit_callbacks
):
    package = make_package("print(1)", concurrency=Package.Concurrency.QUEUE)
    waiting = services.run_create(package=package, trigger="admin")
    with (
        mock.patch("django_q.tasks.async_task", autospec=True) as async_task,
        django_capture_on_commit_callbacks(execute=True),
    ):
        services.runs_reconcile()
    assert async_task.call_args.args == ("packages_app.tasks.execute_run", waiting.pk)
