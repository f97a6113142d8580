"""The packages and pipelines panels of the dashboard, and the run display helpers
the admin shares with them: status tones and badges, durations, the chart of a
package's last runs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count as DbCount
from django.db.models import Q
from django.db.models.functions import TruncHour
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.timesince import timesince

from packages_app.models import (
    PIPELINE_TERMINAL,
    Package,
    PackageRun,
    PipelineRun,
    PipelineStatus,
)
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


PIPELINE_TONES = {
    PipelineStatus.PENDING: "muted",
    PipelineStatus.IN_PROGRESS: "info",
    PipelineStatus.SUCCESSFUL: "ok",
    PipelineStatus.FAILED: "bad",
    PipelineStatus.ABORTED: "warn",
    PipelineStatus.STOPPED: "muted",
}
# Counts of the pipelines panel, in this order.
PIPELINE_PANEL_STATUSES = (
    PipelineStatus.SUCCESSFUL,
    PipelineStatus.FAILED,
    PipelineStatus.ABORTED,
    PipelineStatus.STOPPED,
    PipelineStatus.IN_PROGRESS,
    PipelineStatus.PENDING,
)


def status_tone(status: str | None) -> str:
    return STATUS_TONES.get(status, "muted")


def pipeline_tone(status: str | None) -> str:
    return PIPELINE_TONES.get(status, "muted")


def badge(status: str | None, label: str, tone: str) -> SafeString:
    return dashboard.badge(status, label, tone)


def status_badge(status: str | None) -> SafeString:
    """The badge of a package run's status."""
    label = Status(status).label if status in Status.values else status
    return badge(status, label or "", status_tone(status))


def pipeline_badge(status: str | None) -> SafeString:
    """The badge of a pipeline run's (or step's) status."""
    values = PipelineStatus.values
    label = PipelineStatus(status).label if status in values else status
    return badge(status, label or "", pipeline_tone(status))


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


def pipeline_url(run_id: int) -> str:
    return reverse("admin:packages_app_pipelinerun_change", args=[run_id])


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


def hourly_chart(
    rows: Iterable[dict], *, now: datetime, tone: Callable[[str], str], title: str
) -> SafeString:
    """Bars of the last 24 hours from ``{"hour", "status", "n"}`` rows, coloured by
    the tone of each status."""
    start = (now - timedelta(hours=23)).replace(minute=0, second=0, microsecond=0)
    buckets: list[dict[str, int]] = [{} for _ in range(24)]
    for row in rows:
        index = int((row["hour"] - start).total_seconds() // 3600)
        if 0 <= index < 24:
            colour = tone(row["status"])
            buckets[index][colour] = buckets[index].get(colour, 0) + row["n"]
    labels = [
        timezone.localtime(start + timedelta(hours=i)).strftime("%H:00")
        for i in range(24)
    ]
    return dashboard.bar_chart(buckets, labels=labels, title=title)


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
    data.chart = hourly_chart(
        per_hour, now=now, tone=status_tone, title="Package runs per hour, last 24 h"
    )
    data.links = [
        (reverse("admin:packages_app_package_changelist"), "Packages"),
        (changelist, "All runs"),
    ]
    return data


def _running_pipelines(runs: Iterable[PipelineRun]) -> list[dashboard.Attention]:
    items = []
    for run in runs:
        elapsed = run.elapsed or 0.0
        limit = run.timeout or settings.PIPELINE_TIMEOUT
        # Steps run in order: the one running is the one after those that ended.
        step = min(run.steps_ended + 1, run.steps_total)
        where = f"step {step} of {run.steps_total}" if step else "no steps"
        stopping = ", stopping" if run.cancel_requested_at else ""
        items.append(
            dashboard.Attention(
                f"{run.name} running {where}, {format_duration(elapsed)}{stopping}",
                url=pipeline_url(run.pk),
                tone="warn" if elapsed > 0.8 * limit else "info",
                when=run.started_at,
            )
        )
    return items


def _failed_pipelines(
    runs: Iterable[PipelineRun], now: datetime
) -> list[dashboard.Attention]:
    items = []
    for run in runs:
        when = run.finished_at or run.created_at
        reason = run.error.strip().splitlines()[0][:120] if run.error.strip() else ""
        items.append(
            dashboard.Attention(
                f"{run.name} failed {timesince(when, now)} ago"
                + (f": {reason}" if reason else ""),
                url=pipeline_url(run.pk),
                tone="bad",
                when=when,
            )
        )
    return items


@dashboard.register(
    "pipelines",
    title="Pipelines",
    permission="packages_app.view_pipelinerun",
    order=20,
)
def pipelines_panel(request, now) -> dashboard.PanelData:
    """Runs created in the last 24 h by status, the failed ones, what runs now.

    Four queries, however many runs: counts, failures, running runs (with their
    step counts annotated) and the hourly chart."""
    recent = PipelineRun.objects.filter(created_at__gte=now - timedelta(hours=24))
    by_status = dict(recent.order_by().values_list("status").annotate(n=DbCount("id")))
    failed = list(
        recent.filter(status=PipelineStatus.FAILED)
        .only("id", "name", "error", "created_at", "finished_at")
        .order_by("-created_at", "-id")[:5]
    )
    running = list(
        PipelineRun.objects.filter(status=PipelineStatus.IN_PROGRESS)
        .annotate(
            steps_total=DbCount("steps"),
            steps_ended=DbCount("steps", filter=Q(steps__status__in=PIPELINE_TERMINAL)),
        )
        .only(
            "id", "name", "timeout", "started_at", "finished_at", "cancel_requested_at"
        )
        .order_by("started_at", "id")[:8]
    )
    changelist = reverse("admin:packages_app_pipelinerun_changelist")
    data = dashboard.PanelData(empty_text="No failed pipelines, nothing running.")
    for status in PIPELINE_PANEL_STATUSES:
        n = by_status.get(status, 0)
        data.counts.append(
            dashboard.Count(
                f"{PipelineStatus(status).label} 24 h",
                n,
                pipeline_tone(status) if n else "muted",
                f"{changelist}?status__exact={status}",
            )
        )
    data.attention = _failed_pipelines(failed, now) + _running_pipelines(running)
    per_hour = (
        recent.annotate(hour=TruncHour("created_at"))
        .order_by()
        .values("hour", "status")
        .annotate(n=DbCount("id"))
    )
    data.chart = hourly_chart(
        per_hour, now=now, tone=pipeline_tone, title="Pipeline runs per hour, last 24 h"
    )
    data.links = [(changelist, "All pipeline runs")]
    return data
