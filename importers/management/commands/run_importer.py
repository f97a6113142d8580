"""Run one import source now, or show what it would send (--dry-run)."""

from __future__ import annotations

import getpass
import os
from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError

from importers import services
from importers.models import ImportRun, ImportSource
from portal.checks import TAG as CONFIG_CHECKS

# Exit codes, so that cron and scripts can tell outcomes apart.
EXIT_CODES = {
    ImportRun.Status.SUCCEEDED: 0,
    ImportRun.Status.FAILED: 1,
    ImportRun.Status.PARTIAL: 3,
}
EXIT_USAGE = 2  # unknown source, bad dates, a backfill the kind cannot do
EXIT_BUSY = 4  # another run of the source holds its lock


def parse_moment(option: str, raw: str | None) -> datetime | None:
    """An ISO 8601 date or date-time; without a zone it is UTC."""
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise CommandError(
            f"{option}: {raw!r} is not an ISO 8601 date or time, e.g. 2026-03-01 "
            "or 2026-03-01T12:00:00Z.",
            returncode=EXIT_USAGE,
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _who() -> str:
    """The user running the command, for the run's record."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container's uid without a passwd entry
        return f"uid {os.getuid()}"


class Command(BaseCommand):
    # Only the portal's configuration checks: the full set costs time on every
    # cron-started run and finds nothing new.
    requires_system_checks = [CONFIG_CHECKS]
    help = (
        "Run an import source now (--dry-run: print the lines it would send, send "
        "and save nothing). Exit codes: 0 succeeded, 1 failed, 2 bad usage, "
        "3 partial (points kept for the next run), 4 already running."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="The source's name.")
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Fetch and print the exact lines; send, save and lock nothing.",
        )
        parser.add_argument(
            "--since", help="Backfill from this ISO 8601 time (UTC unless given)."
        )
        parser.add_argument(
            "--until", help="Backfill up to this ISO 8601 time (default: now)."
        )

    def handle(self, *args, **options) -> None:
        name = options["name"]
        source = ImportSource.objects.select_related("sink").filter(name=name).first()
        if source is None:
            known = ", ".join(ImportSource.objects.values_list("name", flat=True)[:20])
            raise CommandError(
                f"Unknown import source: {name!r} (known: {known or 'none'}).",
                returncode=EXIT_USAGE,
            )
        since = parse_moment("--since", options["since"])
        until = parse_moment("--until", options["until"])
        try:
            run = services.run_source(
                source,
                trigger=ImportRun.Trigger.COMMAND,
                triggered_by=_who(),
                dry_run=options["dry_run"],
                since=since,
                until=until,
            )
        except services.SourceBusy as exc:
            raise CommandError(str(exc), returncode=EXIT_BUSY) from exc
        except services.RunRefused as exc:
            raise CommandError(str(exc), returncode=EXIT_USAGE) from exc
        if run.dry_run:
            self.stdout.write(run.lines, ending="")
            self.stderr.write(f"{source.name}: dry {services.run_summary(run)}")
        else:
            self.stdout.write(f"{source.name}: {services.run_summary(run)}")
        code = EXIT_CODES.get(run.status, 1)
        if code:
            raise SystemExit(code)
