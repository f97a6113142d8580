"""Run every import source that is due, one after another."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from importers import services
from portal.checks import TAG as CONFIG_CHECKS


class Command(BaseCommand):
    requires_system_checks = [CONFIG_CHECKS]
    help = (
        "Run every enabled import source whose next due time has passed, one "
        "after another, printing one line each (the same as the importers.run_due "
        "tick). A source running elsewhere is skipped with a note."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--due",
            action="store_true",
            help="Run the due sources (required: says what this does).",
        )

    def handle(self, *args, **options) -> None:
        if not options["due"]:
            raise CommandError(
                "Say --due to run the due sources; run_importer NAME runs one."
            )
        outcomes = services.run_due()
        for outcome in outcomes:
            self.stdout.write(str(outcome))
        if not outcomes:
            self.stdout.write("nothing due")
