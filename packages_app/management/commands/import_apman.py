from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from packages_app import services
from packages_app.models import Package, validate_recipients

REQUIRED_KEYS = ("id", "description", "timeout", "command")
OPTIONAL_KEYS = ("parameters", "notify-success", "notification-emails")
# Package fields under the names ApMan's config gives them, for error messages.
CONFIG_KEYS = {
    "slug": "id",
    "notify_success": "notify-success",
    "recipients": "notification-emails",
    "__all__": "config",
}


def find_config(path: Path) -> Path:
    """The config file itself, or the one in a package folder: config.json, else
    the folder's only *.json."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise CommandError(f"{path}: no such file or folder.")
    if (path / "config.json").is_file():
        return path / "config.json"
    candidates = sorted(p for p in path.glob("*.json") if p.is_file())
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "none"
        raise CommandError(
            f"{path}: expected config.json or exactly one *.json file (found: "
            f"{found}); pass the config file itself."
        )
    return candidates[0]


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a valid JSON value")


def read_config(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"{path}: cannot read it: {exc}") from exc
    try:
        # NaN and Infinity are Python's extensions; PostgreSQL's jsonb refuses them.
        config = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise CommandError(
            f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}."
        ) from exc
    except ValueError as exc:
        raise CommandError(f"{path}: invalid JSON: {exc}.") from exc
    if not isinstance(config, dict):
        raise CommandError(f"{path}: the config must be a JSON object.")
    return config


def package_fields(config: dict, path: Path) -> dict:
    """The Package fields the config sets; a CommandError names a bad key."""

    def bad(key: str, message: str) -> CommandError:
        return CommandError(f"{path}: {key!r}: {message}")

    missing = [key for key in REQUIRED_KEYS if key not in config]
    if missing:
        keys = ", ".join(repr(key) for key in missing)
        raise CommandError(f"{path}: missing required key(s) {keys}.")
    if not isinstance(config["id"], str) or not config["id"]:
        raise bad("id", "must be a non-empty string.")
    if not isinstance(config["description"], str):
        raise bad("description", "must be a string.")
    timeout = config["timeout"]
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
        raise bad("timeout", "must be a positive whole number of seconds.")
    if not isinstance(config["command"], str):
        raise bad("command", "must be a command line (a string).")
    try:
        command = shlex.split(config["command"])
    except ValueError as exc:
        raise bad("command", f"cannot be split into arguments: {exc}.") from exc
    if not command:
        raise bad("command", "is empty.")
    fields = {
        "slug": config["id"],
        "description": config["description"],
        "timeout": timeout,
        "command": command,
    }
    if "parameters" in config:
        if not isinstance(config["parameters"], dict):
            raise bad("parameters", "must be a JSON object.")
        fields["parameters"] = config["parameters"]
    if "notify-success" in config:
        if not isinstance(config["notify-success"], bool):
            raise bad("notify-success", "must be true or false.")
        fields["notify_success"] = config["notify-success"]
    if "notification-emails" in config:
        try:
            validate_recipients(config["notification-emails"])
        except ValidationError as exc:
            raise bad("notification-emails", " ".join(exc.messages)) from exc
        fields["recipients"] = config["notification-emails"]
    return fields


class Command(BaseCommand):
    help = (
        "Create or update a package from an ApMan config file, or from the package "
        "folder that holds it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "path", help="An ApMan config (JSON), or a package folder containing one."
        )
        parser.add_argument(
            "--directory",
            help="The package folder the command runs in, if not the config's folder.",
        )

    def handle(self, *args, path: str, directory: str | None, **options) -> None:
        config_path = find_config(Path(path))
        config = read_config(config_path)
        fields = package_fields(config, config_path)
        # abspath, not resolve(): keep a symlinked folder (e.g. .../current).
        fields["directory"] = os.path.abspath(directory or config_path.parent)
        unknown = sorted(set(config) - {*REQUIRED_KEYS, *OPTIONAL_KEYS})
        if unknown:
            self.stderr.write(f"{config_path}: ignored key(s): {', '.join(unknown)}")
        package, created = self._save(fields, config_path)
        action = "created" if created else "updated"
        self.stdout.write(f"{action} {package.slug} ({package.directory})")

    def _save(self, fields: dict, config_path: Path) -> tuple[Package, bool]:
        try:
            return services.package_upsert(fields=fields)
        except ValidationError as exc:
            problems = "; ".join(
                f"{CONFIG_KEYS.get(field, field)}: {' '.join(messages)}"
                for field, messages in exc.message_dict.items()
            )
            raise CommandError(f"{config_path}: {problems}") from exc
