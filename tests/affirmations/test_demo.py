"""The affirmations demo: three checks through the service, a few events, the keys
and how to affirm them, all once."""

from __future__ import annotations

import io
import re

from affirmations.demo import seed_affirmations
from affirmations.models import Affirmation, Check
from portal import demo


def test_it_creates_the_demo_checks_and_events_once(db, settings):
    settings.SITE_URL = "http://127.0.0.1:8123"
    first, second = io.StringIO(), io.StringIO()

    seed_affirmations(first)
    seed_affirmations(second)

    checks = {check.name: check for check in Check.objects.all()}
    assert set(checks) == {"nightly_backup_verified", "orders_exported", "manual_purge"}
    assert checks["nightly_backup_verified"].rule == "≥ 1 in 1 d"
    assert checks["nightly_backup_verified"].tz == "Europe/Helsinki"
    assert checks["orders_exported"].rule == "1–4 in 20 min"
    assert checks["manual_purge"].rule == "none in 1 h"
    # created through the service: aimed at their first occurrence
    assert all(check.next_due_at is not None for check in checks.values())
    assert Affirmation.objects.filter(name="orders_exported").count() == 2
    assert Affirmation.objects.filter(name="nightly_backup_verified").count() == 1
    assert not Affirmation.objects.filter(name="manual_purge").exists()
    assert first.getvalue().count("(created)") == 3
    assert second.getvalue().count("(exists)") == 3
    assert "(created)" not in second.getvalue()


def test_it_prints_each_key_with_a_curl_hint(db, settings):
    settings.SITE_URL = "http://127.0.0.1:8123"
    out = io.StringIO()

    seed_affirmations(out)

    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    for line in lines:
        name, key = re.match(r"  check (\w+) (af-\w+) \(created\)", line).groups()
        assert Check.objects.get(key=key).name == name
        assert line.endswith(f"curl -X POST http://127.0.0.1:8123/affirm/{key}")


def test_it_leaves_edited_demo_checks_alone(db):
    seed_affirmations(io.StringIO())
    Check.objects.filter(name="manual_purge").update(min_count=0, max_count=1)

    seed_affirmations(io.StringIO())

    assert Check.objects.count() == 3
    assert Check.objects.get(name="manual_purge").max_count == 1


def test_it_is_registered_after_the_logins():
    seeders = {seeder.key: seeder for seeder in demo.seeders()}

    assert seeders["affirmations"].func is seed_affirmations
    assert seeders["affirmations"].order == 40
    assert seeders["affirmations"].order > seeders["portal"].order
