"""Evaluate due checks and send alerts, once or in a loop."""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand, CommandError

from affirmations import services


class Command(BaseCommand):
    help = "Evaluate due check occurrences and send the alerts (--loop: keep going)."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--loop", action="store_true", help="Keep running until SIGTERM/SIGINT."
        )
        parser.add_argument(
            "--interval",
            type=int,
            default=30,
            help="Seconds between passes with --loop.",
        )

    def run_once(self) -> bool:
        summary = services.checker_run_once()
        if summary.evaluated or summary.skipped or summary.errors:
            self.stdout.write(f"checker: {summary}")
        return bool(summary.evaluated or summary.skipped)

    def handle(self, *args, loop: bool, interval: int, **options) -> None:
        if interval < 1:
            raise CommandError("--interval must be at least 1 second.")
        if not loop:
            summary = services.checker_run_once()
            self.stdout.write(f"checker: {summary}")
            return
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        self.stdout.write(f"checking every {interval} s; SIGTERM or Ctrl-C stops")
        while not stop.is_set():
            self.run_once()
            stop.wait(interval)
        self.stdout.write("stopped")
