from __future__ import annotations

from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig
from django.db.models.signals import post_migrate


class PortalAdminConfig(AdminConfig):
    """The Django admin, served by the portal's branded site with the dashboard."""

    default_site = "portal.admin_site.PortalAdminSite"


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Portal"

    def ready(self) -> None:
        from django.utils.module_loading import autodiscover_modules

        from portal import checks  # noqa: F401  (registers the system checks)
        from portal.roles import sync_roles_after_migrate

        post_migrate.connect(sync_roles_after_migrate, dispatch_uid="portal-roles")
        # Each app contributes dashboard panels in <app>/dashboard.py and demo data
        # in <app>/demo.py; importing them registers them.
        autodiscover_modules("dashboard")
        autodiscover_modules("demo")
        from portal import panels  # noqa: F401  (the portal's own panels)
