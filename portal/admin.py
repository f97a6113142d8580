"""Admin for API keys: created here, shown once, revoked, never displayed again."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils.html import format_html

from portal.models import API_SCOPE_CHOICES, ApiKey


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=API_SCOPE_CHOICES,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="Write implies read.",
    )

    class Meta:
        model = ApiKey
        fields = ["name", "scopes"]

    def clean_scopes(self) -> list[str]:
        return sorted(set(self.cleaned_data["scopes"]))


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = [
        "id",
        "name",
        "key_prefix",
        "scope_list",
        "created_by",
        "created_at",
        "last_used_at",
        "state",
    ]
    list_display_links = ["id", "name"]
    list_select_related = ["created_by"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix"]
    readonly_fields = [
        "prefix",
        "created_by",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    actions = ["revoke_keys"]

    @admin.display(description="Key", ordering="prefix")
    def key_prefix(self, obj: ApiKey):
        return format_html("<code>{}…</code>", obj.prefix)

    @admin.display(description="Scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes) or "—"

    @admin.display(description="State", ordering="revoked_at")
    def state(self, obj: ApiKey):
        tone, text = ("bad", "revoked") if obj.revoked_at else ("ok", "active")
        return format_html('<span class="portal-tone-{}">{}</span>', tone, text)

    def has_delete_permission(self, request, obj=None) -> bool:
        # Revoke instead: a key's name and use history stay for the audit trail.
        return request.user.is_superuser

    def save_model(self, request, obj: ApiKey, form, change: bool) -> None:
        if not change:
            obj.created_by = request.user
            obj._plaintext = obj.generate()
        super().save_model(request, obj, form, change)

    def response_add(self, request, obj: ApiKey, post_url_continue=None):
        # The only time the key is shown: render it now, never store it anywhere.
        return TemplateResponse(
            request,
            "admin/portal/apikey/created.html",
            {
                **self.admin_site.each_context(request),
                "title": "API key created",
                "key": obj,
                "plaintext": obj._plaintext,
                "opts": self.model._meta,
            },
        )

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke_keys(self, request, queryset) -> None:
        revoked = sum(1 for key in queryset if key.revoke())
        self.message_user(request, f"Revoked {revoked} API key(s).", messages.SUCCESS)
