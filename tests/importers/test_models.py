"""Sinks, sources and runs: validation, the schedule, the run lock, the kinds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.utils import timezone

from importers.models import (
    GraphiteSink,
    ImportRun,
    ImportSource,
    kind_choices,
    kinds,
    one_line,
)
from importers.sources import KIND_CHOICES, KINDS, Kind

NOW = datetime(2026, 3, 28, 22, 0, tzinfo=UTC)
APTELIGENT_ENV = {
    "username": "APTELIGENT_USERNAME",
    "password": "APTELIGENT_PASSWORD",
    "client_id": "APTELIGENT_CLIENT_ID",
}


@pytest.fixture
def sink(db) -> GraphiteSink:
    return GraphiteSink.objects.create(name="log", protocol="dummy", host="")


def source_of(sink: GraphiteSink, **fields) -> ImportSource:
    fields.setdefault("name", "apteligent-daily")
    fields.setdefault("kind", "apteligent_daily")
    fields.setdefault("credentials", dict(APTELIGENT_ENV))
    return ImportSource(sink=sink, **fields)


def is_valid(obj) -> bool:
    try:
        obj.full_clean()
    except ValidationError:
        return False
    return True


def errors_of(obj) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as exc:
        obj.full_clean()
    return exc.value.message_dict


# --- Sinks ----------------------------------------------------------------------


def test_it_builds_the_client_of_a_sink(db):
    sink = GraphiteSink(
        name="carbon",
        host="carbon.example",
        protocol="pickle",
        batch_size=500,
        timeout=2.5,
        buffer_limit=5000,
    )
    sink.full_clean()

    client = sink.client()

    assert (client.host, client.port, client.protocol) == (
        "carbon.example",
        2004,
        "pickle",
    )
    assert (client.batch_size, client.timeout, client.buffer_limit) == (500, 2.5, 5000)
    assert sink.address == "pickle carbon.example:2004"


def test_a_sink_needs_a_host_except_the_dummy_one(db):
    assert "host" in errors_of(GraphiteSink(name="x", host="", protocol="plaintext"))
    GraphiteSink(name="y", host="", protocol="dummy").full_clean()


def test_a_sink_batch_must_fit_its_buffer(db):
    errors = errors_of(GraphiteSink(name="x", batch_size=100, buffer_limit=10))

    assert errors["batch_size"] == ["Must not exceed the buffer limit."]


# --- Sources: validation -------------------------------------------------------------


def test_a_valid_source_passes(sink):
    assert is_valid(
        source_of(sink, prefix="mobile.apteligent", cron="5 0 * * *", tz="Asia/Tokyo")
    )
    assert is_valid(source_of(sink))


@pytest.mark.parametrize("name", ["Apteligent", "ap_daily", "-x", "a--b", "a b", ""])
def test_it_refuses_names_that_are_not_slug_like(sink, name):
    assert "name" in errors_of(source_of(sink, name=name))


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("mobile..apps", "none of them empty"),
        ("mobile.", "none of them empty"),
        ("my apps.x", "'my_20apps.x'"),
    ],
)
def test_it_refuses_unsafe_prefixes_and_suggests_one(sink, prefix, message):
    errors = errors_of(source_of(sink, prefix=prefix))

    assert message in errors["prefix"][0]


def test_credentials_are_variable_names_for_exactly_the_kinds_roles(sink):
    wrong_roles = source_of(
        sink, credentials={"username": "IMPORTER_A_USER", "token": "IMPORTER_A_TOKEN"}
    )
    a_value = source_of(sink, credentials={**APTELIGENT_ENV, "password": "hunter2!"})
    not_an_object = source_of(sink, credentials=["APTELIGENT_USERNAME"])

    assert errors_of(wrong_roles)["credentials"] == [
        "Apteligent: daily app metrics needs exactly the roles username, password, "
        "client_id: missing client_id, password; unknown token."
    ]
    message = errors_of(a_value)["credentials"][0]
    assert "'hunter2!' is not an environment variable name" in message
    assert "Must be a JSON object" in errors_of(not_an_object)["credentials"][0]


def test_pingdom_needs_a_token_variable(sink):
    source = source_of(
        sink,
        name="pingdom",
        kind="pingdom_results",
        credentials={"token": "IMPORTER_PD_TOKEN"},
    )
    without = source_of(sink, name="pingdom", kind="pingdom_results", credentials={})

    assert is_valid(source)
    assert "missing token" in errors_of(without)["credentials"][0]


def test_it_validates_the_json_settings(sink):
    source = source_of(
        sink,
        app_blacklist="not a list",
        services_whitelist=["ok", 3],
        carrier_map={"US": [["(unclosed", "ATT"]]},
        app_settings={"app1": {"timezone": "Mars/Olympus"}},
    )

    errors = errors_of(source)

    assert set(errors) >= {
        "app_blacklist",
        "services_whitelist",
        "carrier_map",
        "app_settings",
    }
    assert any("bad regex" in message for message in errors["carrier_map"])
    assert any("Mars/Olympus" in message for message in errors["app_settings"])


def test_it_takes_an_interval_or_a_cron_not_both(sink):
    errors = errors_of(source_of(sink, interval_minutes=5, cron="*/5 * * * *"))

    assert errors["cron"] == ["Give an interval or a cron, not both."]
    assert "cron" in errors_of(source_of(sink, cron="61 * * * *"))
    assert "tz" in errors_of(source_of(sink, tz="Mars/Olympus"))


def test_an_unknown_kind_is_refused(sink):
    assert "kind" in errors_of(source_of(sink, kind="crittercism"))


def test_a_source_cannot_lose_its_sink(sink):
    source_of(sink).save()

    with pytest.raises(Exception, match="protected"):
        sink.delete()


# --- Kinds ---------------------------------------------------------------------------


def test_the_kind_choices_follow_the_registry(monkeypatch, settings):
    assert kind_choices() == KIND_CHOICES
    extra = Kind(
        key="extra",
        label="Extra",
        api="x",
        credential_roles=(),
        default_base_url="https://x.invalid/",
        backfill=False,
        default_interval_minutes=1,
        fetch=lambda ctx: [],
    )
    monkeypatch.setitem(KINDS, "extra", extra)

    assert kind_choices()[-1] == ("extra", "Extra")


EXTRA_KIND = Kind(
    key="from_setting",
    label="From the setting",
    api="x",
    credential_roles=(),
    default_base_url="https://x.invalid/",
    backfill=False,
    default_interval_minutes=1,
    fetch=lambda ctx: [],
)


def test_extra_kinds_come_from_a_setting(settings):
    settings.IMPORTERS_EXTRA_KINDS = ["tests.importers.test_models.EXTRA_KIND"]

    assert kinds()["from_setting"] is EXTRA_KIND
    assert set(kinds()) == {*KINDS, "from_setting"}


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("tests.importers.nowhere.KIND", "cannot import"),
        ("importers.sources.KINDS", "is not an importers.sources.Kind"),
    ],
)
def test_a_bad_extra_kind_is_a_configuration_error(settings, path, message):
    settings.IMPORTERS_EXTRA_KINDS = [path]

    with pytest.raises(ImproperlyConfigured, match=message):
        kinds()


# --- Schedule -------------------------------------------------------------------


def test_a_new_interval_source_is_due_at_once_a_cron_one_at_its_occurrence(sink):
    interval = source_of(sink, name="every", interval_minutes=10)
    # 00:05 in Tokyo (UTC+9) on the 29th is 15:05 UTC on the 28th
    cron = source_of(sink, name="daily", cron="5 0 * * *", tz="Asia/Tokyo")
    off = source_of(sink, name="off", enabled=False)

    assert interval.compute_next_due(NOW) == NOW
    assert cron.compute_next_due(NOW) == datetime(2026, 3, 29, 15, 5, tzinfo=UTC)
    assert off.compute_next_due(NOW) is None


def test_the_next_due_time_follows_the_last_run(sink):
    source = source_of(sink, interval_minutes=10)
    source.save()
    run = ImportRun.objects.create(
        source=source,
        trigger=ImportRun.Trigger.SCHEDULE,
        started_at=NOW,
        finished_at=NOW + timedelta(minutes=2),
    )
    source.last_run = run

    assert source.compute_next_due(NOW) == NOW + timedelta(minutes=10)
    # a run longer than the interval: due again once it has ended
    run.finished_at = NOW + timedelta(minutes=25)
    assert source.compute_next_due(NOW) == NOW + timedelta(minutes=25)


def test_a_cron_evaluates_in_the_sources_zone_across_dst(sink):
    # Europe/Helsinki jumps from 03:00 EET to 04:00 EEST on 2026-03-29
    source = source_of(sink, cron="30 3 * * *", tz="Europe/Helsinki")

    first = source.next_due_after(NOW)
    second = source.next_due_after(first)

    # 03:30 does not exist that day: it runs at the jump, as Debian cron does
    assert first == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 04:00 EEST
    assert second == datetime(2026, 3, 30, 0, 30, tzinfo=UTC)  # 03:30 EEST


def test_missed_cron_occurrences_are_not_owed(sink):
    source = source_of(sink, cron="0 * * * *")
    source.save()
    source.last_run = ImportRun.objects.create(
        source=source,
        trigger=ImportRun.Trigger.SCHEDULE,
        started_at=NOW - timedelta(days=2),
        finished_at=NOW - timedelta(days=2),
    )

    assert source.compute_next_due(NOW + timedelta(minutes=10)) == NOW + timedelta(
        hours=1
    )


def test_reschedule_saves_the_next_due_time(sink):
    source = source_of(sink, interval_minutes=5)
    source.save()

    source.reschedule(NOW)

    source.refresh_from_db()
    assert source.next_due_at == NOW


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ({"interval_minutes": 5}, "every 5 min"),
        ({"interval_minutes": 120}, "every 2 h"),
        ({}, "every 1 h (kind's default)"),
        ({"cron": "5 0 * * *", "tz": "Asia/Tokyo"}, "At 00:05 every day (Asia/Tokyo)"),
    ],
)
def test_it_says_the_schedule_in_words(sink, fields, text):
    assert source_of(sink, **fields).schedule_text == text


# --- The lock ----------------------------------------------------------------------


def test_only_one_run_holds_the_lock(sink):
    source = source_of(sink)
    source.save()
    now = timezone.now()
    first = ImportRun.objects.create(source=source, trigger="command")
    second = ImportRun.objects.create(source=source, trigger="command")
    stale = timedelta(minutes=60)

    assert source.claim(first, now=now, stale_after=stale)
    assert not ImportSource.objects.get(pk=source.pk).claim(
        second, now=now, stale_after=stale
    )
    assert not source.release(second)  # not the holder: nothing happens
    assert source.release(first)
    assert ImportSource.objects.get(pk=source.pk).claim(
        second, now=now, stale_after=stale
    )


def test_the_scheduler_claims_only_while_the_source_is_due(sink):
    source = source_of(sink)
    source.save()
    ImportSource.objects.filter(pk=source.pk).update(
        next_due_at=NOW + timedelta(minutes=1)
    )
    run = ImportRun.objects.create(source=source, trigger="schedule")

    assert not source.claim(run, now=NOW, stale_after=timedelta(hours=1), due_by=NOW)
    assert source.claim(
        run, now=NOW, stale_after=timedelta(hours=1), due_by=NOW + timedelta(minutes=1)
    )


def test_a_run_finishes_only_with_a_terminal_status(sink):
    source = source_of(sink)
    source.save()
    run = ImportRun.objects.create(source=source, trigger="command", started_at=NOW)

    with pytest.raises(ValueError, match="not a terminal status"):
        run.finish(ImportRun.Status.RUNNING)
    run.finish(
        ImportRun.Status.FAILED,
        error="line one\nline two",
        now=NOW + timedelta(seconds=3),
        points_sent=4,
    )

    run.refresh_from_db()
    assert (run.status, run.error, run.duration, run.points_sent) == (
        "failed",
        "line one line two",
        3.0,
        4,
    )


def test_credentials_are_only_variables_importers_may_read(sink, settings):
    # An operator must not be able to have the portal's own secrets sent to an
    # API of their choosing.
    settings.IMPORTERS_CREDENTIAL_PREFIXES = ["PINGDOM_", "IMPORTER_"]
    own = source_of(
        sink,
        name="pingdom",
        kind="pingdom_results",
        credentials={"token": "SECRET_KEY"},
    )
    message = errors_of(own)["credentials"][0]
    assert "SECRET_KEY is not a variable importers may read" in message
    assert "PINGDOM_…, IMPORTER_…" in message

    settings.IMPORTERS_CREDENTIAL_PREFIXES = ["PINGDOM_", "IMPORTER_", "SECRET_"]
    own.full_clean()  # a deployment may widen the list on purpose


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://developers.crittercism.com/v1.0", True),
        ("http://127.0.0.1:8080/v1.0", True),
        ("http://localhost/v1.0", True),
        ("http://[::1]:9000/v1.0", True),
        ("http://developers.crittercism.com/v1.0", False),
        ("http://10.0.0.5/v1.0", False),
        ("ftp://example.com/x", False),
    ],
)
def test_the_base_url_is_https_except_to_this_machine(sink, url, allowed):
    source = source_of(sink, base_url=url)
    if allowed:
        source.full_clean()
    else:
        assert "Must be an https:// URL" in " ".join(errors_of(source)["base_url"])


def test_one_line_drops_control_characters():
    # An API answer with a NUL reaches the run's error: PostgreSQL cannot store it.
    assert one_line("bad\x00answer\r\n\tfrom  the API\x7f") == "bad answer from the API"


def test_a_carrier_source_needs_rules_for_its_apps_countries(sink):
    rules = {"FI": [["(?i)^elisa", "Elisa"], [".*", "Other"]]}
    apps = {
        "538bbf61c04a71ec21c50296": {"timezone": "Europe/Helsinki", "country": "fi"}
    }
    source = source_of(
        sink, kind="apteligent_grouped_carrier", carrier_map=rules, app_settings=apps
    )

    assert (
        "No rules for the countries of the per-app settings: fi"
        in (errors_of(source)["carrier_map"][0])
    )
    apps["538bbf61c04a71ec21c50296"]["country"] = "FI"
    source.full_clean()
