"""Admin for packages, their runs and pipeline runs: the main UI to edit, run, watch,
cancel and re-run."""

from __future__ import annotations

import json
import re
import shlex
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import MaxValueValidator
from django.http import FileResponse, Http404, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from packages_app import services
from packages_app.callbacks import safe_url
from packages_app.dashboard import (
    format_duration,
    pipeline_badge,
    pipeline_tone,
    pipeline_url,
    run_url,
    runs_chart,
    status_badge,
    status_tone,
)
from packages_app.models import (
    PIPELINE_TERMINAL,
    Package,
    PackageRun,
    PipelineCommand,
    PipelineOutput,
    PipelineRun,
    format_command,
    max_run_timeout,
)
from packages_app.notifications import masked
from packages_app.runner import TAIL_BYTES
from portal.admin_pages import ObjectPagesMixin
from portal.lib.jsonvalues import parse_json_object

RUN_PERMISSION = "packages_app.run_package"
PIPELINE_RUN_PERMISSION = "packages_app.run_pipeline"
CHART_RUNS = 30
# Seconds between two refreshes of a running run's page.
TAIL_REFRESH_SECONDS = 2
# Milliseconds between two refreshes of a running pipeline's page.
PIPELINE_REFRESH_MS = 1000
MONOSPACE = {"class": "vLargeTextField pkg-mono", "spellcheck": "false"}


def split_list(raw: str) -> list[str]:
    """Items separated by commas or newlines, stripped, empty ones dropped."""
    return [item.strip() for item in re.split(r"[,\n]", raw or "") if item.strip()]


class PackageForm(forms.ModelForm):
    """Edits the JSON columns as text: a command line, JSON objects, lists."""

    command = forms.CharField(
        label="Command line",
        required=False,
        widget=forms.TextInput(attrs={**MONOSPACE, "size": 90}),
        help_text="Split like a shell would (quotes group words), but never run "
        "by a shell. Relative paths resolve against the directory; {python} is "
        "the package venv's interpreter.",
    )
    parameters = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={**MONOSPACE, "rows": 5}),
        help_text='Default parameters, a JSON object, e.g. {"days": 7}.',
    )
    environment = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={**MONOSPACE, "rows": 4}),
        help_text="Environment variables (not secrets), a JSON object of "
        'strings, e.g. {"MODE": "full"}.',
    )
    secret_env = forms.CharField(
        label="Secret references",
        required=False,
        widget=forms.Textarea(attrs={**MONOSPACE, "rows": 2}),
        help_text="Names of the portal's environment variables passed to the "
        "package, separated by commas or newlines. Only the names are stored; "
        "the values are never shown.",
    )
    recipients = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={**MONOSPACE, "rows": 2}),
        help_text="Email addresses, separated by commas or newlines.",
    )

    class Meta:
        model = Package
        fields = [
            "slug",
            "description",
            "enabled",
            "directory",
            "command",
            "git_url",
            "git_ref",
            "requirements_file",
            "timeout",
            "parameters",
            "parameters_as_argument",
            "environment",
            "secret_env",
            "schedule",
            "schedule_tz",
            "concurrency",
            "max_retries",
            "retry_backoff",
            "notify_success",
            "recipients",
            "max_log_bytes",
        ]
        widgets = {
            "description": forms.Textarea(attrs={"rows": 2}),
            "directory": forms.TextInput(attrs={**MONOSPACE, "size": 90}),
            "git_url": forms.TextInput(attrs={**MONOSPACE, "size": 90}),
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            package = self.instance
            self.initial["command"] = format_command(package.command or [])
            self.initial["parameters"] = json.dumps(package.parameters or {}, indent=2)
            self.initial["environment"] = json.dumps(
                package.environment or {}, indent=2
            )
            self.initial["secret_env"] = "\n".join(package.secret_env or [])
            self.initial["recipients"] = "\n".join(package.recipients or [])

    def clean_command(self) -> list[str]:
        try:
            argv = shlex.split(self.cleaned_data["command"])
        except ValueError as exc:  # "No closing quotation", "No escaped character"
            raise ValidationError(
                f"Not a valid command line: {exc}.", code="invalid"
            ) from exc
        return argv  # empty for a package with a git source (Package.clean checks)

    def clean_parameters(self) -> dict:
        return parse_json_object(self.cleaned_data["parameters"])

    def clean_environment(self) -> dict:
        return parse_json_object(self.cleaned_data["environment"])

    def clean_secret_env(self) -> list[str]:
        return split_list(self.cleaned_data["secret_env"])

    def clean_recipients(self) -> list[str]:
        return split_list(self.cleaned_data["recipients"])


class RunNowForm(forms.Form):
    """What may change for one run: parameters, timeout, whether to email."""

    parameters = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={**MONOSPACE, "rows": 8}),
        help_text="A JSON object; it overrides the package's defaults for this run.",
    )
    timeout = forms.IntegerField(
        required=False,
        min_value=1,
        help_text="Seconds; leave empty for the package's timeout.",
    )
    notify = forms.BooleanField(
        required=False,
        initial=True,
        label="Send the usual email",
        help_text="Failures always email the recipients; successes only when the "
        "package asks for it.",
    )

    def __init__(self, *args, package: Package, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["parameters"].initial = json.dumps(package.parameters, indent=2)
        timeout = self.fields["timeout"]
        timeout.widget.attrs["placeholder"] = str(package.timeout)
        timeout.help_text = (
            f"Seconds; leave empty for the package's timeout ({package.timeout} s)."
        )
        most = max_run_timeout()
        if most is not None:
            # Past this, django-q2 would hand the task out again mid-run.
            timeout.validators.append(MaxValueValidator(most))
            timeout.widget.attrs["max"] = str(most)

    def clean_parameters(self) -> dict:
        return parse_json_object(self.cleaned_data["parameters"])


class LastRunFilter(admin.SimpleListFilter):
    title = "last run"
    parameter_name = "last_run"

    def lookups(self, request, model_admin):
        return [
            ("failing", "Failed, timed out or lost"),
            ("succeeded", "Succeeded"),
            ("active", "Queued or running"),
            ("never", "Never run"),
        ]

    def queryset(self, request, queryset):
        value = self.value()
        if value == "failing":
            return queryset.filter(last_status__in=PackageRun.FAILURES)
        if value == "succeeded":
            return queryset.filter(last_status=PackageRun.Status.SUCCEEDED)
        if value == "active":
            return queryset.filter(last_status__in=PackageRun.ACTIVE)
        if value == "never":
            return queryset.filter(last_status=None)
        return queryset


@admin.register(Package)
class PackageAdmin(ObjectPagesMixin, admin.ModelAdmin):
    object_pages = {"run": "run_now_view"}

    form = PackageForm
    change_form_template = "admin/packages_app/package/change_form.html"
    list_display = [
        "id",
        "slug",
        "enabled",
        "last_status_badge",
        "last_duration_display",
        "next_run",
        "schedule_display",
    ]
    list_display_links = ["id", "slug"]
    list_filter = ["enabled", LastRunFilter, "concurrency"]
    search_fields = ["slug", "description"]
    readonly_fields = ["recent_runs", "next_scheduled_at", "created_at", "updated_at"]
    actions = ["run_selected"]
    fieldsets = [
        (None, {"fields": ["slug", "description", "enabled"]}),
        (
            "Command",
            {
                "description": "Either a command run in the directory, or a git "
                "source whose fxq-pipeline.yml runs as a pipeline.",
                "fields": [
                    "directory",
                    "command",
                    "git_url",
                    "git_ref",
                    "requirements_file",
                    "timeout",
                    "parameters",
                    "parameters_as_argument",
                    "environment",
                    "secret_env",
                    "max_log_bytes",
                ],
            },
        ),
        (
            "Schedule and policy",
            {
                "fields": [
                    "schedule",
                    "schedule_tz",
                    "next_scheduled_at",
                    "concurrency",
                    "max_retries",
                    "retry_backoff",
                ]
            },
        ),
        ("Notifications", {"fields": ["recipients", "notify_success"]}),
        ("History", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]

    class Media:
        css = {"all": ["packages_app/admin.css"]}

    def get_queryset(self, request):
        return super().get_queryset(request).with_last_run()

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:
            return fieldsets
        return [("Recent runs", {"fields": ["recent_runs"]}), *fieldsets]

    def has_run_permission(self, request, obj=None) -> bool:
        return request.user.has_perm(RUN_PERMISSION)

    @admin.display(description="Last run", ordering="last_status")
    def last_status_badge(self, obj: Package):
        if obj.last_run_id is None:
            return "never run"
        return format_html(
            '<a href="{}">{}</a>',
            run_url(obj.last_run_id),
            status_badge(obj.last_status),
        )

    @admin.display(description="Last duration", ordering="last_duration")
    def last_duration_display(self, obj: Package) -> str:
        return format_duration(obj.last_duration)

    @admin.display(description="Next run", ordering="next_scheduled_at")
    def next_run(self, obj: Package):
        # A disabled package keeps its next occurrence, but the scheduler skips it.
        return obj.next_scheduled_at if obj.enabled else None

    @admin.display(description="Schedule", ordering="schedule")
    def schedule_display(self, obj: Package):
        if not obj.schedule:
            return "manual"
        return format_html("<code>{}</code> {}", obj.schedule, obj.schedule_tz)

    @admin.display(description="Last 30 runs")
    def recent_runs(self, obj: Package):
        runs = list(
            obj.runs.only(
                "id",
                "package_id",
                "status",
                "duration",
                "timeout",
                "queued_at",
                "started_at",
                "finished_at",
            ).order_by("-queued_at", "-id")[:CHART_RUNS]
        )
        changelist = reverse("admin:packages_app_packagerun_changelist")
        if not runs:
            return "No runs yet."
        last = runs[0]
        return format_html(
            '<div class="pkg-recent">{}<p>Last: <a href="{}">#{}</a> {} {} '
            '&middot; <a href="{}?package__id__exact={}">all runs</a></p></div>',
            runs_chart(reversed(runs)),
            run_url(last.pk),
            last.pk,
            status_badge(last.status),
            format_duration(last.duration) if last.duration is not None else "",
            changelist,
            obj.pk,
        )

    def render_change_form(
        self, request, context, add=False, change=False, form_url="", obj=None
    ):
        context["can_run"] = (
            obj is not None and obj.enabled and self.has_run_permission(request, obj)
        )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def run_now_view(self, request, object_id: str):
        """GET: the form, prefilled with the package's defaults; POST: queue a run."""
        package, gone = self.page_object(request, object_id, self.has_run_permission)
        if gone:
            return gone
        form = RunNowForm(request.POST or None, package=package)
        if request.method == "POST" and form.is_valid():
            try:
                run = services.package_run_now(
                    package=package,
                    trigger=PackageRun.Trigger.ADMIN,
                    triggered_by=request.user.username,
                    parameters=form.cleaned_data["parameters"],
                    timeout=form.cleaned_data["timeout"],
                    notify=form.cleaned_data["notify"],
                )
            except services.RunRefused as exc:
                form.add_error(None, str(exc))
            except ValidationError as exc:
                form.add_error(None, "; ".join(exc.messages))
            else:
                self.message_user(
                    request,
                    f"Queued run #{run.pk} of {package.slug}.",
                    messages.SUCCESS,
                )
                return redirect(run_url(run.pk))
        active = PackageRun.objects.active().filter(package=package).order_by("pk")
        context = {
            **self.admin_site.each_context(request),
            "title": f"Run {package.slug}",
            "subtitle": None,
            "opts": self.opts,
            "original": package,
            "command_line": format_command(package.command),
            "form": form,
            "active_runs": list(active.only("id", "status", "package_id")[:5]),
            "media": self.media + form.media,
        }
        return TemplateResponse(
            request, "admin/packages_app/package/run_now.html", context
        )

    @admin.action(description="Run selected packages now", permissions=["run"])
    def run_selected(self, request, queryset) -> None:
        queued, refused = [], []
        for package in queryset:
            try:
                run = services.package_run_now(
                    package=package,
                    trigger=PackageRun.Trigger.ADMIN,
                    triggered_by=request.user.username,
                )
            except services.RunRefused as exc:
                refused.append(str(exc))
            except ValidationError as exc:
                refused.append(f"{package.slug}: {'; '.join(exc.messages)}")
            else:
                queued.append(run)
        if queued:
            names = ", ".join(f"{run.package.slug} #{run.pk}" for run in queued)
            self.message_user(
                request, f"Queued {len(queued)} run(s): {names}.", messages.SUCCESS
            )
        if refused:
            self.message_user(
                request,
                f"Not run ({len(refused)}): {' '.join(refused)}",
                messages.WARNING,
            )


def short_time(value: datetime | None):
    """A compact local timestamp for list columns; the full one in its tooltip."""
    if value is None:
        return None
    local = timezone.localtime(value)
    short = "%m-%d %H:%M" if local.year == timezone.localtime().year else "%Y-%m-%d"
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        value.isoformat(),
        local.strftime("%Y-%m-%d %H:%M:%S %Z"),
        local.strftime(short),
    )


def so_far(duration: float | None, started_at: datetime | None, *, ended: bool) -> str:
    """A run's or a step's duration; while it runs, the time so far."""
    if duration is None and started_at is not None and not ended:
        elapsed = max(0.0, (timezone.now() - started_at).total_seconds())
        return f"{format_duration(elapsed)} so far"
    return format_duration(duration)


class RunRecordAdmin(admin.ModelAdmin):
    """What the package run and pipeline run pages share: a run is a read-only
    record, created by running something, deleted only once it has ended; its page
    has endpoints of its own (``_name``), which all load it with ``_get_run``."""

    run_permission = ""

    def has_add_permission(self, request) -> bool:
        return False  # runs are created by running a package or a pipeline

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # a run is a record: every field is read-only

    def has_delete_permission(self, request, obj=None) -> bool:
        if obj is not None and not obj.is_terminal:
            return False  # cancel it first; its process would outlive the row
        return super().has_delete_permission(request, obj)

    def has_run_permission(self, request, obj=None) -> bool:
        return request.user.has_perm(self.run_permission)

    @admin.display(description="Duration", ordering="duration")
    def duration_display(self, obj) -> str:
        return so_far(obj.duration, obj.started_at, ended=obj.is_terminal)

    @admin.display(description="Error")
    def error_display(self, obj):
        if not obj.error:
            return "—"
        return format_html('<pre class="pkg-error">{}</pre>', obj.error)

    def _name(self, view: str) -> str:
        return f"{self.opts.app_label}_{self.opts.model_name}_{view}"

    def _get_run(self, request, object_id: str):
        run = self.get_object(request, unquote(object_id))
        if run is None:
            raise Http404("No such run.")
        if not self.has_view_permission(request, run):
            raise PermissionDenied
        return run


def run_live(run: PackageRun) -> dict:
    """What the run page shows and refreshes: status, progress, the log's tail."""
    tail = run.read_log_tail(TAIL_BYTES)
    path = run.log_file()
    source = "file" if path and path.exists() and not run.log_truncated else "database"
    elapsed = run.duration if run.duration is not None else run.elapsed
    progress = min(100, int(100 * (elapsed or 0) / run.timeout)) if run.timeout else 0
    return {
        "status": run.status,
        "status_display": run.get_status_display(),
        "tone": status_tone(run.status),
        "active": run.status in PackageRun.ACTIVE,
        "elapsed": round(elapsed, 1) if elapsed is not None else None,
        "timeout": run.timeout,
        "progress": progress,
        "output_bytes": run.output_bytes,
        "tail": tail,
        "tail_source": source,
    }


@admin.register(PackageRun)
class PackageRunAdmin(RunRecordAdmin):
    run_permission = RUN_PERMISSION
    change_form_template = "admin/packages_app/packagerun/change_form.html"
    list_display = [
        "id",
        "status_badge",
        "package",
        "duration_display",
        "queued",
        "started",
        "trigger_display",
    ]
    list_display_links = ["id", "status_badge"]
    list_filter = ["status", "trigger", "package"]
    list_select_related = ["package"]
    raw_id_fields = ["package", "retry_of"]
    search_fields = ["package__slug", "triggered_by", "host"]
    show_full_result_count = False
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "package",
                    "status_badge",
                    "trigger",
                    "triggered_by",
                    "attempt",
                    "retry_of",
                    "shown_parameters",
                    "notify",
                    "email",
                ]
            },
        ),
        (
            "Timing",
            {
                "fields": [
                    "queued_at",
                    "scheduled_for",
                    "not_before",
                    "started_at",
                    "finished_at",
                    "duration_display",
                    "timeout",
                    "heartbeat_at",
                    "cancel_requested_at",
                ]
            },
        ),
        (
            "Result",
            {"fields": ["exit_code", "signal_name", "error_display"]},
        ),
        (
            "Resources",
            {
                "fields": [
                    "cpu_user",
                    "cpu_system",
                    "max_rss_kb",
                    "output_bytes",
                    "log_truncated",
                    "log_path",
                ]
            },
        ),
        (
            "Process",
            {"fields": ["host", "pid", "pgid", "uuid"], "classes": ["collapse"]},
        ),
    ]
    readonly_fields = [field for _, options in fieldsets for field in options["fields"]]

    class Media:
        css = {"all": ["packages_app/admin.css"]}
        js = ["packages_app/live.js", "packages_app/run.js"]

    def get_queryset(self, request):
        # The log columns hold up to 128 KB a row; only the run page reads them.
        return super().get_queryset(request).defer("log_head", "log_tail")

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: PackageRun):
        return status_badge(obj.status)

    @admin.display(description="Queued", ordering="queued_at")
    def queued(self, obj: PackageRun):
        return short_time(obj.queued_at)

    @admin.display(description="Started", ordering="started_at")
    def started(self, obj: PackageRun):
        return short_time(obj.started_at)

    @admin.display(description="Trigger", ordering="trigger")
    def trigger_display(self, obj: PackageRun) -> str:
        by = obj.triggered_by
        if not by or by == obj.trigger:
            return obj.get_trigger_display()
        return f"{obj.get_trigger_display()} · {by}"

    @admin.display(description="Parameters")
    def shown_parameters(self, obj: PackageRun):
        # Values of secret-looking keys are masked, as in the emails.
        return format_html(
            '<pre class="pkg-json">{}</pre>',
            json.dumps(masked(obj.parameters), indent=2),
        )

    def render_change_form(
        self, request, context, add=False, change=False, form_url="", obj=None
    ):
        if obj is not None:
            context.update(
                {
                    "live": run_live(obj),
                    "tail_url": reverse(f"admin:{self._name('tail')}", args=[obj.pk]),
                    "log_url": (
                        reverse(f"admin:{self._name('log')}", args=[obj.pk])
                        if obj.log_path
                        else ""
                    ),
                    "cancel_url": reverse(
                        f"admin:{self._name('cancel')}", args=[obj.pk]
                    ),
                    "can_cancel": obj.status in PackageRun.ACTIVE
                    and self.has_run_permission(request, obj),
                    "tail_kb": TAIL_BYTES // 1024,
                    "refresh_seconds": TAIL_REFRESH_SECONDS,
                }
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/tail/",
                view(self.tail_view),
                name=self._name("tail"),
            ),
            path(
                "<path:object_id>/log/",
                view(self.log_view),
                name=self._name("log"),
            ),
            path(
                "<path:object_id>/cancel/",
                view(require_POST(self.cancel_view)),
                name=self._name("cancel"),
            ),
            *super().get_urls(),
        ]

    def tail_view(self, request, object_id: str) -> JsonResponse:
        """JSON for the run page's refresh: status, elapsed, the log's tail."""
        run = self._get_run(request, object_id)
        response = JsonResponse(run_live(run))
        response["Cache-Control"] = "no-store"
        return response

    def log_view(self, request, object_id: str):
        """The whole log file, as an attachment."""
        run = self._get_run(request, object_id)
        log_file = Path(run.log_path) if run.log_path else None
        try:
            stream = log_file.open("rb") if log_file else None
        except OSError:
            stream = None
        if stream is None:
            context = {
                **self.admin_site.each_context(request),
                "title": f"Log of run #{run.pk} not found",
                "opts": self.opts,
                "original": run,
                "log_path": run.log_path,
                "tail_kb": TAIL_BYTES // 1024,
            }
            return TemplateResponse(
                request,
                "admin/packages_app/packagerun/log_gone.html",
                context,
                status=404,
            )
        return FileResponse(
            stream,
            as_attachment=True,
            filename=f"{run.package.slug}-run-{run.pk}.log",
            content_type="text/plain; charset=utf-8",
        )

    def cancel_view(self, request, object_id: str) -> HttpResponseRedirect:
        run = self._get_run(request, object_id)
        if not self.has_run_permission(request, run):
            raise PermissionDenied
        if services.run_cancel(run):
            if run.status == PackageRun.Status.CANCELLED:
                text = f"Cancelled run #{run.pk} before it started."
            else:
                text = f"Asked run #{run.pk} to stop; it ends within a few seconds."
            self.message_user(request, text, messages.SUCCESS)
        else:
            self.message_user(
                request,
                f"Run #{run.pk} is {run.get_status_display().lower()}: nothing to "
                "cancel.",
                messages.WARNING,
            )
        return redirect(run_url(run.pk))


# --- Pipeline runs ------------------------------------------------------------


def _exit_display(command: PipelineCommand) -> tuple[str, str]:
    """The text and tone of a command's exit code."""
    if command.exit_code is not None:
        return f"exit {command.exit_code}", "ok" if command.exit_code == 0 else "bad"
    if command.started_at is not None and command.finished_at is None:
        return "running", "info"
    if command.finished_at is not None:
        return "no exit code", "warn"  # stopped, or the engine lost it
    return "not run", "muted"


def pipeline_live(run: PipelineRun, *, after: int = 0) -> dict:
    """What a pipeline run's page shows and refreshes: statuses, durations, exit
    codes, and the output chunks whose id is greater than ``after``.

    The page asks for the chunks after the last one it has. Ids only grow, and one
    run's chunks are written one at a time by one thread, each committed on its
    own, so a chunk never appears behind one the page has already seen.
    Four queries: the run is loaded by the caller; steps, commands, new chunks.
    """
    steps = list(run.steps.order_by("step_no"))
    commands = PipelineCommand.objects.filter(step__run=run).order_by(
        "step__step_no", "cmd_no"
    )
    chunks = (
        PipelineOutput.objects.filter(command__step__run=run, pk__gt=after)
        .order_by("pk")
        .values_list("pk", "command_id", "text")
    )
    new_output: dict[int, list[str]] = defaultdict(list)
    last = after
    for pk, command_id, text in chunks:
        new_output[command_id].append(text)
        last = pk
    by_step: dict[int, list[dict]] = defaultdict(list)
    for command in commands:
        exit_text, exit_tone = _exit_display(command)
        by_step[command.step_id].append(
            {
                "cmd_id": str(command.uuid),
                "cmd_no": command.cmd_no,
                "instruction": command.instruction,
                "exit_code": command.exit_code,
                "exit_display": exit_text,
                "exit_tone": exit_tone,
                "output_truncated": command.output_truncated,
                "output": "".join(new_output[command.pk]),
            }
        )
    return {
        "run_id": str(run.uuid),
        "status": run.status,
        "status_display": run.get_status_display(),
        "tone": pipeline_tone(run.status),
        "active": not run.is_terminal,
        "elapsed_display": so_far(run.duration, run.started_at, ended=run.is_terminal),
        "cancel_requested": run.cancel_requested_at is not None,
        "steps_ended": sum(step.status in PIPELINE_TERMINAL for step in steps),
        "after": last,
        "steps": [
            {
                "step_id": str(step.uuid),
                "step_no": step.step_no,
                "name": step.name,
                "image": step.image,
                "status": step.status,
                "status_display": step.get_status_display(),
                "tone": pipeline_tone(step.status),
                "allow_failure": step.allow_failure,
                "duration_display": so_far(
                    step.duration,
                    step.started_at,
                    ended=step.finished_at is not None or run.is_terminal,
                ),
                "error": step.error,
                "commands": by_step[step.pk],
            }
            for step in steps
        ],
    }


@admin.register(PipelineRun)
class PipelineRunAdmin(RunRecordAdmin):
    """Pipeline runs: a list, and a read-only page per run with its steps, their
    commands and output, refreshed while it runs; Cancel and Re-run buttons."""

    run_permission = PIPELINE_RUN_PERMISSION
    change_form_template = "admin/packages_app/pipelinerun/change_form.html"
    list_display = [
        "id",
        "name",
        "status_badge",
        "trigger",
        "triggered_by",
        "created",
        "duration_display",
    ]
    list_display_links = ["id", "name"]
    list_filter = ["status", "trigger", "executor"]
    search_fields = ["name", "url", "commit", "uuid"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "uuid",
                    "name",
                    "url",
                    "ref",
                    "commit",
                    "trigger",
                    "triggered_by",
                    "rerun_link",
                ]
            },
        ),
        (
            "Execution",
            {"fields": ["executor", "host", "workspace", "timeout_display"]},
        ),
        (
            "Timing",
            {
                "fields": [
                    "created_at",
                    "started_at",
                    "finished_at",
                    "duration_display",
                    "heartbeat_at",
                    "cancel_requested_at",
                ]
            },
        ),
        ("Result", {"fields": ["error_display"]}),
        (
            "Environment and callbacks",
            {"fields": ["environment_display", "callbacks_display"]},
        ),
        ("Portal log", {"fields": ["log_display"]}),
    ]
    readonly_fields = [field for _, options in fieldsets for field in options["fields"]]

    class Media:
        css = {"all": ["packages_app/admin.css", "packages_app/pipeline.css"]}
        js = ["packages_app/live.js", "packages_app/pipeline.js"]

    def get_queryset(self, request):
        # The portal's log can be long; only the run page reads it.
        return super().get_queryset(request).defer("log")

    def get_deleted_objects(self, objs, request):
        # Steps, commands and output chunks can be thousands of rows: the page
        # counts them (model_count) and lists only the runs.
        to_delete, model_count, perms_needed, protected = super().get_deleted_objects(
            objs, request
        )
        runs = [item for item in to_delete if not isinstance(item, list)]
        return runs, model_count, perms_needed, protected

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: PipelineRun):
        return pipeline_badge(obj.status)

    @admin.display(description="Created", ordering="created_at")
    def created(self, obj: PipelineRun):
        return short_time(obj.created_at)

    @admin.display(description="Re-run of")
    def rerun_link(self, obj: PipelineRun):
        if obj.rerun_of_id is None:
            return "—"
        return format_html(
            '<a href="{}">{}</a>', pipeline_url(obj.rerun_of_id), obj.rerun_of
        )

    @admin.display(description="Timeout")
    def timeout_display(self, obj: PipelineRun) -> str:
        if obj.timeout is None:
            return f"{format_duration(settings.PIPELINE_TIMEOUT)} (the default)"
        return format_duration(obj.timeout)

    @admin.display(description="Environment")
    def environment_display(self, obj: PipelineRun):
        # Not secrets: the request's environment, shown as given.
        if not obj.environment:
            return "—"
        return format_html(
            '<pre class="pkg-json">{}</pre>', json.dumps(obj.environment, indent=2)
        )

    @admin.display(description="Callback URLs")
    def callbacks_display(self, obj: PipelineRun):
        urls = [
            ("run", obj.pipeline_callback_url),
            ("step", obj.step_callback_url),
            ("cmd", obj.cmd_callback_url),
        ]
        shown = [(event, safe_url(url)) for event, url in urls if url]
        if not shown:
            return "—"
        return format_html(
            '<ul class="pipe-callbacks">{}</ul>',
            format_html_join("", "<li>{}: <code>{}</code></li>", shown),
        )

    @admin.display(description="Log")
    def log_display(self, obj: PipelineRun):
        if not obj.log:
            return "—"
        return format_html('<pre class="pkg-log">{}</pre>', obj.log)

    def render_change_form(
        self, request, context, add=False, change=False, form_url="", obj=None
    ):
        if obj is not None:
            can_run = self.has_run_permission(request, obj)
            context.update(
                {
                    "live": pipeline_live(obj),
                    "live_url": reverse(f"admin:{self._name('live')}", args=[obj.pk]),
                    "cancel_url": reverse(
                        f"admin:{self._name('cancel')}", args=[obj.pk]
                    ),
                    "rerun_url": reverse(f"admin:{self._name('rerun')}", args=[obj.pk]),
                    "can_cancel": can_run and not obj.is_terminal,
                    "can_rerun": can_run and obj.is_terminal,
                    "refresh_ms": PIPELINE_REFRESH_MS,
                }
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/live/",
                view(self.live_view),
                name=self._name("live"),
            ),
            path(
                "<path:object_id>/cancel/",
                view(require_POST(self.cancel_view)),
                name=self._name("cancel"),
            ),
            path(
                "<path:object_id>/rerun/",
                view(require_POST(self.rerun_view)),
                name=self._name("rerun"),
            ),
            *super().get_urls(),
        ]

    def live_view(self, request, object_id: str) -> JsonResponse:
        """JSON for the run page's refresh; ``?after=`` the last chunk id it has."""
        run = self._get_run(request, object_id)
        try:
            after = max(0, int(request.GET.get("after", 0)))
        except ValueError:
            after = 0
        response = JsonResponse(pipeline_live(run, after=after))
        response["Cache-Control"] = "no-store"
        return response

    def cancel_view(self, request, object_id: str) -> HttpResponseRedirect:
        run = self._get_run(request, object_id)
        if not self.has_run_permission(request, run):
            raise PermissionDenied
        if services.pipeline_cancel(run):
            if run.status == PipelineRun.Status.STOPPED:
                text = f"Stopped {run} before it started."
            else:
                text = f"Asked {run} to stop; it ends within a few seconds."
            self.message_user(request, text, messages.SUCCESS)
        elif run.cancel_requested_at is not None and not run.is_terminal:
            self.message_user(
                request, f"{run} was already asked to stop.", messages.WARNING
            )
        else:
            self.message_user(
                request,
                f"{run} is {run.get_status_display().lower()}: nothing to cancel.",
                messages.WARNING,
            )
        return redirect(pipeline_url(run.pk))

    def rerun_view(self, request, object_id: str) -> HttpResponseRedirect:
        run = self._get_run(request, object_id)
        if not self.has_run_permission(request, run):
            raise PermissionDenied
        if not run.is_terminal:
            self.message_user(
                request,
                f"{run} has not ended yet: cancel it, or wait, before re-running it.",
                messages.WARNING,
            )
            return redirect(pipeline_url(run.pk))
        try:
            new_run = services.pipeline_rerun(run, triggered_by=request.user.username)
        except services.PipelineRefused as exc:
            self.message_user(
                request, f"Could not re-run {run}: {exc.message}", messages.ERROR
            )
            return redirect(pipeline_url(run.pk))
        self.message_user(request, f"Re-running {run} as {new_run}.", messages.SUCCESS)
        return redirect(pipeline_url(new_run.pk))
