"""Affirmations: named events that must happen N..M times in a window at cron times.

A ``Check`` watches an event name; at each occurrence T of its cron schedule it
counts the ``Affirmation``s of that name in (T - lookback, T], accepting those that
arrive until T + grace, and records an ``Evaluation``. Status changes go to an
outbox (``Flip``) from which alerts are sent exactly once.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from portal.lib.cron import validate_cron, validate_timezone
from portal.lib.jsonvalues import validate_recipients

KEY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read aloud, typed
KEY_LENGTH = 8
MAX_NAME_LENGTH = 200
# Affirmation data beyond this many characters is cut and marked.
MAX_DATA_LENGTH = 10_000
TRUNCATED_MARK = "… [truncated]"


def generate_key() -> str:
    """A short random key, pasted next to the code that affirms so that a code
    search finds every place touching the event: ``af-`` + 8 characters."""
    return "af-" + "".join(secrets.choice(KEY_ALPHABET) for _ in range(KEY_LENGTH))


_NAME_CONTROL = re.compile("[\x00\r\n\t]")


def validate_event_name(value: str) -> None:
    stripped = value.strip()
    if not stripped:
        raise ValidationError("An event name must not be empty.")
    if len(stripped) != len(value):
        raise ValidationError("An event name must not start or end with spaces.")
    if _NAME_CONTROL.search(value):
        raise ValidationError("An event name must not contain control characters.")


def validate_positive_duration(value: timedelta) -> None:
    if value is not None and value <= timedelta(0):
        raise ValidationError("Must be longer than zero.")


def validate_not_negative_duration(value: timedelta) -> None:
    if value is not None and value < timedelta(0):
        raise ValidationError("Must not be negative.")


class Check(models.Model):
    """A rule: at each cron occurrence, the event ``name`` happened between
    ``min_count`` and ``max_count`` times in the ``lookback`` before it."""

    class Status(models.TextChoices):
        NEW = "new", "New"
        PASSING = "passing", "Passing"
        FAILING = "failing", "Failing"
        PAUSED = "paused", "Paused"

    name = models.CharField(
        "event name",
        max_length=MAX_NAME_LENGTH,
        db_index=True,
        validators=[validate_event_name],
        help_text="The event this check counts; several checks may watch one name.",
    )
    key = models.CharField(
        max_length=16,
        unique=True,
        default=generate_key,
        editable=False,
        help_text="Paste it next to the code that affirms: a code search then finds "
        "every place touching the event. POST /affirm/<key> affirms it.",
    )
    description = models.TextField(blank=True)
    schedule = models.CharField(
        max_length=100,
        validators=[validate_cron],
        help_text="Standard 5-field cron (minute hour day month weekday; Sunday is 0 "
        "or 7), evaluated in the check's time zone.",
    )
    tz = models.CharField(
        "time zone", max_length=64, default="UTC", validators=[validate_timezone]
    )
    lookback = models.DurationField(
        validators=[validate_positive_duration],
        help_text="How far back from each occurrence to count, e.g. 20 min, 5 h, 3 d.",
    )
    min_count = models.PositiveIntegerField(default=1)
    max_count = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Empty: no upper bound. 0: the event must not happen at all.",
    )
    grace = models.DurationField(
        default=timedelta(minutes=5),
        validators=[validate_not_negative_duration],
        help_text="Affirmations arriving this long after the occurrence still count "
        "(late clocks, slow jobs); the evaluation waits for it.",
    )
    failures_before_alert = models.PositiveIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(1000)],
        help_text="Consecutive failed evaluations before the check turns failing.",
    )
    reminder_interval = models.DurationField(
        null=True,
        blank=True,
        validators=[validate_positive_duration],
        help_text="While failing, email again this often. Empty: no reminders.",
    )
    recipients = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_recipients],
        help_text="Email addresses alerted when the check fails and recovers.",
    )
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.NEW, db_index=True
    )
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    # The occurrence to evaluate next, and when (occurrence + grace): the checker
    # asks only for checks whose next_due_at has passed, through this index.
    next_occurrence = models.DateTimeField(null=True, blank=True, editable=False)
    next_due_at = models.DateTimeField(
        null=True, blank=True, editable=False, db_index=True
    )
    last_evaluated_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_alert_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.TextField(blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(max_count__isnull=True)
                | Q(max_count__gte=models.F("min_count")),
                name="affirmations_check_min_le_max",
            )
        ]
        permissions = [("affirm_check", "Can sign off (affirm) a check by hand")]

    def __str__(self) -> str:
        return f"{self.name} [{self.key}]"

    def clean(self) -> None:
        if self.max_count is not None and self.max_count < (self.min_count or 0):
            raise ValidationError(
                {
                    "max_count": "Must not be below the minimum; for a must-not-happen "
                    "check set both to 0."
                }
            )

    def schedule_from(self, now: datetime) -> None:
        """Aim at the first occurrence after ``now`` (a new or edited check, or one
        resumed): earlier occurrences are not owed. Saves the three fields."""
        from affirmations.schedule import next_occurrence

        if self.status == self.Status.PAUSED:
            self.next_occurrence = self.next_due_at = None
        else:
            self.next_occurrence = next_occurrence(self.schedule, self.tz, now)
            self.next_due_at = self.next_occurrence + self.grace
        if self.pk:
            Check.objects.filter(pk=self.pk).update(
                next_occurrence=self.next_occurrence, next_due_at=self.next_due_at
            )

    schedule_from.alters_data = True

    def pause(self) -> bool:
        """Stop evaluating; no alerts until resumed."""
        done = (
            Check.objects.filter(pk=self.pk)
            .exclude(status=self.Status.PAUSED)
            .update(
                status=self.Status.PAUSED,
                next_occurrence=None,
                next_due_at=None,
                consecutive_failures=0,
            )
            == 1
        )
        if done:
            self.status = self.Status.PAUSED
            self.next_occurrence = self.next_due_at = None
        return done

    pause.alters_data = True

    def resume(self, now: datetime | None = None) -> bool:
        """Evaluate again from the next occurrence on, as a new check."""
        if not Check.objects.filter(pk=self.pk, status=self.Status.PAUSED).update(
            status=self.Status.NEW
        ):
            return False
        self.status = self.Status.NEW
        self.schedule_from(now or timezone.now())
        return True

    resume.alters_data = True

    def passes(self, count: int) -> bool:
        """The counting rule: ``min_count ≤ count ≤ max_count``."""
        if count < self.min_count:
            return False
        return self.max_count is None or count <= self.max_count

    @property
    def rule(self) -> str:
        """``≥ 3 in 20 min``, ``1–2 in 1 d``, ``none in 5 h``."""
        from affirmations.schedule import format_duration

        window = format_duration(self.lookback)
        if self.max_count == 0:
            return f"none in {window}"
        if self.max_count is None:
            return f"≥ {self.min_count} in {window}"
        if self.max_count == self.min_count:
            return f"exactly {self.min_count} in {window}"
        return f"{self.min_count}–{self.max_count} in {window}"

    def window_for(self, occurrence: datetime) -> tuple[datetime, datetime]:
        """The window an occurrence counts: (occurrence - lookback, occurrence]."""
        return occurrence - self.lookback, occurrence


class AffirmationQuerySet(models.QuerySet):
    def in_window(self, name: str, start: datetime, end: datetime, *, received_by):
        """Affirmations of ``name`` that happened in (start, end] and arrived by
        ``received_by`` (the occurrence plus grace)."""
        return self.filter(
            name=name,
            occurred_at__gt=start,
            occurred_at__lte=end,
            received_at__lte=received_by,
        )


class Affirmation(models.Model):
    """One event affirmed: by a script (API, compatible endpoint, one-liner), or by a
    person (sign-off, admin)."""

    class Source(models.TextChoices):
        API = "api", "API"
        COMPAT = "compat", "Compatible endpoint"
        ONELINER = "oneliner", "One-liner"
        SIGNOFF = "signoff", "Sign-off"
        ADMIN = "admin", "Admin"

    name = models.CharField(
        max_length=MAX_NAME_LENGTH, validators=[validate_event_name]
    )
    data = models.TextField(blank=True)
    truncated = models.BooleanField(default=False)
    source = models.CharField(max_length=10, choices=Source.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="affirmations",
    )
    # The time the event happened: the client's, when it is within a sane skew of
    # the server's, else the server's (and ``note`` says why).
    occurred_at = models.DateTimeField()
    client_time = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    note = models.CharField(max_length=200, blank=True)

    objects = AffirmationQuerySet.as_manager()

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [
            # The evaluation's count: one name, a time range, arrived by the grace's
            # end; all three in the index, so the count reads only the index and
            # does not grow with the rows in the window's table pages.
            models.Index(
                fields=["name", "occurred_at", "received_at"],
                name="affirmations_count_idx",
            ),
            # Retention deletes the oldest first.
            models.Index(fields=["received_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.name} at {self.occurred_at:%Y-%m-%d %H:%M:%S}"


class Evaluation(models.Model):
    """One occurrence of a check, evaluated (or skipped, with the reason)."""

    # "owner", as Healthchecks names it: a field "check" would hide Model.check().
    owner = models.ForeignKey(
        Check, on_delete=models.CASCADE, related_name="evaluations"
    )
    occurrence = models.DateTimeField()
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    observed = models.PositiveIntegerField(null=True, blank=True)
    passed = models.BooleanField(null=True)
    evaluated_at = models.DateTimeField(default=timezone.now)
    skipped_reason = models.CharField(max_length=300, blank=True)
    # The rule at the time, so that history reads right after the check changes.
    min_count = models.PositiveIntegerField(default=0)
    max_count = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-occurrence", "-id"]
        constraints = [
            # Exactly once per occurrence, whatever two checkers do.
            models.UniqueConstraint(
                fields=["owner", "occurrence"], name="affirmations_one_evaluation"
            )
        ]
        indexes = [models.Index(fields=["evaluated_at"])]

    def __str__(self) -> str:
        return f"{self.owner_id} @ {self.occurrence:%Y-%m-%d %H:%M}"

    @classmethod
    def of(
        cls, check: Check, occurrence: datetime, *, observed: int, now: datetime
    ) -> Evaluation:
        """The (unsaved) result of one occurrence, with the rule as it stood."""
        start, end = check.window_for(occurrence)
        return cls(
            owner=check,
            occurrence=occurrence,
            window_start=start,
            window_end=end,
            observed=observed,
            passed=check.passes(observed),
            evaluated_at=now,
            min_count=check.min_count,
            max_count=check.max_count,
        )


class Flip(models.Model):
    """The outbox: a check's status change (or a reminder) to alert about once."""

    class Kind(models.TextChoices):
        FAILING = "failing", "Turned failing"
        RECOVERED = "recovered", "Recovered"
        REMINDER = "reminder", "Still failing"

    owner = models.ForeignKey(Check, on_delete=models.CASCADE, related_name="flips")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    evaluation = models.ForeignKey(
        Evaluation, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(default=timezone.now)
    processed_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["created_at"],
                name="affirmations_flip_pending_idx",
                condition=Q(processed_at__isnull=True),
            )
        ]

    def __str__(self) -> str:
        return f"{self.owner_id} {self.kind}"
