"""django-q2 task functions of the packages app; each calls one service."""

from __future__ import annotations

from packages_app import services
from packages_app.models import PackageRun, PipelineRun


def execute_run(run_id: int) -> str:
    run = PackageRun.objects.select_related("package").filter(pk=run_id).first()
    if run is None:
        return "gone"
    return services.run_execute(run).status


def enqueue_scheduled() -> int:
    return len(services.schedules_enqueue())


def execute_pipeline(run_id: int) -> str:
    run = PipelineRun.objects.filter(pk=run_id).first()
    if run is None:
        return "gone"
    return services.pipeline_execute(run).status


def reconcile_runs() -> int:
    return len(services.runs_reconcile()) + len(services.pipelines_reconcile())


def reconcile_on_worker_start(sender=None, **kwargs) -> None:
    """django-q2 post_spawn receiver: a (re)started worker reconciles at once."""
    services.runs_reconcile()
    services.pipelines_reconcile()
