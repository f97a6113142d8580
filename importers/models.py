"""Importers models: Graphite sinks, import sources and their runs.

An ``ImportSource`` polls one REST API (its *kind*, from ``importers.sources``) on
a schedule and pushes the points to a ``GraphiteSink``; every attempt is recorded
as an ``ImportRun``. Credentials are stored by reference (environment variable
names), never as values.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.module_loading import import_string

from importers.graphite import DEFAULT_PORTS, GraphiteClient, sanitize_path
from portal.lib.cron import next_after, validate_cron, validate_timezone

if TYPE_CHECKING:
    from importers.sources import Kind

ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
# Lowercase letters, digits and inner hyphens: the name is a metric level as is
# (graphite.sanitize_level would escape an underscore as "_5f").
SOURCE_NAME_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
SAFE_PREFIX_RE = re.compile(r"^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$")
LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}
MAX_ERROR_LENGTH = 1000
# A dry run keeps at most this many characters of the lines it would send.
MAX_DRY_RUN_CHARS = 1_000_000


# --- Kinds ----------------------------------------------------------------------


@cache
def _extra_kinds(paths: tuple[str, ...]) -> dict[str, Kind]:
    found = {}
    for dotted in paths:
        try:
            kind = import_string(dotted)
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"IMPORTERS_EXTRA_KINDS: cannot import {dotted!r}: {exc}"
            ) from exc
        if not all(hasattr(kind, name) for name in ("key", "label", "fetch")):
            raise ImproperlyConfigured(
                f"IMPORTERS_EXTRA_KINDS: {dotted!r} is not an importers.sources.Kind"
            )
        found[kind.key] = kind
    return found


def kinds() -> dict[str, Kind]:
    """Every source kind: ``importers.sources.KINDS`` and those named in
    ``settings.IMPORTERS_EXTRA_KINDS`` (dotted paths to ``Kind`` objects, for a
    plugin or the tests' fake kinds)."""
    from importers.sources import KINDS

    extra = _extra_kinds(tuple(getattr(settings, "IMPORTERS_EXTRA_KINDS", ())))
    return {**KINDS, **extra}


def get_kind(key: str) -> Kind | None:
    return kinds().get(key)


def kind_choices() -> list[tuple[str, str]]:
    """The kind field's choices, read when used: a callable, so the migration
    names this function instead of freezing the list of kinds."""
    return [(key, kind.label) for key, kind in kinds().items()]


# --- Validators -------------------------------------------------------------------


def validate_source_name(value: str) -> None:
    if not SOURCE_NAME_RE.match(value or ""):
        raise ValidationError(
            "Use lowercase letters, digits and single hyphens inside, e.g. "
            "apteligent-daily: the name is a metric level and a command argument."
        )


def validate_prefix(value: str) -> None:
    """A dotted metric root of safe levels (``[A-Za-z0-9_-]``); empty is allowed."""
    if not value or SAFE_PREFIX_RE.match(value):
        return
    try:
        suggestion = sanitize_path(value)
    except ValueError:
        raise ValidationError(
            "A prefix is levels separated by single dots, none of them empty, "
            "e.g. mobile.apteligent."
        ) from None
    raise ValidationError(
        f"Levels may only hold letters, digits, _ and -; e.g. {suggestion!r}."
    )


def credential_variable_problem(name: str) -> str:
    """Why a source may not read the variable ``name`` (empty: it may). Only
    names under IMPORTERS_CREDENTIAL_PREFIXES: otherwise an operator could have
    the portal's own secrets (SECRET_KEY, DATABASE_URL, ...) sent to any API."""
    prefixes = tuple(settings.IMPORTERS_CREDENTIAL_PREFIXES)
    if name.startswith(prefixes):
        return ""
    allowed = ", ".join(f"{p}…" for p in prefixes) or "none (the setting is empty)"
    return (
        f"{name} is not a variable importers may read: only names starting with "
        f"{allowed} (IMPORTERS_CREDENTIAL_PREFIXES), so that no source can send "
        "the portal's own settings to an API."
    )


def validate_base_url(value: str) -> None:
    """https, or http to this machine (tests, a local proxy): credentials and
    tokens never travel in clear over a network."""
    parts = urlsplit(value)
    if parts.scheme == "https" or (
        parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS
    ):
        return
    raise ValidationError(
        "Must be an https:// URL (http:// only to 127.0.0.1, ::1 or localhost): "
        "the credentials travel with every call."
    )


def validate_credentials(value: object) -> None:
    """A JSON object: credential role -> environment variable NAME."""
    if not isinstance(value, dict):
        raise ValidationError(
            "Must be a JSON object of role -> environment variable name, e.g. "
            '{"token": "PINGDOM_TOKEN"}.'
        )
    for role, name in value.items():
        if not isinstance(name, str) or not ENV_NAME_RE.match(name):
            raise ValidationError(
                f"{role}: {name!r} is not an environment variable name "
                "(capital letters, digits and _, not starting with a digit). "
                "Store the name of the variable holding the secret, never the "
                "secret itself."
            )
        if problem := credential_variable_problem(name):
            raise ValidationError(f"{role}: {problem}")


def validate_string_list(value: object) -> None:
    if not isinstance(value, list) or not all(
        isinstance(item, str) and item for item in value
    ):
        raise ValidationError(
            'Must be a JSON list of non-empty strings, e.g. ["one", "two"].'
        )


def _delegate(name: str):
    """A field validator calling ``importers.sources.<name>`` when used, turning
    anything it raises other than ValidationError into one (a form error, not a
    500)."""

    def validator(value: object) -> None:
        from importers import sources

        try:
            getattr(sources, name)(value)
        except ValidationError:
            raise
        except Exception as exc:
            raise ValidationError(f"Not valid: {exc}") from exc

    validator.__name__ = name
    validator.__qualname__ = name
    validator.__module__ = __name__
    return validator


validate_carrier_map = _delegate("validate_carrier_map")
validate_app_settings = _delegate("validate_app_settings")


# --- Sinks ------------------------------------------------------------------------


class GraphiteSink(models.Model):
    """Where points go: a carbon (or compatible) server and how to talk to it."""

    class Protocol(models.TextChoices):
        PLAINTEXT = "plaintext", "Plaintext over TCP"
        PICKLE = "pickle", "Pickle over TCP"
        UDP = "udp", "Plaintext over UDP"
        DUMMY = "dummy", "Dummy (write the lines to the log)"

    name = models.CharField(max_length=100, unique=True)
    host = models.CharField(
        max_length=255,
        blank=True,
        default="127.0.0.1",
        help_text="Host name or address of carbon (or go-carbon, InfluxDB, "
        "graphite_exporter). Not used by the dummy protocol.",
    )
    port = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(65535)],
        help_text="Empty: the protocol's usual port (2003 plaintext and UDP, "
        "2004 pickle).",
    )
    protocol = models.CharField(
        max_length=10, choices=Protocol.choices, default=Protocol.PLAINTEXT
    )
    batch_size = models.PositiveIntegerField(
        default=1000,
        validators=[MinValueValidator(1), MaxValueValidator(100_000)],
        help_text="Points per write.",
    )
    timeout = models.FloatField(
        default=5.0,
        validators=[MinValueValidator(0.1), MaxValueValidator(300)],
        help_text="Seconds per connection attempt and write.",
    )
    buffer_limit = models.PositiveIntegerField(
        default=10_000,
        validators=[MinValueValidator(1), MaxValueValidator(1_000_000)],
        help_text="Points a source keeps while this sink is down; beyond it the "
        "oldest are dropped (and counted).",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.address})"

    @property
    def effective_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.protocol]

    @property
    def address(self) -> str:
        if self.protocol == self.Protocol.DUMMY:
            return "dummy: the log"
        return f"{self.protocol} {self.host}:{self.effective_port}"

    def clean(self) -> None:
        errors = {}
        if self.protocol != self.Protocol.DUMMY and not (self.host or "").strip():
            errors["host"] = "Required, except for the dummy protocol."
        if (
            self.batch_size is not None
            and self.buffer_limit is not None
            and self.batch_size > self.buffer_limit
        ):
            # A batch is gathered in the buffer: a bigger one would drop points
            # even while the sink takes everything.
            errors["batch_size"] = "Must not exceed the buffer limit."
        if errors:
            raise ValidationError(errors)

    def client(self) -> GraphiteClient:
        """A new client for this sink (the caller flushes and closes it)."""
        return GraphiteClient(
            self.host or "127.0.0.1",
            self.port or None,
            protocol=self.protocol,
            batch_size=self.batch_size,
            timeout=self.timeout,
            buffer_limit=self.buffer_limit,
        )


# --- Sources ----------------------------------------------------------------------


class ImportSource(models.Model):
    """One API to poll (a kind with its settings), on a schedule, into a sink.

    ``state`` holds the kind's high-water marks; ``pending_points`` the points the
    sink has not accepted yet (sent first by the next run). ``running_since`` and
    ``running_run`` are the lock that keeps two runs of a source apart.
    """

    name = models.CharField(
        max_length=64,
        unique=True,
        validators=[validate_source_name],
        help_text="Used in commands (run_importer NAME) and in the importer's own "
        "metrics (<prefix>.portal.importers.NAME.*).",
    )
    kind = models.CharField(max_length=64, choices=kind_choices)
    base_url = models.URLField(
        "API base URL",
        max_length=500,
        blank=True,
        validators=[validate_base_url],
        help_text="Empty: the kind's default. https (http only to this machine).",
    )
    credentials = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_credentials],
        help_text="Role -> NAME of the environment variable holding the secret, "
        'e.g. {"token": "PINGDOM_TOKEN"}. Values are read from the environment '
        "of the process that runs the import; they are never stored or shown.",
    )
    prefix = models.CharField(
        "metric prefix",
        max_length=200,
        blank=True,
        validators=[validate_prefix],
        help_text="Dotted metric root, e.g. mobile.apteligent; may be empty.",
    )
    interval_minutes = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(7 * 24 * 60)],
        help_text="Run every this many minutes. Leave it and the cron empty for "
        "the kind's usual interval.",
    )
    cron = models.CharField(
        max_length=100,
        blank=True,
        validators=[validate_cron],
        help_text="Or a 5-field cron (minute hour day month weekday), evaluated in "
        "the time zone below.",
    )
    tz = models.CharField(
        "time zone", max_length=64, default="UTC", validators=[validate_timezone]
    )
    app_blacklist = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_string_list],
        help_text="App ids (or names) to skip, a JSON list.",
    )
    services_whitelist = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_string_list],
        help_text="Service labels to import (the API counts Wi-Fi hotspots as "
        "services), a JSON list.",
    )
    carrier_map = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_carrier_map],
        help_text="Per country, [regex, group] rules, first match wins, the last "
        'one the catch-all ".*"; e.g. {"FI": [["(?i)^elisa", "Elisa"], '
        '[".*", "Other"]]}.',
    )
    app_settings = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_app_settings],
        help_text='Per app id: its time zone and country, e.g. {"<app id>": '
        '{"timezone": "Europe/Helsinki", "country": "FI"}}.',
    )
    sink = models.ForeignKey(
        GraphiteSink, on_delete=models.PROTECT, related_name="sources"
    )
    enabled = models.BooleanField(
        default=True,
        help_text="Run on the schedule. A disabled source can still be dry-run.",
    )
    state = models.JSONField(default=dict, blank=True, editable=False)
    pending_points = models.JSONField(default=list, blank=True, editable=False)
    # The scheduler asks for enabled sources whose next_due_at has passed (or was
    # never set), through this index.
    next_due_at = models.DateTimeField(
        null=True, blank=True, editable=False, db_index=True
    )
    running_since = models.DateTimeField(null=True, blank=True, editable=False)
    running_run = models.ForeignKey(
        "ImportRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    last_run = models.ForeignKey(
        "ImportRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]
        permissions = [("run_importsource", "Can run an import source now")]

    def __str__(self) -> str:
        return self.name

    # --- Derived ------------------------------------------------------------------

    @property
    def kind_spec(self) -> Kind | None:
        return get_kind(self.kind)

    @property
    def effective_base_url(self) -> str:
        kind = self.kind_spec
        return self.base_url or (kind.default_base_url if kind else "")

    @property
    def effective_interval(self) -> int | None:
        """Minutes between runs; None for a cron schedule."""
        if self.cron:
            return None
        if self.interval_minutes:
            return self.interval_minutes
        kind = self.kind_spec
        return kind.default_interval_minutes if kind else 60

    @property
    def schedule_text(self) -> str:
        """``every 5 min``, ``every 2 h``, or the cron in English and its zone."""
        if self.cron:
            from cronsim import CronSim

            try:
                words = CronSim(self.cron, timezone.now()).explain()
            except Exception:  # explain() is best effort; the cron was validated
                words = self.cron
            return f"{words} ({self.tz})"
        minutes = self.effective_interval or 0
        text = (
            f"every {minutes // 60} h"
            if minutes % 60 == 0 and minutes >= 60
            else f"every {minutes} min"
        )
        return text if self.interval_minutes else f"{text} (kind's default)"

    def credential_env(self) -> list[tuple[str, str, bool]]:
        """(role, variable name, set in this process's environment) per role;
        never the value."""
        if not isinstance(self.credentials, dict):
            return []
        return [
            (role, name, bool(os.environ.get(name)))
            for role, name in sorted(self.credentials.items())
            if isinstance(name, str)
        ]

    def pending_count(self) -> int:
        return len(self.pending_points or [])

    # --- Validation -------------------------------------------------------------

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.interval_minutes and self.cron:
            errors["cron"] = "Give an interval or a cron, not both."
        kind = self.kind_spec
        if kind is not None and isinstance(self.credentials, dict):
            want, have = set(kind.credential_roles), set(self.credentials)
            if want != have:
                parts = []
                if want - have:
                    parts.append(f"missing {', '.join(sorted(want - have))}")
                if have - want:
                    parts.append(f"unknown {', '.join(sorted(have - want))}")
                errors["credentials"] = (
                    f"{kind.label} needs exactly the roles "
                    f"{', '.join(kind.credential_roles) or '(none)'}: "
                    f"{'; '.join(parts)}."
                )
        if (
            self.kind == "apteligent_grouped_carrier"
            and isinstance(self.app_settings, dict)
            and isinstance(self.carrier_map, dict)
        ):
            # A country without rules would put every carrier in Other, silently.
            unmapped = sorted(
                {
                    str(app.get("country"))
                    for app in self.app_settings.values()
                    if isinstance(app, dict) and app.get("country")
                }
                - set(self.carrier_map)
            )
            if unmapped:
                errors["carrier_map"] = (
                    f"No rules for the countries of the per-app settings: "
                    f"{', '.join(unmapped)} (country names must match exactly)."
                )
        if errors:
            raise ValidationError(errors)

    # --- Schedule -----------------------------------------------------------------

    def next_due_after(self, after: datetime) -> datetime:
        """The first due time after ``after``: ``after`` + the interval, or the
        cron's next occurrence in the source's zone (DST included), in UTC."""
        if self.cron:
            return next_after(self.cron, self.tz, after)
        return after + timedelta(minutes=self.effective_interval or 60)

    def compute_next_due(self, now: datetime) -> datetime | None:
        """When the source is due next, without saving.

        From the start of the last run when there is one (an edit does not
        postpone a source), never earlier than the end of that run; a source
        never run is due at once on an interval, at its next occurrence on a cron.
        A disabled source has none.
        """
        if not self.enabled:
            return None
        last = self.last_run
        if last is None:
            return self.next_due_after(now) if self.cron else now
        due = max(self.next_due_after(last.started_at), last.finished_at or now)
        if self.cron and due < now:
            # Occurrences missed while down are not owed: the next one is.
            due = self.next_due_after(now)
        return due

    def reschedule(self, now: datetime | None = None) -> datetime | None:
        """Recompute ``next_due_at`` (after an edit) and save it."""
        self.next_due_at = self.compute_next_due(now or timezone.now())
        if self.pk:
            ImportSource.objects.filter(pk=self.pk).update(next_due_at=self.next_due_at)
        return self.next_due_at

    reschedule.alters_data = True

    # --- The run lock ---------------------------------------------------------------

    def claim(
        self,
        run: ImportRun,
        *,
        now: datetime,
        stale_after: timedelta,
        due_by: datetime | None = None,
    ) -> bool:
        """Take the run lock for ``run`` with one conditional UPDATE; False when
        another run holds it (a lock older than ``stale_after`` is taken over).
        With ``due_by`` (the scheduler), only while the source is still enabled
        and due: a run that just finished elsewhere has moved next_due_at on."""
        query = ImportSource.objects.filter(pk=self.pk).filter(
            Q(running_since__isnull=True) | Q(running_since__lt=now - stale_after)
        )
        if due_by is not None:
            query = query.filter(enabled=True).filter(
                Q(next_due_at__isnull=True) | Q(next_due_at__lte=due_by)
            )
        abandoned = (
            ImportSource.objects.filter(pk=self.pk)
            .values_list("running_run_id", flat=True)
            .first()
        )
        if query.update(running_since=now, running_run=run) != 1:
            return False
        if abandoned is not None:
            # The holder's process died (or overran the stale limit): its run
            # will never finish on its own.
            ImportRun.objects.filter(
                pk=abandoned, status=ImportRun.Status.RUNNING
            ).update(
                status=ImportRun.Status.FAILED,
                finished_at=now,
                error="abandoned: its lock was taken over by run "
                f"#{run.pk} after {stale_after} without news",
            )
        self.running_since, self.running_run = now, run
        return True

    def heartbeat(self, run: ImportRun, now: datetime | None = None) -> None:
        """The run holding the lock is alive: push its stale limit further."""
        ImportSource.objects.filter(pk=self.pk, running_run=run).update(
            running_since=now or timezone.now()
        )

    claim.alters_data = True

    def release(self, run: ImportRun) -> bool:
        """Drop the lock if ``run`` still holds it (nothing else changes)."""
        done = (
            ImportSource.objects.filter(pk=self.pk, running_run=run).update(
                running_since=None, running_run=None
            )
            == 1
        )
        if done:
            self.running_since = self.running_run = None
        return done

    release.alters_data = True

    def record_run(
        self,
        run: ImportRun,
        *,
        state: dict,
        pending_points: list,
        now: datetime,
    ) -> bool:
        """After a run holding the lock: save the high-water marks and the points
        kept for later in one UPDATE, point at the run, schedule the next one and
        release the lock. False (nothing saved) when the lock was taken over."""
        # The schedule as it is now: an operator may have edited it meanwhile.
        self.refresh_from_db(
            fields=["enabled", "kind", "interval_minutes", "cron", "tz"]
        )
        self.last_run = run
        next_due = self.compute_next_due(now)
        updated = ImportSource.objects.filter(pk=self.pk, running_run=run).update(
            state=state,
            pending_points=pending_points,
            last_run=run,
            next_due_at=next_due,
            running_since=None,
            running_run=None,
        )
        if updated != 1:
            return False
        self.state, self.pending_points = state, pending_points
        self.next_due_at = next_due
        self.running_since = self.running_run = None
        return True

    record_run.alters_data = True


# --- Runs -------------------------------------------------------------------------


class ImportRun(models.Model):
    """One run of a source: what it fetched, sent, kept and dropped, and why it
    failed. A dry run keeps the lines it would have sent instead."""

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Schedule"
        COMMAND = "command", "Command"
        ADMIN = "admin", "Admin"

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        PARTIAL = "partial", "Partial (points kept for later)"
        FAILED = "failed", "Failed"

    TERMINAL = frozenset({Status.SUCCEEDED, Status.PARTIAL, Status.FAILED})

    source = models.ForeignKey(
        ImportSource, on_delete=models.CASCADE, related_name="runs"
    )
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    triggered_by = models.CharField(max_length=150, blank=True)
    dry_run = models.BooleanField(default=False)
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.RUNNING
    )
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration = models.FloatField(null=True, blank=True, help_text="Seconds.")
    since = models.DateTimeField(null=True, blank=True)
    until = models.DateTimeField(null=True, blank=True)
    http_calls = models.PositiveIntegerField(default=0)
    points_fetched = models.PositiveIntegerField(
        default=0, help_text="New points the API gave this run."
    )
    points_sent = models.PositiveIntegerField(
        default=0, help_text="Points the sink accepted, earlier pending ones included."
    )
    points_dropped = models.PositiveIntegerField(
        default=0, help_text="Oldest points dropped past the sink's buffer limit."
    )
    points_rejected = models.PositiveIntegerField(
        default=0, help_text="Invalid points (bad name or value), never sent."
    )
    points_pending = models.PositiveIntegerField(
        default=0, help_text="Points kept for the next run after this one."
    )
    error = models.CharField(max_length=MAX_ERROR_LENGTH, blank=True)
    lines = models.TextField(
        blank=True, help_text="A dry run: the exact lines it would have sent."
    )

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [
            models.Index(fields=["source", "-started_at"]),
            models.Index(fields=["started_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.source_id} #{self.pk} {self.status}"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    def finish(
        self,
        status: str,
        *,
        error: str = "",
        now: datetime | None = None,
        **counts: int | str,
    ) -> None:
        """Record the outcome (a terminal status, the counts, one line of error)."""
        if status not in self.TERMINAL:
            raise ValueError(f"{status!r} is not a terminal status")
        now = now or timezone.now()
        self.status = status
        self.finished_at = now
        self.duration = max(0.0, (now - self.started_at).total_seconds())
        self.error = one_line(error)
        for name, value in counts.items():
            setattr(self, name, value)
        self.save()

    finish.alters_data = True


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def one_line(text: str, limit: int = MAX_ERROR_LENGTH) -> str:
    """``text`` on one line, at most ``limit`` characters, without control
    characters (an API's answer may hold a NUL, which PostgreSQL cannot store)."""
    flat = " ".join(_CONTROL.sub(" ", str(text)).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
