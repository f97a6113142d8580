"""Demo checks (a daily, a frequent and a must-not-happen one), a few affirmations,
and how to affirm from a script."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings

from affirmations import services
from affirmations.models import Affirmation, Check
from portal import demo

DEMO_DATA = "demo"


def demo_checks() -> list[dict]:
    """The fields of the demo checks, for ``services.check_create``."""
    return [
        {
            "name": "nightly_backup_verified",
            "description": "The restore test of last night's backup succeeded.",
            "schedule": "0 6 * * *",
            "tz": "Europe/Helsinki",
            "lookback": timedelta(days=1),
            "min_count": 1,
            "max_count": None,
        },
        {
            "name": "orders_exported",
            "description": "The order export runs every 5 minutes; too many runs "
            "mean a duplicate scheduler.",
            "schedule": "*/15 * * * *",
            "tz": "UTC",
            "lookback": timedelta(minutes=20),
            "min_count": 1,
            "max_count": 4,
        },
        {
            "name": "manual_purge",
            "description": "Nobody purges the queue by hand.",
            "schedule": "0 * * * *",
            "tz": "UTC",
            "lookback": timedelta(hours=1),
            "min_count": 0,
            "max_count": 0,
        },
    ]


# Events affirmed once, when the demo has none of that name yet.
DEMO_AFFIRMATIONS = {"nightly_backup_verified": 1, "orders_exported": 2}


@demo.register("affirmations", order=40)
def seed_affirmations(stdout) -> None:
    """Create the demo checks once (matched by event name) and affirm a few events
    once, then print each check's key and how to affirm it."""
    for fields in demo_checks():
        check = Check.objects.filter(name=fields["name"]).order_by("id").first()
        state = "exists"
        if check is None:
            check = services.check_create(**fields)
            state = "created"
        stdout.write(
            f"  check {check.name} {check.key} ({state}): {check.rule}; "
            f"curl -X POST {settings.SITE_URL}/affirm/{check.key}\n"
        )
    for name, count in DEMO_AFFIRMATIONS.items():
        if Affirmation.objects.filter(name=name, data=DEMO_DATA).exists():
            continue
        for _ in range(count):
            services.affirm(name=name, data=DEMO_DATA, source=Affirmation.Source.API)
