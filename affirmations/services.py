"""Affirmations workflows: affirm (one, or a batch all-or-nothing), create checks,
and the checker: evaluate every due occurrence exactly once, flip statuses into the
outbox, and send the outbox's alerts.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from affirmations.models import (
    MAX_DATA_LENGTH,
    MAX_NAME_LENGTH,
    TRUNCATED_MARK,
    Affirmation,
    Check,
    Evaluation,
    Flip,
    validate_event_name,
)
from affirmations.schedule import next_occurrence, occurrences_after

logger = logging.getLogger(__name__)

# Due checks one checker pass takes at most (it runs again a minute later).
PASS_LIMIT = 1000
# A check behind by more occurrences than this evaluates the newest ones and
# records the older ones as one skipped evaluation.
CATCH_UP_LIMIT = 50
# Missed occurrences looked at one by one at most; beyond, the gap is skipped whole.
SCAN_LIMIT = 10_000
# A check whose evaluation raised is retried this long after.
ERROR_RETRY = timedelta(minutes=1)


# --- Affirming ------------------------------------------------------------------


def _bounded(data: str) -> tuple[str, bool]:
    if len(data) <= MAX_DATA_LENGTH:
        return data, False
    return data[: MAX_DATA_LENGTH - len(TRUNCATED_MARK)] + TRUNCATED_MARK, True


def _occurred(client_time: datetime | None, now: datetime) -> tuple[datetime, str]:
    """The client's time when it is within the allowed skew, else the server's."""
    if client_time is None:
        return now, ""
    skew = timedelta(seconds=settings.AFFIRMATIONS_MAX_CLOCK_SKEW)
    if abs(client_time - now) <= skew:
        return client_time, ""
    return now, (
        f"client time {client_time.isoformat()} ignored: more than "
        f"{settings.AFFIRMATIONS_MAX_CLOCK_SKEW} s from the server's"
    )


# An event ready to store: what differs between the events of one request.
# The rest (source, user, received_at, remote_addr) the request's events share.
class Row(NamedTuple):
    name: str
    data: str
    truncated: bool
    occurred_at: datetime
    client_time: datetime | None
    note: str


def _row(
    name: str, data: str | None, client_time: datetime | None, now: datetime
) -> Row:
    """One event checked and bounded; a ``ValidationError`` names the field.

    Only the name and the data come from the caller unchecked: a plain tuple and
    the field's own rules (``validate_event_name``), not a model instance and
    ``full_clean()`` per event (a batch of 50 spent a millisecond there)."""
    try:
        validate_event_name(name)
    except ValidationError as exc:
        raise ValidationError({"name": exc.messages}) from exc
    if len(name) > MAX_NAME_LENGTH:
        raise ValidationError(
            {"name": [f"At most {MAX_NAME_LENGTH} characters (it has {len(name)})."]}
        )
    data = data or ""
    if "\x00" in data:
        # PostgreSQL's text columns refuse NUL; say so instead of failing the INSERT.
        raise ValidationError({"data": ["NUL characters are not allowed."]})
    data, truncated = _bounded(data)
    occurred_at, note = _occurred(client_time, now)
    return Row(name, data, truncated, occurred_at, client_time, note)


def affirm(
    *,
    name: str,
    data: str = "",
    source: str,
    user=None,
    client_time: datetime | None = None,
    remote_addr: str | None = None,
) -> Affirmation:
    """Record one event of ``name`` (one INSERT)."""
    now = timezone.now()
    row = _row(name, data, client_time, now)
    shared = {
        "source": source,
        "user": _user(user),
        "received_at": now,
        "remote_addr": remote_addr or None,
    }
    [pk] = _insert_rows([row], **shared)
    affirmation = Affirmation(pk=pk, **row._asdict(), **shared)
    affirmation._state.adding = False
    affirmation._state.db = connection.alias
    return affirmation


def _user(user):
    return user if user is not None and user.is_authenticated else None


def affirm_batch(
    *, events: list[dict], source: str, user=None, remote_addr: str | None = None
) -> list[int]:
    """Record several events, all or nothing, and return their ids in order: one
    invalid item stores none, and the ``ValidationError`` names it
    (``{"events": ["item 3: name: ..."]}``).

    Each event is ``{"name", "data" (optional), "client_time" (optional)}``.
    """
    now = timezone.now()
    rows = []
    for index, event in enumerate(events):
        try:
            rows.append(
                _row(
                    event.get("name", ""),
                    event.get("data"),
                    event.get("client_time"),
                    now,
                )
            )
        except ValidationError as exc:
            problems = "; ".join(
                f"{key}: {' '.join(messages)}"
                for key, messages in exc.message_dict.items()
            )
            raise ValidationError({"events": [f"item {index}: {problems}"]}) from exc
    if not rows:
        return []
    return _insert_rows(
        rows,
        source=source,
        user=_user(user),
        received_at=now,
        remote_addr=remote_addr or None,
    )


# One INSERT for a whole batch on PostgreSQL: the rows as one JSON array (json.dumps
# is C code; psycopg2 adapting ten Python lists element by element was a third of a
# 50-event POST), what the batch shares as plain parameters, the ids back in order.
INSERT_BATCH_SQL = """
INSERT INTO affirmations_affirmation
    (name, data, truncated, occurred_at, client_time, note,
     source, user_id, received_at, remote_addr)
SELECT e.value->>0, e.value->>1, (e.value->>2)::boolean, (e.value->>3)::timestamptz,
       (e.value->>4)::timestamptz, e.value->>5, %s, %s, %s, %s
FROM json_array_elements(%s::json) WITH ORDINALITY AS e(value, position)
ORDER BY e.position
RETURNING id
"""


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _insert_rows(
    rows: list[Row], *, source: str, user, received_at: datetime, remote_addr
) -> list[int]:
    """All the rows in one statement (and so one transaction); their ids."""
    if connection.vendor != "postgresql":
        shared = {
            "source": source,
            "user": user,
            "received_at": received_at,
            "remote_addr": remote_addr,
        }
        with transaction.atomic():
            created = Affirmation.objects.bulk_create(
                [Affirmation(**row._asdict(), **shared) for row in rows]
            )
        return [affirmation.pk for affirmation in created]
    payload = json.dumps(
        [
            (
                r.name,
                r.data,
                r.truncated,
                _iso(r.occurred_at),
                _iso(r.client_time),
                r.note,
            )
            for r in rows
        ],
        ensure_ascii=False,
    )
    with connection.cursor() as cursor:
        cursor.execute(
            INSERT_BATCH_SQL,
            [source, getattr(user, "pk", None), received_at, remote_addr, payload],
        )
        return [pk for (pk,) in cursor.fetchall()]


def check_signoff(*, check: Check, user) -> Affirmation:
    """A person affirms a check's event by hand (the admin's sign-off button)."""
    return affirm(
        name=check.name, data="signed off", source=Affirmation.Source.SIGNOFF, user=user
    )


# --- Checks ---------------------------------------------------------------------


def check_create(**fields) -> Check:
    """A new check, aimed at its first occurrence from now."""
    check = Check(**fields)
    check.full_clean()
    check.schedule_from(timezone.now())
    check.save()
    return check


# --- The checker ----------------------------------------------------------------


@dataclass
class PassSummary:
    evaluated: int = 0
    skipped: int = 0
    errors: int = 0
    flips: int = 0
    checks: list[int] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.evaluated} evaluated, {self.skipped} skipped, "
            f"{self.errors} errors, {self.flips} flips"
        )


def evaluate_due(
    *, now: datetime | None = None, limit: int = PASS_LIMIT
) -> PassSummary:
    """One checker pass: every check whose next occurrence (plus grace) is due,
    found by the indexed ``next_due_at``, each occurrence claimed by a conditional
    UPDATE so that concurrent checkers evaluate it exactly once."""
    now = now or timezone.now()
    summary = PassSummary()
    due = list(
        Check.objects.filter(next_due_at__lte=now)
        .exclude(status=Check.Status.PAUSED)
        .order_by("next_due_at", "id")[:limit]
    )
    if connection.vendor == "postgresql":
        # The usual case, one occurrence due, for all checks at once; the rest
        # (catch-up, skips, errors) one by one below.
        due = _evaluate_batch(due, now=now, summary=summary)
    for check in due:
        try:
            _evaluate_check(check, now=now, summary=summary)
        except Exception as exc:  # one check's error never stops the others
            summary.errors += 1
            logger.exception("evaluating check %s failed", check.key)
            Check.objects.filter(pk=check.pk).update(
                last_error=f"{type(exc).__name__}: {exc}"[:2000],
                next_due_at=now + ERROR_RETRY,
            )
    if summary.evaluated or summary.skipped or summary.errors:
        logger.info("affirmations checker: %s", summary)
    return summary


# Per batch, on PostgreSQL: the counts of every window in one statement, then in
# one transaction the claims (one UPDATE … RETURNING), the evaluations and the flips
# (one INSERT each): 4 round trips and one commit instead of ~4 per check.
COUNT_WINDOWS_SQL = """
SELECT w.i, (
    SELECT count(*) FROM affirmations_affirmation a
    WHERE a.name = w.name AND a.occurred_at > w.start AND a.occurred_at <= w.stop
      AND a.received_at <= w.received_by
)
FROM unnest(%s::int[], %s::text[], %s::timestamptz[], %s::timestamptz[],
            %s::timestamptz[]) AS w(i, name, start, stop, received_by)
"""
# Rows another checker holds are skipped (it evaluates them); locking in id order
# keeps two checkers' batches from deadlocking.
CLAIM_BATCH_SQL = """
WITH v AS (
    SELECT * FROM unnest(%s::bigint[], %s::timestamptz[], %s::timestamptz[],
                         %s::text[], %s::bigint[], %s::timestamptz[])
        AS v(id, current_occurrence, following, status, failures, alerted)
), mine AS (
    SELECT c.id FROM affirmations_check c
    JOIN v ON v.id = c.id AND c.next_occurrence = v.current_occurrence
    ORDER BY c.id FOR UPDATE OF c SKIP LOCKED
)
UPDATE affirmations_check AS c SET
    next_occurrence = v.following,
    next_due_at = v.following + c.grace,
    last_evaluated_at = %s,
    last_error = '',
    status = COALESCE(v.status, c.status),
    consecutive_failures = v.failures,
    last_alert_at = COALESCE(v.alerted, c.last_alert_at)
FROM v, mine
WHERE c.id = mine.id AND v.id = c.id
RETURNING c.id
"""


def _single_due(check: Check, now: datetime) -> datetime | None:
    """The occurrence after ``check.next_occurrence`` when exactly that one is
    due (the usual case), else None."""
    when = _iterate_from(check, check.next_occurrence)
    first, following = next(when), next(when)
    if first + check.grace <= now < following + check.grace:
        return following
    return None


def _evaluate_batch(
    due: list[Check], *, now: datetime, summary: PassSummary
) -> list[Check]:
    """Evaluate every check with one occurrence due at once; returns the others
    (and, if the batch fails, all of them) for the one-by-one path."""
    batch, rest = [], []
    for check in due:
        try:
            following = _single_due(check, now)
        except Exception:  # the one-by-one path records the error
            following = None
        if following is None:
            rest.append(check)
        else:
            batch.append((check, check.next_occurrence, following))
    if not batch:
        return rest
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                COUNT_WINDOWS_SQL,
                [
                    list(range(len(batch))),
                    [check.name for check, _, _ in batch],
                    [occurrence - check.lookback for check, occurrence, _ in batch],
                    [occurrence for _, occurrence, _ in batch],
                    [occurrence + check.grace for check, occurrence, _ in batch],
                ],
            )
            observed = dict(cursor.fetchall())
        rows = []
        for i, (check, occurrence, following) in enumerate(batch):
            passed = check.passes(observed[i])
            values, kind = _next_status(check, passed, now=now)
            rows.append(
                (check, occurrence, following, observed[i], passed, values, kind)
            )
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                CLAIM_BATCH_SQL,
                [
                    [row[0].pk for row in rows],
                    [row[1] for row in rows],
                    [row[2] for row in rows],
                    [row[5].get("status") for row in rows],
                    [row[5]["consecutive_failures"] for row in rows],
                    [row[5].get("last_alert_at") for row in rows],
                    now,
                ],
            )
            claimed = {pk for (pk,) in cursor.fetchall()}
            rows = [row for row in rows if row[0].pk in claimed]
            evaluations = Evaluation.objects.bulk_create(
                Evaluation.of(check, occurrence, observed=count, now=now)
                for check, occurrence, _, count, _, _, _ in rows
            )
            Flip.objects.bulk_create(
                Flip(owner=row[0], kind=row[6], evaluation=evaluation, created_at=now)
                for row, evaluation in zip(rows, evaluations, strict=True)
                if row[6]
            )
    except Exception:
        logger.exception("affirmations checker: batch failed, one by one instead")
        return due
    for check, _, _, _, _, values, kind in rows:
        for name, value in values.items():
            setattr(check, name, value)
        summary.evaluated += 1
        summary.flips += 1 if kind else 0
        summary.checks.append(check.pk)
    return rest


def _evaluate_check(check: Check, *, now: datetime, summary: PassSummary) -> None:
    """Evaluate the due occurrences of one check, oldest first; too many missed
    ones are recorded as one skipped evaluation first."""
    occurrence = check.next_occurrence
    pending: list[datetime] = []
    following = None
    for when in _iterate_from(check, occurrence):
        if when + check.grace > now:
            following = when
            break
        if len(pending) >= SCAN_LIMIT:  # behind by months: give the gap up at once
            following = next_occurrence(check.schedule, check.tz, now - check.grace)
            break
        pending.append(when)
    if not pending or following is None:
        return
    if len(pending) >= SCAN_LIMIT:
        skipped, to_evaluate = pending, []
    else:
        cut = max(0, len(pending) - CATCH_UP_LIMIT)
        skipped, to_evaluate = pending[:cut], pending[cut:]
    # Each step claims the check's next occurrence with a conditional UPDATE in the
    # same transaction as its evaluation: of two checkers only the one whose UPDATE
    # moved next_occurrence goes on, and an error rolls the claim back, so the
    # occurrence is retried, not lost.
    steps = to_evaluate + [following]
    current = occurrence
    if skipped:
        with transaction.atomic():
            if not _claim(check, current, steps[0], now=now, values={}):
                return
            _record_skipped(check, skipped, now=now)
        summary.skipped += len(skipped)
        current = steps[0]
    for when, after in zip(to_evaluate, steps[1:], strict=True):
        if not _evaluate_occurrence(
            check, current, when, after, now=now, summary=summary
        ):
            return
        current = after
    summary.checks.append(check.pk)


def _claim(
    check: Check, current: datetime, following: datetime, *, now: datetime, values: dict
) -> bool:
    """Move the check from ``current`` to ``following`` (and apply ``values``) only
    if no other checker did it first."""
    return (
        Check.objects.filter(pk=check.pk, next_occurrence=current).update(
            next_occurrence=following,
            next_due_at=following + check.grace,
            last_evaluated_at=now,
            last_error="",
            **values,
        )
        == 1
    )


def _iterate_from(check: Check, occurrence: datetime):
    yield occurrence
    yield from occurrences_after(check.schedule, check.tz, occurrence)


def _record_skipped(check: Check, skipped: list[datetime], *, now: datetime) -> None:
    start, end = skipped[0], skipped[-1]
    Evaluation.objects.create(
        owner=check,
        occurrence=start,
        window_start=start,
        window_end=end,
        evaluated_at=now,
        skipped_reason=(
            f"{len(skipped)} occurrence(s) from {start:%Y-%m-%d %H:%M} to "
            f"{end:%Y-%m-%d %H:%M} UTC not evaluated: the checker was behind by "
            f"more than {CATCH_UP_LIMIT} occurrences."
        ),
        min_count=check.min_count,
        max_count=check.max_count,
    )


def _evaluate_occurrence(
    check: Check,
    current: datetime,
    occurrence: datetime,
    following: datetime,
    *,
    now: datetime,
    summary: PassSummary,
) -> bool:
    """Count, then in one transaction: claim the occurrence together with the
    check's new status, record the evaluation and any flip. Returns False when
    another checker had claimed it."""
    start, end = check.window_for(occurrence)
    observed = Affirmation.objects.in_window(
        check.name, start, end, received_by=occurrence + check.grace
    ).count()
    passed = check.passes(observed)
    values, kind = _next_status(check, passed, now=now)
    with transaction.atomic():
        if not _claim(check, current, following, now=now, values=values):
            return False
        evaluation = Evaluation.of(check, occurrence, observed=observed, now=now)
        evaluation.save(force_insert=True)
        if kind:
            Flip.objects.create(
                owner=check, kind=kind, evaluation=evaluation, created_at=now
            )
    # The next occurrence of this pass starts from the state just written.
    for name, value in values.items():
        setattr(check, name, value)
    summary.evaluated += 1
    summary.flips += 1 if kind else 0
    return True


def _next_status(check: Check, passed: bool, *, now: datetime) -> tuple[dict, str]:
    """The check's fields after one evaluation, and the flip to send ("" for none):
    failing after ``failures_before_alert`` failures in a row, recovered on the
    first pass after, reminders while failing."""
    if passed:
        values = {"status": Check.Status.PASSING, "consecutive_failures": 0}
        recovered = check.status == Check.Status.FAILING
        return values, Flip.Kind.RECOVERED if recovered else ""
    failures = check.consecutive_failures + 1
    values = {"consecutive_failures": failures}
    kind = ""
    if check.status != Check.Status.FAILING and failures >= check.failures_before_alert:
        values["status"] = Check.Status.FAILING
        kind = Flip.Kind.FAILING
    elif (
        check.status == Check.Status.FAILING
        and check.reminder_interval
        and (
            check.last_alert_at is None
            or now - check.last_alert_at >= check.reminder_interval
        )
    ):
        kind = Flip.Kind.REMINDER
    if kind:
        values["last_alert_at"] = now
    return values, kind


def checker_run_once(*, now: datetime | None = None) -> PassSummary:
    """What the tick, ``check_affirmations`` and system cron all run: a checker pass,
    then the outbox's alerts."""
    from affirmations import notifications

    summary = evaluate_due(now=now)
    notifications.send_pending()
    return summary


# --- Retention ------------------------------------------------------------------

PRUNE_BATCH = 5000


def _delete_in_batches(queryset) -> int:
    deleted = 0
    while True:
        ids = list(queryset.values_list("pk", flat=True)[:PRUNE_BATCH])
        if not ids:
            return deleted
        deleted += queryset.model.objects.filter(pk__in=ids).delete()[0]


def prune(*, now: datetime | None = None) -> dict[str, int]:
    """Delete affirmations and evaluations past their retention, a batch at a time
    so that no long transaction holds the tables."""
    now = now or timezone.now()
    affirmations = _delete_in_batches(
        Affirmation.objects.filter(
            received_at__lt=now - timedelta(days=settings.AFFIRMATIONS_RETENTION_DAYS)
        ).order_by()
    )
    evaluations = _delete_in_batches(
        Evaluation.objects.filter(
            evaluated_at__lt=now
            - timedelta(days=settings.AFFIRMATIONS_EVALUATION_RETENTION_DAYS)
        ).order_by()
    )
    return {"affirmations": affirmations, "evaluations": evaluations}
