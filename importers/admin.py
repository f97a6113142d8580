"""Admin for the importers: Graphite sinks (with Test connection), import sources
(Run now, Dry run, credentials by name), and their runs (read-only records)."""

from __future__ import annotations

import copy
import json
import math

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from importers import services
from importers.dashboard import (
    moment,
    next_due,
    run_url,
    source_url,
    stale_lock,
    status_badge,
)
from importers.models import GraphiteSink, ImportRun, ImportSource, get_kind
from portal.admin_pages import ObjectPagesMixin, SaveEditedFieldsMixin
from portal.lib.jsonvalues import json_problem, loads

RUN_PERMISSION = "importers.run_importsource"
MONOSPACE = {"class": "vLargeTextField pkg-mono", "spellcheck": "false"}
RECENT_RUNS = 10
# Points of the pending list shown on a source's page.
PENDING_SHOWN = 20
# Fields the scheduler derives the next due time from.
SCHEDULE_FIELDS = {"enabled", "kind", "interval_minutes", "cron", "tz"}


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


class JSONTextField(forms.JSONField):
    """JSON typed in a textarea. Empty means the field's empty value; NaN,
    Infinity, NUL characters and lone surrogates are form errors (the database's
    JSON columns would refuse them with a 500)."""

    def __init__(self, *, empty: dict | list, **kwargs) -> None:
        self.empty = empty
        kwargs.setdefault("required", False)
        kwargs.setdefault("widget", forms.Textarea(attrs={**MONOSPACE, "rows": 4}))
        super().__init__(**kwargs)

    def to_python(self, value):
        if self.disabled:
            return value
        if value is None or (isinstance(value, str) and not value.strip()):
            return copy.deepcopy(self.empty)
        if not isinstance(value, str):
            return value
        try:
            converted = loads(
                value, parse_constant=_refuse_constant, parse_float=_finite_float
            )
        except (ValueError, RecursionError) as exc:
            raise ValidationError(f"Not valid JSON: {exc}.", code="invalid") from exc
        if problem := json_problem(converted):
            raise ValidationError(problem, code="invalid")
        return converted

    def prepare_value(self, value):
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False)


# --- Sinks ------------------------------------------------------------------------


@admin.register(GraphiteSink)
class GraphiteSinkAdmin(ObjectPagesMixin, admin.ModelAdmin):
    object_pages = {"test": "test_view"}

    change_form_template = "admin/importers/graphitesink/change_form.html"
    list_display = [
        "id",
        "name",
        "protocol",
        "address_display",
        "batch_size",
        "buffer_limit",
        "timeout",
        "source_count",
    ]
    list_display_links = ["id", "name"]
    list_filter = ["protocol"]
    search_fields = ["name", "host"]
    fields = [
        "name",
        "protocol",
        "host",
        "port",
        "batch_size",
        "buffer_limit",
        "timeout",
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(n_sources=Count("sources"))

    @admin.display(description="Address")
    def address_display(self, obj: GraphiteSink) -> str:
        return obj.address

    @admin.display(description="Sources", ordering="n_sources")
    def source_count(self, obj: GraphiteSink):
        return format_html(
            '<a href="{}?sink__id__exact={}">{}</a>',
            reverse("admin:importers_importsource_changelist"),
            obj.pk,
            obj.n_sources,
        )

    def render_change_form(
        self, request, context, add=False, change=False, form_url="", obj=None
    ):
        context["can_test"] = obj is not None and self.has_change_permission(
            request, obj
        )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def test_view(self, request, object_id: str):
        """GET: what the test does; POST: connect once and show the answer."""
        sink, gone = self.page_object(request, object_id, self.has_change_permission)
        if gone:
            return gone
        check = None
        if request.method == "POST":
            check = services.sink_test_connection(sink=sink)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Test connection to {sink.name}",
            "subtitle": None,
            "opts": self.opts,
            "original": sink,
            "check": check,
            "media": self.media,
        }
        return TemplateResponse(
            request, "admin/importers/graphitesink/test_connection.html", context
        )


# --- Sources ----------------------------------------------------------------------


class ImportSourceForm(forms.ModelForm):
    """The JSON columns typed as text; credentials are variable names only."""

    base_url = forms.URLField(
        label="API base URL",
        required=False,
        max_length=500,
        assume_scheme="https",
        widget=forms.URLInput(attrs={**MONOSPACE, "size": 70}),
        help_text=ImportSource._meta.get_field("base_url").help_text,
    )
    credentials = JSONTextField(
        empty={},
        widget=forms.Textarea(attrs={**MONOSPACE, "rows": 4}),
        help_text=ImportSource._meta.get_field("credentials").help_text,
    )
    app_blacklist = JSONTextField(
        empty=[],
        widget=forms.Textarea(attrs={**MONOSPACE, "rows": 2}),
        help_text=ImportSource._meta.get_field("app_blacklist").help_text,
    )
    services_whitelist = JSONTextField(
        empty=[],
        widget=forms.Textarea(attrs={**MONOSPACE, "rows": 2}),
        help_text=ImportSource._meta.get_field("services_whitelist").help_text,
    )
    carrier_map = JSONTextField(
        empty={},
        widget=forms.Textarea(attrs={**MONOSPACE, "rows": 6}),
        help_text=ImportSource._meta.get_field("carrier_map").help_text,
    )
    app_settings = JSONTextField(
        empty={},
        widget=forms.Textarea(attrs={**MONOSPACE, "rows": 4}),
        help_text=ImportSource._meta.get_field("app_settings").help_text,
    )

    class Meta:
        model = ImportSource
        fields = [
            "name",
            "kind",
            "enabled",
            "sink",
            "base_url",
            "credentials",
            "prefix",
            "interval_minutes",
            "cron",
            "tz",
            "app_blacklist",
            "services_whitelist",
            "carrier_map",
            "app_settings",
        ]
        widgets = {
            "prefix": forms.TextInput(attrs={**MONOSPACE, "size": 50}),
            "cron": forms.TextInput(attrs={**MONOSPACE, "size": 30}),
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        kind = get_kind(self.instance.kind) if self.instance.kind else None
        if kind is not None and "base_url" in self.fields:
            self.fields["base_url"].widget.attrs["placeholder"] = kind.default_base_url
        if kind is not None and "credentials" in self.fields:
            roles = ", ".join(kind.credential_roles)
            self.fields["credentials"].help_text += f" {kind.label} needs: {roles}."


class LastRunFilter(admin.SimpleListFilter):
    title = "last run"
    parameter_name = "last_run"

    def lookups(self, request, model_admin):
        return [
            ("failed", "Failed"),
            ("partial", "Partial (points kept)"),
            ("succeeded", "Succeeded"),
            ("never", "Never run"),
        ]

    def queryset(self, request, queryset):
        value = self.value()
        if value == "never":
            return queryset.filter(last_run__isnull=True)
        if value in ImportRun.Status.values:
            return queryset.filter(last_run__status=value)
        return queryset


class RunningFilter(admin.SimpleListFilter):
    title = "running"
    parameter_name = "running"

    def lookups(self, request, model_admin):
        return [("yes", "Running now"), ("no", "Not running")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(running_since__isnull=False)
        if self.value() == "no":
            return queryset.filter(running_since__isnull=True)
        return queryset


class WindowForm(forms.Form):
    """A dry run's optional backfill window (kinds that can backfill)."""

    since = forms.DateTimeField(
        required=False, help_text="UTC, e.g. 2026-03-01 00:00; empty: no backfill."
    )
    until = forms.DateTimeField(required=False, help_text="UTC; empty: now.")


@admin.register(ImportSource)
class ImportSourceAdmin(ObjectPagesMixin, SaveEditedFieldsMixin, admin.ModelAdmin):
    object_pages = {"run": "run_now_view", "dry-run": "dry_run_view"}

    form = ImportSourceForm
    change_form_template = "admin/importers/importsource/change_form.html"
    list_display = [
        "id",
        "name",
        "kind",
        "enabled",
        "schedule_display",
        "last_run_display",
        "points_sent_display",
        "next_due_display",
    ]
    list_display_links = ["id", "name"]
    list_filter = ["enabled", LastRunFilter, RunningFilter, "kind", "sink"]
    list_select_related = ["sink", "last_run"]
    search_fields = ["name"]
    actions = ["run_selected"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "enabled", "sink"]}),
        (
            "API",
            {
                "fields": [
                    "base_url",
                    "credentials",
                    "credential_status",
                    "prefix",
                ]
            },
        ),
        (
            "Schedule",
            {
                "description": "An interval or a cron; both empty: the kind's "
                "usual interval.",
                "fields": ["interval_minutes", "cron", "tz"],
            },
        ),
        (
            "What to import",
            {
                "fields": [
                    "app_blacklist",
                    "services_whitelist",
                    "carrier_map",
                    "app_settings",
                ]
            },
        ),
    ]
    state_fieldset = (
        "State",
        {
            "fields": [
                "schedule_display",
                "next_due_display",
                "running_display",
                "state_display",
                "pending_display",
                "recent_runs",
            ]
        },
    )
    readonly_fields = ["credential_status", *state_fieldset[1]["fields"]]

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.resolver_match and request.resolver_match.url_name.endswith(
            "_changelist"
        ):
            # Up to a buffer's worth of kept points per source: not for a list.
            queryset = queryset.defer("state", "pending_points")
        return queryset

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return self.fieldsets
        return [self.state_fieldset, *self.fieldsets]

    def has_run_permission(self, request, obj=None) -> bool:
        return request.user.has_perm(RUN_PERMISSION)

    # --- Columns ------------------------------------------------------------------

    @admin.display(description="Schedule")
    def schedule_display(self, obj: ImportSource):
        return format_html(
            '<span title="{}">{}</span>',
            f"cron: {obj.cron} ({obj.tz})" if obj.cron else "interval",
            obj.schedule_text,
        )

    @admin.display(description="Last run", ordering="last_run__started_at")
    def last_run_display(self, obj: ImportSource):
        run = obj.last_run
        if run is None:
            return "never run"
        return format_html(
            '<a href="{}" title="{}">{}</a> {}',
            run_url(run.pk),
            run.error or f"run #{run.pk}",
            status_badge(run.status),
            moment(run.finished_at or run.started_at, timezone.now()),
        )

    @admin.display(description="Points sent", ordering="last_run__points_sent")
    def points_sent_display(self, obj: ImportSource):
        run = obj.last_run
        if run is None:
            return "—"
        if run.points_pending:
            return format_html(
                '{} <span title="kept for the next run">(+{} pending)</span>',
                run.points_sent,
                run.points_pending,
            )
        return run.points_sent

    @admin.display(description="Next due", ordering="next_due_at")
    def next_due_display(self, obj: ImportSource):
        return next_due(obj, timezone.now())

    @admin.display(description="Credential variables")
    def credential_status(self, obj: ImportSource):
        rows = obj.credential_env() if obj.pk else []
        if not rows:
            return "—"
        return format_html(
            "<ul class='imp-credentials'>{}</ul>",
            format_html_join(
                "",
                "<li>{}: <code>{}</code> — {}</li>",
                (
                    (
                        role,
                        name,
                        "set in this process's environment"
                        if is_set
                        else "NOT set in this process's environment",
                    )
                    for role, name, is_set in rows
                ),
            ),
        )

    @admin.display(description="Running")
    def running_display(self, obj: ImportSource):
        if not obj.running_since:
            return "no"
        now = timezone.now()
        return format_html(
            'run <a href="{}">#{}</a> since {}{}',
            run_url(obj.running_run_id) if obj.running_run_id else "#",
            obj.running_run_id or "?",
            moment(obj.running_since, now),
            " (stale: the next run takes the lock over)"
            if stale_lock(obj, now)
            else "",
        )

    @admin.display(description="State (high-water marks)")
    def state_display(self, obj: ImportSource):
        if not obj.state:
            return "—"
        return format_html(
            '<pre class="pkg-json">{}</pre>', json.dumps(obj.state, indent=2)
        )

    @admin.display(description="Pending points")
    def pending_display(self, obj: ImportSource):
        points = obj.pending_points or []
        if not points:
            return "none"
        shown = "\n".join(
            " ".join(str(part) for part in point) for point in points[:PENDING_SHOWN]
        )
        more = len(points) - PENDING_SHOWN
        return format_html(
            "{} point(s) waiting for the sink (sent first by the next run):"
            '<pre class="pkg-json">{}{}</pre>',
            len(points),
            shown,
            f"\n… {more} more" if more > 0 else "",
        )

    @admin.display(description="Recent runs")
    def recent_runs(self, obj: ImportSource):
        runs = list(
            obj.runs.defer("lines").order_by("-started_at", "-id")[:RECENT_RUNS]
        )
        if not runs:
            return "No runs yet."
        now = timezone.now()
        return format_html(
            '<ul class="imp-runs">{}</ul><p><a href="{}?source__id__exact={}">'
            "all runs</a></p>",
            format_html_join(
                "",
                '<li><a href="{}">#{}</a> {} {} {}: {} sent, {} pending{}</li>',
                (
                    (
                        run_url(run.pk),
                        run.pk,
                        status_badge(run.status),
                        run.get_trigger_display().lower()
                        + (" (dry run)" if run.dry_run else ""),
                        moment(run.started_at, now),
                        run.points_sent,
                        run.points_pending,
                        f" — {run.error}" if run.error else "",
                    )
                    for run in runs
                ),
            ),
            reverse("admin:importers_importrun_changelist"),
            obj.pk,
        )

    # --- Saving -------------------------------------------------------------------

    def save_model(self, request, obj: ImportSource, form, change: bool) -> None:
        # A run may hold the lock and move the state and the kept points meanwhile.
        super().save_model(request, obj, form, change)
        if not change or SCHEDULE_FIELDS & set(form.changed_data):
            obj.reschedule(timezone.now())

    def render_change_form(
        self, request, context, add=False, change=False, form_url="", obj=None
    ):
        context["can_run"] = obj is not None and self.has_run_permission(request, obj)
        # A disabled source only dry-runs (run_source refuses the rest).
        context["can_run_now"] = context["can_run"] and obj.enabled
        return super().render_change_form(request, context, add, change, form_url, obj)

    # --- Views of its own -----------------------------------------------------------

    def _context(self, request, source: ImportSource, title: str, **extra) -> dict:
        return {
            **self.admin_site.each_context(request),
            "title": title,
            "subtitle": None,
            "opts": self.opts,
            "original": source,
            "kind": source.kind_spec,
            "media": self.media,
            **extra,
        }

    def run_now_view(self, request, object_id: str):
        """GET: a confirmation; POST: queue a run for the workers.

        Queued, not run in the request, as packages are: a run makes HTTP calls
        with timeouts and retries (and may back off on 429s) for every app of the
        account, which can outlast a web worker's timeout; the worker records it
        as an ImportRun like any other, and the lock still refuses a second one.
        """
        source, gone = self.page_object(request, object_id, self.has_run_permission)
        if gone:
            return gone
        error = ""
        if request.method == "POST":
            try:
                services.source_run_enqueue(
                    source=source, triggered_by=request.user.get_username()
                )
            except services.RunRefused as exc:
                error = str(exc)
            else:
                self.message_user(
                    request,
                    f"Queued a run of {source.name}: a worker runs it shortly, and "
                    "it appears among the runs below.",
                    messages.SUCCESS,
                )
                return redirect(source_url(source.pk))
        context = self._context(request, source, f"Run {source.name} now", error=error)
        return TemplateResponse(
            request, "admin/importers/importsource/run_now.html", context
        )

    def dry_run_view(self, request, object_id: str):
        """GET: a confirmation (with a backfill window for kinds that have one);
        POST: fetch now, in this request, and show the exact lines that would be
        sent. Nothing is sent, saved or locked; the run is recorded."""
        source, gone = self.page_object(request, object_id, self.has_run_permission)
        if gone:
            return gone
        kind = source.kind_spec
        form = WindowForm(request.POST if request.method == "POST" else None)
        run = None
        if request.method == "POST" and form.is_valid():
            try:
                run = services.run_source(
                    source,
                    trigger=ImportRun.Trigger.ADMIN,
                    triggered_by=request.user.get_username(),
                    dry_run=True,
                    since=form.cleaned_data["since"],
                    until=form.cleaned_data["until"],
                    # Inside a web request: done before a proxy gives up on it.
                    time_limit=settings.IMPORTERS_DRY_RUN_SECONDS,
                )
            except services.RunRefused as exc:
                form.add_error(None, str(exc))
        context = self._context(
            request,
            source,
            f"Dry run of {source.name}",
            form=form,
            backfill=bool(kind and kind.backfill),
            run=run,
            run_link=run_url(run.pk) if run else "",
            status=status_badge(run.status) if run else "",
        )
        return TemplateResponse(
            request, "admin/importers/importsource/dry_run.html", context
        )

    @admin.action(description="Run selected sources now (queued)", permissions=["run"])
    def run_selected(self, request, queryset) -> None:
        queued, refused = [], []
        for source in queryset:
            try:
                services.source_run_enqueue(
                    source=source, triggered_by=request.user.get_username()
                )
            except services.RunRefused as exc:
                refused.append(str(exc))
            else:
                queued.append(source.name)
        if queued:
            self.message_user(
                request,
                f"Queued {len(queued)} run(s): {', '.join(queued)}.",
                messages.SUCCESS,
            )
        if refused:
            self.message_user(
                request, f"Not run: {' '.join(refused)}", messages.WARNING
            )


# --- Runs -------------------------------------------------------------------------


@admin.register(ImportRun)
class ImportRunAdmin(admin.ModelAdmin):
    """A run is a record: written by running a source, never edited here."""

    list_display = [
        "id",
        "source_link",
        "status_display",
        "trigger_display",
        "started",
        "duration_display",
        "counts",
        "error_excerpt",
    ]
    list_display_links = ["id"]
    list_filter = [
        "source",
        "status",
        "trigger",
        "dry_run",
        ("started_at", admin.DateFieldListFilter),
    ]
    list_select_related = ["source"]
    show_full_result_count = False
    search_fields = ["source__name", "error"]
    fields = [
        "source_link",
        "status_display",
        "trigger_display",
        "triggered_by",
        "started_at",
        "finished_at",
        "duration_display",
        "since",
        "until",
        "http_calls",
        "points_fetched",
        "points_sent",
        "points_pending",
        "points_dropped",
        "points_rejected",
        "error",
        "lines_display",
    ]
    readonly_fields = fields

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.resolver_match and request.resolver_match.url_name.endswith(
            "_changelist"
        ):
            queryset = queryset.defer("lines")
        return queryset

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        if obj is not None and not obj.is_terminal:
            return False  # the run still holds its source's lock
        return super().has_delete_permission(request, obj)

    @admin.display(description="Source", ordering="source__name")
    def source_link(self, obj: ImportRun):
        return format_html('<a href="{}">{}</a>', source_url(obj.source_id), obj.source)

    @admin.display(description="Status", ordering="status")
    def status_display(self, obj: ImportRun):
        return status_badge(obj.status)

    @admin.display(description="Trigger", ordering="trigger")
    def trigger_display(self, obj: ImportRun) -> str:
        text = obj.get_trigger_display()
        if obj.dry_run:
            text += " (dry run)"
        if obj.since:
            text += " (backfill)"
        return text

    @admin.display(description="Started", ordering="started_at")
    def started(self, obj: ImportRun):
        return moment(obj.started_at, timezone.now())

    @admin.display(description="Duration", ordering="duration")
    def duration_display(self, obj: ImportRun) -> str:
        if obj.duration is None:
            return "running" if not obj.is_terminal else "—"
        return f"{obj.duration:.1f} s"

    @admin.display(description="Sent / pending / dropped")
    def counts(self, obj: ImportRun):
        return format_html(
            '<span title="fetched {}, HTTP calls {}, rejected {}">{} / {} / {}</span>',
            obj.points_fetched,
            obj.http_calls,
            obj.points_rejected,
            obj.points_sent,
            obj.points_pending,
            obj.points_dropped,
        )

    @admin.display(description="Error")
    def error_excerpt(self, obj: ImportRun) -> str:
        return obj.error[:120] + ("…" if len(obj.error) > 120 else "")

    @admin.display(description="Lines (dry run)")
    def lines_display(self, obj: ImportRun):
        if not obj.dry_run:
            return "—"
        if not obj.lines:
            return "no lines"
        return format_html('<pre class="pkg-json imp-lines">{}</pre>', obj.lines)
