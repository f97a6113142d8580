"""Standard cron semantics for checks: Sunday, day-of-month OR day-of-week, steps,
and DST in a non-UTC zone; lookback durations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError

from affirmations.schedule import (
    explain,
    format_duration,
    next_occurrence,
    occurrences_after,
    parse_duration,
)
from portal.lib.cron import validate_cron


def _take(expr: str, tz: str, after: datetime, n: int) -> list[datetime]:
    found = []
    for when in occurrences_after(expr, tz, after):
        found.append(when)
        if len(found) == n:
            return found
    return found


@pytest.mark.parametrize("sunday", ["0", "7"])
def test_sunday_is_0_and_7(sunday):
    # 2026-12-04 is a Friday
    after = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    assert next_occurrence(f"0 9 * * {sunday}", "UTC", after) == datetime(
        2026, 12, 6, 9, 0, tzinfo=UTC
    )


def test_weekdays_are_monday_to_friday_not_the_originals_tuesday_to_saturday():
    after = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)  # Friday noon
    days = [w.strftime("%a") for w in _take("0 9 * * 1-5", "UTC", after, 5)]
    assert days == ["Mon", "Tue", "Wed", "Thu", "Fri"]


def test_day_of_month_and_day_of_week_are_ored_when_both_are_restricted():
    # "the 1st, 7th and 16th, and every weekday" (Debian cron), from Sat 2026-12-05
    after = datetime(2026, 12, 5, 0, 0, tzinfo=UTC)
    found = [w.date().isoformat() for w in _take("0 0 1,7,16 * 6", "UTC", after, 4)]
    # Saturdays (12th, 19th) and the 7th and 16th
    assert found == ["2026-12-07", "2026-12-12", "2026-12-16", "2026-12-19"]


def test_steps_work_and_validate():
    validate_cron("*/5 * * * *")  # the original crashed on these
    after = datetime(2026, 12, 4, 12, 1, tzinfo=UTC)
    assert [w.minute for w in _take("*/5 * * * *", "UTC", after, 3)] == [5, 10, 15]


@pytest.mark.parametrize("bad", ["* * * *", "61 * * * *", "* * * * 8", "nonsense"])
def test_invalid_cron_is_refused(bad):
    with pytest.raises(ValidationError):
        validate_cron(bad)


def test_a_daily_time_stays_local_across_a_dst_change():
    # Europe/Helsinki leaves summer time on 2026-10-25 (UTC+3 → UTC+2).
    after = datetime(2026, 10, 23, 12, 0, tzinfo=UTC)
    found = _take("0 6 * * *", "Europe/Helsinki", after, 3)
    assert [w.isoformat() for w in found] == [
        "2026-10-24T03:00:00+00:00",  # 06:00 EEST
        "2026-10-25T04:00:00+00:00",  # 06:00 EET
        "2026-10-26T04:00:00+00:00",
    ]


def test_a_time_skipped_by_the_spring_change_runs_once_as_debian_cron_does():
    # Europe/Helsinki: 2026-03-29 03:00 → 04:00; 03:30 does not exist that day.
    after = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    found = _take("30 3 * * *", "Europe/Helsinki", after, 2)
    assert len({w.date() for w in found}) == 2  # once on the 29th, once on the 30th
    assert found[0].date().isoformat() == "2026-03-29"


def test_explain_says_it_in_english():
    assert "6:00" in explain("0 6 * * *") or "06:00" in explain("0 6 * * *")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("20m", 1200), ("5h", 18000), ("3d", 259200), ("1w", 604800), (" 90S ", 90)],
)
def test_lookbacks_parse(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", ["", "20", "m20", "0m", "5y", "-3d", "1.5h"])
def test_bad_lookbacks_are_refused(bad):
    with pytest.raises(ValidationError):
        parse_duration(bad)


def test_durations_format_in_the_largest_units():
    assert format_duration(timedelta(minutes=20)) == "20 min"
    assert format_duration(timedelta(hours=1, minutes=30)) == "1 h 30 min"
    assert format_duration(timedelta(days=3)) == "3 d"
