"""Emails about finished runs: failures always, successes when asked, recoveries,
and no floods (one email per package per window, counting what it held back)."""

from __future__ import annotations

import re
from datetime import timedelta

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from packages_app.models import PackageRun
from portal import emails

Status = PackageRun.Status
SECRET_KEY_PATTERN = re.compile(r"pass|secret|token|key|credential|auth", re.IGNORECASE)
LAST_LINES = 50


def subject_status(run: PackageRun, recovered: bool) -> str:
    """ApMan's subject words: Success, Failed [Timeout], Failed [Error]..."""
    if run.status == Status.SUCCEEDED:
        return "Recovered" if recovered else "Success"
    return {
        Status.TIMED_OUT: "Failed [Timeout]",
        Status.LOST: "Failed [Lost]",
    }.get(run.status, "Failed [Error]")


def masked(parameters: dict) -> dict:
    return {
        key: "••••••" if SECRET_KEY_PATTERN.search(str(key)) else value
        for key, value in parameters.items()
    }


def last_lines(text: str, n: int = LAST_LINES) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-n:])


def _previous(run: PackageRun) -> PackageRun | None:
    return (
        PackageRun.objects.filter(package=run.package, pk__lt=run.pk)
        .exclude(status__in=[*PackageRun.ACTIVE, Status.CANCELLED])
        .order_by("-pk")
        .first()
    )


def run_finished(run: PackageRun) -> str:
    """Send (or hold back) the email for a finished run; returns what happened."""
    package = run.package
    recipients = list(package.recipients)
    if not recipients or run.status == Status.CANCELLED:
        return "none"
    previous = _previous(run)
    recovered = (
        run.status == Status.SUCCEEDED
        and previous is not None
        and previous.status in PackageRun.FAILURES
    )
    if run.status == Status.SUCCEEDED and not (recovered or package.notify_success):
        return "none"
    suppressed = 0
    if run.status in PackageRun.FAILURES:
        window_start = timezone.now() - timedelta(
            seconds=settings.PACKAGES_NOTIFY_WINDOW
        )
        last_sent = (
            PackageRun.objects.filter(
                package=package,
                email=PackageRun.Email.SENT,
                status__in=PackageRun.FAILURES,
            )
            .exclude(pk=run.pk)
            .order_by("-finished_at")
            .first()
        )
        if (
            last_sent
            and last_sent.finished_at
            and last_sent.finished_at >= window_start
        ):
            PackageRun.objects.filter(pk=run.pk).update(
                email=PackageRun.Email.SUPPRESSED
            )
            return "suppressed"
        held = PackageRun.objects.filter(
            package=package, email=PackageRun.Email.SUPPRESSED
        )
        if last_sent:
            held = held.filter(pk__gt=last_sent.pk)
        suppressed = held.count()
    word = subject_status(run, recovered)
    emails.send(
        "package-run",
        recipients,
        {
            "run": run,
            "package": package,
            "status_word": word,
            "recovered": recovered,
            "suppressed": suppressed,
            "parameters": masked({**package.parameters, **run.parameters}),
            "last_lines": last_lines(run.log_tail),
            "run_url": settings.SITE_URL
            + reverse("admin:packages_app_packagerun_change", args=[run.pk]),
        },
    )
    PackageRun.objects.filter(pk=run.pk).update(email=PackageRun.Email.SENT)
    return "sent"
