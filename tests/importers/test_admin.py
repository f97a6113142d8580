"""The importers admin: sources (list, form, credentials by name, Run now, Dry run),
sinks (Test connection) and runs (filters, read-only detail)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from unittest.mock import patch
from urllib.parse import urlencode

import pytest
from django.contrib.messages import get_messages
from django.utils import timezone

from importers.models import GraphiteSink, ImportRun, ImportSource
from importers.sources import KINDS, Kind
from tests.fixtures.processes import free_port
from tests.importers.test_graphite import Sink

SECRET = "pa55-w0rd-never-shown"
FORM = {
    "name": "pd-results",
    "kind": "pingdom_results",
    "enabled": "on",
    "base_url": "",
    "credentials": '{"token": "IMPORTER_PD_TOKEN"}',
    "prefix": "uptime.pingdom",
    "interval_minutes": "5",
    "cron": "",
    "tz": "UTC",
    "app_blacklist": "",
    "services_whitelist": "",
    "carrier_map": "",
    "app_settings": "",
}


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.fixture
def sink(db) -> GraphiteSink:
    return GraphiteSink.objects.create(name="log", protocol="dummy", host="")


@pytest.fixture
def fake(monkeypatch) -> list:
    """A kind ``fake`` with a token credential whose fetch returns two points."""
    contexts: list = []

    def fetch(ctx):
        contexts.append(ctx)
        ctx.calls += 1
        return [("web.up", 1, 1_700_000_000), ("web.latency", 0.25, 1_700_000_000)]

    monkeypatch.setitem(
        KINDS,
        "fake",
        Kind(
            key="fake",
            label="Fake",
            api="fake",
            credential_roles=("token",),
            default_base_url="http://127.0.0.1:9/fake",
            backfill=True,
            default_interval_minutes=5,
            fetch=fetch,
        ),
    )
    monkeypatch.setenv("IMPORTER_FAKE_TOKEN", SECRET)
    return contexts


@pytest.fixture
def source(sink, fake) -> ImportSource:
    return ImportSource.objects.create(
        name="fake-src",
        kind="fake",
        sink=sink,
        credentials={"token": "IMPORTER_FAKE_TOKEN"},
    )


# --- Sources: list and form -----------------------------------------------------


def test_it_lists_sources_with_last_run_and_next_due(admin_client, source, sink):
    run = ImportRun.objects.create(
        source=source,
        trigger="schedule",
        status=ImportRun.Status.PARTIAL,
        finished_at=timezone.now(),
        points_sent=120,
        points_pending=7,
        error="sink: refused",
    )
    ImportSource.objects.filter(pk=source.pk).update(
        last_run=run, next_due_at=timezone.now() + timedelta(minutes=4)
    )
    ImportSource.objects.create(
        name="never", kind="fake", sink=sink, cron="*/10 * * * *", enabled=False
    )

    response = admin_client.get("/admin/importers/importsource/")

    html = response.content.decode()
    assert response.status_code == 200
    assert 'data-status="partial"' in html
    assert "120 <span" in html and "(+7 pending)" in html
    assert "in 3 min" in html or "in 4 min" in html
    assert "every 5 min (kind&#x27;s default)" in html
    assert "Every 10th minute of every hour (UTC)" in html
    assert "never run" in html and "disabled" in html


def test_the_list_filters_by_last_run(admin_client, source, sink):
    failed = ImportRun.objects.create(
        source=source, trigger="schedule", status="failed"
    )
    ImportSource.objects.filter(pk=source.pk).update(last_run=failed)
    ImportSource.objects.create(name="idle-src", kind="fake", sink=sink)

    failing = admin_client.get("/admin/importers/importsource/?last_run=failed")
    never = admin_client.get("/admin/importers/importsource/?last_run=never")

    assert "fake-src" in failing.content.decode()
    assert "idle-src" not in failing.content.decode()
    assert "idle-src" in never.content.decode()


def test_it_adds_a_source_and_schedules_it(admin_client, sink):
    response = admin_client.post(
        "/admin/importers/importsource/add/", {**FORM, "sink": sink.pk}
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    source = ImportSource.objects.get(name="pd-results")
    assert source.credentials == {"token": "IMPORTER_PD_TOKEN"}
    assert (source.app_blacklist, source.carrier_map) == ([], {})
    assert source.next_due_at is not None  # a new interval source is due at once


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"credentials": "{oops"}, "credentials", "Not valid JSON"),
        (
            {"credentials": '{"token": "hunter2!"}'},
            "credentials",
            "is not an environment",
        ),
        (
            {"credentials": '{"user": "IMPORTER_PD_USER"}'},
            "credentials",
            "needs exactly the roles",
        ),
        ({"carrier_map": '{"US": [[1, 2]]}'}, "carrier_map", "must be [regex, group]"),
        ({"carrier_map": "[1, 2]"}, "carrier_map", "must be an object"),
        (
            {"app_settings": '{"a": {"timezone": NaN}}'},
            "app_settings",
            "NaN is not JSON",
        ),
        ({"app_blacklist": '{"a": 1}'}, "app_blacklist", "JSON list of non-empty"),
        ({"services_whitelist": '["a\\u0000b"]'}, "services_whitelist", "NUL"),
        ({"prefix": "a..b"}, "prefix", "none of them empty"),
        ({"cron": "* * *"}, "cron", "must have 5 fields"),
        ({"name": "Bad_Name"}, "name", "lowercase letters"),
    ],
)
def test_bad_fields_are_form_errors_never_a_500(
    admin_client, sink, data, field, message
):
    response = admin_client.post(
        "/admin/importers/importsource/add/", {**FORM, "sink": sink.pk, **data}
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert field in errors, errors
    assert message in " ".join(errors[field])
    assert not ImportSource.objects.exists()


def test_the_page_shows_variable_names_and_whether_they_are_set(
    admin_client, source, monkeypatch
):
    ImportSource.objects.filter(pk=source.pk).update(
        credentials={"token": "IMPORTER_FAKE_TOKEN", "spare": "IMPORTER_UNSET_VARIABLE"}
    )
    monkeypatch.delenv("IMPORTER_UNSET_VARIABLE", raising=False)

    response = admin_client.get(f"/admin/importers/importsource/{source.pk}/change/")

    html = response.content.decode()
    assert (
        "<code>IMPORTER_FAKE_TOKEN</code> — set in this process&#x27;s environment"
        in html
    )
    assert "<code>IMPORTER_UNSET_VARIABLE</code> — NOT set in this process" in html
    assert SECRET not in html


def test_an_edit_leaves_the_lock_and_the_state_alone(admin_client, source, sink):
    run = ImportRun.objects.create(source=source, trigger="schedule")
    source.claim(run, now=timezone.now(), stale_after=timedelta(hours=1))
    ImportSource.objects.filter(pk=source.pk).update(
        state={"mark": 5}, pending_points=[["a.b", 1, 2]]
    )
    data = {
        **FORM,
        "name": "fake-src",
        "kind": "fake",
        "sink": sink.pk,
        "credentials": '{"token": "IMPORTER_FAKE_TOKEN"}',
        "interval_minutes": "30",
    }

    response = admin_client.post(
        f"/admin/importers/importsource/{source.pk}/change/", data
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    source.refresh_from_db()
    assert source.interval_minutes == 30
    assert source.running_run == run  # the run still holds its lock
    assert source.state == {"mark": 5} and source.pending_points == [["a.b", 1, 2]]


# --- Run now and Dry run ----------------------------------------------------------


def test_the_change_page_offers_run_now_and_dry_run(admin_client, source):
    response = admin_client.get(f"/admin/importers/importsource/{source.pk}/change/")

    html = response.content.decode()
    assert f"/admin/importers/importsource/{source.pk}/run/" in html
    assert f"/admin/importers/importsource/{source.pk}/dry-run/" in html


@patch("django_q.tasks.async_task", autospec=True)
def test_run_now_queues_a_run(
    async_task, admin_client, source, django_capture_on_commit_callbacks
):
    page = admin_client.get(f"/admin/importers/importsource/{source.pk}/run/")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(f"/admin/importers/importsource/{source.pk}/run/")

    assert page.status_code == 200 and "Queue the run" in page.content.decode()
    assert response.status_code == 302
    assert response["Location"] == f"/admin/importers/importsource/{source.pk}/change/"
    async_task.assert_called_once()
    assert async_task.call_args.args == (
        "importers.tasks.run_source",
        source.pk,
        "admin",
    )
    assert messages_of(response)[0].startswith("Queued a run of fake-src")


def test_the_queued_task_runs_the_source(source):
    from importers import tasks

    text = tasks.run_source(source.pk, "admin")

    run = source.runs.get()
    assert (run.trigger, run.triggered_by, run.status) == (
        "admin",
        "admin",
        "succeeded",
    )
    assert text.startswith(f"run #{run.pk} succeeded: 2 fetched, 2 sent")


@patch("django_q.tasks.async_task", autospec=True)
def test_run_now_refuses_a_running_source(async_task, admin_client, source):
    holder = ImportRun.objects.create(source=source, trigger="schedule")
    source.claim(holder, now=timezone.now(), stale_after=timedelta(hours=1))

    response = admin_client.post(f"/admin/importers/importsource/{source.pk}/run/")

    assert response.status_code == 200
    assert "fake-src is already running" in response.content.decode()
    async_task.assert_not_called()


@patch("django_q.tasks.async_task", autospec=True)
def test_a_disabled_source_only_dry_runs(async_task, admin_client, source):
    ImportSource.objects.filter(pk=source.pk).update(enabled=False)

    page = admin_client.get(f"/admin/importers/importsource/{source.pk}/change/")
    response = admin_client.post(f"/admin/importers/importsource/{source.pk}/run/")

    html = page.content.decode()
    assert f"/importsource/{source.pk}/run/" not in html
    assert f"/importsource/{source.pk}/dry-run/" in html
    assert "fake-src is disabled; enable it, or use a dry run." in (
        response.content.decode()
    )
    async_task.assert_not_called()


def test_a_dry_run_shows_the_lines_that_would_be_sent(admin_client, source):
    page = admin_client.get(f"/admin/importers/importsource/{source.pk}/dry-run/")
    response = admin_client.post(f"/admin/importers/importsource/{source.pk}/dry-run/")

    assert page.status_code == 200 and "Dry run now" in page.content.decode()
    html = response.content.decode()
    assert response.status_code == 200
    assert (
        '<pre class="imp-lines" id="imp-lines">web.up 1 1700000000\n'
        "web.latency 0.25 1700000000\n</pre>" in html
    )
    run = ImportRun.objects.get()
    assert run.dry_run and run.trigger == "admin"
    assert f"/admin/importers/importrun/{run.pk}/change/" in html
    source.refresh_from_db()
    assert source.last_run is None  # nothing saved
    assert SECRET not in html


def test_a_dry_run_takes_a_backfill_window(admin_client, source, fake):
    response = admin_client.post(
        f"/admin/importers/importsource/{source.pk}/dry-run/",
        {"since": "2026-03-01 00:00", "until": "2026-03-02 00:00"},
    )

    assert response.status_code == 200
    assert fake[0].since.isoformat() == "2026-03-01T00:00:00+00:00"
    assert fake[0].until.isoformat() == "2026-03-02T00:00:00+00:00"


def test_a_failed_dry_run_shows_its_error_without_the_secret(
    admin_client, source, monkeypatch
):
    def leaky(ctx):
        raise RuntimeError(f"server said: bad token {ctx.credentials['token']}")

    monkeypatch.setitem(KINDS, "fake", replace(KINDS["fake"], fetch=leaky))

    response = admin_client.post(f"/admin/importers/importsource/{source.pk}/dry-run/")

    html = response.content.decode()
    assert "RuntimeError: server said: bad token ***" in html
    assert SECRET not in html


def test_viewers_cannot_run(client, viewer_user, source):
    client.force_login(viewer_user)

    assert (
        client.get(f"/admin/importers/importsource/{source.pk}/run/").status_code == 403
    )
    assert (
        client.post(f"/admin/importers/importsource/{source.pk}/dry-run/").status_code
        == 403
    )


def test_operators_can_run(client, operator_user, source):
    client.force_login(operator_user)

    response = client.post(f"/admin/importers/importsource/{source.pk}/dry-run/")

    assert response.status_code == 200 and "imp-lines" in response.content.decode()


# --- Sinks --------------------------------------------------------------------------


def test_it_tests_a_sink_on_an_open_port(admin_client, request):
    server = Sink()
    request.addfinalizer(server.stop)
    sink = GraphiteSink.objects.create(
        name="carbon", host="127.0.0.1", port=server.port
    )

    page = admin_client.get(f"/admin/importers/graphitesink/{sink.pk}/test/")
    response = admin_client.post(f"/admin/importers/graphitesink/{sink.pk}/test/")

    assert page.status_code == 200 and "imp-test-result" not in page.content.decode()
    html = response.content.decode()
    assert 'data-ok="1"' in html
    assert f"Connected to 127.0.0.1:{server.port} (plaintext) in" in html


def test_it_tests_a_sink_on_a_closed_port(admin_client, db):
    port = free_port()  # nobody listens there
    sink = GraphiteSink.objects.create(name="carbon", host="127.0.0.1", port=port)

    response = admin_client.post(f"/admin/importers/graphitesink/{sink.pk}/test/")

    html = response.content.decode()
    assert 'data-ok="0"' in html
    assert f"Cannot reach 127.0.0.1:{port} (plaintext)" in html


def test_the_sink_page_has_the_test_button_and_lists_its_sources(
    admin_client, source, sink
):
    change = admin_client.get(f"/admin/importers/graphitesink/{sink.pk}/change/")
    listing = admin_client.get("/admin/importers/graphitesink/")

    assert f"/admin/importers/graphitesink/{sink.pk}/test/" in change.content.decode()
    assert f'?sink__id__exact={sink.pk}">1</a>' in listing.content.decode()


# --- Runs -----------------------------------------------------------------------------


def test_the_runs_list_filters_by_source_status_trigger_and_start(
    admin_client, source, sink
):
    other = ImportSource.objects.create(name="other-src", kind="fake", sink=sink)
    old = timezone.now() - timedelta(days=40)
    ImportRun.objects.create(source=source, trigger="schedule", status="succeeded")
    ImportRun.objects.create(source=source, trigger="command", status="failed")
    ImportRun.objects.create(
        source=other, trigger="admin", status="partial", started_at=old
    )

    def shown(query: str) -> set[str]:
        response = admin_client.get(f"/admin/importers/importrun/?{query}")
        assert response.status_code == 200
        return {run.pk for run in response.context["cl"].result_list}

    runs = {run.status: run.pk for run in ImportRun.objects.all()}
    assert shown(f"source__id__exact={other.pk}") == {runs["partial"]}
    assert shown("status__exact=failed") == {runs["failed"]}
    assert shown("trigger__exact=schedule") == {runs["succeeded"]}
    # the "Past 7 days" link of the date filter
    since = urlencode({"started_at__gte": timezone.now() - timedelta(days=7)})
    assert shown(since) == {runs["succeeded"], runs["failed"]}


def test_a_run_page_is_read_only_and_shows_the_dry_run_lines(admin_client, source):
    run = ImportRun.objects.create(
        source=source,
        trigger="admin",
        dry_run=True,
        status="succeeded",
        lines="web.up 1 1700000000\n",
    )

    response = admin_client.get(f"/admin/importers/importrun/{run.pk}/change/")

    html = response.content.decode()
    assert response.status_code == 200
    assert "web.up 1 1700000000" in html
    assert 'name="_save"' not in html
    assert admin_client.get("/admin/importers/importrun/add/").status_code == 403


def test_a_dry_run_in_the_admin_stops_at_its_time_limit(
    admin_client, sink, settings, monkeypatch
):
    # In a web request: an account with many apps must not outlast the proxy.
    settings.IMPORTERS_DRY_RUN_SECONDS = 0
    apps_started = []

    def fetch(ctx):
        for app in ("one", "two"):
            ctx.heartbeat()  # as the kinds do before each app
            apps_started.append(app)
        return [("web.up", 1, 1_700_000_000)]

    monkeypatch.setitem(
        KINDS,
        "slow",
        Kind(
            key="slow",
            label="Slow",
            api="fake",
            credential_roles=(),
            default_base_url="http://127.0.0.1:9/slow",
            backfill=False,
            default_interval_minutes=5,
            fetch=fetch,
        ),
    )
    source = ImportSource.objects.create(name="slow-src", kind="slow", sink=sink)

    response = admin_client.post(f"/admin/importers/importsource/{source.pk}/dry-run/")

    assert response.status_code == 200
    assert apps_started == []
    assert "stopped after 0 s, the time a dry run has in the admin" in (
        response.content.decode()
    )
    assert ImportRun.objects.get().status == ImportRun.Status.FAILED
