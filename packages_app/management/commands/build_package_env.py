from __future__ import annotations

import codecs
import io

from django.core.management.base import (
    BaseCommand,
    CommandError,
    CommandParser,
    OutputWrapper,
)

from packages_app import envs
from packages_app.models import Package


class Command(BaseCommand):
    help = "Build (or reuse) a package's virtualenv and print its Python path."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="The package whose env to build.")
        parser.add_argument(
            "--force",
            action="store_true",
            help="Rebuild even when an up-to-date env exists.",
        )

    def handle(self, *args, slug: str, force: bool, **options) -> None:
        package = Package.objects.filter(slug=slug).first()
        if package is None:
            raise CommandError(f"No such package: {slug!r}")
        try:
            python = envs.build_env(package, log=TextLog(self.stdout), force=force)
        except envs.EnvBuildError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(str(python))


class TextLog(io.RawIOBase):
    """Bytes in, text out: shows installer output on the command's stdout live."""

    def __init__(self, out: OutputWrapper) -> None:
        self.out = out
        # Incremental, so a UTF-8 character split across two reads stays whole.
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.out.write(self.decoder.decode(bytes(data)), ending="")
        self.out.flush()
        return len(data)
