"""The importers panel of the dashboard, and the display helpers the admin shares
with it: run status badges, links, due times relative to now."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count as DbCount
from django.db.models import Q, Sum
from django.db.models.functions import TruncHour
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from importers.models import ImportRun, ImportSource
from portal import dashboard
from portal.dashboard import format_age

Status = ImportRun.Status

STATUS_TONES = {
    Status.RUNNING: "info",
    Status.SUCCEEDED: "ok",
    Status.PARTIAL: "warn",
    Status.FAILED: "bad",
}
# A source due longer ago than this, and not running, is late: the tick runs every
# minute, so a few minutes mean the scheduler is down or busy with other sources.
LATE_AFTER = timedelta(minutes=5)
# Lines of each kind in the panel's attention list at most.
ATTENTION_SHOWN = 6


def status_badge(status: str | None) -> SafeString:
    label = Status(status).label if status in Status.values else status
    return dashboard.badge(status, label or "", STATUS_TONES.get(status, "muted"))


def source_url(source_id: int) -> str:
    return reverse("admin:importers_importsource_change", args=[source_id])


def run_url(run_id: int) -> str:
    return reverse("admin:importers_importrun_change", args=[run_id])


def relative(value: datetime, now: datetime) -> str:
    """``in 4 min`` for the future, ``3 min ago`` for the past."""
    seconds = (value - now).total_seconds()
    if seconds >= 0:
        return f"in {format_age(seconds)}"
    return f"{format_age(-seconds)} ago"


def moment(value: datetime | None, now: datetime, *, empty: str = "—") -> SafeString:
    """Relative to now, with the absolute UTC time as its tooltip."""
    if value is None:
        return format_html("{}", empty)
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        value.isoformat(),
        timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z"),
        relative(value, now),
    )


def next_due(source: ImportSource, now: datetime) -> SafeString:
    """When the scheduler runs the source next; ``due now`` when it is waiting for
    the next tick, ``disabled`` when it does not run on its own."""
    if not source.enabled:
        return format_html("{}", "disabled")
    if source.next_due_at is None or source.next_due_at <= now:
        due = source.next_due_at or now
        return format_html(
            '<time datetime="{}" title="{}">due now</time>',
            due.isoformat(),
            timezone.localtime(due).strftime("%Y-%m-%d %H:%M:%S %Z"),
        )
    return moment(source.next_due_at, now)


def stale_lock(source: ImportSource, now: datetime) -> bool:
    return bool(
        source.running_since
        and source.running_since
        < now - timedelta(minutes=settings.IMPORTERS_LOCK_STALE_MINUTES)
    )


def _failing(now: datetime) -> list[dashboard.Attention]:
    failing = (
        ImportSource.objects.filter(
            enabled=True, last_run__status__in=[Status.FAILED, Status.PARTIAL]
        )
        .select_related("last_run")
        .only(
            "id",
            "name",
            "last_run__id",
            "last_run__status",
            "last_run__error",
            "last_run__finished_at",
            "last_run__points_pending",
        )
        .order_by("last_run__status", "-last_run__finished_at")[:ATTENTION_SHOWN]
    )
    items = []
    for source in failing:
        run = source.last_run
        word = "failed" if run.status == Status.FAILED else "partial"
        detail = run.error or f"{run.points_pending} point(s) pending"
        items.append(
            dashboard.Attention(
                f"{source.name}: last run {word} — {detail[:120]}",
                url=run_url(run.pk),
                tone="bad" if run.status == Status.FAILED else "warn",
                when=run.finished_at,
            )
        )
    return items


def _late(now: datetime) -> list[dashboard.Attention]:
    late = (
        ImportSource.objects.filter(enabled=True, next_due_at__lt=now - LATE_AFTER)
        .filter(running_since__isnull=True)
        .only("id", "name", "next_due_at")
        .order_by("next_due_at")[:ATTENTION_SHOWN]
    )
    items = [
        dashboard.Attention(
            f"{source.name}: late, due {relative(source.next_due_at, now)} "
            "(is the importers.run_due tick running?)",
            url=source_url(source.pk),
            tone="warn",
            when=source.next_due_at,
        )
        for source in late
    ]
    stuck = (
        ImportSource.objects.filter(
            running_since__lt=now
            - timedelta(minutes=settings.IMPORTERS_LOCK_STALE_MINUTES)
        )
        .only("id", "name", "running_since", "running_run_id")
        .order_by("running_since")[:ATTENTION_SHOWN]
    )
    items += [
        dashboard.Attention(
            f"{source.name}: running for "
            f"{format_age((now - source.running_since).total_seconds())}; its lock "
            "is stale and the next run takes it over",
            url=source_url(source.pk),
            tone="warn",
            when=source.running_since,
        )
        for source in stuck
    ]
    return items


def points_chart(now: datetime) -> SafeString:
    """Points sent per hour over the last 24 hours, oldest first."""
    start = (now - timedelta(hours=23)).replace(minute=0, second=0, microsecond=0)
    rows = (
        ImportRun.objects.filter(started_at__gte=start, dry_run=False)
        .annotate(hour=TruncHour("started_at"))
        .order_by()
        .values("hour")
        .annotate(n=Sum("points_sent"))
    )
    buckets: list[dict[str, int]] = [{} for _ in range(24)]
    for row in rows:
        index = int((row["hour"] - start).total_seconds() // 3600)
        if 0 <= index < 24 and row["n"]:
            buckets[index]["ok"] = row["n"]
    labels = [
        timezone.localtime(start + timedelta(hours=i)).strftime("%H:00 points sent")
        for i in range(24)
    ]
    return dashboard.bar_chart(
        buckets, labels=labels, title="Points sent per hour, last 24 h"
    )


@dashboard.register(
    "importers",
    title="Importers",
    permission="importers.view_importsource",
    order=50,
)
def importers_panel(request, now) -> dashboard.PanelData:
    """Sources failing or late first; counts of sources and of points sent in the
    last 24 h, with a bar per hour."""
    sources = ImportSource.objects.aggregate(
        n_enabled=DbCount("id", filter=Q(enabled=True)),
        n_failing=DbCount(
            "id",
            filter=Q(enabled=True, last_run__status=Status.FAILED),
        ),
        n_partial=DbCount(
            "id",
            filter=Q(enabled=True, last_run__status=Status.PARTIAL),
        ),
        n_running=DbCount("id", filter=Q(running_since__isnull=False)),
    )
    day = ImportRun.objects.filter(
        started_at__gte=now - timedelta(hours=24), dry_run=False
    ).aggregate(sent=Sum("points_sent"), runs=DbCount("id"))
    sources_url = reverse("admin:importers_importsource_changelist")
    runs_url = reverse("admin:importers_importrun_changelist")
    data = dashboard.PanelData(empty_text="No source failing or late.")
    data.counts = [
        dashboard.Count(
            "Failing",
            sources["n_failing"],
            "bad" if sources["n_failing"] else "muted",
            f"{sources_url}?last_run=failed",
        ),
        dashboard.Count(
            "Partial (points kept)",
            sources["n_partial"],
            "warn" if sources["n_partial"] else "muted",
            f"{sources_url}?last_run=partial",
        ),
        dashboard.Count(
            "Running now",
            sources["n_running"],
            "info" if sources["n_running"] else "muted",
            f"{sources_url}?running=yes",
        ),
        dashboard.Count(
            "Enabled sources",
            sources["n_enabled"],
            "info",
            f"{sources_url}?enabled__exact=1",
        ),
        dashboard.Count(
            "Points sent 24 h",
            day["sent"] or 0,
            "ok" if day["sent"] else "muted",
            runs_url,
        ),
    ]
    data.attention = _failing(now) + _late(now)
    data.chart = points_chart(now)
    data.links = [(sources_url, "Sources"), (runs_url, "Runs")]
    return data
