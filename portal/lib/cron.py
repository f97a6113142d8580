"""Cron maths shared by the apps: validation and next occurrence, via cronsim.

Iteration happens in the object's own time zone (DST included, as Debian cron
does); results are returned as aware UTC datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from django.core.exceptions import ValidationError


def validate_timezone(value: str) -> None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(f"{value!r} is not a known time zone.") from exc


def validate_cron(value: str) -> None:
    if not value:
        return
    if len(value.split()) != 5:
        raise ValidationError(
            f"{value!r} must have 5 fields (minute hour day month weekday)."
        )
    try:
        CronSim(value, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise ValidationError(
            f"{value!r} is not a valid cron expression: {exc}"
        ) from exc


def next_after(expr: str, tz: str, after: datetime) -> datetime:
    """The first occurrence of ``expr`` strictly after ``after``, in UTC."""
    zone = ZoneInfo(tz)
    local = after.astimezone(zone).replace(microsecond=0)
    return next(CronSim(expr, local)).astimezone(UTC)
