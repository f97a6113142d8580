"""The packages panel of the dashboard, and the run display helpers the admin shares
with it: status tones and badges, durations, the chart of a package's last runs."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db.models import Count as DbCount
from django.db.models.functions import TruncHour
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.timesince import timesince

from packages_app.models import Package, PackageRun
from portal import dashboard

Status = PackageRun.Status

STATUS_TONES = {
    Status.QUEUED: "muted",
    Status.RUNNING: "info",
    Status.SUCCEEDED: "ok",
    Status.FAILED: "bad",
    Status.TIMED_OUT: "warn",
    Status.CANCELLED: "muted",
    Status.LOST: "warn",
}
# Counts of the panel, in this order.
PANEL_STATUSES = (
    Status.SUCCEEDED,
    Status.FAILED,
    Status.TIMED_OUT,
    Status.LOST,
    Status.CANCELLED,
)


def status_tone(status: str | None) -> str:
    return STATUS_TONES.get(status, "muted")


def status_badge(status: str | None) -> SafeString:
    """A coloured pill with the status label; an em dash for no status."""
    if not status:
        return mark_safe("—")
    label = Status(status).label if status in Status.values else status
    return format_html(
        '<span class="pkg-badge pkg-badge-{}" data-status="{}">{}</span>',
        status_tone(status),
        status,
        label,
    )


def format_duration(seconds: float | None) -> str:
    """``0.4 s``, ``42 s``, ``3 min 05 s``, ``2 h 07 min``; an em dash for None."""
    if seconds is None:
        return "—"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def run_url(run_id: int) -> str:
    return reverse("admin:packages_app_packagerun_change", args=[run_id])


def runs_chart(
    runs: Iterable[PackageRun], *, width: int = 360, height: int = 60
) -> SafeString:
    """Inline SVG of runs, oldest first: bar height is the duration (the elapsed
    time while running), colour the status; each bar links to its run."""
    runs = list(runs)
    if not runs:
        return mark_safe("")
    seconds = [
        (run.duration if run.duration is not None else run.elapsed) or 0.0
        for run in runs
    ]
    peak = max(seconds) or 1.0
    slot = width / max(len(runs), 30)
    bar_w = max(1.0, slot - 2)
    bars = []
    for i, (run, secs) in enumerate(zip(runs, seconds, strict=True)):
        # Every run gets a visible bar, however short, so a failure at start shows.
        h = max(3.0, (height - 1) * secs / peak)
        when = timezone.localtime(run.started_at or run.queued_at)
        bars.append(
            (
                run_url(run.pk),
                f"#{run.pk} {run.get_status_display()}, {format_duration(secs)}, "
                f"{when:%Y-%m-%d %H:%M}",
                f"{i * slot:.1f}",
                f"{height - 1 - h:.1f}",
                f"{bar_w:.1f}",
                f"{h:.1f}",
                dashboard.TONE_COLOURS[status_tone(run.status)],
            )
        )
    body = format_html_join(
        "",
        '<a href="{}"><title>{}</title><rect x="{}" y="{}" width="{}" height="{}" '
        'fill="{}"/></a>',
        bars,
    )
    return format_html(
        '<svg class="portal-chart pkg-runs-chart" role="img" aria-label="{}" '
        'width="{}" height="{}" viewBox="0 0 {} {}" '
        'xmlns="http://www.w3.org/2000/svg">{}'
        '<line x1="0" y1="{}" x2="{}" y2="{}" stroke="#ccc"/></svg>',
        f"Durations and statuses of the last {len(runs)} runs",
        width,
        height,
        width,
        height,
        body,
        height - 0.5,
        width,
        height - 0.5,
    )


def _failing_packages(now: datetime) -> list[dashboard.Attention]:
    failing = (
        Package.objects.filter(enabled=True)
        .with_last_run(finished=True)
        .filter(last_status__in=PackageRun.FAILURES)
        .order_by("-last_finished_at")[:8]
    )
    items = []
    for package in failing:
        ago = (
            f" {timesince(package.last_finished_at, now)} ago"
            if package.last_finished_at
            else ""
        )
        items.append(
            dashboard.Attention(
                f"{package.slug}: last run "
                f"{Status(package.last_status).label.lower()}{ago}",
                url=run_url(package.last_run_id),
                tone="bad",
                when=package.last_finished_at,
            )
        )
    return items


def _running(runs: Iterable[PackageRun]) -> list[dashboard.Attention]:
    items = []
    for run in runs:
        elapsed = run.elapsed or 0.0
        late = elapsed > 0.8 * run.timeout
        items.append(
            dashboard.Attention(
                f"{run.package.slug} #{run.pk} running "
                f"{format_duration(elapsed)} of {format_duration(run.timeout)}",
                url=run_url(run.pk),
                tone="warn" if late else "info",
                when=run.started_at,
            )
        )
    return items


@dashboard.register(
    "packages",
    title="Packages",
    permission="packages_app.view_packagerun",
    order=10,
)
def packages_panel(request, now) -> dashboard.PanelData:
    since = now - timedelta(hours=24)
    ended = PackageRun.objects.filter(
        status__in=PackageRun.TERMINAL, finished_at__gte=since
    )
    by_status = dict(ended.order_by().values_list("status").annotate(n=DbCount("id")))
    running = list(
        PackageRun.objects.filter(status=Status.RUNNING)
        .select_related("package")
        .defer("log_head", "log_tail")
        .order_by("started_at")
    )
    queued = PackageRun.objects.filter(status=Status.QUEUED).count()
    changelist = reverse("admin:packages_app_packagerun_changelist")
    data = dashboard.PanelData(empty_text="No failing packages, nothing running.")
    for status in PANEL_STATUSES:
        n = by_status.get(status, 0)
        tone = status_tone(status) if n else "muted"
        data.counts.append(
            dashboard.Count(
                f"{Status(status).label} 24 h",
                n,
                tone,
                f"{changelist}?status__exact={status}",
            )
        )
    data.counts.append(
        dashboard.Count(
            "Running now",
            len(running),
            "info" if running else "muted",
            f"{changelist}?status__exact={Status.RUNNING}",
        )
    )
    data.counts.append(
        dashboard.Count(
            "Queued",
            queued,
            "info" if queued else "muted",
            f"{changelist}?status__exact={Status.QUEUED}",
        )
    )
    data.attention = _failing_packages(now) + _running(running[:8])

    per_hour = (
        ended.annotate(hour=TruncHour("finished_at"))
        .order_by()
        .values("hour", "status")
        .annotate(n=DbCount("id"))
    )
    start = (now - timedelta(hours=23)).replace(minute=0, second=0, microsecond=0)
    buckets: list[dict[str, int]] = [{} for _ in range(24)]
    for row in per_hour:
        index = int((row["hour"] - start).total_seconds() // 3600)
        if 0 <= index < 24:
            tone = status_tone(row["status"])
            buckets[index][tone] = buckets[index].get(tone, 0) + row["n"]
    labels = [
        timezone.localtime(start + timedelta(hours=i)).strftime("%H:00")
        for i in range(24)
    ]
    data.chart = dashboard.bar_chart(
        buckets, labels=labels, title="Package runs per hour, last 24 h"
    )
    data.links = [
        (reverse("admin:packages_app_package_changelist"), "Packages"),
        (changelist, "All runs"),
    ]
    return data
