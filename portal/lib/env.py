"""Typed readers for environment variables that collect errors instead of raising.

Settings are read at import time, before Django can report anything. A bad value
is recorded here and surfaced by the ``portal.E001`` system check as one readable
line, so ``manage.py check``, ``migrate``, ``runserver``, ``qcluster`` and the WSGI
entry point all refuse to start with a clear message instead of a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


@dataclass
class Env:
    """Reads variables from ``environ`` and remembers what could not be parsed."""

    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    errors: list[tuple[str, str]] = field(default_factory=list)

    def error(self, name: str, message: str) -> None:
        self.errors.append((name, message))

    def is_set(self, name: str) -> bool:
        return self.environ.get(name, "").strip() != ""

    def str(self, name: str, default: str = "") -> str:
        value = self.environ.get(name)
        return default if value is None or value.strip() == "" else value.strip()

    def bool(self, name: str, default: bool) -> bool:
        raw = self.environ.get(name)
        if raw is None:
            return default
        word = raw.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False if word else default
        self.error(
            name, f"{raw!r} is not a boolean (use 1/0, true/false, yes/no, on/off)"
        )
        return default

    def int(
        self,
        name: str,
        default: int,
        *,
        min_value: int | None = None,
        max_value: int | None = None,
    ) -> int:
        raw = self.environ.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            value = int(raw.strip())
        except ValueError:
            self.error(name, f"{raw!r} is not an integer")
            return default
        if min_value is not None and value < min_value:
            self.error(name, f"{value} is below the minimum of {min_value}")
            return default
        if max_value is not None and value > max_value:
            self.error(name, f"{value} is above the maximum of {max_value}")
            return default
        return value

    def list(self, name: str, default: list[str] | None = None) -> list[str]:
        raw = self.environ.get(name)
        if raw is None or raw.strip() == "":
            return list(default or [])
        return [item.strip() for item in raw.split(",") if item.strip()]

    def choice(self, name: str, default: str, choices: list[str]) -> str:
        value = self.str(name, default)
        if value not in choices:
            self.error(name, f"{value!r} is not one of {', '.join(choices)}")
            return default
        return value
