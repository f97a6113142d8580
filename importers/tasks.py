"""django-q2 (and system cron) entry points of the importers."""

from __future__ import annotations

from importers import services
from importers.models import ImportRun, ImportSource


def run_due() -> str:
    """The tick: run every due source once, one after another."""
    outcomes = services.run_due()
    return "; ".join(str(outcome) for outcome in outcomes) or "nothing due"


def run_source(source_id: int, triggered_by: str = "") -> str:
    """A run queued from the admin's Run now."""
    source = ImportSource.objects.filter(pk=source_id).first()
    if source is None:
        return f"source {source_id} no longer exists"
    try:
        run = services.run_source(
            source, trigger=ImportRun.Trigger.ADMIN, triggered_by=triggered_by
        )
    except services.RunRefused as exc:
        return f"not run: {exc}"
    return services.run_summary(run)


def prune() -> str:
    """The retention tick."""
    return f"{services.prune_runs()} import runs deleted"
