"""The portal's own dashboard panels: system health and background tasks."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Count as DbCount
from django.db.models.functions import TruncHour
from django.urls import reverse
from django.utils import timezone
from django.utils.timesince import timesince

from portal import dashboard, services


@dashboard.register(
    "health", title="System health", permission="portal.view_dashboard", order=0
)
def health_panel(request, now) -> dashboard.PanelData:
    report = services.health_check()["checks"]
    db, broker, cluster = report["database"], report["broker"], report["cluster"]
    data = dashboard.PanelData(empty_text="Database, broker and workers are up.")
    data.counts.append(
        dashboard.Count(
            "Database", "up" if db["ok"] else "down", "ok" if db["ok"] else "bad"
        )
    )
    data.counts.append(
        dashboard.Count(
            "Broker", "up" if broker["ok"] else "down", "ok" if broker["ok"] else "bad"
        )
    )
    workers = cluster.get("clusters", 0)
    data.counts.append(
        dashboard.Count("Worker clusters", workers, "ok" if cluster["ok"] else "bad")
    )
    for name, result in report.items():
        if not result["ok"]:
            data.attention.append(
                dashboard.Attention(
                    f"{name}: {result.get('error') or 'heartbeat too old'}", tone="bad"
                )
            )
    if cluster.get("age_seconds") is not None and not cluster["ok"]:
        data.attention.append(
            dashboard.Attention(
                f"Last worker heartbeat {cluster['age_seconds']:.0f} s ago", tone="bad"
            )
        )
    data.links.append(("/healthz", "Health JSON"))
    return data


def _queued() -> object:
    broker = services.health_check(only=["broker"])["checks"]["broker"]
    return broker.get("queued", "?")


@dashboard.register(
    "tasks", title="Background tasks", permission="portal.view_dashboard", order=90
)
def tasks_panel(request, now) -> dashboard.PanelData:
    from django_q.models import Failure, Schedule, Task

    since = now - timedelta(hours=24)
    recent = Task.objects.filter(stopped__gte=since)
    failed = recent.filter(success=False).count()
    succeeded = recent.filter(success=True).count()
    data = dashboard.PanelData(empty_text="No failed tasks in the last 24 hours.")
    data.counts = [
        dashboard.Count("Queued", _queued(), "info"),
        dashboard.Count(
            "Succeeded 24 h",
            succeeded,
            "ok",
            reverse("admin:django_q_success_changelist"),
        ),
        dashboard.Count(
            "Failed 24 h",
            failed,
            "bad" if failed else "muted",
            reverse("admin:django_q_failure_changelist"),
        ),
        dashboard.Count(
            "Schedules",
            Schedule.objects.count(),
            "info",
            reverse("admin:django_q_schedule_changelist"),
        ),
    ]
    for failure in Failure.objects.filter(stopped__gte=since).order_by("-stopped")[:5]:
        data.attention.append(
            dashboard.Attention(
                f"{failure.name or failure.func} failed "
                f"{timesince(failure.stopped, now)} ago",
                url=reverse("admin:django_q_failure_change", args=[failure.pk]),
                tone="bad",
                when=failure.stopped,
            )
        )
    per_hour = (
        recent.annotate(hour=TruncHour("stopped"))
        .values("hour", "success")
        .annotate(n=DbCount("id"))
    )
    start = (now - timedelta(hours=23)).replace(minute=0, second=0, microsecond=0)
    buckets = [{"ok": 0, "bad": 0} for _ in range(24)]
    for row in per_hour:
        index = int((row["hour"] - start).total_seconds() // 3600)
        if 0 <= index < 24:
            buckets[index]["ok" if row["success"] else "bad"] += row["n"]
    labels = [
        timezone.localtime(start + timedelta(hours=i)).strftime("%H:00")
        for i in range(24)
    ]
    data.chart = dashboard.bar_chart(
        buckets, labels=labels, title="Tasks per hour, last 24 h"
    )
    return data
