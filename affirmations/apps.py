from __future__ import annotations

from django.apps import AppConfig


class AffirmationsConfig(AppConfig):
    name = "affirmations"
    verbose_name = "Affirmations"
