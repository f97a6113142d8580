"""Cron for checks, via cronsim: occurrences in the check's time zone (DST as
Debian cron does it), English explanations, and the lookback durations ops type."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim
from django.core.exceptions import ValidationError

DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def occurrences_after(expr: str, tz: str, after: datetime) -> Iterator[datetime]:
    """Occurrences of ``expr`` strictly after ``after``, as aware UTC datetimes.

    cronsim iterates in the check's zone, so "0 2 * * *" in Europe/Helsinki is 02:00
    Helsinki time in winter and in summer; converting to UTC happens before any
    grace is added (Healthchecks' ``get_grace_start`` does the same).
    """
    local = after.astimezone(ZoneInfo(tz)).replace(microsecond=0)
    for occurrence in CronSim(expr, local):
        yield occurrence.astimezone(UTC)


def next_occurrence(expr: str, tz: str, after: datetime) -> datetime:
    return next(occurrences_after(expr, tz, after))


def explain(expr: str) -> str:
    """The schedule in English, e.g. "At 02:00 on Monday"; the expression itself
    when cronsim cannot say it."""
    try:
        return CronSim(expr, datetime(2000, 1, 1, tzinfo=UTC)).explain()
    except Exception:  # explain() is best effort; the expression was validated
        return expr


def parse_duration(text: str) -> timedelta:
    """``20m``, ``5h``, ``3d``, ``1w``, ``90s`` (the original's lookback notation)."""
    match = DURATION_RE.match(text or "")
    if not match:
        raise ValidationError(
            f"{text!r} is not a duration: use a number and s, m, h, d or w, e.g. 20m."
        )
    value = int(match.group(1)) * UNITS[match.group(2).lower()]
    if value <= 0:
        raise ValidationError("A duration must be longer than zero.")
    return timedelta(seconds=value)


def format_duration(value: timedelta | None) -> str:
    """``20 min``, ``5 h``, ``3 d``, ``1 h 30 min``: the largest units that add up."""
    if value is None:
        return "—"
    seconds = int(value.total_seconds())
    if seconds <= 0:
        return "0 s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size} {unit}")
            seconds %= size
    return " ".join(parts[:2])
