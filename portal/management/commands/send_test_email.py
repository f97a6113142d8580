from __future__ import annotations

import getpass
import smtplib

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_email

from portal import emails


class Command(BaseCommand):
    help = "Send a templated test email, to check the portal's mail settings."

    def add_arguments(self, parser) -> None:
        parser.add_argument("to", nargs="+", help="Recipient address(es).")

    def handle(self, *args, to: list[str], **options) -> None:
        for address in to:
            try:
                validate_email(address)
            except ValidationError as exc:
                raise CommandError(f"Not an email address: {address!r}") from exc
        try:
            emails.send(
                "test",
                to,
                {
                    "requested_by": getpass.getuser(),
                    "from_email": settings.DEFAULT_FROM_EMAIL,
                    "backend": settings.EMAIL_BACKEND,
                },
            )
        except (smtplib.SMTPException, OSError) as exc:
            raise CommandError(f"Sending failed: {exc}") from exc
        self.stdout.write(f"Test email sent to {', '.join(to)}.")
