"""The portal's branded admin site; its index page is the operations dashboard."""

from __future__ import annotations

from django.contrib import admin
from django.template.response import TemplateResponse
from django.urls import path

from portal import dashboard


class PortalAdminSite(admin.AdminSite):
    site_header = "Ops Portal"
    site_title = "Ops Portal"
    index_title = "Operations dashboard"
    index_template = "admin/portal/index.html"
    # The admin is the whole UI: no separate public site to link to.
    site_url = None
    # Seconds between in-place refreshes of the dashboard panels.
    dashboard_refresh_seconds = 30

    def get_urls(self):
        urls = [
            path(
                "dashboard/panels/",
                self.admin_view(self.dashboard_panels_view),
                name="dashboard-panels",
            ),
        ]
        return urls + super().get_urls()

    def index(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "panels": dashboard.render_panels(request),
            "refresh_seconds": self.dashboard_refresh_seconds,
        }
        return super().index(request, extra_context)

    def dashboard_panels_view(self, request):
        """The panels alone, fetched by the index page to refresh itself."""
        return TemplateResponse(
            request,
            "admin/portal/panels.html",
            {"panels": dashboard.render_panels(request)},
        )
