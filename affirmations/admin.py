"""Admin for affirmations: checks (the rule, its schedule, its history, pause and
resume, the sign-off button, the Viewers' monitoring page), and the read-only
records of affirmations and evaluations."""

from __future__ import annotations

import re
from datetime import timedelta

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import validate_email
from django.db.models.functions import Substr
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from affirmations import services
from affirmations.dashboard import (
    RECENT_RESULTS,
    check_url,
    local_time,
    monitor_order,
    next_due,
    recent_evaluations,
    result_dots,
    result_of,
    status_badge,
)
from affirmations.models import Affirmation, Check, Evaluation
from affirmations.schedule import explain, parse_duration
from portal import dashboard
from portal.admin_pages import ObjectPagesMixin, SaveEditedFieldsMixin

AFFIRM_PERMISSION = "affirmations.affirm_check"
# Evaluations in the change page's chart and table.
HISTORY_CHART = 50
HISTORY_TABLE = 20
# Affirmations of the name shown on the sign-off confirmation page.
SIGNOFF_SHOWN = 10
# Seconds between two refreshes of the monitoring page.
MONITOR_REFRESH_SECONDS = 30
MONOSPACE = {"class": "aff-mono", "spellcheck": "false"}
ZERO = re.compile(r"^\s*0+\s*[smhdw]?\s*$", re.IGNORECASE)
COMPACT_UNITS = (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def compact_duration(value: timedelta | None) -> str:
    """A duration as typed in the form, ``20m``, ``5h``, ``3d``: the largest unit
    that divides it, so that ``parse_duration`` reads it back unchanged."""
    if value is None:
        return ""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0"
    for unit, size in COMPACT_UNITS:
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"  # pragma: no cover (size 1 always divides)


def parse_recipients(raw: str) -> list[str]:
    """Addresses separated by commas, spaces or newlines; each one validated."""
    addresses = [item for item in re.split(r"[,\s]+", raw or "") if item]
    bad = []
    for address in addresses:
        try:
            validate_email(address)
        except ValidationError:
            bad.append(address)
    if bad:
        raise ValidationError(
            f"Not an email address: {', '.join(bad)}.", code="invalid"
        )
    return list(dict.fromkeys(addresses))


class CheckForm(forms.ModelForm):
    """Durations typed as ``20m``, ``5h``, ``3d``; recipients as a comma list."""

    lookback = forms.CharField(
        widget=forms.TextInput(attrs={**MONOSPACE, "size": 8}),
        help_text="How far back from each occurrence to count: a number and s, m, "
        "h, d or w, e.g. 20m, 5h, 3d.",
    )
    grace = forms.CharField(
        initial="5m",
        widget=forms.TextInput(attrs={**MONOSPACE, "size": 8}),
        help_text="Affirmations arriving this long after the occurrence still count "
        "(late clocks, slow jobs), e.g. 5m; 0 for none.",
    )
    reminder_interval = forms.CharField(
        required=False,
        widget=forms.TextInput(attrs={**MONOSPACE, "size": 8}),
        help_text="While failing, email again this often, e.g. 1d. Empty: no "
        "reminders.",
    )
    recipients = forms.CharField(
        required=False,
        widget=forms.TextInput(attrs={**MONOSPACE, "size": 80}),
        help_text="Email addresses alerted when the check fails and recovers, "
        "separated by commas.",
    )

    class Meta:
        model = Check
        fields = [
            "name",
            "description",
            "schedule",
            "tz",
            "lookback",
            "min_count",
            "max_count",
            "grace",
            "failures_before_alert",
            "reminder_interval",
            "recipients",
        ]
        widgets = {
            "description": forms.Textarea(attrs={"rows": 2}),
            "schedule": forms.TextInput(attrs={**MONOSPACE, "size": 30}),
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        check = self.instance
        if check.pk:
            # Also when bound: ``changed_data`` compares the typed text with these.
            self.initial["lookback"] = compact_duration(check.lookback)
            self.initial["grace"] = compact_duration(check.grace)
            self.initial["reminder_interval"] = compact_duration(
                check.reminder_interval
            )
            self.initial["recipients"] = ", ".join(check.recipients or [])
        if check.pk and check.schedule and "schedule" in self.fields:
            # The saved schedule in English, so a typo shows as the wrong words.
            self.fields["schedule"].help_text = format_html(
                "<strong>{}</strong> ({}). {}",
                explain(check.schedule),
                check.tz,
                Check._meta.get_field("schedule").help_text,
            )

    def clean_lookback(self) -> timedelta:
        return parse_duration(self.cleaned_data["lookback"])

    def clean_grace(self) -> timedelta:
        raw = self.cleaned_data["grace"]
        if ZERO.match(raw):
            return timedelta(0)
        return parse_duration(raw)

    def clean_reminder_interval(self) -> timedelta | None:
        raw = self.cleaned_data["reminder_interval"]
        if not raw.strip():
            return None
        return parse_duration(raw)

    def clean_recipients(self) -> list[str]:
        return parse_recipients(self.cleaned_data["recipients"])


class CheckChangeList(ChangeList):
    """The page's checks with their last results, in one more query."""

    def get_queryset(self, request, exclude_parameters=None):
        return (
            super()
            .get_queryset(request, exclude_parameters)
            .prefetch_related(recent_evaluations())
        )


def history_chart(evaluations: list[Evaluation], tz: str) -> SafeString:
    """Inline SVG of evaluations, oldest first: a bar per observed count, red when
    it failed, against the shaded band of counts the rule allowed at the time."""
    width, height, pad = 500, 80, 2
    if not evaluations:
        return mark_safe("")
    bounds = [e.min_count if e.max_count is None else e.max_count for e in evaluations]
    peak = max(max((e.observed or 0) for e in evaluations), *bounds)
    top = peak + 1  # room above the highest bar or bound
    scale = (height - pad) / top
    slot = width / max(len(evaluations), 20)
    bar_w = max(1.0, slot - 2)

    def y(count: float) -> float:
        return height - count * scale

    bands, bars = [], []
    for i, evaluation in enumerate(evaluations):
        x = i * slot
        upper = evaluation.max_count if evaluation.max_count is not None else top
        band_top = y(upper)
        band_h = max(1.0, y(evaluation.min_count) - band_top)
        if evaluation.max_count == 0:
            band_top, band_h = y(0) - 1, 1.0  # must-not-happen: the zero line
        bands.append((f"{x:.1f}", f"{band_top:.1f}", f"{slot:.1f}", f"{band_h:.1f}"))
        kind, text = result_of(evaluation)
        when = local_time(evaluation.occurrence, tz).strftime("%Y-%m-%d %H:%M %Z")
        tone = {"passed": "ok", "failed": "bad"}.get(kind, "muted")
        observed = evaluation.observed
        h = 2.0 if observed is None else max(2.0, observed * scale)
        bars.append(
            (
                kind,
                f"{x + 1:.1f}",
                f"{height - h:.1f}",
                f"{bar_w:.1f}",
                f"{h:.1f}",
                dashboard.TONE_COLOURS[tone],
                f"{when}: {text}",
            )
        )
    return format_html(
        '<svg class="portal-chart aff-chart" role="img" aria-label="{}" width="{}" '
        'height="{}" viewBox="0 0 {} {}" xmlns="http://www.w3.org/2000/svg">'
        "{}{}"
        '<line x1="0" y1="{}" x2="{}" y2="{}" stroke="#ccc"/></svg>',
        f"Observed counts of the last {len(evaluations)} evaluations against "
        "the allowed band",
        width,
        height,
        width,
        height,
        format_html_join(
            "",
            '<rect class="aff-band" x="{}" y="{}" width="{}" height="{}" '
            'fill="#2e7d32" fill-opacity="0.15"/>',
            bands,
        ),
        format_html_join(
            "",
            '<rect class="aff-bar aff-bar-{}" x="{}" y="{}" width="{}" height="{}" '
            'fill="{}"><title>{}</title></rect>',
            bars,
        ),
        height - 0.5,
        width,
        height - 0.5,
    )


def history_table(evaluations: list[Evaluation], tz: str) -> SafeString:
    """The last evaluations, newest first: time in the check's zone, the window,
    the count and the result (or why it was skipped)."""
    if not evaluations:
        return mark_safe("No evaluations yet.")
    rows = []
    for evaluation in evaluations:
        kind, text = result_of(evaluation)
        start = local_time(evaluation.window_start, tz)
        end = local_time(evaluation.window_end, tz)
        rows.append(
            (
                local_time(evaluation.occurrence, tz).strftime("%Y-%m-%d %H:%M %Z"),
                f"{start:%m-%d %H:%M} – {end:%m-%d %H:%M}",
                "—" if evaluation.observed is None else evaluation.observed,
                kind,
                evaluation.skipped_reason if kind == "skipped" else kind,
            )
        )
    return format_html(
        '<table class="aff-history"><thead><tr><th>Occurrence</th><th>Window</th>'
        "<th>Observed</th><th>Result</th></tr></thead><tbody>{}</tbody></table>",
        format_html_join(
            "",
            '<tr><td>{}</td><td>{}</td><td>{}</td><td class="aff-result-{}">{}</td>'
            "</tr>",
            rows,
        ),
    )


@admin.register(Check)
class CheckAdmin(ObjectPagesMixin, SaveEditedFieldsMixin, admin.ModelAdmin):
    object_pages = {"affirm": "affirm_view"}

    form = CheckForm
    change_form_template = "admin/affirmations/check/change_form.html"
    change_list_template = "admin/affirmations/check/change_list.html"
    list_display = [
        "id",
        "status_display",
        "check_display",
        "results_display",
        "next_due_display",
        "schedule_display",
        "rule_display",
        "affirm_link",
    ]
    list_display_links = ["id", "check_display"]
    list_filter = ["status", "tz"]
    search_fields = ["name", "key"]
    actions = ["pause_checks", "resume_checks"]
    fieldsets = [
        (None, {"fields": ["name", "description"]}),
        (
            "Rule",
            {
                "description": "At each occurrence of the schedule, the event must "
                "have happened between the minimum and the maximum times in the "
                "lookback before it. For a must-not-happen check set both to 0.",
                "fields": [
                    "schedule",
                    "tz",
                    "lookback",
                    "min_count",
                    "max_count",
                    "grace",
                ],
            },
        ),
        (
            "Alerts",
            {"fields": ["failures_before_alert", "reminder_interval", "recipients"]},
        ),
    ]
    state_fieldset = (
        "State",
        {
            "fields": [
                "key_display",
                "status_display",
                "rule_display",
                "next_due_display",
                "last_evaluated_at",
                "consecutive_failures",
                "last_error",
                "created_at",
            ]
        },
    )
    history_fieldset = ("History", {"fields": ["history_display"]})
    readonly_fields = [
        *state_fieldset[1]["fields"],
        *history_fieldset[1]["fields"],
    ]

    class Media:
        css = {"all": ["affirmations/admin.css"]}

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return self.fieldsets
        return [self.state_fieldset, self.history_fieldset, *self.fieldsets]

    def get_changelist(self, request, **kwargs):
        return CheckChangeList

    def get_list_display(self, request):
        if self.has_affirm_permission(request):
            return self.list_display
        return [name for name in self.list_display if name != "affirm_link"]

    def has_affirm_permission(self, request, obj=None) -> bool:
        return request.user.has_perm(AFFIRM_PERMISSION)

    # --- Columns ----------------------------------------------------------------

    @admin.display(description="Status", ordering="status")
    def status_display(self, obj: Check):
        return status_badge(obj.status)

    @admin.display(description="Check", ordering="name")
    def check_display(self, obj: Check):
        return format_html(
            '{}<br><code class="aff-key" title="The key: paste it next to the code '
            'that affirms">{}</code>',
            obj.name,
            obj.key,
        )

    @admin.display(description="Key")
    def key_display(self, obj: Check):
        return format_html(
            '<code class="aff-key">{}</code><br><span class="aff-quiet">A script '
            'affirms with <code class="aff-key">curl -X POST {}/affirm/{}</code>'
            "</span>",
            obj.key,
            settings.SITE_URL,
            obj.key,
        )

    @admin.display(description="Last results")
    def results_display(self, obj: Check):
        evaluations = getattr(obj, "recent_evaluations", None)
        if evaluations is None:  # not from the list page: one query for this one
            evaluations = list(
                obj.evaluations.order_by("-occurrence", "-id")[:RECENT_RESULTS]
            )
        return result_dots(reversed(evaluations), obj.tz)

    @admin.display(description="Next due", ordering="next_due_at")
    def next_due_display(self, obj: Check):
        return next_due(obj, timezone.now())

    @admin.display(description="Schedule", ordering="schedule")
    def schedule_display(self, obj: Check):
        return format_html(
            '<span title="cron: {} ({})">{}</span><br>'
            '<span class="aff-quiet">{}</span>',
            obj.schedule,
            obj.tz,
            explain(obj.schedule),
            obj.tz,
        )

    @admin.display(description="Rule")
    def rule_display(self, obj: Check) -> str:
        return obj.rule

    @admin.display(description="Sign off")
    def affirm_link(self, obj: Check):
        return format_html(
            '<a class="aff-affirm-link" href="{}">Affirm \u2018{}\u2019 now</a>',
            reverse("admin:affirmations_check_affirm", args=[obj.pk]),
            obj.name,
        )

    @admin.display(description="Last evaluations")
    def history_display(self, obj: Check):
        evaluations = list(
            obj.evaluations.only(
                "id",
                "owner_id",
                "occurrence",
                "window_start",
                "window_end",
                "observed",
                "passed",
                "skipped_reason",
                "min_count",
                "max_count",
            ).order_by("-occurrence", "-id")[:HISTORY_CHART]
        )
        if not evaluations:
            return "No evaluations yet."
        return format_html(
            '<div class="aff-history-wrap">{}{}</div>',
            history_chart(list(reversed(evaluations)), obj.tz),
            history_table(evaluations[:HISTORY_TABLE], obj.tz),
        )

    # --- Saving -------------------------------------------------------------------

    def save_model(self, request, obj: Check, form, change: bool) -> None:
        # The checker may move the status and the next occurrence meanwhile.
        super().save_model(request, obj, form, change)
        if not change or {"schedule", "tz", "grace"} & set(form.changed_data):
            # Earlier occurrences are not owed: aim at the first one from now.
            obj.schedule_from(timezone.now())

    def render_change_form(
        self, request, context, add=False, change=False, form_url="", obj=None
    ):
        context["can_affirm"] = obj is not None and self.has_affirm_permission(
            request, obj
        )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "monitor_url": reverse("admin:affirmations_check_monitor"),
        }
        return super().changelist_view(request, extra_context)

    # --- Views of its own ---------------------------------------------------------

    def get_urls(self):
        opts = self.opts
        return [
            path(
                "monitor/",
                self.admin_site.admin_view(self.monitor_view),
                name=f"{opts.app_label}_{opts.model_name}_monitor",
            ),
            *super().get_urls(),
        ]

    def affirm_view(self, request, object_id: str):
        """GET: what signing off records, and the last affirmations of the name;
        POST: record it (the confirmation step guards against stray clicks)."""
        check, gone = self.page_object(request, object_id, self.has_affirm_permission)
        if gone:
            return gone
        if request.method == "POST":
            services.check_signoff(check=check, user=request.user)
            self.message_user(
                request,
                f"Affirmed \u2018{check.name}\u2019 as {request.user.get_username()}",
                messages.SUCCESS,
            )
            return redirect(check_url(check.pk))
        recent = (
            Affirmation.objects.filter(name=check.name)
            .select_related("user")
            .defer("data")
            .order_by("-occurred_at", "-id")[:SIGNOFF_SHOWN]
        )
        watching = Check.objects.filter(name=check.name).count()
        context = {
            **self.admin_site.each_context(request),
            "title": f"Affirm \u2018{check.name}\u2019 now",
            "subtitle": None,
            "opts": self.opts,
            "original": check,
            "recent": [
                (a, local_time(a.occurred_at, check.tz).strftime("%Y-%m-%d %H:%M %Z"))
                for a in recent
            ],
            "watching": watching,
            "media": self.media,
        }
        return TemplateResponse(
            request, "admin/affirmations/check/affirm.html", context
        )

    def monitor_view(self, request):
        """Every check for Viewers: failing first, then the soonest due; the page
        refreshes itself."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        now = timezone.now()
        checks = (
            Check.objects.defer("description", "last_error")
            .prefetch_related(recent_evaluations())
            .order_by(*monitor_order())
        )
        rows = [
            {
                "check": check,
                "url": check_url(check.pk),
                "status": status_badge(check.status),
                "rule": check.rule,
                "schedule": explain(check.schedule),
                "next_due": next_due(check, now),
                "dots": result_dots(reversed(check.recent_evaluations), check.tz),
            }
            for check in checks
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": "Affirmations monitor",
            "subtitle": None,
            "opts": self.opts,
            "rows": rows,
            "refresh_seconds": MONITOR_REFRESH_SECONDS,
            "now": now,
            "media": self.media,
        }
        return TemplateResponse(
            request, "admin/affirmations/check/monitor.html", context
        )

    # --- Actions ------------------------------------------------------------------

    @admin.action(description="Pause selected checks", permissions=["change"])
    def pause_checks(self, request, queryset) -> None:
        checks = list(queryset)
        done = sum(1 for check in checks if check.pause())
        self.message_user(
            request,
            f"Paused {done} check(s); {len(checks) - done} were paused already.",
            messages.SUCCESS,
        )

    @admin.action(description="Resume selected checks", permissions=["change"])
    def resume_checks(self, request, queryset) -> None:
        checks = list(queryset)
        now = timezone.now()
        done = sum(1 for check in checks if check.resume(now))
        self.message_user(
            request,
            f"Resumed {done} check(s); {len(checks) - done} were not paused.",
            messages.SUCCESS,
        )


# --- Records --------------------------------------------------------------------


class ReadOnlyAdmin(admin.ModelAdmin):
    """A record: written by the API and the checker, never edited here."""

    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class AffirmationAddForm(forms.ModelForm):
    """An operator affirms an event by hand (any name, not only a check's)."""

    class Meta:
        model = Affirmation
        fields = ["name", "data"]
        help_texts = {"data": "Optional; up to 10 KB are kept."}


@admin.register(Affirmation)
class AffirmationAdmin(ReadOnlyAdmin):
    add_form = AffirmationAddForm

    def has_add_permission(self, request) -> bool:
        return request.user.has_perm("affirmations.add_affirmation")

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = self.add_form
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["name", "data"]
        return super().get_fields(request, obj)

    def save_model(self, request, obj, form, change) -> None:
        if change:  # pragma: no cover - records are never changed here
            return
        # The same service as the APIs; the instance it stored becomes the form's.
        stored = services.affirm(
            name=form.cleaned_data["name"],
            data=form.cleaned_data.get("data") or "",
            source=Affirmation.Source.ADMIN,
            user=request.user,
            remote_addr=request.META.get("REMOTE_ADDR"),
        )
        obj.pk = stored.pk
        obj.__dict__.update({k: v for k, v in stored.__dict__.items() if k != "_state"})
        obj._state.adding = False

    list_display = [
        "id",
        "name",
        "occurred_at",
        "received_at",
        "source",
        "user",
        "data_excerpt",
        "note",
    ]
    list_filter = ["source"]
    list_select_related = ["user"]
    search_fields = ["name"]
    raw_id_fields = ["user"]

    def get_queryset(self, request):
        # Data may be 10 kB an event: the list reads only its head.
        return (
            super()
            .get_queryset(request)
            .annotate(data_head=Substr("data", 1, 81))
            .defer("data")
        )

    @admin.display(description="Data")
    def data_excerpt(self, obj: Affirmation) -> str:
        head = getattr(obj, "data_head", None)
        if head is None:
            head = obj.data[:81]
        return head if len(head) <= 80 else head[:79] + "…"


@admin.register(Evaluation)
class EvaluationAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "owner",
        "occurrence",
        "observed",
        "result_display",
        "evaluated_at",
    ]
    list_filter = ["passed"]
    list_select_related = ["owner"]
    raw_id_fields = ["owner"]
    search_fields = ["owner__name", "owner__key"]

    @admin.display(description="Result", ordering="passed")
    def result_display(self, obj: Evaluation):
        kind, text = result_of(obj)
        tone = {"passed": "ok", "failed": "bad"}.get(kind, "muted")
        if kind == "skipped":
            return format_html(
                "{} {}", dashboard.badge(kind, "Skipped", tone, data="result"), text
            )
        return dashboard.badge(kind, kind.capitalize(), tone, data="result")
