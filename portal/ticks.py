"""The one list of periodic jobs ("ticks") of the whole portal.

Each app adds its ticks here. The same list feeds two schedulers, so a deployment
picks one and both run the very same functions:

* django-q2: ``python manage.py setup_schedules`` upserts one ``Schedule`` per tick;
* system cron: ``CRONJOBS`` in settings, installed by ``python manage.py crontab add``.

This module is plain data: settings import it, so it must not import models.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tick:
    """A periodic job: a dotted path to a function taking no arguments, and a cron."""

    name: str
    func: str
    cron: str
    description: str

    @property
    def crontab_guru(self) -> str:
        return "https://crontab.guru/#" + self.cron.replace(" ", "_")


TICKS: list[Tick] = [
    Tick(
        name="portal.prune_task_history",
        func="portal.tasks.prune_task_history",
        cron="17 3 * * *",
        description="Delete django-q2 task results older than the retention period.",
    ),
    Tick(
        name="packages.enqueue_scheduled",
        func="packages_app.tasks.enqueue_scheduled",
        cron="* * * * *",
        description="Enqueue one run per due cron occurrence of scheduled packages.",
    ),
    Tick(
        name="packages.reconcile_runs",
        func="packages_app.tasks.reconcile_runs",
        cron="* * * * *",
        description="Mark runs whose heartbeat stopped as lost and kill what is left.",
    ),
    Tick(
        name="fleet.cleanup",
        func="fleet.tasks.cleanup",
        cron="* * * * *",
        description="Mark silent agents lost or dropped (requeueing or failing their "
        "tasks), expire tasks past their TTL, time out overdue claimed tasks.",
    ),
    Tick(
        name="affirmations.check",
        func="affirmations.tasks.check",
        cron="* * * * *",
        description="Evaluate every due check occurrence once, then send the alerts "
        "of the outbox.",
    ),
    Tick(
        name="affirmations.prune",
        func="affirmations.tasks.prune",
        cron="41 3 * * *",
        description="Delete affirmations and evaluations past their retention, in "
        "batches.",
    ),
    Tick(
        name="importers.run_due",
        func="importers.tasks.run_due",
        cron="* * * * *",
        description="Run every import source whose next due time has passed, one "
        "after another (a source already running elsewhere is skipped).",
    ),
    Tick(
        name="importers.prune",
        func="importers.tasks.prune",
        cron="53 3 * * *",
        description="Delete import runs past their retention, in batches (each "
        "source's last run is kept).",
    ),
]


def get_tick(name: str) -> Tick | None:
    return next((tick for tick in TICKS if tick.name == name), None)


def crontab_entries() -> list[tuple[str, str]]:
    """``CRONJOBS`` for django-crontab: ``(cron, dotted function path)`` pairs."""
    return [(tick.cron, tick.func) for tick in TICKS]
