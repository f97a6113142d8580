"""Portal-wide workflows: health, API keys, periodic-job schedules, demo logins."""

from __future__ import annotations

import logging
import secrets
import time
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from portal.models import ApiKey
from portal.ticks import TICKS, Tick, get_tick

logger = logging.getLogger(__name__)
CLUSTER_LAST_SEEN_KEY = "portal:cluster-last-seen"
# django-q2 schedules owned by the tick list are named "tick:<tick name>".
SCHEDULE_PREFIX = "tick:"


# --- Health -------------------------------------------------------------------
def _check_database() -> dict:
    started = time.monotonic()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        return {"ok": False, "error": str(exc).strip().splitlines()[0][:200]}
    return {"ok": True, "latency_ms": round((time.monotonic() - started) * 1000, 1)}


def _check_broker() -> dict:
    from django_q.brokers import get_broker

    started = time.monotonic()
    try:
        broker = get_broker()
        # The ORM broker's ping() always says yes; counting its queue proves the
        # table is reachable. The Redis broker's ping() really asks the server.
        if not broker.ping():
            return {"ok": False, "broker": broker.info(), "error": "ping failed"}
        queued = broker.queue_size()
    except Exception as exc:  # any client error means "unreachable" here
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:200]}
    return {
        "ok": True,
        "broker": broker.info(),
        "queued": queued,
        "latency_ms": round((time.monotonic() - started) * 1000, 1),
    }


def cluster_last_heartbeat() -> tuple[datetime | None, int]:
    """Newest django-q2 cluster heartbeat and the number of live clusters.

    Clusters refresh their stats every guard cycle with a 3 s expiry, so a dead
    cluster simply vanishes; the newest heartbeat seen is kept in the cache so the
    age of the last one can still be told afterwards.
    """
    from django_q.status import Stat

    stats = Stat.get_all() or []
    newest = max((s.timestamp for s in stats), default=None)
    if newest is not None:
        cache.set(CLUSTER_LAST_SEEN_KEY, newest.isoformat(), None)
        return newest, len(stats)
    seen = cache.get(CLUSTER_LAST_SEEN_KEY)
    return (datetime.fromisoformat(seen) if seen else None), 0


def _check_cluster(now: datetime) -> dict:
    try:
        last, live = cluster_last_heartbeat()
    except Exception as exc:  # cache or broker down: report, never raise
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:200]}
    if last is None:
        return {
            "ok": False,
            "clusters": 0,
            "last_heartbeat": None,
            "age_seconds": None,
            "error": "no django-q2 cluster has reported; start `manage.py qcluster`",
        }
    age = max(0.0, (now - last).total_seconds())
    return {
        "ok": live > 0 and age <= settings.HEALTH_HEARTBEAT_MAX_AGE,
        "clusters": live,
        "last_heartbeat": last.isoformat(),
        "age_seconds": round(age, 1),
    }


HEALTH_CHECKS = ("database", "broker", "cluster")


def health_check(*, only: list[str] | None = None) -> dict:
    """Health of the database, the broker and the workers, as a JSON-able dict."""
    frozen_now = timezone.now()
    wanted = [name for name in HEALTH_CHECKS if not only or name in only]
    results: dict[str, dict] = {}
    for name in wanted:
        if name == "database":
            results[name] = _check_database()
        elif name == "broker":
            results[name] = _check_broker()
        else:
            results[name] = _check_cluster(frozen_now)
    ok = all(r["ok"] for r in results.values())
    return {
        "status": "ok" if ok else "fail",
        "time": frozen_now.isoformat(),
        "checks": results,
    }


# --- API keys -------------------------------------------------------------------
def api_key_create(
    *, name: str, scopes: list[str], created_by=None
) -> tuple[ApiKey, str]:
    """Create a key and return it with its plaintext, which is never stored."""
    key = ApiKey(name=name, scopes=sorted(set(scopes)), created_by=created_by)
    plaintext = key.generate()
    key.full_clean()
    key.save()
    logger.info("API key %s (%s) created", key.prefix, key.name)
    return key, plaintext


# --- Periodic jobs ----------------------------------------------------------------
def schedules_sync() -> list[tuple[Tick, bool]]:
    """Upsert one django-q2 ``Schedule`` per tick; returns (tick, created) pairs.

    Matched by name, so running it twice changes nothing; schedules that were
    created by ticks since removed from the list are deleted.
    """
    from django_q.models import Schedule

    results = []
    with transaction.atomic():
        for tick in TICKS:
            schedule_name = SCHEDULE_PREFIX + tick.name
            schedule = Schedule.objects.filter(name=schedule_name).first()
            created = schedule is None
            if created:
                schedule = Schedule(name=schedule_name)
            changed = created or (
                schedule.func,
                schedule.schedule_type,
                schedule.cron,
                schedule.repeats,
            ) != (tick.func, Schedule.CRON, tick.cron, -1)
            if changed:
                schedule.func = tick.func
                schedule.schedule_type = Schedule.CRON
                schedule.cron = tick.cron
                schedule.repeats = -1
                # Let django-q2 compute the next run from the (new) cron.
                schedule.next_run = timezone.now()
                schedule.save()
            results.append((tick, created))
        names = [SCHEDULE_PREFIX + tick.name for tick in TICKS]
        Schedule.objects.filter(name__startswith=SCHEDULE_PREFIX).exclude(
            name__in=names
        ).delete()
    return results


def tick_call(*, name: str) -> object:
    """Run a tick's function in this process (used by the worker for "run now")."""
    tick = get_tick(name)
    if tick is None:
        raise ValueError(f"unknown periodic job {name!r}")
    return import_string(tick.func)()


def tick_enqueue(*, name: str) -> str:
    """Queue a tick to run now on the workers; returns the django-q2 task id."""
    from django_q.tasks import async_task

    if get_tick(name) is None:
        raise ValueError(f"unknown periodic job {name!r}")
    return async_task("portal.tasks.run_tick", name, task_name=f"{name} (run now)")


def task_history_prune(*, now: datetime | None = None) -> int:
    """Delete django-q2 results older than ``TASK_HISTORY_DAYS``; returns the count."""
    from django_q.models import Task

    cutoff = (now or timezone.now()) - timedelta(days=settings.TASK_HISTORY_DAYS)
    deleted, _ = Task.objects.filter(stopped__lt=cutoff).delete()
    return deleted


# --- Demo logins ------------------------------------------------------------------
def login_ensure(
    *,
    username: str,
    superuser: bool = False,
    groups: list[str] | None = None,
    password_dir: Path | None = None,
) -> tuple[object, str]:
    """Create or repair a staff login for the quick start; returns (user, password).

    The password is kept in ``var/passwords/<username>`` (mode 600) so restarts
    print the same one; it is replaced when the file no longer matches the user.
    """
    password_dir = password_dir or Path(settings.VAR_DIR) / "passwords"
    password_dir.mkdir(parents=True, exist_ok=True)
    password_file = password_dir / username
    user_model = get_user_model()
    user, _ = user_model.objects.get_or_create(
        username=username, defaults={"email": f"{username}@localhost"}
    )
    password = password_file.read_text().strip() if password_file.exists() else ""
    if not password or not user.check_password(password):
        password = secrets.token_urlsafe(12)
        user.set_password(password)
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
    user.is_staff = True
    user.is_active = True
    user.is_superuser = superuser
    user.full_clean()
    user.save()
    if groups:
        user.groups.set(Group.objects.filter(name__in=groups))
    return user, password
