"""The affirmations panel of the dashboard, and the display helpers the admin shares
with it: status badges, the last results as dots, times in a check's zone and
relative to now ("in 14 min")."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.db.models import Case, F, IntegerField, Prefetch, Value, When
from django.db.models import Count as DbCount
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from affirmations.models import Check, Evaluation
from portal import dashboard
from portal.dashboard import format_age

Status = Check.Status

STATUS_TONES = {
    Status.NEW: "muted",
    Status.PASSING: "ok",
    Status.FAILING: "bad",
    Status.PAUSED: "muted",
}
# Results drawn as dots in lists (the original's "last results").
RECENT_RESULTS = 10
# Checks due within this long are listed in the panel's attention list.
DUE_SOON = timedelta(minutes=60)
# Lines of each kind in the panel's attention list at most.
ATTENTION_SHOWN = 5


def status_badge(status: str | None) -> SafeString:
    label = Status(status).label if status in Status.values else status
    return dashboard.badge(status, label or "", STATUS_TONES.get(status, "muted"))


def check_url(check_id: int) -> str:
    return reverse("admin:affirmations_check_change", args=[check_id])


def relative(value: datetime, now: datetime) -> str:
    """``in 14 min`` for the future, ``3 min ago`` for the past."""
    seconds = (value - now).total_seconds()
    if seconds >= 0:
        return f"in {format_age(seconds)}"
    return f"{format_age(-seconds)} ago"


def local_time(value: datetime, tz: str) -> datetime:
    """``value`` in the check's zone (UTC when the zone is unknown)."""
    try:
        return value.astimezone(ZoneInfo(tz))
    except (ValueError, KeyError, OSError):
        return value.astimezone(ZoneInfo("UTC"))


def next_due(check: Check, now: datetime) -> SafeString:
    """The next occurrence in the check's zone, and how far away it is; the
    tooltip says when it is evaluated (after the grace period)."""
    if check.status == Status.PAUSED:
        return mark_safe("paused")
    if check.next_occurrence is None:
        return mark_safe("—")
    local = local_time(check.next_occurrence, check.tz)
    due = check.next_due_at or check.next_occurrence
    return format_html(
        '<time datetime="{}" title="evaluated at {} UTC, after the grace period">'
        '{}</time> <span class="aff-quiet">{}</span>',
        check.next_occurrence.isoformat(),
        due.astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%d %H:%M"),
        local.strftime("%Y-%m-%d %H:%M %Z"),
        relative(check.next_occurrence, now),
    )


def result_of(evaluation: Evaluation) -> tuple[str, str]:
    """(``passed``/``failed``/``skipped``, a one-line description)."""
    if evaluation.passed is None:
        return "skipped", evaluation.skipped_reason or "skipped"
    word = "passed" if evaluation.passed else "failed"
    return word, f"{word}: {evaluation.observed} observed"


def result_dots(evaluations: Iterable[Evaluation], tz: str = "UTC") -> SafeString:
    """One dot per evaluation, oldest first: green passed, red failed, grey
    skipped; the tooltip tells the occurrence and the count."""
    dots = []
    for evaluation in evaluations:
        kind, text = result_of(evaluation)
        when = local_time(evaluation.occurrence, tz).strftime("%Y-%m-%d %H:%M %Z")
        dots.append((kind, f"{when}: {text}"))
    if not dots:
        return mark_safe('<span class="aff-quiet">no results yet</span>')
    return format_html(
        '<span class="aff-dots">{}</span>',
        format_html_join(
            "",
            '<span class="aff-dot aff-dot-{}" title="{}"></span>',
            dots,
        ),
    )


def recent_evaluations(limit: int = RECENT_RESULTS) -> Prefetch:
    """The last ``limit`` evaluations of every check of a page in one query (a
    window over the owner), newest first, as ``check.recent_evaluations``."""
    return Prefetch(
        "evaluations",
        queryset=Evaluation.objects.only(
            "id",
            "owner_id",
            "occurrence",
            "observed",
            "passed",
            "skipped_reason",
        ).order_by("-occurrence", "-id")[:limit],
        to_attr="recent_evaluations",
    )


def monitor_order() -> list:
    """Failing first, then the soonest due; paused checks (never due) last."""
    failing_first = Case(
        When(status=Status.FAILING, then=Value(0)),
        default=Value(1),
        output_field=IntegerField(),
    )
    return [
        failing_first.asc(),
        F("next_due_at").asc(nulls_last=True),
        "name",
        "id",
    ]


@dashboard.register(
    "affirmations",
    title="Affirmations",
    permission="affirmations.view_check",
    order=40,
)
def affirmations_panel(request, now) -> dashboard.PanelData:
    """Checks failing, passing, new and paused; failing checks, then checks due in
    the next hour, need attention.

    Three queries: checks by status, the failing ones listed, the ones due soon."""
    by_status = dict(
        Check.objects.order_by().values_list("status").annotate(n=DbCount("id"))
    )
    changelist = reverse("admin:affirmations_check_changelist")
    tones = {
        Status.FAILING: "bad",
        Status.PASSING: "ok",
        Status.NEW: "info",
        Status.PAUSED: "muted",
    }
    data = dashboard.PanelData(empty_text="No check failing, none due in the hour.")
    for status in (Status.FAILING, Status.PASSING, Status.NEW, Status.PAUSED):
        n = by_status.get(status, 0)
        data.counts.append(
            dashboard.Count(
                status.label,
                n,
                tones[status] if n else "muted",
                f"{changelist}?status__exact={status}",
            )
        )
    fields = ("id", "name", "key", "status", "tz", "next_occurrence", "next_due_at")
    if by_status.get(Status.FAILING):
        failing = (
            Check.objects.filter(status=Status.FAILING)
            .only(*fields, "last_evaluated_at")
            .order_by(F("last_evaluated_at").desc(nulls_last=True), "id")[
                :ATTENTION_SHOWN
            ]
        )
        for check in failing:
            data.attention.append(
                dashboard.Attention(
                    f"{check.name} [{check.key}]: failing",
                    url=check_url(check.pk),
                    tone="bad",
                    when=check.last_evaluated_at,
                )
            )
    due_soon = (
        Check.objects.filter(
            next_occurrence__gte=now, next_occurrence__lte=now + DUE_SOON
        )
        .exclude(status__in=[Status.FAILING, Status.PAUSED])
        .only(*fields)
        .order_by("next_occurrence", "id")[:ATTENTION_SHOWN]
    )
    for check in due_soon:
        local = local_time(check.next_occurrence, check.tz)
        data.attention.append(
            dashboard.Attention(
                f"{check.name} [{check.key}]: due "
                f"{relative(check.next_occurrence, now)} ({local:%H:%M %Z})",
                url=check_url(check.pk),
                tone="info",
                when=check.next_occurrence,
            )
        )
    data.links = [
        (changelist, "Checks"),
        (reverse("admin:affirmations_check_monitor"), "Monitor"),
        (reverse("admin:affirmations_affirmation_changelist"), "Affirmations"),
    ]
    return data
