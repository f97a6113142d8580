"""Packages (ApMan) and their runs."""

from __future__ import annotations

import os
import re
import shlex
import uuid
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from portal.lib.cron import validate_cron, validate_timezone
from portal.lib.jsonvalues import validate_json_object, validate_recipients

DEFAULT_MAX_LOG_BYTES = 50 * 1024 * 1024


def validate_argv(value: object) -> None:
    if not isinstance(value, list) or not value:
        raise ValidationError("The command must be a non-empty list of arguments.")
    if not all(isinstance(arg, str) for arg in value):
        raise ValidationError("Every argument of the command must be a string.")


def max_run_timeout() -> int | None:
    """The longest run timeout django-q2's retry window allows, if it has one."""
    retry = settings.Q_CLUSTER.get("retry")
    return retry - settings.PACKAGES_KILL_GRACE - 61 if retry else None


def validate_run_timeout(value: int) -> None:
    """django-q2 hands a task out again after Q_RETRY seconds: a run must end
    (timeout, kill grace, a margin) before that, or it would run twice."""
    most = max_run_timeout()
    if most is not None and (value or 0) > most:
        raise ValidationError(
            f"At most {most} s: the workers hand a task out again after "
            f"Q_RETRY={settings.Q_CLUSTER['retry']} s."
        )


# What shlex.quote leaves bare, plus braces: "{python}" needs no quotes to split.
SAFE_ARG = re.compile(r"[\w@%+=:,./{}-]+", re.ASCII)


def format_command(argv: list[str]) -> str:
    """The argument list as a command line that ``shlex.split`` gives back."""
    return " ".join(
        arg if SAFE_ARG.fullmatch(arg) else shlex.quote(arg) for arg in argv
    )


def validate_env_map(value: object) -> None:
    validate_json_object(value)
    for name, val in value.items():
        if not name or not str(name).replace("_", "a").isalnum() or name[0].isdigit():
            raise ValidationError(f"{name!r} is not a valid environment variable name.")
        if not isinstance(val, str):
            raise ValidationError(f"The value of {name} must be a string.")


def validate_name_list(value: object) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError("Must be a list of environment variable names.")
    for name in value:
        if not name or not name.replace("_", "a").isalnum() or name[0].isdigit():
            raise ValidationError(f"{name!r} is not a valid environment variable name.")


def _finish_values(obj, status: str, now: datetime, fields: dict) -> dict:
    """A terminal status, its time, and the duration when the run had started."""
    values = {"status": status, "finished_at": now, **fields}
    if obj.started_at is not None:
        values["duration"] = max(0.0, (now - obj.started_at).total_seconds())
    return values


def _transition(obj, allowed: dict, values: dict) -> bool:
    """One conditional UPDATE of ``obj``'s row (where ``allowed`` still holds), and
    the values applied to ``obj`` when it won: runners, cancels and reconcilers
    race for a run, and only the first one moves it."""
    done = type(obj).objects.filter(pk=obj.pk, **allowed).update(**values) == 1
    if done:
        for name, value in values.items():
            setattr(obj, name, value)
    return done


class PackageQuerySet(models.QuerySet):
    def with_last_run(self, *, finished: bool = False) -> PackageQuerySet:
        """Each package with its latest run's id, status, duration and end, in one
        query; with ``finished``, its latest run that ended (a queued retry or a
        running attempt doesn't hide that the package is failing)."""
        runs = PackageRun.objects.filter(package=OuterRef("pk"))
        if finished:
            latest = runs.filter(status__in=PackageRun.TERMINAL).order_by(
                "-finished_at", "-id"
            )
        else:
            latest = runs.order_by("-queued_at", "-id")
        return self.annotate(
            last_run_id=Subquery(latest.values("pk")[:1]),
            last_status=Subquery(latest.values("status")[:1]),
            last_duration=Subquery(latest.values("duration")[:1]),
            last_finished_at=Subquery(latest.values("finished_at")[:1]),
        )


class Package(models.Model):
    """An analytics package: a command run in its own process (and venv)."""

    class Concurrency(models.TextChoices):
        ALLOW = "allow", "Allow parallel runs"
        SKIP = "skip", "Skip if running"
        QUEUE = "queue", "Queue behind the running one"

    slug = models.SlugField(
        max_length=100, unique=True, help_text="The package id (ApMan's `id`)."
    )
    description = models.TextField(blank=True)
    directory = models.CharField(
        max_length=500,
        blank=True,
        help_text="Absolute path of the package folder; the command runs there.",
    )
    command = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_argv],
        help_text="Argument list. Relative paths resolve against the directory; "
        "{python} is the package venv's interpreter.",
    )
    git_url = models.CharField(
        "git source",
        max_length=2000,
        blank=True,
        help_text="Instead of a command: a git repository whose fxq-pipeline.yml "
        "is run as a pipeline. No credentials in the URL.",
    )
    git_ref = models.CharField(
        max_length=250, blank=True, help_text="Branch, tag or commit; default branch."
    )
    timeout = models.PositiveIntegerField(
        validators=[MinValueValidator(1), validate_run_timeout],
        help_text="Seconds; the run is killed after.",
    )
    parameters = models.JSONField(
        default=dict, blank=True, validators=[validate_json_object]
    )
    parameters_as_argument = models.BooleanField(
        default=True,
        help_text="Append the parameters as one JSON argument (ApMan-compatible).",
    )
    environment = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_env_map],
        help_text="Environment variables for the package (not secrets).",
    )
    secret_env = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_name_list],
        verbose_name="secret references",
        help_text="Names of the portal's environment variables passed to the "
        "package's environment. Their values are never stored or shown.",
    )
    requirements_file = models.CharField(
        max_length=300,
        blank=True,
        help_text="requirements.txt path, relative to the directory; builds a venv.",
    )
    notify_success = models.BooleanField(default=False)
    recipients = models.JSONField(
        default=list, blank=True, validators=[validate_recipients]
    )
    concurrency = models.CharField(
        max_length=10, choices=Concurrency.choices, default=Concurrency.ALLOW
    )
    max_retries = models.PositiveSmallIntegerField(default=0)
    retry_backoff = models.PositiveIntegerField(
        default=60, help_text="Seconds before the first retry; doubles each attempt."
    )
    schedule = models.CharField(
        max_length=100, blank=True, validators=[validate_cron], help_text="Cron."
    )
    schedule_tz = models.CharField(
        max_length=64, default="UTC", validators=[validate_timezone]
    )
    next_scheduled_at = models.DateTimeField(null=True, blank=True, db_index=True)
    max_log_bytes = models.PositiveBigIntegerField(
        default=DEFAULT_MAX_LOG_BYTES,
        validators=[MinValueValidator(1024)],
        help_text="Output beyond this is cut (the run goes on).",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = PackageQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]
        permissions = [("run_package", "Can run and cancel packages")]

    def __str__(self) -> str:
        return self.slug

    @property
    def command_line(self) -> str:
        return format_command(self.command or [])

    @property
    def directory_path(self) -> Path:
        return Path(self.directory)

    @property
    def is_pipeline(self) -> bool:
        return bool(self.git_url)

    def clean(self) -> None:
        if self.git_url and self.command:
            raise ValidationError(
                {"git_url": "Give either a command or a git source, not both."}
            )
        if not self.git_url and not self.command:
            raise ValidationError({"command": "Give a command or a git source."})
        if self.git_url:
            from packages_app.gitsource import SourceError, check_ref, check_url, redact

            if redact(self.git_url) != self.git_url:
                raise ValidationError(
                    {
                        "git_url": "Remove the credentials from the URL: they would "
                        "be stored. Give this host access (ssh key, credential helper)."
                    }
                )
            try:
                check_url(self.git_url)
                check_ref(self.git_ref)
            except SourceError as exc:
                field = {"url": "git_url", "ref": "git_ref"}[exc.field]
                raise ValidationError({field: exc.message}) from exc
        elif not self.directory:
            raise ValidationError({"directory": "A command package needs its folder."})
        if self.directory and not Path(self.directory).is_absolute():
            raise ValidationError({"directory": "Give an absolute path."})
        if not self.schedule:
            self.next_scheduled_at = None
            return
        from portal.lib.cron import next_after

        try:
            validate_cron(self.schedule)
            validate_timezone(self.schedule_tz)
        except ValidationError:
            return  # already reported on the field
        self.next_scheduled_at = next_after(
            self.schedule, self.schedule_tz, timezone.now()
        )


class PackageRunQuerySet(models.QuerySet):
    def active(self) -> PackageRunQuerySet:
        return self.filter(status__in=PackageRun.ACTIVE)


class PackageRun(models.Model):
    """One run of a package: from queued to a terminal status, with its log."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        TIMED_OUT = "timed_out", "Timed out"
        CANCELLED = "cancelled"
        LOST = "lost"

    class Trigger(models.TextChoices):
        CLI = "cli", "Command line"
        ADMIN = "admin"
        SCHEDULE = "schedule"
        API = "api", "API"
        RETRY = "retry"

    class Email(models.TextChoices):
        NONE = "", "Not sent"
        SENT = "sent"
        SUPPRESSED = "suppressed"

    ACTIVE = (Status.QUEUED, Status.RUNNING)
    TERMINAL = (
        Status.SUCCEEDED,
        Status.FAILED,
        Status.TIMED_OUT,
        Status.CANCELLED,
        Status.LOST,
    )
    FAILURES = (Status.FAILED, Status.TIMED_OUT, Status.LOST)

    package = models.ForeignKey(Package, on_delete=models.CASCADE, related_name="runs")
    # The marker in the child's environment (PORTAL_RUN_ID): unique across hosts
    # and databases, so a sweep never touches another run's processes.
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    status = models.CharField(
        max_length=12, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    triggered_by = models.CharField(max_length=150, blank=True)
    parameters = models.JSONField(
        default=dict, blank=True, validators=[validate_json_object]
    )
    timeout = models.PositiveIntegerField(
        validators=[MinValueValidator(1), validate_run_timeout]
    )
    notify = models.BooleanField(default=True)
    attempt = models.PositiveSmallIntegerField(default=1)
    retry_of = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    scheduled_for = models.DateTimeField(null=True, blank=True)
    not_before = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration = models.FloatField(null=True, blank=True, help_text="Seconds.")
    exit_code = models.IntegerField(null=True, blank=True)
    signal_name = models.CharField(max_length=16, blank=True)
    pid = models.IntegerField(null=True, blank=True)
    pgid = models.IntegerField(null=True, blank=True)
    host = models.CharField(max_length=255, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    output_bytes = models.PositiveBigIntegerField(default=0)
    log_truncated = models.BooleanField(default=False)
    log_head = models.TextField(blank=True)
    log_tail = models.TextField(blank=True)
    log_path = models.CharField(max_length=500, blank=True)
    cpu_user = models.FloatField(null=True, blank=True, help_text="Seconds.")
    cpu_system = models.FloatField(null=True, blank=True, help_text="Seconds.")
    max_rss_kb = models.PositiveBigIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    email = models.CharField(
        max_length=10, choices=Email.choices, default=Email.NONE, blank=True
    )
    pipeline_run = models.OneToOneField(
        "PipelineRun",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="package_run",
        help_text="The pipeline this run ran, for a package with a git source.",
    )

    objects = PackageRunQuerySet.as_manager()

    class Meta:
        ordering = ["-queued_at", "-id"]
        indexes = [
            models.Index(fields=["package", "-queued_at"]),
            models.Index(fields=["status", "heartbeat_at"]),
        ]
        constraints = [
            # One run per cron occurrence, however many schedulers race for it.
            models.UniqueConstraint(
                fields=["package", "scheduled_for"],
                condition=models.Q(trigger="schedule"),
                name="one_run_per_occurrence",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.package.slug} #{self.pk}"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def elapsed(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or timezone.now()
        return max(0.0, (end - self.started_at).total_seconds())

    def start(self, *, pid: int, host: str, log_path: str, now: datetime) -> None:
        """Record the child as started (the run was claimed as RUNNING already)."""
        self.pid = self.pgid = pid
        self.host = host
        self.log_path = log_path
        self.heartbeat_at = now
        PackageRun.objects.filter(pk=self.pk).update(
            pid=pid, pgid=pid, host=host, log_path=log_path, heartbeat_at=now
        )

    start.alters_data = True

    def finish(self, status: str, *, now: datetime | None = None, **fields) -> bool:
        """Move to a terminal status exactly once; False when already finished.

        A conditional update: the runner, a cancel and the reconciler may race to
        finish one run, and only the first one wins.
        """
        if status not in self.TERMINAL:
            raise ValueError(f"{status!r} is not a terminal status")
        values = _finish_values(self, status, now or timezone.now(), fields)
        return _transition(self, {"status__in": self.ACTIVE}, values)

    finish.alters_data = True

    def cancel_if_queued(self) -> bool:
        """QUEUED → CANCELLED in one conditional update; False if it already started."""
        now = timezone.now()
        return _transition(
            self,
            {"status": self.Status.QUEUED},
            {
                "status": self.Status.CANCELLED,
                "finished_at": now,
                "cancel_requested_at": now,
                "error": "Cancelled before it started.",
            },
        )

    cancel_if_queued.alters_data = True

    def request_cancel(self) -> bool:
        """Ask the runner to stop; it notices within about a second."""
        return (
            PackageRun.objects.filter(
                pk=self.pk, status=self.Status.RUNNING, cancel_requested_at=None
            ).update(cancel_requested_at=timezone.now())
            == 1
        )

    request_cancel.alters_data = True

    def log_file(self) -> Path | None:
        return Path(self.log_path) if self.log_path else None

    def read_log_tail(self, limit: int = 64 * 1024) -> str:
        """The last ``limit`` bytes of the output, as text, from whole lines.

        Read from the end of the log file (a log may be gigabytes), so a running
        run shows output newer than its last heartbeat; the stored ``log_tail``
        serves when the file is not on this host, or was cut at the log cap (the
        file then ends with the cut marker, not with the output's end).
        """
        path = self.log_file()
        if path is None or self.log_truncated:
            return self.log_tail
        try:
            with path.open("rb") as log:
                size = log.seek(0, os.SEEK_END)
                if self.output_bytes > size:
                    return self.log_tail
                log.seek(max(0, size - limit))
                data = log.read(limit)
        except OSError:
            return self.log_tail
        if size > limit and b"\n" in data:
            data = data[data.index(b"\n") + 1 :]
        return data.decode("utf-8", "replace")


def runs_dir() -> Path:
    return Path(settings.PACKAGES_RUNS_DIR)


# --- Pipelines (the FX Quants runner) ------------------------------------------


class PipelineStatus(models.TextChoices):
    """The original's statuses (PAUSED existed there too, and was never used)."""

    PENDING = "PENDING", "Pending"
    IN_PROGRESS = "IN_PROGRESS", "In progress"
    SUCCESSFUL = "SUCCESSFUL", "Successful"
    FAILED = "FAILED", "Failed"
    ABORTED = "ABORTED", "Aborted"
    STOPPED = "STOPPED", "Stopped"


PIPELINE_ACTIVE = (PipelineStatus.PENDING, PipelineStatus.IN_PROGRESS)
PIPELINE_TERMINAL = (
    PipelineStatus.SUCCESSFUL,
    PipelineStatus.FAILED,
    PipelineStatus.ABORTED,
    PipelineStatus.STOPPED,
)


class PipelineRunQuerySet(models.QuerySet):
    def active(self) -> PipelineRunQuerySet:
        return self.filter(status__in=PIPELINE_ACTIVE)


class PipelineRun(models.Model):
    """A run of a repository's ``fxq-pipeline.yml``: cloned, then steps in order."""

    Status = PipelineStatus

    class Trigger(models.TextChoices):
        API = "api", "API"
        ADMIN = "admin"
        RERUN = "rerun", "Re-run"
        PACKAGE = "package"

    uuid = models.UUIDField("run id", default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=100, help_text="<owner>-<repo>")
    url = models.CharField(
        "git URL", max_length=2000, help_text="As cloned, without credentials."
    )
    ref = models.CharField(max_length=250, blank=True)
    commit = models.CharField(max_length=64, blank=True)
    status = models.CharField(
        max_length=12,
        choices=PipelineStatus.choices,
        default=PipelineStatus.PENDING,
        db_index=True,
    )
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    triggered_by = models.CharField(max_length=150, blank=True)
    rerun_of = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    environment = models.JSONField(
        default=dict, blank=True, validators=[validate_env_map]
    )
    pipeline_callback_url = models.URLField(max_length=2000, blank=True)
    step_callback_url = models.URLField(max_length=2000, blank=True)
    cmd_callback_url = models.URLField(max_length=2000, blank=True)
    timeout = models.PositiveIntegerField(
        null=True, blank=True, help_text="Seconds, for the whole pipeline."
    )
    executor = models.CharField(max_length=10, blank=True)
    workspace = models.CharField(max_length=500, blank=True)
    host = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration = models.FloatField(null=True, blank=True, help_text="Seconds.")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    log = models.TextField(
        blank=True, help_text="What the portal did: executor, clone, clean-up."
    )

    objects = PipelineRunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("run_pipeline", "Can run, re-run and cancel pipelines")]

    def __str__(self) -> str:
        return f"{self.name} {str(self.uuid)[:8]}"

    @property
    def is_terminal(self) -> bool:
        return self.status in PIPELINE_TERMINAL

    @property
    def elapsed(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or timezone.now()
        return max(0.0, (end - self.started_at).total_seconds())

    def append_log(self, line: str) -> None:
        stamp = timezone.now().strftime("%H:%M:%S")
        self.log += f"{stamp} {line}\n"
        PipelineRun.objects.filter(pk=self.pk).update(log=self.log)

    append_log.alters_data = True

    def begin(self, *, executor: str, host: str, now: datetime) -> bool:
        """PENDING → IN_PROGRESS once; False when it was cancelled or taken."""
        return _transition(
            self,
            {"status": PipelineStatus.PENDING},
            {
                "status": PipelineStatus.IN_PROGRESS,
                "started_at": now,
                "heartbeat_at": now,
                "executor": executor,
                "host": host,
            },
        )

    begin.alters_data = True

    def finish(self, status: str, *, now: datetime | None = None, **fields) -> bool:
        """Move to a terminal status exactly once (a conditional update)."""
        if status not in PIPELINE_TERMINAL:
            raise ValueError(f"{status!r} is not a terminal status")
        values = _finish_values(self, status, now or timezone.now(), fields)
        return _transition(self, {"status__in": PIPELINE_ACTIVE}, values)

    finish.alters_data = True

    def request_cancel(self) -> bool:
        """A pending run stops at once; a running one within about a second."""
        now = timezone.now()
        stopped = {
            "status": PipelineStatus.STOPPED,
            "finished_at": now,
            "cancel_requested_at": now,
            "error": "Cancelled before it started.",
        }
        if _transition(self, {"status": PipelineStatus.PENDING}, stopped):
            self.steps.filter(status=PipelineStatus.PENDING).update(
                status=PipelineStatus.ABORTED
            )
            return True
        return _transition(
            self,
            {"status": PipelineStatus.IN_PROGRESS, "cancel_requested_at": None},
            {"cancel_requested_at": now},
        )

    request_cancel.alters_data = True

    def cancel_requested(self) -> bool:
        return PipelineRun.objects.filter(
            pk=self.pk, cancel_requested_at__isnull=False
        ).exists()

    def beat(self, now: datetime) -> None:
        self.heartbeat_at = now
        PipelineRun.objects.filter(pk=self.pk).update(heartbeat_at=now)

    beat.alters_data = True


class PipelineStep(models.Model):
    """One step: a container (or, with the local executor, a folder) and its script."""

    Status = PipelineStatus

    uuid = models.UUIDField("step id", default=uuid.uuid4, unique=True, editable=False)
    run = models.ForeignKey(PipelineRun, on_delete=models.CASCADE, related_name="steps")
    step_no = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=200)
    image = models.CharField(max_length=500)
    status = models.CharField(
        max_length=12, choices=PipelineStatus.choices, default=PipelineStatus.PENDING
    )
    environment = models.JSONField(default=dict, blank=True)
    timeout = models.PositiveIntegerField(null=True, blank=True)
    allow_failure = models.BooleanField(default=False)
    network = models.CharField(max_length=10, default="none")
    container_id = models.CharField(max_length=100, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration = models.FloatField(null=True, blank=True, help_text="Seconds.")
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["run", "step_no"]
        constraints = [
            models.UniqueConstraint(fields=["run", "step_no"], name="one_step_per_no")
        ]

    def __str__(self) -> str:
        return f"{self.step_no}. {self.name}"

    def set_status(self, status: str, *, now: datetime | None = None, **fields) -> None:
        now = now or timezone.now()
        values = {"status": status, **fields}
        if status == PipelineStatus.IN_PROGRESS:
            values["started_at"] = now
        elif status in PIPELINE_TERMINAL and self.started_at is not None:
            values.update(_finish_values(self, status, now, {}))
        elif status in PIPELINE_TERMINAL:
            values["finished_at"] = now
        PipelineStep.objects.filter(pk=self.pk).update(**values)
        for name, value in values.items():
            setattr(self, name, value)

    set_status.alters_data = True


class PipelineCommand(models.Model):
    """One script line of a step, run as ``/bin/sh -c <instruction>``."""

    uuid = models.UUIDField("cmd id", default=uuid.uuid4, unique=True, editable=False)
    step = models.ForeignKey(
        PipelineStep, on_delete=models.CASCADE, related_name="commands"
    )
    cmd_no = models.PositiveSmallIntegerField()
    instruction = models.TextField()
    exit_code = models.IntegerField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    output_bytes = models.PositiveBigIntegerField(default=0)
    output_truncated = models.BooleanField(default=False)

    class Meta:
        ordering = ["step", "cmd_no"]
        constraints = [
            models.UniqueConstraint(fields=["step", "cmd_no"], name="one_cmd_per_no")
        ]

    def __str__(self) -> str:
        return f"{self.cmd_no}. {self.instruction[:60]}"


class PipelineOutput(models.Model):
    """A chunk of a command's output, in the order it came (stdout and stderr)."""

    command = models.ForeignKey(
        PipelineCommand, on_delete=models.CASCADE, related_name="chunks"
    )
    seq = models.PositiveIntegerField()
    text = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["command", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["command", "seq"], name="one_chunk_per_seq")
        ]

    def __str__(self) -> str:
        return f"{self.command_id}#{self.seq}"
