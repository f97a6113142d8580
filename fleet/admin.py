"""Admin for the agent fleet: agents (labels, tokens, disable/enable) and their tasks
(queue one, cancel, requeue, read its result)."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timedelta
from urllib.parse import quote, urlsplit

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, IntegerField, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from fleet import services
from fleet.dashboard import agent_badge, agent_url, task_badge, time_ago
from fleet.models import TYPE_RE, Agent, Task, normalise_labels, validate_labels
from portal.admin_pages import ObjectPagesMixin, SaveEditedFieldsMixin
from portal.lib.jsonvalues import parse_json_object

MANAGE_PERMISSION = "fleet.manage_agent"
CANCEL_PERMISSION = "fleet.cancel_task"
OTHER = "other"
MONOSPACE = {"class": "vLargeTextField pkg-mono", "spellcheck": "false"}


def parse_labels(raw: str) -> list[str]:
    """Labels separated by commas, spaces or newlines: sorted, without duplicates."""
    labels = normalise_labels([item for item in re.split(r"[,\s]+", raw or "") if item])
    validate_labels(labels)
    return labels


def short_time(value: datetime | None) -> SafeString | None:
    """A compact local timestamp for list columns; the full one in its tooltip."""
    if value is None:
        return None
    local = timezone.localtime(value)
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        value.isoformat(),
        local.strftime("%Y-%m-%d %H:%M:%S %Z"),
        local.strftime("%m-%d %H:%M"),
    )


def pretty_json(value: object) -> SafeString | str:
    """A JSON value, indented, in a ``<pre>``; an em dash for none."""
    if value is None:
        return "—"
    return format_html('<pre class="pkg-json">{}</pre>', json.dumps(value, indent=2))


def agent_urls(agent: Agent, token: str) -> tuple[str, str]:
    """The two URLs an unmodified SLAMon agent can be given to poll with ``token``:
    the token in the path, or as the password of Basic auth."""
    site = urlsplit(settings.SITE_URL)
    user = quote(agent.name or "agent", safe="")
    return (
        f"{settings.SITE_URL}/fleet/a/{token}",
        f"{site.scheme}://{user}:{token}@{site.netloc}{site.path}/fleet",
    )


# --- Agents ---------------------------------------------------------------------


def task_count(state: str) -> Coalesce:
    """An agent's tasks in ``state``, as a column: a subquery on the (agent, state)
    index, so a page of agents never aggregates the whole task table."""
    tasks = (
        Task.objects.filter(agent=OuterRef("pk"), state=state)
        .order_by()
        .values("agent")
        .annotate(n=Count("id"))
        .values("n")
    )
    return Coalesce(Subquery(tasks, output_field=IntegerField()), 0)


class LabelsField(forms.CharField):
    """Labels typed as text ("eu, gpu"), a sorted list in Python; the same set
    typed in another order is no change."""

    def to_python(self, value) -> list[str]:
        return parse_labels(super().to_python(value))

    def prepare_value(self, value):
        return ", ".join(value) if isinstance(value, list) else value

    def has_changed(self, initial, data) -> bool:
        try:
            return self.to_python(data) != (
                initial if isinstance(initial, list) else self.to_python(initial)
            )
        except ValidationError:
            return True


class AgentForm(forms.ModelForm):
    """Name and labels; the labels typed as text, stored as a sorted list."""

    labels = LabelsField(
        required=False,
        widget=forms.TextInput(attrs={**MONOSPACE, "size": 60}),
        help_text="Separated by commas, e.g. eu, gpu. A task with required labels "
        "only goes to agents having all of them.",
    )

    class Meta:
        model = Agent
        fields = ["name", "labels"]


class AgentStateFilter(admin.SimpleListFilter):
    """By state; dropped agents (kept for history) only when asked for."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [*Agent.State.choices, ("all", "All, with dropped")]

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset.visible()
        if value in Agent.State.values:
            return queryset.filter(state=value)
        return queryset

    def choices(self, changelist):
        yield {
            "selected": self.value() is None,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": "Not dropped",
        }
        for lookup, title in self.lookup_choices:
            yield {
                "selected": self.value() == str(lookup),
                "query_string": changelist.get_query_string(
                    {self.parameter_name: lookup}
                ),
                "display": title,
            }


@admin.register(Agent)
class AgentAdmin(ObjectPagesMixin, SaveEditedFieldsMixin, admin.ModelAdmin):
    object_pages = {"token": "issue_token_view"}

    form = AgentForm
    change_form_template = "admin/fleet/agent/change_form.html"
    list_display = [
        "id",
        "state_badge",
        "agent_display",
        "last_seen",
        "capabilities_display",
        "labels_display",
        "task_counts",
        "token_display",
    ]
    list_display_links = ["id", "agent_display"]
    list_filter = [AgentStateFilter]
    search_fields = ["name", "uuid"]
    actions = ["disable_agents", "enable_agents", "revoke_tokens"]
    fieldsets = [
        (None, {"fields": ["name", "labels"]}),
        (
            "As seen by the portal",
            {
                "fields": [
                    "uuid",
                    "state_badge",
                    "last_seen",
                    "capabilities_display",
                    "location_display",
                    "task_counts",
                    "created_at",
                ]
            },
        ),
        ("Token", {"fields": ["token_display", "token_issued_at"]}),
    ]
    readonly_fields = [
        field for _, options in fieldsets[1:] for field in options["fields"]
    ]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                claimed_now=task_count(Task.State.CLAIMED),
                completed=task_count(Task.State.COMPLETED),
                failed=task_count(Task.State.FAILED),
            )
        )

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            # A new agent has only what the operator gives it: a name and labels.
            return self.fieldsets[:1]
        return self.fieldsets

    def has_manage_permission(self, request, obj=None) -> bool:
        return request.user.has_perm(MANAGE_PERMISSION)

    @admin.display(description="State", ordering="state")
    def state_badge(self, obj: Agent):
        return agent_badge(obj.state)

    @admin.display(description="Agent", ordering="name")
    def agent_display(self, obj: Agent):
        return format_html(
            '{}<br><code class="pkg-quiet">{}</code>',
            obj.name or "(no name)",
            obj.uuid or "no agent id",
        )

    @admin.display(description="Last seen", ordering="last_seen_at")
    def last_seen(self, obj: Agent):
        return time_ago(obj.last_seen_at)

    @admin.display(description="Capabilities")
    def capabilities_display(self, obj: Agent) -> str:
        caps = sorted((obj.capabilities or {}).items())
        return ", ".join(f"{name} v{version}" for name, version in caps) or "—"

    @admin.display(description="Labels")
    def labels_display(self, obj: Agent) -> str:
        return ", ".join(obj.labels or []) or "—"

    @admin.display(description="Location")
    def location_display(self, obj: Agent):
        return pretty_json(obj.location)

    @admin.display(description="Tasks", ordering="claimed_now")
    def task_counts(self, obj: Agent):
        return format_html(
            '<a href="{}?agent={}" title="claimed now / completed / failed">'
            "{} / {} / {}</a>",
            reverse("admin:fleet_task_changelist"),
            obj.pk,
            obj.claimed_now,
            obj.completed,
            obj.failed,
        )

    @admin.display(description="Token", ordering="token_prefix")
    def token_display(self, obj: Agent):
        # Only the prefix, to tell tokens apart; the hash is never shown.
        if not obj.has_token:
            return "—"
        return format_html("<code>{}…</code>", obj.token_prefix)

    def render_change_form(
        self, request, context, add=False, change=False, form_url="", obj=None
    ):
        context["can_manage"] = obj is not None and self.has_manage_permission(
            request, obj
        )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def issue_token_view(self, request, object_id: str):
        """GET: what issuing a token means; POST: issue it, and show it this once."""
        agent, gone = self.page_object(request, object_id, self.has_manage_permission)
        if gone:
            return gone
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": agent,
            "media": self.media,
        }
        if request.method != "POST":
            context["title"] = f"Issue a token for {agent}"
            return TemplateResponse(
                request, "admin/fleet/agent/issue_token.html", context
            )
        token = agent.issue_token()
        path_url, basic_url = agent_urls(agent, token)
        context.update(
            {
                "title": f"Token issued for {agent}",
                "token": token,
                "path_url": path_url,
                "basic_url": basic_url,
            }
        )
        # Only on this page (admin_view makes it no-store), never in a message:
        # messages are kept in the session or a cookie.
        return TemplateResponse(request, "admin/fleet/agent/token_issued.html", context)

    @admin.action(description="Disable selected agents", permissions=["manage"])
    def disable_agents(self, request, queryset) -> None:
        agents = list(queryset)
        done = sum(1 for agent in agents if agent.disable())
        self.message_user(
            request,
            f"Disabled {done} agent(s); {len(agents) - done} were already disabled.",
            messages.SUCCESS,
        )

    @admin.action(description="Enable selected agents", permissions=["manage"])
    def enable_agents(self, request, queryset) -> None:
        agents = list(queryset)
        done = sum(1 for agent in agents if agent.enable())
        self.message_user(
            request,
            f"Enabled {done} agent(s); {len(agents) - done} were not disabled or "
            "dropped.",
            messages.SUCCESS,
        )

    @admin.action(
        description="Revoke the tokens of selected agents", permissions=["manage"]
    )
    def revoke_tokens(self, request, queryset) -> None:
        agents = list(queryset)
        done = sum(1 for agent in agents if agent.revoke_token())
        self.message_user(
            request,
            f"Revoked {done} token(s); {len(agents) - done} agent(s) had none.",
            messages.SUCCESS,
        )


# --- Tasks ----------------------------------------------------------------------


class TaskAddForm(forms.ModelForm):
    """A new task: its (type, version) among those agents offer, or any other; data
    as JSON text, required labels as text. Saved through ``services.task_create``."""

    capability = forms.ChoiceField(
        label="Type",
        help_text="The task types and versions agents have offered.",
    )
    other_type = forms.CharField(
        label="Other type",
        required=False,
        max_length=100,
        help_text='Only with "Other type/version".',
    )
    other_version = forms.IntegerField(label="Other version", required=False)
    data = forms.CharField(
        required=False,
        initial="{}",
        widget=forms.Textarea(attrs={**MONOSPACE, "rows": 6}),
        help_text='The task\'s input, a JSON object, e.g. {"time": 5} for wait v1.',
    )
    required_labels = forms.CharField(
        required=False,
        widget=forms.TextInput(attrs={**MONOSPACE, "size": 60}),
        help_text="Separated by commas; only agents having all of them take the task.",
    )

    class Meta:
        model = Task
        fields = ["priority", "max_attempts", "ttl", "timeout", "test_id"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        seen = [
            (f"{task_type}:{version}", f"{task_type} v{version}")
            for task_type, version in services.capabilities_seen()
        ]
        capability = self.fields["capability"]
        capability.choices = [*seen, (OTHER, "Other type/version…")]
        capability.initial = seen[0][0] if seen else OTHER

    def clean_data(self) -> dict:
        return parse_json_object(self.cleaned_data["data"])

    def clean_required_labels(self) -> list[str]:
        return parse_labels(self.cleaned_data["required_labels"])

    def _kind(self, cleaned: dict) -> tuple[str, int | None]:
        """The chosen (type, version); the free pair when "other" is chosen."""
        choice = cleaned.get("capability") or ""
        if choice != OTHER:
            task_type, _, version = choice.rpartition(":")
            return task_type, int(version)
        task_type = (cleaned.get("other_type") or "").strip()
        version = cleaned.get("other_version")
        if not TYPE_RE.match(task_type):
            self.add_error("other_type", "Give a task type, without spaces.")
        if version is None:
            self.add_error("other_version", "Give the version of the task type.")
        return task_type, version

    def clean(self) -> dict:
        cleaned = super().clean()
        if "capability" not in cleaned:
            return cleaned  # not one of the choices: already an error
        task_type, version = self._kind(cleaned)
        if self.errors:
            return cleaned
        cleaned["task_type"], cleaned["version"] = task_type, version
        # What task_create will check, checked here so it shows as form errors.
        candidate = Task(
            type=task_type,
            version=version,
            data=cleaned["data"],
            required_labels=cleaned["required_labels"],
            priority=cleaned["priority"],
            max_attempts=cleaned["max_attempts"],
            ttl=cleaned["ttl"],
            timeout=cleaned["timeout"],
            test_id=cleaned["test_id"],
        )
        try:
            candidate.full_clean(validate_unique=False)
        except ValidationError as exc:
            field_of = {"type": "other_type", "version": "other_version"}
            for name, errors in exc.message_dict.items():
                field = field_of.get(name, name)
                self.add_error(field if field in self.fields else None, errors)
        return cleaned

    def task_fields(self) -> dict:
        """The keyword arguments of ``services.task_create`` (but ``created_by``)."""
        cleaned = self.cleaned_data
        return {
            "task_type": cleaned["task_type"],
            "version": cleaned["version"],
            "data": cleaned["data"],
            "test_id": cleaned["test_id"],
            "priority": cleaned["priority"],
            "required_labels": cleaned["required_labels"],
            "max_attempts": cleaned["max_attempts"],
            "ttl": cleaned["ttl"],
            "timeout": cleaned["timeout"],
        }


class TaskTypeFilter(admin.SimpleListFilter):
    title = "type"
    parameter_name = "type"

    def lookups(self, request, model_admin):
        types = Task.objects.order_by("type").values_list("type", flat=True)
        return [(name, name) for name in types.distinct()]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(type=self.value())
        return queryset


class TaskAgentFilter(admin.SimpleListFilter):
    """Agents that are not dropped are offered; any agent's id works in the URL."""

    title = "agent"
    parameter_name = "agent"

    def lookups(self, request, model_admin):
        agents = Agent.objects.visible().only("id", "uuid", "name").order_by("name")
        return [(str(agent.pk), str(agent)) for agent in agents]

    def queryset(self, request, queryset):
        value = self.value()
        if value and value.isdigit():
            return queryset.filter(agent_id=int(value))
        return queryset


class FinishedFilter(admin.SimpleListFilter):
    title = "finished"
    parameter_name = "finished"
    PERIODS = {"24h": timedelta(hours=24), "7d": timedelta(days=7)}

    def lookups(self, request, model_admin):
        return [("24h", "Last 24 hours"), ("7d", "Last 7 days")]

    def queryset(self, request, queryset):
        period = self.PERIODS.get(self.value() or "")
        if period is None:
            return queryset
        return queryset.filter(finished_at__gte=timezone.now() - period)


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "uuid_display",
        "type_display",
        "state_badge",
        "agent_link",
        "priority",
        "created",
        "attempts_display",
    ]
    list_display_links = ["id", "uuid_display"]
    list_filter = ["state", TaskTypeFilter, TaskAgentFilter, FinishedFilter]
    list_select_related = ["agent"]
    raw_id_fields = ["agent"]
    search_fields = ["type"]
    show_full_result_count = False
    actions = ["cancel_tasks", "requeue_tasks"]
    add_fieldsets = [
        (
            None,
            {
                "fields": [
                    "capability",
                    "other_type",
                    "other_version",
                    "data",
                    "priority",
                    "required_labels",
                ]
            },
        ),
        ("Limits", {"fields": ["max_attempts", "ttl", "timeout"]}),
        ("Reference", {"fields": ["test_id"], "classes": ["collapse"]}),
    ]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "uuid",
                    "test_id",
                    "type_display",
                    "state_badge",
                    "agent_link",
                    "priority",
                    "required_labels_display",
                    "created_by",
                ]
            },
        ),
        ("Data", {"fields": ["data_display"]}),
        ("Outcome", {"fields": ["result_display", "error_display"]}),
        (
            "Timing and attempts",
            {
                "fields": [
                    "created_at",
                    "claimed_at",
                    "finished_at",
                    "attempts_display",
                    "ttl",
                    "expires_at",
                    "timeout",
                    "deadline_at",
                ]
            },
        ),
    ]

    def get_queryset(self, request):
        # Data and results can be large; the list shows neither.
        return super().get_queryset(request).defer("data", "result", "error")

    def get_search_results(self, request, queryset, search_term):
        # A task id or test id is matched exactly, through their indexes.
        try:
            value = uuid.UUID(search_term.strip())
        except ValueError:
            return super().get_search_results(request, queryset, search_term)
        return queryset.filter(Q(uuid=value) | Q(test_id=value)), False

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = TaskAddForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fieldsets(self, request, obj=None):
        return self.add_fieldsets if obj is None else self.fieldsets

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return [field for _, options in self.fieldsets for field in options["fields"]]

    def has_change_permission(self, request, obj=None) -> bool:
        if obj is not None:
            # A task changes state only through the protocol and the actions.
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        if obj is not None and not obj.is_terminal:
            return False  # cancel it first: an agent may be working on it
        return super().has_delete_permission(request, obj)

    def has_cancel_permission(self, request, obj=None) -> bool:
        return request.user.has_perm(CANCEL_PERMISSION)

    @admin.display(description="Task id", ordering="uuid")
    def uuid_display(self, obj: Task):
        return format_html("<code>{}</code>", obj.uuid)

    @admin.display(description="Type", ordering="type")
    def type_display(self, obj: Task) -> str:
        return f"{obj.type} v{obj.version}"

    @admin.display(description="State", ordering="state")
    def state_badge(self, obj: Task):
        return task_badge(obj.state)

    @admin.display(description="Agent", ordering="agent__name")
    def agent_link(self, obj: Task):
        if obj.agent_id is None:
            return "—"
        return format_html('<a href="{}">{}</a>', agent_url(obj.agent_id), obj.agent)

    @admin.display(description="Created", ordering="created_at")
    def created(self, obj: Task):
        return short_time(obj.created_at)

    @admin.display(description="Attempts", ordering="attempts")
    def attempts_display(self, obj: Task) -> str:
        return f"{obj.attempts} / {obj.max_attempts}"

    @admin.display(description="Required labels")
    def required_labels_display(self, obj: Task) -> str:
        return ", ".join(obj.required_labels or []) or "—"

    @admin.display(description="Data")
    def data_display(self, obj: Task):
        return pretty_json(obj.data)

    @admin.display(description="Result")
    def result_display(self, obj: Task):
        return pretty_json(obj.result)

    @admin.display(description="Error")
    def error_display(self, obj: Task):
        if not obj.error:
            return "—"
        return format_html('<pre class="pkg-error">{}</pre>', obj.error)

    def save_model(self, request, obj: Task, form, change: bool) -> None:
        if change:  # never reached: a task's page is read-only
            raise PermissionDenied
        task = services.task_create(
            **form.task_fields(), created_by=request.user.get_username()
        )
        # The admin goes on with ``obj`` (log entry, redirect): make it the task.
        for field in Task._meta.concrete_fields:
            setattr(obj, field.attname, getattr(task, field.attname))
        obj._state.adding, obj._state.db = False, task._state.db

    @admin.action(description="Cancel selected tasks", permissions=["cancel"])
    def cancel_tasks(self, request, queryset) -> None:
        tasks = list(queryset)
        done = sum(1 for task in tasks if task.cancel())
        self.message_user(
            request,
            f"Cancelled {done} task(s); {len(tasks) - done} were not pending or "
            "claimed.",
            messages.SUCCESS,
        )

    @admin.action(description="Requeue selected tasks", permissions=["cancel"])
    def requeue_tasks(self, request, queryset) -> None:
        tasks = list(queryset)
        done = sum(1 for task in tasks if task.requeue())
        self.message_user(
            request,
            f"Requeued {done} task(s); {len(tasks) - done} were pending or completed.",
            messages.SUCCESS,
        )
