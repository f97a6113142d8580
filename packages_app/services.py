"""Package workflows: create, enqueue, claim, execute, cancel, retry, schedule,
reconcile. Views, admin actions, commands and tasks call these."""

from __future__ import annotations

import logging
import shutil
import socket
from datetime import datetime, timedelta
from typing import BinaryIO

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from packages_app.models import (
    Package,
    PackageRun,
    PipelineCommand,
    PipelineRun,
    PipelineStep,
)
from portal.lib.cron import next_after

logger = logging.getLogger(__name__)
Status = PackageRun.Status


class RunRefused(Exception):
    """A run was not created: the package is disabled, or its policy says skip."""

    def __init__(self, message: str, *, code: str):
        super().__init__(message)
        self.code = code


def package_upsert(*, fields: dict) -> tuple[Package, bool]:
    """Create the package ``fields["slug"]`` or update only the given fields (a
    schedule or policy set in the admin survives a re-import); (package, created)."""
    package = Package.objects.filter(slug=fields["slug"]).first()
    created = package is None
    package = package or Package()
    for name, value in fields.items():
        setattr(package, name, value)
    package.full_clean()
    package.save()
    return package, created


def parse_parameters(pairs: list[str]) -> dict:
    """``key=value`` pairs from the command line; values that are JSON are parsed."""
    import json

    result: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValidationError({"parameters": f"{pair!r} is not key=value."})
        try:
            result[key.strip()] = json.loads(value)
        except ValueError:
            result[key.strip()] = value
    return result


def run_create(
    *,
    package: Package,
    trigger: str,
    triggered_by: str = "",
    parameters: dict | None = None,
    timeout: int | None = None,
    notify: bool = True,
    scheduled_for: datetime | None = None,
    retry_of: PackageRun | None = None,
    not_before: datetime | None = None,
) -> PackageRun:
    """A new QUEUED run, or ``RunRefused`` (disabled, or skipped by policy)."""
    if not package.enabled and trigger != PackageRun.Trigger.RETRY:
        raise RunRefused(f"Package {package.slug} is disabled.", code="disabled")
    if parameters is not None and not isinstance(parameters, dict):
        raise ValidationError({"parameters": "Must be a JSON object."})
    with transaction.atomic():
        if package.concurrency == Package.Concurrency.SKIP:
            active = (
                PackageRun.objects.active()
                .filter(package=package)
                .order_by("pk")
                .first()
            )
            if active is not None:
                raise RunRefused(
                    f"Skipped: {package.slug} already has run #{active.pk} "
                    f"{active.status} (policy: skip if running).",
                    code="skipped",
                )
        run = PackageRun(
            package=package,
            trigger=trigger,
            triggered_by=triggered_by[:150],
            parameters=parameters or {},
            timeout=timeout or package.timeout,
            notify=notify,
            scheduled_for=scheduled_for,
            attempt=(retry_of.attempt + 1) if retry_of else 1,
            retry_of=retry_of,
            not_before=not_before,
        )
        run.full_clean()
        run.save()
    return run


def task_timeout(run: PackageRun) -> int:
    """django-q2's limit for the task: the run's timeout, its kill grace, a margin."""
    return run.timeout + settings.PACKAGES_KILL_GRACE + 60


def run_enqueue(run: PackageRun) -> PackageRun:
    """Hand the run to the workers once the transaction commits."""
    from django_q.tasks import async_task, schedule

    def send() -> None:
        if run.not_before and run.not_before > timezone.now():
            from django_q.models import Schedule

            schedule(
                "packages_app.tasks.execute_run",
                run.pk,
                name=f"package-run-{run.pk}",
                schedule_type=Schedule.ONCE,
                next_run=run.not_before,
                repeats=1,
            )
        else:
            async_task(
                "packages_app.tasks.execute_run",
                run.pk,
                task_name=f"package {run.package.slug} run {run.pk}",
                timeout=task_timeout(run),
            )

    transaction.on_commit(send)
    return run


def run_claim(run: PackageRun) -> bool:
    """QUEUED → RUNNING, once. With the queue policy, only when no other run of the
    package is running; the package row is locked so two claims can't both pass."""
    now = timezone.now()
    with transaction.atomic():
        package = Package.objects.select_for_update().get(pk=run.package_id)
        if package.concurrency == Package.Concurrency.QUEUE:
            if (
                PackageRun.objects.filter(package=package, status=Status.RUNNING)
                .exclude(pk=run.pk)
                .exists()
            ):
                return False
        claimed = (
            PackageRun.objects.filter(pk=run.pk, status=Status.QUEUED).update(
                status=Status.RUNNING,
                started_at=now,
                heartbeat_at=now,
                host=socket.gethostname(),
            )
            == 1
        )
    if claimed:
        run.status, run.started_at, run.heartbeat_at = Status.RUNNING, now, now
    return claimed


def run_execute(run: PackageRun, *, echo: BinaryIO | None = None) -> PackageRun:
    """Claim and run; then notify, retry and start the next queued run."""
    from packages_app import runner

    if not run_claim(run):
        run.refresh_from_db()
        return run
    runner.execute(run, echo=echo)
    run.refresh_from_db()
    run_after_finish(run)
    return run


def run_after_finish(run: PackageRun) -> None:
    """What follows a terminal status: email, a retry, the next queued run."""
    from packages_app import notifications

    if run.notify:
        try:
            notifications.run_finished(run)
        except Exception:  # mail trouble must not lose the retry or the queue
            logger.exception("notifying about run %s failed", run.pk)
    run_retry(run)
    run_dispatch_next(run.package)


def run_retry(run: PackageRun) -> PackageRun | None:
    """Queue the next attempt of a failed run, with exponential backoff."""
    package = run.package
    if run.status not in PackageRun.FAILURES or run.attempt > package.max_retries:
        return None
    delay = package.retry_backoff * (2 ** (run.attempt - 1))
    retry = run_create(
        package=package,
        trigger=PackageRun.Trigger.RETRY,
        triggered_by=f"retry of #{run.pk}",
        parameters=run.parameters,
        timeout=run.timeout,
        notify=run.notify,
        scheduled_for=None,
        retry_of=run,
        not_before=timezone.now() + timedelta(seconds=delay),
    )
    return run_enqueue(retry)


def run_dispatch_next(package: Package) -> PackageRun | None:
    """With the queue policy, hand the oldest waiting run to the workers."""
    if package.concurrency != Package.Concurrency.QUEUE:
        return None
    if PackageRun.objects.filter(package=package, status=Status.RUNNING).exists():
        return None
    now = timezone.now()
    nxt = (
        PackageRun.objects.filter(package=package, status=Status.QUEUED)
        .exclude(not_before__gt=now)
        .order_by("queued_at", "pk")
        .first()
    )
    return run_enqueue(nxt) if nxt else None


def run_cancel(run: PackageRun) -> bool:
    """Cancel a queued run at once, or ask a running one to stop (the runner kills
    its process group within about a second)."""
    if run.cancel_if_queued():
        return True
    run.refresh_from_db()
    if run.status == Status.RUNNING:
        return run.request_cancel()
    return False


def package_run_now(
    *,
    package: Package,
    trigger: str,
    triggered_by: str,
    parameters: dict | None = None,
    timeout: int | None = None,
    notify: bool = True,
) -> PackageRun:
    """Create and enqueue a run (admin button, API, ``run_package --queue``)."""
    run = run_create(
        package=package,
        trigger=trigger,
        triggered_by=triggered_by,
        parameters=parameters,
        timeout=timeout,
        notify=notify,
    )
    return run_enqueue(run)


def schedules_enqueue(now: datetime | None = None) -> list[PackageRun]:
    """Enqueue one run per due cron occurrence of every scheduled package.

    The occurrence is claimed by the unique (package, scheduled_for) constraint,
    so two schedulers running at once enqueue it once. After downtime only the
    latest missed occurrence runs; older ones are skipped and logged.
    """
    now = now or timezone.now()
    created = []
    due = Package.objects.filter(enabled=True, next_scheduled_at__lte=now).exclude(
        schedule=""
    )
    for package in due:
        occurrence = package.next_scheduled_at
        following = next_after(package.schedule, package.schedule_tz, occurrence)
        skipped = 0
        while following <= now:
            occurrence, following = (
                following,
                next_after(package.schedule, package.schedule_tz, following),
            )
            skipped += 1
        if skipped:
            logger.warning("%s: %d missed occurrence(s) skipped", package.slug, skipped)
        Package.objects.filter(
            pk=package.pk, next_scheduled_at=package.next_scheduled_at
        ).update(next_scheduled_at=following)
        taken = PackageRun.objects.filter(
            package=package,
            trigger=PackageRun.Trigger.SCHEDULE,
            scheduled_for=occurrence,
        )
        if taken.exists():
            continue
        try:
            with transaction.atomic():
                run = run_create(
                    package=package,
                    trigger=PackageRun.Trigger.SCHEDULE,
                    triggered_by="schedule",
                    scheduled_for=occurrence,
                )
        except (IntegrityError, ValidationError) as exc:
            # Another scheduler created this occurrence's run between the check
            # and the insert; the unique constraint refused the second one.
            logger.info(
                "%s: occurrence %s already taken (%s)", package.slug, occurrence, exc
            )
            continue
        except RunRefused as exc:
            logger.info("%s: scheduled run not created: %s", package.slug, exc)
            continue
        created.append(run_enqueue(run))
    return created


def runs_reconcile(now: datetime | None = None) -> list[PackageRun]:
    """Mark RUNNING runs whose heartbeat stopped as LOST, killing their processes
    when they ran on this host; then retry, notify and dispatch as usual."""
    from packages_app import runner

    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.PACKAGES_LOST_AFTER)
    host = socket.gethostname()
    lost = []
    for run in PackageRun.objects.filter(
        status=Status.RUNNING, heartbeat_at__lt=stale
    ).select_related("package"):
        if not run.finish(
            Status.LOST,
            now=now,
            error=f"No heartbeat since {run.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC: "
            "the worker running it died or was killed.",
        ):
            continue
        lost.append(run)
        run_after_finish(run)
    # Kill what is left of lost runs of this host, including those another host's
    # reconciler marked lost. By marker only: the run's process group id may have
    # been reused by now, its UUID cannot have been.
    recent = now - timedelta(days=1)
    for run in PackageRun.objects.filter(
        status=Status.LOST, host=host, finished_at__gte=recent
    ).only("uuid"):
        runner.kill_run_processes(None, str(run.uuid))
    # A queue-policy run waits for a dispatch when the run ahead of it ends; if
    # that dispatch was lost (a worker died), hand it out again here.
    waiting = Package.objects.filter(
        concurrency=Package.Concurrency.QUEUE, runs__status=Status.QUEUED
    ).exclude(runs__status=Status.RUNNING)
    for package in waiting.distinct():
        run_dispatch_next(package)
    return lost


# --- Pipelines -------------------------------------------------------------------


class PipelineRefused(Exception):
    """A pipeline could not start; the run is recorded (FAILED) with this error."""

    def __init__(self, message: str, *, field: str, run: PipelineRun | None = None):
        super().__init__(message)
        self.message, self.field, self.run = message, field, run


def pipeline_prepare(
    *,
    url: str,
    ref: str = "",
    environment: dict | None = None,
    callback_urls: dict[str, str] | None = None,
    trigger: str = PipelineRun.Trigger.API,
    triggered_by: str = "",
    rerun_of: PipelineRun | None = None,
) -> PipelineRun:
    """Clone and parse; record the run with its steps and commands (PENDING).

    Raises PipelineRefused when the URL, the clone or the pipeline file is bad; the
    run is then saved as FAILED with the reason, and its workspace removed.
    """
    from packages_app import gitsource, pipeline_spec, pipelines

    urls = callback_urls or {}
    run = PipelineRun(
        name=gitsource.run_name(url),
        url=gitsource.redact(url)[:2000],
        ref=ref[:250],
        environment=environment or {},
        pipeline_callback_url=urls.get("run", ""),
        step_callback_url=urls.get("step", ""),
        cmd_callback_url=urls.get("cmd", ""),
        trigger=trigger,
        triggered_by=triggered_by,
        rerun_of=rerun_of,
    )
    run.save()
    workspace = pipelines.workspaces_dir() / str(run.uuid)
    try:
        checkout = gitsource.clone(url, ref, workspace)
        spec = pipeline_spec.load(
            checkout.path, allow_host_network=settings.PIPELINE_ALLOW_HOST_NETWORK
        )
        _check_pipeline_timeout(spec.timeout or settings.PIPELINE_TIMEOUT)
    except (gitsource.SourceError, pipeline_spec.SpecError) as exc:
        shutil.rmtree(workspace, ignore_errors=True)
        field = getattr(exc, "field", "pipeline")
        run.finish(PipelineRun.Status.FAILED, error=str(exc))
        raise PipelineRefused(str(exc), field=field, run=run) from exc
    with transaction.atomic():
        run.commit = checkout.commit
        run.workspace = str(checkout.path)
        run.timeout = spec.timeout
        run.save(update_fields=["commit", "workspace", "timeout"])
        for step_no, step_spec in enumerate(spec.steps, start=1):
            step = PipelineStep.objects.create(
                run=run,
                step_no=step_no,
                name=step_spec.name,
                image=step_spec.image,
                environment=step_spec.environment,
                timeout=step_spec.timeout,
                allow_failure=step_spec.allow_failure,
                network=step_spec.network,
            )
            PipelineCommand.objects.bulk_create(
                PipelineCommand(step=step, cmd_no=cmd_no, instruction=line)
                for cmd_no, line in enumerate(step_spec.script, start=1)
            )
    return run


def _check_pipeline_timeout(seconds: int) -> None:
    """django-q2 hands a task out again after Q_RETRY: a pipeline must end before."""
    from packages_app import pipeline_spec
    from packages_app.models import max_run_timeout

    most = max_run_timeout()
    if most is not None and seconds > most:
        raise pipeline_spec.SpecError(
            f"The pipeline timeout {seconds} s is over the workers' limit of {most} s "
            f"(Q_RETRY={settings.Q_CLUSTER['retry']} s)."
        )


def pipeline_task_timeout(run: PipelineRun) -> int:
    return (run.timeout or settings.PIPELINE_TIMEOUT) + 60


def pipeline_enqueue(run: PipelineRun) -> PipelineRun:
    """Hand the run to the workers once the transaction commits."""
    from django_q.tasks import async_task

    transaction.on_commit(
        lambda: async_task(
            "packages_app.tasks.execute_pipeline",
            run.pk,
            task_name=f"pipeline {run.name} {run.uuid}",
            timeout=pipeline_task_timeout(run),
        )
    )
    return run


def pipeline_request(**kwargs) -> PipelineRun:
    """``POST /api/request``: prepare (clone, parse, record), then queue the run."""
    return pipeline_enqueue(pipeline_prepare(**kwargs))


def pipeline_execute(run: PipelineRun, **kwargs) -> PipelineRun:
    from packages_app import pipelines

    return pipelines.execute(run, **kwargs)


def pipeline_cancel(run: PipelineRun) -> bool:
    """Stop a pending run at once, or a running one within about a second."""
    return run.request_cancel()


def pipeline_rerun(run: PipelineRun, *, triggered_by: str = "") -> PipelineRun:
    """The same repository at the same commit, cloned again, as a new run.

    Callback URLs and the environment carry over; credentials were never stored, so a
    private repository needs its access configured on the host (ssh key, helper)."""
    return pipeline_request(
        url=run.url,
        ref=run.commit or run.ref,
        environment=run.environment,
        callback_urls={
            "run": run.pipeline_callback_url,
            "step": run.step_callback_url,
            "cmd": run.cmd_callback_url,
        },
        trigger=PipelineRun.Trigger.RERUN,
        triggered_by=triggered_by,
        rerun_of=run,
    )


def pipelines_reconcile(now: datetime | None = None) -> list[PipelineRun]:
    """Runs whose worker died (no heartbeat for PACKAGES_LOST_AFTER) end FAILED,
    their containers and workspace removed."""
    from packages_app import containers, pipelines

    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.PACKAGES_LOST_AFTER)
    lost = []
    for run in PipelineRun.objects.filter(
        status=PipelineRun.Status.IN_PROGRESS, heartbeat_at__lt=cutoff
    ):
        if not run.finish(
            PipelineRun.Status.FAILED,
            now=now,
            error="Lost: the worker running it stopped sending heartbeats.",
        ):
            continue
        run.steps.filter(
            status__in=[PipelineRun.Status.PENDING, PipelineRun.Status.IN_PROGRESS]
        ).update(status=PipelineRun.Status.ABORTED)
        if run.executor == "docker":
            containers.remove_run_containers(str(run.uuid))
        shutil.rmtree(pipelines.workspace_path(run), ignore_errors=True)
        lost.append(run)
    return lost
