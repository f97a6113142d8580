"""Admin for packages and their runs: the main UI to edit, run, watch and cancel."""

from __future__ import annotations

import json
import math
import re
import shlex
from datetime import datetime
from pathlib import Path

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import MaxValueValidator
from django.http import FileResponse, Http404, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from packages_app import services
from packages_app.dashboard import (
    format_duration,
    run_url,
    runs_chart,
    status_badge,
    status_tone,
)
from packages_app.models import (
    Package,
    PackageRun,
    format_command,
    max_run_timeout,
    validate_json_object,
)
from packages_app.notifications import masked
from packages_app.runner import TAIL_BYTES

RUN_PERMISSION = "packages_app.run_package"
CHART_RUNS = 30
# Seconds between two refreshes of a running run's page.
TAIL_REFRESH_SECONDS = 2
MONOSPACE = {"class": "vLargeTextField pkg-mono", "spellcheck": "false"}


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is out of range")
    return value


def parse_json_object(raw: str) -> dict:
    """A JSON object typed in a form; empty means ``{}``.

    Python's json accepts NaN and Infinity, and "\u0000" escapes; the database's
    JSON columns refuse them, so they are form errors here rather than a 500 on
    save.
    """
    raw = (raw or "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(
            raw, parse_constant=_refuse_constant, parse_float=_finite_float
        )
    except ValueError as exc:
        raise ValidationError(f"Not valid JSON: {exc}.", code="invalid") from exc
    if not isinstance(value, dict):
        raise ValidationError(
            'Must be a JSON object, e.g. {"key": "value"}.', code="invalid"
        )
    validate_json_object(value)
    return value


def split_list(raw: str) -> list[str]:
    """Items separated by commas or newlines, stripped, empty ones dropped."""
    return [item.strip() for item in re.split(r"[,\n]", raw or "") if item.strip()]


class PackageForm(forms.ModelForm):
    """Edits the JSON columns as text: a command line, JSON objects, lists."""

    command = forms.CharField(
        label="Command line",
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
        if not argv:
            raise ValidationError("Give the command to run.", code="required")
        return argv

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
class PackageAdmin(admin.ModelAdmin):
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
                "fields": [
                    "directory",
                    "command",
                    "requirements_file",
                    "timeout",
                    "parameters",
                    "parameters_as_argument",
                    "environment",
                    "secret_env",
                    "max_log_bytes",
                ]
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

    def get_urls(self):
        opts = self.opts
        return [
            path(
                "<path:object_id>/run/",
                self.admin_site.admin_view(self.run_now_view),
                name=f"{opts.app_label}_{opts.model_name}_run",
            ),
            *super().get_urls(),
        ]

    def run_now_view(self, request, object_id: str):
        """GET: the form, prefilled with the package's defaults; POST: queue a run."""
        package = self.get_object(request, unquote(object_id))
        if package is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_run_permission(request, package):
            raise PermissionDenied
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
class PackageRunAdmin(admin.ModelAdmin):
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
        js = ["packages_app/run.js"]

    def get_queryset(self, request):
        # The log columns hold up to 128 KB a row; only the run page reads them.
        return super().get_queryset(request).defer("log_head", "log_tail")

    def has_add_permission(self, request) -> bool:
        return False  # runs are created by running a package

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # a run is a record: every field is read-only

    def has_delete_permission(self, request, obj=None) -> bool:
        if obj is not None and not obj.is_terminal:
            return False  # cancel it first; its process would outlive the row
        return super().has_delete_permission(request, obj)

    def has_run_permission(self, request, obj=None) -> bool:
        return request.user.has_perm(RUN_PERMISSION)

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: PackageRun):
        return status_badge(obj.status)

    @admin.display(description="Duration", ordering="duration")
    def duration_display(self, obj: PackageRun) -> str:
        if obj.duration is None and obj.status == PackageRun.Status.RUNNING:
            return f"{format_duration(obj.elapsed)} so far"
        return format_duration(obj.duration)

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

    @admin.display(description="Error")
    def error_display(self, obj: PackageRun):
        if not obj.error:
            return "—"
        return format_html('<pre class="pkg-error">{}</pre>', obj.error)

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

    def _name(self, view: str) -> str:
        return f"{self.opts.app_label}_{self.opts.model_name}_{view}"

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

    def _get_run(self, request, object_id: str) -> PackageRun:
        run = self.get_object(request, unquote(object_id))
        if run is None:
            raise Http404("No such run.")
        if not self.has_view_permission(request, run):
            raise PermissionDenied
        return run

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
