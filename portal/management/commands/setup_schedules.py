from __future__ import annotations

from django.core.management.base import BaseCommand

from portal import services


class Command(BaseCommand):
    help = (
        "Create or update the django-q2 schedule of each periodic job in portal/ticks."
    )

    def handle(self, *args, **options) -> None:
        for tick, created in services.schedules_sync():
            verb = "created" if created else "up to date"
            self.stdout.write(
                f"{tick.name:<40} {tick.cron:<15} {verb}  {tick.crontab_guru}"
            )
        self.stdout.write(
            self.style.SUCCESS("Schedules are in sync with portal/ticks.py.")
        )
