"""One list of periodic jobs feeds django-q2 schedules and system cron."""

from __future__ import annotations

import io

from django.conf import settings
from django.core.management import call_command
from django_q.models import Schedule

from portal import services
from portal.ticks import TICKS


def schedule_rows() -> list[tuple]:
    return list(
        Schedule.objects.order_by("name").values_list(
            "id", "name", "func", "schedule_type", "cron", "repeats", "next_run"
        )
    )


def test_running_it_twice_gives_the_same_schedules(db):
    out = io.StringIO()
    call_command("setup_schedules", stdout=out)
    first = schedule_rows()
    call_command("setup_schedules", stdout=out)
    assert schedule_rows() == first
    assert len(first) == len(TICKS)
    assert {row[1] for row in first} == {"tick:" + t.name for t in TICKS}
    assert all(row[3] == Schedule.CRON and row[5] == -1 for row in first)
    assert "up to date" in out.getvalue()


def test_it_repairs_an_edited_schedule_and_drops_removed_ticks(db):
    services.schedules_sync()
    tick = TICKS[0]
    Schedule.objects.filter(name="tick:" + tick.name).update(cron="0 0 1 1 *")
    Schedule.objects.create(
        name="tick:gone.away", func="x.y", schedule_type="C", cron="* * * * *"
    )
    Schedule.objects.create(name="hand-made", func="x.y", schedule_type="H")
    services.schedules_sync()
    assert Schedule.objects.get(name="tick:" + tick.name).cron == tick.cron
    assert not Schedule.objects.filter(name="tick:gone.away").exists()
    # schedules that operators made by hand are not ours to delete
    assert Schedule.objects.filter(name="hand-made").exists()


def test_cronjobs_list_the_same_functions():
    assert settings.CRONJOBS == [(t.cron, t.func) for t in TICKS]
    assert settings.CRONTAB_DJANGO_MANAGE_PATH.endswith("manage.py")


def test_tick_functions_import_and_run(db):
    from django.utils.module_loading import import_string

    for tick in TICKS:
        assert callable(import_string(tick.func))
    assert services.tick_call(name="portal.prune_task_history") == 0


def test_prune_deletes_only_old_results(db, settings):
    from datetime import timedelta

    from django.utils import timezone
    from django_q.models import Task

    settings.TASK_HISTORY_DAYS = 7
    now = timezone.now()
    for i, age in enumerate((1, 6, 8, 30)):
        Task.objects.create(
            id=f"t{i}",
            name=f"t{i}",
            func="f",
            started=now - timedelta(days=age),
            stopped=now - timedelta(days=age),
            success=bool(i % 2),
        )
    assert services.task_history_prune(now=now) == 2
    assert sorted(Task.objects.values_list("name", flat=True)) == ["t0", "t1"]


def test_run_now_enqueues_the_tick(db):
    from django_q.models import OrmQ

    task_id = services.tick_enqueue(name="portal.prune_task_history")
    assert task_id
    assert OrmQ.objects.count() == 1


def test_system_cron_runs_the_same_function(db, settings):
    """`crontab add` installs `manage.py crontab run <hash>` lines; run one here."""
    from datetime import timedelta

    from django.utils import timezone
    from django_crontab.crontab import Crontab
    from django_q.models import Task

    settings.TASK_HISTORY_DAYS = 1
    old = timezone.now() - timedelta(days=3)
    Task.objects.create(
        id="old", name="old", func="f", started=old, stopped=old, success=True
    )
    job = next(
        j for j in settings.CRONJOBS if j[1] == "portal.tasks.prune_task_history"
    )
    job_hash = Crontab()._Crontab__hash_job(job)
    call_command("crontab", "run", job_hash)
    assert not Task.objects.filter(id="old").exists()
