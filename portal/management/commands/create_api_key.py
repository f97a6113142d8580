from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from portal import services


class Command(BaseCommand):
    help = "Create an API key and print it once (only its hash is stored)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="What the key is for, e.g. 'nightly CI'.")
        parser.add_argument(
            "--scope",
            action="append",
            default=[],
            dest="scopes",
            help="A scope such as fleet:read or packages:write; repeat for more.",
        )
        parser.add_argument("--user", help="Username recorded as the key's creator.")

    def handle(
        self, *args, name: str, scopes: list[str], user: str | None, **options
    ) -> None:
        creator = None
        if user:
            creator = get_user_model().objects.filter(username=user).first()
            if creator is None:
                raise CommandError(f"No such user: {user!r}")
        try:
            key, plaintext = services.api_key_create(
                name=name, scopes=scopes, created_by=creator
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        scopes_text = ", ".join(key.scopes) or "none"
        self.stderr.write(f"Created API key {key.name!r} with scopes {scopes_text}.")
        self.stderr.write("Store it now; it cannot be shown again:")
        self.stdout.write(plaintext)
