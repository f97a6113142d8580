from __future__ import annotations

from django.core.management.base import BaseCommand
from django.db import transaction

from portal import demo


class Command(BaseCommand):
    help = "Load the demo data of every app and print the demo logins (idempotent)."

    def handle(self, *args, **options) -> None:
        for seeder in demo.seeders():
            self.stdout.write(f"Seeding {seeder.key}...")
            with transaction.atomic():
                seeder.func(self.stdout)
        self.stdout.write(self.style.SUCCESS("Demo data ready."))
