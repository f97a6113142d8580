"""django-q2 (and system cron) entry points of the affirmations."""

from __future__ import annotations

from affirmations import services


def check() -> str:
    """The checker tick: due evaluations, then alerts."""
    return str(services.checker_run_once())


def prune() -> str:
    """The retention tick."""
    return str(services.prune())
