"""The checker: windows, grace, the counting rule, exactly-once, catch-up, errors."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection

from affirmations import services
from affirmations.models import Affirmation, Check, Evaluation, Flip
from portal.ticks import get_tick

pytestmark = pytest.mark.django_db

# A Friday; the check below runs at the top of every hour.
NOW = datetime(2026, 12, 4, 11, 30, tzinfo=UTC)
T = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def make_check(**fields) -> Check:
    values = {
        "name": "orders_exported",
        "schedule": "0 * * * *",
        "lookback": timedelta(minutes=20),
        "min_count": 1,
        "max_count": None,
        "grace": timedelta(minutes=5),
    }
    values.update(fields)
    with time_machine.travel(NOW, tick=False):
        return services.check_create(**values)


def affirm_at(name: str, occurred: datetime, received: datetime | None = None):
    return Affirmation.objects.create(
        name=name,
        source=Affirmation.Source.API,
        occurred_at=occurred,
        received_at=received or occurred,
    )


def run_checker(at: datetime) -> services.PassSummary:
    with time_machine.travel(at, tick=False):
        return services.evaluate_due()


def test_a_new_check_aims_at_its_next_occurrence_plus_grace():
    check = make_check()
    assert check.next_occurrence == T
    assert check.next_due_at == T + timedelta(minutes=5)


def test_nothing_is_evaluated_before_the_occurrence_plus_grace():
    check = make_check()
    assert run_checker(T + timedelta(minutes=4, seconds=59)).evaluated == 0
    assert not Evaluation.objects.filter(owner=check).exists()


def test_the_window_is_lookback_before_the_occurrence_exclusive_of_its_start():
    check = make_check(min_count=3, max_count=3)
    affirm_at(check.name, T - timedelta(minutes=20))  # on the start: out
    affirm_at(check.name, T - timedelta(minutes=19, seconds=59))  # in
    affirm_at(check.name, T - timedelta(minutes=5))  # in
    affirm_at(check.name, T)  # on the occurrence: in
    affirm_at(check.name, T + timedelta(seconds=1))  # after it: next window
    affirm_at("other_event", T - timedelta(minutes=1))  # another name

    run_checker(T + timedelta(minutes=5))

    evaluation = Evaluation.objects.get(owner=check)
    assert (evaluation.window_start, evaluation.window_end) == (
        T - timedelta(minutes=20),
        T,
    )
    assert evaluation.observed == 3
    assert evaluation.passed is True


def test_late_affirmations_count_until_the_grace_ends():
    check = make_check()
    # happened in the window, arrived late but within grace
    affirm_at(check.name, T - timedelta(minutes=1), T + timedelta(minutes=4))
    # arrived after the grace: not counted for this occurrence
    affirm_at(check.name, T - timedelta(minutes=2), T + timedelta(minutes=6))

    run_checker(T + timedelta(minutes=10))

    assert Evaluation.objects.get(owner=check, occurrence=T).observed == 1


@pytest.mark.parametrize(
    ("min_count", "max_count", "count", "passed"),
    [
        (1, None, 0, False),
        (1, None, 5, True),
        (2, 4, 1, False),
        (2, 4, 2, True),
        (2, 4, 4, True),
        (2, 4, 5, False),  # ran too often
        (0, 0, 0, True),  # must not happen, and did not
        (0, 0, 1, False),  # must not happen, and did
    ],
)
def test_the_counting_rule(min_count, max_count, count, passed):
    check = make_check(min_count=min_count, max_count=max_count)
    for i in range(count):
        affirm_at(check.name, T - timedelta(minutes=i + 1))

    run_checker(T + timedelta(minutes=5))

    evaluation = Evaluation.objects.get(owner=check)
    assert (evaluation.observed, evaluation.passed) == (count, passed)
    assert (evaluation.min_count, evaluation.max_count) == (min_count, max_count)


def test_the_checker_advances_to_the_next_occurrence():
    check = make_check()
    run_checker(T + timedelta(minutes=5))
    check.refresh_from_db()
    assert check.next_occurrence == T + timedelta(hours=1)
    assert check.next_due_at == T + timedelta(hours=1, minutes=5)
    assert check.last_evaluated_at == T + timedelta(minutes=5)
    # a second pass at the same time finds nothing due
    assert run_checker(T + timedelta(minutes=5)).evaluated == 0
    assert Evaluation.objects.filter(owner=check).count() == 1


def test_missed_occurrences_are_each_evaluated_with_their_own_window():
    check = make_check()
    affirm_at(check.name, T + timedelta(hours=2) - timedelta(minutes=3))

    summary = run_checker(T + timedelta(hours=4, minutes=10))  # down for 4 hours

    assert summary.evaluated == 5
    results = list(
        Evaluation.objects.filter(owner=check)
        .order_by("occurrence")
        .values_list("occurrence", "observed")
    )
    assert results == [(T + timedelta(hours=h), 1 if h == 2 else 0) for h in range(5)]


def test_occurrences_beyond_the_catch_up_limit_are_recorded_as_skipped():
    check = make_check(schedule="* * * * *", grace=timedelta(0))
    behind = services.CATCH_UP_LIMIT + 30
    first = check.next_occurrence

    summary = run_checker(first + timedelta(minutes=behind - 1))

    assert summary.evaluated == services.CATCH_UP_LIMIT
    assert summary.skipped == 30
    skipped = Evaluation.objects.get(owner=check, passed__isnull=True)
    assert "30 occurrence(s)" in skipped.skipped_reason
    assert skipped.observed is None
    evaluated = Evaluation.objects.filter(owner=check, passed__isnull=False)
    assert evaluated.count() == services.CATCH_UP_LIMIT
    # the newest ones were evaluated
    assert evaluated.order_by("-occurrence").first().occurrence == first + timedelta(
        minutes=behind - 1
    )


def test_one_checks_error_does_not_stop_the_others_and_is_retried():
    broken = make_check(name="broken_event")
    fine = make_check(name="fine_event")
    # A schedule that slipped past validation (edited in the database by hand).
    Check.objects.filter(pk=broken.pk).update(schedule="61 * * * *")

    summary = run_checker(T + timedelta(minutes=5))

    assert (summary.evaluated, summary.errors) == (1, 1)
    assert Evaluation.objects.filter(owner=fine).count() == 1
    broken.refresh_from_db()
    assert "Bad minute" in broken.last_error
    assert broken.next_occurrence == T  # not lost: retried
    assert broken.next_due_at == T + timedelta(minutes=6)  # a minute later
    Check.objects.filter(pk=broken.pk).update(schedule="0 * * * *")
    assert run_checker(T + timedelta(minutes=7)).evaluated == 1
    broken.refresh_from_db()
    assert broken.last_error == ""
    assert Evaluation.objects.filter(owner=broken, occurrence=T).count() == 1


def test_an_error_after_the_claim_rolls_it_back(monkeypatch):
    check = make_check()

    def broken_create(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Evaluation, "save", broken_create)
    monkeypatch.setattr(Evaluation.objects, "bulk_create", broken_create)

    summary = run_checker(T + timedelta(minutes=5))

    assert summary.errors == 1
    check.refresh_from_db()
    assert check.next_occurrence == T  # the claim was rolled back
    assert "disk full" in check.last_error
    monkeypatch.undo()
    assert run_checker(T + timedelta(minutes=7)).evaluated == 1


def test_paused_checks_are_not_evaluated_and_resume_from_the_next_occurrence():
    check = make_check()
    assert check.pause()
    assert run_checker(T + timedelta(hours=3)).evaluated == 0
    with time_machine.travel(T + timedelta(hours=3, minutes=10), tick=False):
        assert check.resume()
    check.refresh_from_db()
    assert check.status == Check.Status.NEW
    assert check.next_occurrence == T + timedelta(hours=4)
    assert not Evaluation.objects.exists()


def test_the_checker_is_a_tick_and_a_crontab_line(settings):
    tick = get_tick("affirmations.check")
    assert tick.cron == "* * * * *"
    assert (tick.cron, "affirmations.tasks.check") in settings.CRONJOBS
    check = make_check()
    from affirmations import tasks

    with time_machine.travel(T + timedelta(minutes=5), tick=False):
        assert "1 evaluated" in tasks.check()
    assert Evaluation.objects.filter(owner=check).count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_checkers_at_once_evaluate_each_occurrence_exactly_once():
    checks = [make_check(name=f"event_{n}", schedule="* * * * *") for n in range(15)]
    barrier = threading.Barrier(2)
    errors: list[str] = []
    summaries: list[services.PassSummary] = []

    def checker() -> None:
        try:
            barrier.wait(timeout=30)
            summaries.append(run_checker(T + timedelta(minutes=10)))
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=checker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    per_occurrence = Evaluation.objects.values_list("owner", "occurrence")
    assert len(per_occurrence) == len(set(per_occurrence))
    # each check: the minutes from 11:31 to T+5 (grace 5 min): 35 occurrences
    assert len(per_occurrence) == 15 * 35
    assert sum(s.evaluated for s in summaries) == 15 * 35
    for check in checks:
        check.refresh_from_db()
        assert check.next_occurrence == T + timedelta(minutes=6)


@pytest.mark.django_db(transaction=True)
def test_two_checkers_at_once_with_one_occurrence_due_each_evaluate_it_once():
    """The usual case (on PostgreSQL, the batched path): one occurrence due."""
    checks = [make_check(name=f"event_{n}") for n in range(30)]
    barrier = threading.Barrier(2)
    errors: list[str] = []

    def checker() -> None:
        try:
            barrier.wait(timeout=30)
            run_checker(T + timedelta(minutes=5))
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=checker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert sorted(Evaluation.objects.values_list("owner", flat=True)) == sorted(
        c.pk for c in checks
    )
    assert Flip.objects.count() == 30  # each failed once: one flip each
