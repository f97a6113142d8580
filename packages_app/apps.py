from __future__ import annotations

from django.apps import AppConfig


class PackagesAppConfig(AppConfig):
    name = "packages_app"
    verbose_name = "Packages and pipelines"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from packages_app.tasks import reconcile_on_worker_start

        # A worker that (re)starts reconciles at once: runs left RUNNING by a
        # worker that died become LOST without waiting for the next tick.
        post_spawn.connect(reconcile_on_worker_start, dispatch_uid="packages-reconcile")
