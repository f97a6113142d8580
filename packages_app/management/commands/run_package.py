from __future__ import annotations

import getpass
import json
import signal
import threading

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from packages_app import services
from packages_app.models import Package, PackageRun
from packages_app.runner import RunInterrupted
from portal.checks import TAG as CONFIG_CHECKS

# Exit codes, so that cron and CI can tell outcomes apart.
EXIT_CODES = {
    PackageRun.Status.SUCCEEDED: 0,
    PackageRun.Status.FAILED: 1,
    PackageRun.Status.TIMED_OUT: 3,
    PackageRun.Status.CANCELLED: 5,
    PackageRun.Status.LOST: 6,
}
EXIT_USAGE = 2  # unknown package, bad parameters, disabled package
EXIT_SKIPPED = 4  # the package's policy is "skip if running" and it is running
_pause = threading.Event()


def _interrupt(signum, frame) -> None:
    raise RunInterrupted(signal.Signals(signum).name)


class _Echo:
    """Shows the child's output live through the command's stdout."""

    def __init__(self, out):
        self.out = out

    def write(self, data: bytes) -> int:
        self.out.write(bytes(data).decode("utf-8", "replace"), ending="")
        return len(data)

    def flush(self) -> None:
        self.out.flush()


class Command(BaseCommand):
    # Only the portal's configuration checks: the full set (admin, URLs, models)
    # costs a quarter of a second on every cron-started run and finds nothing new.
    requires_system_checks = [CONFIG_CHECKS]
    help = (
        "Run an analytics package in the foreground (or queue it with --queue). "
        "Exit codes: 0 succeeded, 1 failed, 2 bad usage, 3 timed out, 4 skipped "
        "(already running), 5 cancelled, 6 lost."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("package", help="The package's slug (ApMan id).")
        parser.add_argument(
            "--param",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="A parameter; a value that is JSON is parsed. Repeatable.",
        )
        parser.add_argument("--params-json", help="Parameters as one JSON object.")
        parser.add_argument(
            "--timeout", type=int, help="Seconds, instead of the package's."
        )
        parser.add_argument("--no-notify", action="store_true", help="Send no email.")
        parser.add_argument(
            "--queue",
            action="store_true",
            help="Hand the run to the workers; print its id.",
        )

    def handle(self, *args, **options) -> None:
        package = Package.objects.filter(slug=options["package"]).first()
        if package is None:
            raise CommandError(
                f"Unknown package: {options['package']!r}", returncode=EXIT_USAGE
            )
        parameters = self._parameters(options)
        timeout = options["timeout"]
        if timeout is not None and timeout < 1:
            raise CommandError(
                "--timeout must be a positive number of seconds.", returncode=EXIT_USAGE
            )
        kwargs = {
            "package": package,
            "trigger": PackageRun.Trigger.CLI,
            "triggered_by": getpass.getuser(),
            "parameters": parameters,
            "timeout": timeout,
            "notify": not options["no_notify"],
        }
        try:
            if options["queue"]:
                run = services.package_run_now(**kwargs)
                self.stdout.write(str(run.pk))
                return
            run = services.run_create(**kwargs)
        except services.RunRefused as exc:
            code = EXIT_SKIPPED if exc.code == "skipped" else EXIT_USAGE
            raise CommandError(str(exc), returncode=code) from exc
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages), returncode=EXIT_USAGE) from exc
        self.stderr.write(f"run #{run.pk} of {package.slug} (timeout {run.timeout} s)")
        run = self._execute(run)
        self.stderr.write(
            f"run #{run.pk} {run.get_status_display().lower()}"
            + (
                f": {run.error}"
                if run.error and run.status != PackageRun.Status.SUCCEEDED
                else ""
            )
            + (f" in {run.duration:.1f} s" if run.duration is not None else "")
        )
        code = EXIT_CODES.get(run.status, 1)
        if code:
            raise SystemExit(code)

    def _execute(self, run: PackageRun) -> PackageRun:
        echo = _Echo(self.stdout)
        waiting = False
        # cron or a CI job stopping this command must not orphan the package:
        # turn SIGTERM/SIGHUP into an exception the runner cleans up after.
        previous = {
            sig: signal.signal(sig, _interrupt)
            for sig in (signal.SIGTERM, signal.SIGHUP)
        }
        try:
            while True:
                run = services.run_execute(run, echo=echo)
                if run.status != PackageRun.Status.QUEUED:
                    return run
                if not waiting:
                    waiting = True
                    self.stderr.write(
                        "waiting for the running run to finish (policy: queue)..."
                    )
                _pause.wait(1.0)
        except (KeyboardInterrupt, RunInterrupted):
            run.cancel_if_queued()
            run.refresh_from_db()
            return run
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _parameters(self, options) -> dict:
        parameters: dict = {}
        if options["params_json"]:
            try:
                loaded = json.loads(options["params_json"])
            except ValueError as exc:
                raise CommandError(
                    f"--params-json is not valid JSON: {exc}", returncode=EXIT_USAGE
                ) from exc
            if not isinstance(loaded, dict):
                raise CommandError(
                    "--params-json must be a JSON object.", returncode=EXIT_USAGE
                )
            parameters.update(loaded)
        try:
            parameters.update(services.parse_parameters(options["param"]))
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages), returncode=EXIT_USAGE) from exc
        return parameters
