"""What the apps' ModelAdmins share: their own pages about one object (Run now,
Dry run, Issue token, Test connection, Sign off: the URL, the object or the
admin's "no longer exists" redirect, the permission), and saving an edit without
overwriting what a worker changed meanwhile."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.urls import path


class ObjectPagesMixin:
    """``object_pages = {"run": "run_now_view"}`` serves ``<id>/run/`` under the
    URL name ``<app>_<model>_run`` (a ``-`` in the suffix becomes ``_``). A page's
    view starts with::

        obj, gone = self.page_object(request, object_id, self.has_run_permission)
        if gone:
            return gone
    """

    object_pages: dict[str, str] = {}

    def get_urls(self):
        opts = self.opts
        return [
            path(
                f"<path:object_id>/{suffix}/",
                self.admin_site.admin_view(getattr(self, view)),
                name=f"{opts.app_label}_{opts.model_name}_{suffix.replace('-', '_')}",
            )
            for suffix, view in self.object_pages.items()
        ] + super().get_urls()

    def page_object(self, request, object_id: str, allowed: Callable):
        """``(object, None)``, or ``(None, redirect)`` when it is gone; raises
        PermissionDenied when ``allowed(request, object)`` is false."""
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            return None, self._get_obj_does_not_exist_redirect(
                request, self.opts, object_id
            )
        if not allowed(request, obj):
            raise PermissionDenied
        return obj, None


class SaveEditedFieldsMixin:
    """An edit saves only the fields its form changed: a worker (a poll, a run,
    the checker) may have moved the rest of the row since the page was loaded.
    Adding saves the whole object, as usual."""

    def save_model(self, request, obj, form, change: bool) -> None:
        if change:
            fields = [name for name in form.changed_data if name in form.fields]
            if fields:
                obj.save(update_fields=fields)
            return
        super().save_model(request, obj, form, change)
