"""django-q2 (and system cron) entry points of the fleet."""

from __future__ import annotations

from fleet import services


def cleanup() -> str:
    """The periodic fleet cleanup; returns its summary for the task history."""
    return str(services.fleet_cleanup())
