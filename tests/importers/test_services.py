"""run_source and run_due with fake kinds (registered in KINDS for the test): into
a real carbon-cache, into loopback servers that go down and come back, dry runs,
backfill windows, the importer's own metrics, secrets, locks and the schedule."""

from __future__ import annotations

import base64
import logging
import time
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.utils import timezone

from importers import services, tasks
from importers.graphite import GraphiteClient, metric_name
from importers.models import GraphiteSink, ImportRun, ImportSource
from importers.sources import KINDS, FetchContext, Kind, SourceError
from tests.fixtures.processes import free_port
from tests.importers.test_graphite import Sink

Status = ImportRun.Status
SECRET = "s3cr3t-Value/with+chars"


def uses_carbon(test):
    """The tests that talk to carbon share one carbon-cache: one worker runs them."""
    return pytest.mark.slow(pytest.mark.xdist_group("carbon")(test))


class FakeApi:
    """A fake kind's fetch: records each context it was called with, answers the
    points it is given (or raises), and moves a high-water mark like a real kind."""

    def __init__(self, points=(), *, error: Exception | None = None):
        self.points = list(points)
        self.error = error
        self.contexts: list[FetchContext] = []

    def __call__(self, ctx: FetchContext) -> list:
        self.contexts.append(ctx)
        ctx.calls += 2
        if self.error is not None:
            raise self.error
        marks = [point[2] for point in self.points if isinstance(point, tuple)]
        if marks:
            ctx.state["last"] = max(marks)
        return list(self.points)


@pytest.fixture
def fake(monkeypatch):
    """Register a fake kind ``fake`` (credential role ``token``, backfill) and a
    ``fake_live`` (no credentials, no backfill); returns the ``FakeApi``s."""
    apis = {"fake": FakeApi(), "fake_live": FakeApi()}
    monkeypatch.setitem(
        KINDS,
        "fake",
        Kind(
            key="fake",
            label="Fake daily",
            api="fake",
            credential_roles=("token",),
            default_base_url="http://127.0.0.1:9/api",
            backfill=True,
            default_interval_minutes=15,
            fetch=lambda ctx: apis["fake"](ctx),
        ),
    )
    monkeypatch.setitem(
        KINDS,
        "fake_live",
        Kind(
            key="fake_live",
            label="Fake live",
            api="fake",
            credential_roles=(),
            default_base_url="http://127.0.0.1:9/live",
            backfill=False,
            default_interval_minutes=2,
            fetch=lambda ctx: apis["fake_live"](ctx),
        ),
    )
    monkeypatch.setenv("IMPORTER_FAKE_TOKEN", SECRET)
    return apis


def make_source(sink: GraphiteSink, name: str = "fake-src", **fields) -> ImportSource:
    fields.setdefault("kind", "fake")
    if fields["kind"] == "fake":
        fields.setdefault("credentials", {"token": "IMPORTER_FAKE_TOKEN"})
    source = ImportSource(name=name, sink=sink, **fields)
    source.full_clean()
    source.save()
    return source


def tcp_sink(port: int, **fields) -> GraphiteSink:
    fields.setdefault("batch_size", 100)
    return GraphiteSink.objects.create(
        name=f"sink-{port}", host="127.0.0.1", port=port, timeout=2, **fields
    )


def recent_points(path: str, values: list) -> list[tuple[str, object, int]]:
    """Points one second apart ending a minute ago (carbon keeps an hour)."""
    start = int(time.time()) - 60 - len(values)
    return [(path, value, start + i) for i, value in enumerate(values)]


# --- Into carbon ----------------------------------------------------------------


@uses_carbon
def test_it_sends_points_and_its_own_metrics_into_carbon(db, carbon, fake, request):
    path = metric_name("tests", request.node.name, "crashes")
    fake["fake"].points = recent_points(path, [3, 1.25, 1234567])
    sink = tcp_sink(carbon.line_port)
    source = make_source(sink, prefix="it.prefix")

    run = services.run_source(source, trigger=ImportRun.Trigger.COMMAND)

    run.refresh_from_db()
    source.refresh_from_db()
    assert run.status == Status.SUCCEEDED, run.error
    assert (run.points_fetched, run.points_sent, run.points_pending) == (3, 3, 0)
    assert run.http_calls == 2 and run.error == ""
    stored = carbon.wait_for_points(path, [ts for _, _, ts in fake["fake"].points])
    assert sorted(stored.values()) == [1.25, 3, 1234567]
    # the high-water mark is saved with the points accepted, the lock released
    assert source.state == {"last": fake["fake"].points[-1][2]}
    assert source.pending_points == [] and source.last_run == run
    assert source.running_since is None and source.running_run is None
    own = f"it.prefix.portal.importers.{source.name}"
    sent = carbon.wait_for_points(f"{own}.points_sent", [])
    assert list(sent.values()) == [3]
    assert list(carbon.read([f"{own}.errors"])[f"{own}.errors"].values()) == [0]
    duration = carbon.read([f"{own}.duration"])[f"{own}.duration"]
    assert len(duration) == 1 and 0 <= next(iter(duration.values())) < 60


@uses_carbon
def test_it_sends_over_pickle_too(db, carbon, fake, request):
    path = metric_name("tests", request.node.name, "dau")
    fake["fake"].points = recent_points(path, [10, 20])
    sink = tcp_sink(carbon.pickle_port, protocol=GraphiteSink.Protocol.PICKLE)
    source = make_source(sink)

    run = services.run_source(source, trigger=ImportRun.Trigger.COMMAND)

    assert run.status == Status.SUCCEEDED, run.error
    stored = carbon.wait_for_points(path, [ts for _, _, ts in fake["fake"].points])
    assert sorted(stored.values()) == [10, 20]


# --- The sink down, then up -------------------------------------------------------


def test_it_keeps_points_while_the_sink_is_down_and_sends_them_next_run(
    db, fake, request
):
    port = free_port()  # nobody listens there
    sink = tcp_sink(port)
    source = make_source(sink)
    first = [("app.a", i, 1_000_000 + i) for i in range(4)]
    fake["fake"].points = first

    run = services.run_source(source, trigger=ImportRun.Trigger.COMMAND)

    source.refresh_from_db()
    assert run.status == Status.PARTIAL
    assert "refused" in run.error and "kept for the next run" in run.error
    assert (run.points_sent, run.points_dropped) == (0, 0)
    # the four points and the importer's own three wait for the sink
    assert run.points_pending == 7 == len(source.pending_points)
    assert [tuple(p) for p in source.pending_points[:4]] == first
    # the state moved on: the points it covers are safely kept
    assert source.state == {"last": 1_000_003}
    assert source.running_since is None

    server = Sink(port)
    request.addfinalizer(server.stop)
    second = [("app.a", 9, 1_000_010)]
    fake["fake"].points = second
    again = services.run_source(source, trigger=ImportRun.Trigger.COMMAND)

    source.refresh_from_db()
    assert again.status == Status.SUCCEEDED, again.error
    assert again.points_sent == 8 and again.points_pending == 0
    assert source.pending_points == []
    lines = server.lines
    # kept points first, in order, then the new one, then the own metrics
    assert lines[:4] == [f"app.a {i} {1_000_000 + i}\n".encode() for i in range(4)]
    assert lines[4].startswith(b"portal.importers.fake-src.points_sent 0 ")
    assert lines[7] == b"app.a 9 1000010\n"
    assert lines[8].startswith(b"portal.importers.fake-src.points_sent 8 ")
    assert lines[9].startswith(b"portal.importers.fake-src.errors 0 ")


def test_it_drops_only_past_the_buffer_limit(db, fake):
    sink = tcp_sink(free_port(), batch_size=2, buffer_limit=6)
    source = make_source(sink)
    fake["fake"].points = [("app.b", i, 2_000_000 + i) for i in range(4)]

    within = services.run_source(source, trigger=ImportRun.Trigger.COMMAND)

    # 4 points + 3 own metrics: one over the limit of 6
    assert (within.points_pending, within.points_dropped) == (6, 1)
    fake["fake"].points = [("app.b", i, 2_000_100 + i) for i in range(2)]

    past = services.run_source(source, trigger=ImportRun.Trigger.COMMAND)

    source.refresh_from_db()
    assert past.status == Status.PARTIAL
    assert past.points_pending == 6 == len(source.pending_points)
    # 6 kept + 2 new + 3 own = 11: the 5 oldest go
    assert past.points_dropped == 5
    assert "5 dropped past the buffer limit" in past.error
    assert [p[0] for p in source.pending_points][-3:] == [
        "portal.importers.fake-src.points_sent",
        "portal.importers.fake-src.errors",
        "portal.importers.fake-src.duration",
    ]


def test_it_sends_more_points_than_the_buffer_holds_without_dropping(db, fake, request):
    server = Sink()
    request.addfinalizer(server.stop)
    sink = tcp_sink(server.port, batch_size=2, buffer_limit=3)
    source = make_source(sink)
    # more points than the buffer holds: sent a batch at a time, none dropped
    fake["fake"].points = [("app.c", i, 3_000_000 + i) for i in range(10)]

    run = services.run_source(source, trigger=ImportRun.Trigger.COMMAND)

    assert (run.status, run.points_sent, run.points_dropped) == (
        Status.SUCCEEDED,
        10,
        0,
    )
    assert len(server.lines) == 13


# --- Dry runs -----------------------------------------------------------------------


def test_a_dry_run_sends_nothing_and_saves_nothing(db, fake, request):
    server = Sink()
    request.addfinalizer(server.stop)
    sink = tcp_sink(server.port)
    source = make_source(sink)
    ImportSource.objects.filter(pk=source.pk).update(
        state={"last": 5}, pending_points=[["old.point", 1.5, 4]]
    )
    source.refresh_from_db()
    due_before = source.next_due_at
    fake["fake"].points = [("app.d", 7, 10), ("app.d", 0.1, 11), ("bad path", 1, 12)]

    run = services.run_source(source, trigger=ImportRun.Trigger.COMMAND, dry_run=True)

    source.refresh_from_db()
    assert run.dry_run and run.status == Status.SUCCEEDED
    assert run.lines == "old.point 1.5 4\napp.d 7 10\napp.d 0.1 11\n"
    assert run.points_rejected == 1 and "unsafe metric path" in run.error
    assert (run.points_fetched, run.points_sent, run.points_pending) == (3, 0, 1)
    # the fetch saw a copy of the state and moved it; the source kept its own
    assert fake["fake"].contexts[0].state == {"last": 12}
    assert source.state == {"last": 5}
    assert source.pending_points == [["old.point", 1.5, 4]]
    assert source.last_run is None and source.next_due_at == due_before
    server.stop()
    assert server.received == []


def test_a_dry_run_needs_no_lock_and_runs_while_a_run_holds_it(db, fake):
    source = make_source(tcp_sink(free_port()))
    holder = ImportRun.objects.create(source=source, trigger=ImportRun.Trigger.ADMIN)
    assert source.claim(holder, now=timezone.now(), stale_after=timedelta(hours=1))
    fake["fake"].points = [("app.e", 1, 100)]

    run = services.run_source(source, trigger=ImportRun.Trigger.ADMIN, dry_run=True)

    assert run.lines == "app.e 1 100\n"
    source.refresh_from_db()
    assert source.running_run == holder  # untouched


# --- Backfill -----------------------------------------------------------------------


def test_it_passes_the_backfill_window_to_the_fetch(db, fake):
    source = make_source(GraphiteSink.objects.create(name="log", protocol="dummy"))
    since = datetime(2026, 3, 1, tzinfo=UTC)
    until = datetime(2026, 3, 4, 12, tzinfo=UTC)

    run = services.run_source(
        source, trigger=ImportRun.Trigger.COMMAND, since=since, until=until
    )

    ctx = fake["fake"].contexts[0]
    assert (ctx.since, ctx.until) == (since, until)
    assert (run.since, run.until) == (since, until)


def test_a_naive_window_is_utc(db, fake):
    source = make_source(GraphiteSink.objects.create(name="log", protocol="dummy"))

    services.run_source(
        source, trigger=ImportRun.Trigger.COMMAND, since=datetime(2026, 3, 1)
    )

    ctx = fake["fake"].contexts[0]
    assert ctx.since == datetime(2026, 3, 1, tzinfo=UTC) and ctx.until is None


def test_it_refuses_a_backfill_for_a_kind_without_one(db, fake):
    source = make_source(
        GraphiteSink.objects.create(name="log", protocol="dummy"), kind="fake_live"
    )

    with pytest.raises(services.RunRefused, match="Fake live cannot backfill") as exc:
        services.run_source(
            source,
            trigger=ImportRun.Trigger.COMMAND,
            since=datetime(2026, 3, 1, tzinfo=UTC),
        )

    assert exc.value.code == "backfill"
    assert not ImportRun.objects.exists() and fake["fake_live"].contexts == []


def test_it_refuses_a_window_that_ends_before_it_starts(db, fake):
    source = make_source(GraphiteSink.objects.create(name="log", protocol="dummy"))
    moment = datetime(2026, 3, 1, tzinfo=UTC)

    with pytest.raises(services.RunRefused, match="must be before --until"):
        services.run_source(
            source, trigger=ImportRun.Trigger.COMMAND, since=moment, until=moment
        )


# --- Errors and secrets -------------------------------------------------------------


def test_a_missing_variable_is_a_clear_error_naming_it(db, fake, monkeypatch):
    monkeypatch.delenv("IMPORTER_FAKE_TOKEN")
    source = make_source(GraphiteSink.objects.create(name="log", protocol="dummy"))

    run = services.run_source(source, trigger=ImportRun.Trigger.COMMAND)

    assert run.status == Status.FAILED
    assert run.error.startswith(
        "environment variable IMPORTER_FAKE_TOKEN (credential 'token')"
    )
    assert fake["fake"].contexts == []  # no call without the credential
    source.refresh_from_db()
    assert source.running_since is None


@pytest.mark.parametrize(
    "error",
    [
        SourceError(f"login refused for password {SECRET}"),
        RuntimeError(
            f"a bug that prints {SECRET} and its URL form s3cr3t-Value%2Fwith%2Bchars"
        ),
    ],
)
def test_secrets_never_reach_the_run_or_the_log(db, fake, caplog, error):
    caplog.set_level(logging.DEBUG)
    fake["fake"].error = error
    source = make_source(GraphiteSink.objects.create(name="log", protocol="dummy"))

    run = services.run_source(source, trigger=ImportRun.Trigger.COMMAND)

    run.refresh_from_db()
    assert fake["fake"].contexts[0].credentials == {"token": SECRET}
    assert run.status == Status.FAILED and "***" in run.error
    assert SECRET not in run.error and "s3cr3t" not in run.error
    assert "s3cr3t" not in caplog.text
    assert "***" in caplog.text
    assert "\n" not in run.error


def test_a_failing_fetch_still_flushes_kept_points_and_reports_the_error(
    db, fake, request
):
    server = Sink()
    request.addfinalizer(server.stop)
    source = make_source(tcp_sink(server.port))
    ImportSource.objects.filter(pk=source.pk).update(
        state={"last": 5}, pending_points=[["kept.one", 2, 50]]
    )
    source.refresh_from_db()
    fake["fake"].error = SourceError("unrecognised answer from apps: no data")

    run = services.run_source(source, trigger=ImportRun.Trigger.COMMAND)

    source.refresh_from_db()
    assert run.status == Status.FAILED
    assert run.error == "unrecognised answer from apps: no data"
    assert run.points_sent == 1 and source.pending_points == []
    assert source.state == {"last": 5}  # a failed fetch moves no mark
    server.stop()
    assert server.lines[0] == b"kept.one 2 50\n"
    assert server.lines[2].startswith(b"portal.importers.fake-src.errors 1 ")


def test_a_kind_returning_garbage_is_an_error_on_the_run(db, fake):
    fake["fake"].points = [("ok.path", 1, 10), "oops"]
    source = make_source(GraphiteSink.objects.create(name="log", protocol="dummy"))

    run = services.run_source(source, trigger=ImportRun.Trigger.COMMAND)

    assert run.status == Status.FAILED
    assert "not a (path, value, timestamp) point" in run.error


# --- Locks ----------------------------------------------------------------------------


def test_a_second_run_is_refused_while_one_runs(db, fake):
    source = make_source(GraphiteSink.objects.create(name="log", protocol="dummy"))
    holder = ImportRun.objects.create(source=source, trigger=ImportRun.Trigger.ADMIN)
    assert source.claim(holder, now=timezone.now(), stale_after=timedelta(hours=1))

    with pytest.raises(
        services.SourceBusy, match=f"already running \\(run #{holder.pk}"
    ):
        services.run_source(source, trigger=ImportRun.Trigger.COMMAND)

    assert list(ImportRun.objects.all()) == [holder]  # the refused run left nothing
    assert fake["fake"].contexts == []


def test_a_stale_lock_is_taken_over(db, fake, settings):
    settings.IMPORTERS_LOCK_STALE_MINUTES = 30
    source = make_source(GraphiteSink.objects.create(name="log", protocol="dummy"))
    dead = ImportRun.objects.create(source=source, trigger=ImportRun.Trigger.ADMIN)
    source.claim(
        dead, now=timezone.now() - timedelta(minutes=31), stale_after=timedelta(0)
    )

    run = services.run_source(source, trigger=ImportRun.Trigger.COMMAND)

    source.refresh_from_db()
    assert run.status == Status.SUCCEEDED
    assert source.running_run is None and source.last_run == run


def test_the_lock_is_released_when_recording_fails(db, fake, monkeypatch):
    source = make_source(GraphiteSink.objects.create(name="log", protocol="dummy"))

    def broken(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(ImportSource, "record_run", broken)

    with pytest.raises(RuntimeError):
        services.run_source(source, trigger=ImportRun.Trigger.COMMAND)

    source.refresh_from_db()
    run = ImportRun.objects.get()
    assert source.running_since is None
    assert run.status == Status.FAILED
    assert run.error == "the run stopped unexpectedly (see the log)"


def test_a_disabled_source_only_dry_runs(db, fake):
    source = make_source(
        GraphiteSink.objects.create(name="log", protocol="dummy"), enabled=False
    )

    with pytest.raises(services.RunRefused, match="is disabled") as exc:
        services.run_source(source, trigger=ImportRun.Trigger.COMMAND)
    dry = services.run_source(source, trigger=ImportRun.Trigger.COMMAND, dry_run=True)

    assert exc.value.code == "disabled"
    assert dry.status == Status.SUCCEEDED


# --- run_due ----------------------------------------------------------------------

NOW = datetime(2026, 3, 10, 12, 0, 30, tzinfo=UTC)


@time_machine.travel(NOW, tick=False)
def test_run_due_runs_due_sources_once_and_schedules_the_next(db, fake):
    sink = GraphiteSink.objects.create(name="log", protocol="dummy")
    never = make_source(sink, "never-run")  # no next_due_at yet: due at once
    due = make_source(sink, "due", interval_minutes=10)
    due.reschedule(NOW - timedelta(minutes=1))
    later = make_source(sink, "later", interval_minutes=10)
    later.reschedule(NOW + timedelta(minutes=5))
    cron = make_source(sink, "cron", cron="0 */2 * * *", tz="Europe/Helsinki")
    cron.reschedule(NOW)
    off = make_source(sink, "off", enabled=False)

    outcomes = services.run_due(NOW)

    assert [o.source for o in outcomes] == ["never-run", "due"]
    assert all(o.run.status == Status.SUCCEEDED for o in outcomes)
    for source in (never, due, later, cron, off):
        source.refresh_from_db()
    assert never.next_due_at == NOW + timedelta(minutes=15)  # the kind's default
    assert due.next_due_at == NOW + timedelta(minutes=10)
    assert later.last_run is None and off.next_due_at is None
    # 14:00 Helsinki (UTC+2 in March) is 12:00 UTC: next is 16:00 Helsinki
    assert cron.next_due_at == datetime(2026, 3, 10, 14, 0, tzinfo=UTC)
    assert services.run_due(NOW) == []


@time_machine.travel(NOW, tick=False)
def test_run_due_goes_on_after_a_source_fails_or_is_busy(db, fake):
    sink = GraphiteSink.objects.create(name="log", protocol="dummy")
    first = make_source(sink, "a-busy")
    make_source(sink, "b-failing", kind="fake_live")
    make_source(sink, "c-fine")
    holder = ImportRun.objects.create(source=first, trigger=ImportRun.Trigger.ADMIN)
    first.claim(holder, now=NOW, stale_after=timedelta(hours=1))
    fake["fake_live"].error = ZeroDivisionError("a bug in a kind")

    outcomes = services.run_due(NOW)

    text = [str(o) for o in outcomes]
    assert text[0].startswith("a-busy: skipped — a-busy is already running")
    assert outcomes[1].run.status == Status.FAILED
    assert outcomes[1].run.error == "ZeroDivisionError: a bug in a kind"
    assert outcomes[2].run.status == Status.SUCCEEDED


# --- The client's kept points -----------------------------------------------------


@pytest.mark.parametrize("protocol", ["plaintext", "pickle", "udp", "dummy"])
def test_the_client_gives_back_its_pending_points_exactly(protocol):
    client = GraphiteClient("127.0.0.1", 9, protocol=protocol)
    points = [("a.b", 1, 10), ("a.c", -2, 11), ("a.d", 0.1, 12), ("a.e", 3.0, 13)]
    client.extend(points)

    kept = client.pending_points()

    assert kept == points
    assert [type(value) for _, value, _ in kept] == [int, int, float, float]


# --- End to end: the real Apteligent kind, a fake API, a real carbon ---------------


@pytest.fixture
def apteligent(monkeypatch, request):
    """The fake Apteligent API of tests.importers.fakes at the real time now, and
    its credentials in the environment under the names a source refers to."""
    from tests.importers.fakes import FakeApteligent

    api = FakeApteligent()
    api.now = timezone.now()
    api.start()
    request.addfinalizer(api.stop)
    for role, value in api.credentials().items():
        monkeypatch.setenv(f"IMPORTER_E2E_APTELIGENT_{role.upper()}", value)
    return api


def apteligent_source(api, sink: GraphiteSink, prefix: str) -> ImportSource:
    source = ImportSource(
        name="apt-live",
        kind="apteligent_live",
        base_url=api.base_url,
        credentials={
            role: f"IMPORTER_E2E_APTELIGENT_{role.upper()}"
            for role in api.credentials()
        },
        prefix=prefix,
        sink=sink,
    )
    source.full_clean()
    source.save()
    return source


@uses_carbon
def test_the_apteligent_live_kind_end_to_end(db, carbon, apteligent, request):
    prefix = metric_name("tests", request.node.name)
    source = apteligent_source(apteligent, tcp_sink(carbon.line_port), prefix)

    first = services.run_source(source, trigger=ImportRun.Trigger.COMMAND)
    second = services.run_source(source, trigger=ImportRun.Trigger.COMMAND)

    assert first.status == Status.SUCCEEDED, first.error
    assert first.points_fetched > 0 and first.points_sent == first.points_fetched
    assert first.http_calls >= 3  # token, apps, live stats per app
    stored = carbon.wait_for_points(f"{prefix}.AcmeShop-iOS.live.appLoads", [])
    assert stored and all(value >= 0 for value in stored.values())
    # the high-water marks hold: the same five minutes again are nothing new,
    # and the token cached by the first run serves the second
    assert second.status == Status.SUCCEEDED, second.error
    assert second.points_fetched == 0
    assert len(apteligent.calls("/token")) == 1


def test_an_api_echoing_the_credentials_leaks_nothing(db, apteligent, caplog):
    caplog.set_level(logging.DEBUG)
    source = apteligent_source(
        apteligent, GraphiteSink.objects.create(name="log", protocol="dummy"), "apps"
    )
    apteligent.fail_next("echo", path="/token")

    run = services.run_source(source, trigger=ImportRun.Trigger.COMMAND)

    assert run.status == Status.FAILED and "HTTP 400" in run.error
    basic = base64.b64encode(f"{apteligent.client_id}:".encode()).decode()
    for value in [*apteligent.credentials().values(), basic]:
        assert value not in run.error and value not in caplog.text
    assert '"authorization": "Basic ***"' in run.error


def test_retention_deletes_old_finished_runs_in_batches_but_keeps_the_last(
    db, fake, settings, monkeypatch
):
    settings.IMPORTERS_RUN_RETENTION_DAYS = 30
    monkeypatch.setattr(services, "PRUNE_BATCH", 2)
    sink = GraphiteSink.objects.create(name="log", protocol="dummy")
    quiet = make_source(sink, "quiet")
    busy = make_source(sink, "busy")
    now = timezone.now()

    def run(source, days, status=Status.SUCCEEDED):
        return ImportRun.objects.create(
            source=source,
            trigger=ImportRun.Trigger.SCHEDULE,
            status=status,
            started_at=now - timedelta(days=days),
        )

    old = [run(busy, days) for days in (60, 45, 31)]
    recent = run(busy, 29)
    stuck = run(busy, 40, status=Status.RUNNING)
    last_of_quiet = run(quiet, 90)  # its only run: kept, however old
    ImportSource.objects.filter(pk=quiet.pk).update(last_run=last_of_quiet)
    ImportSource.objects.filter(pk=busy.pk).update(last_run=recent)

    assert services.prune_runs(now=now) == len(old)
    assert set(ImportRun.objects.values_list("pk", flat=True)) == {
        recent.pk,
        stuck.pk,
        last_of_quiet.pk,
    }
    assert tasks.prune() == "0 import runs deleted"  # the tick: nothing left


def test_a_run_whose_record_cannot_be_saved_still_releases_the_lock(
    db, fake, monkeypatch
):
    # E.g. an error text PostgreSQL refuses: finish() has set the status in
    # memory, its save failed and rolled back record_run's release too.
    source = make_source(GraphiteSink.objects.create(name="log", protocol="dummy"))

    def finish_fails(self, status, **kwargs):
        self.status = status
        raise ValueError("A string literal cannot contain NUL (0x00) characters.")

    monkeypatch.setattr(ImportRun, "finish", finish_fails)

    with pytest.raises(ValueError):
        services.run_source(source, trigger=ImportRun.Trigger.COMMAND)

    source.refresh_from_db()
    run = ImportRun.objects.get()
    assert source.running_since is None and source.running_run is None
    assert run.status == Status.FAILED
    assert run.error == "the run stopped unexpectedly (see the log)"


def test_taking_over_a_stale_lock_fails_the_abandoned_run(db, fake, settings):
    settings.IMPORTERS_LOCK_STALE_MINUTES = 30
    source = make_source(GraphiteSink.objects.create(name="log", protocol="dummy"))
    dead = ImportRun.objects.create(source=source, trigger=ImportRun.Trigger.ADMIN)
    source.claim(
        dead, now=timezone.now() - timedelta(minutes=31), stale_after=timedelta(0)
    )

    run = services.run_source(source, trigger=ImportRun.Trigger.COMMAND)

    dead.refresh_from_db()
    assert run.status == Status.SUCCEEDED
    assert dead.status == Status.FAILED and dead.finished_at is not None
    assert f"abandoned: its lock was taken over by run #{run.pk}" in dead.error


def test_a_long_run_keeps_its_lock_fresh(db, fake, monkeypatch):
    source = make_source(GraphiteSink.objects.create(name="log", protocol="dummy"))
    monkeypatch.setattr(services, "HEARTBEAT_EVERY", 0)
    seen = []

    def fetch(ctx):
        claimed = ImportSource.objects.get(pk=source.pk).running_since
        ctx.heartbeat()  # as a kind does before each app
        seen.append((claimed, ImportSource.objects.get(pk=source.pk).running_since))
        return []

    fake["fake"] = fetch

    services.run_source(source, trigger=ImportRun.Trigger.COMMAND)

    [(claimed, refreshed)] = seen
    assert refreshed > claimed


def test_a_variable_outside_the_allowed_prefixes_is_refused_at_run_time(
    db, fake, monkeypatch
):
    # Saved outside the admin's validation (or the setting narrowed since).
    monkeypatch.setenv("SECRET_KEY", "the-portals-own-secret")
    source = make_source(GraphiteSink.objects.create(name="log", protocol="dummy"))
    ImportSource.objects.filter(pk=source.pk).update(
        credentials={"token": "SECRET_KEY"}
    )

    run = services.run_source(source, trigger=ImportRun.Trigger.COMMAND)

    assert run.status == Status.FAILED
    assert "SECRET_KEY is not a variable importers may read" in run.error
    assert "the-portals-own-secret" not in run.error
    assert fake["fake"].contexts == []  # nothing was called


def test_apps_that_failed_make_the_run_partial_and_the_rest_is_sent(db, fake):
    source = make_source(GraphiteSink.objects.create(name="log", protocol="dummy"))
    point = ("fake.ok", 1, int(time.time()))

    def fetch(ctx):
        ctx.errors.append("app AcmeShop-iOS: the API answered 404")
        return [point]

    fake["fake"] = fetch
    run = services.run_source(source, trigger=ImportRun.Trigger.COMMAND)
    assert run.status == Status.PARTIAL
    assert run.points_sent == 1
    assert "app AcmeShop-iOS: the API answered 404" in run.error

    def nothing(ctx):
        ctx.errors.append("check 7: malformed answer")
        return []

    fake["fake"] = nothing
    run = services.run_source(source, trigger=ImportRun.Trigger.COMMAND)
    assert run.status == Status.FAILED
    assert "check 7: malformed answer" in run.error


def test_runs_left_running_without_a_lock_are_failed_by_the_scheduler(
    db, fake, settings
):
    settings.IMPORTERS_LOCK_STALE_MINUTES = 30
    source = make_source(
        GraphiteSink.objects.create(name="log", protocol="dummy"), enabled=False
    )
    now = timezone.now()

    def running(minutes):
        return ImportRun.objects.create(
            source=source,
            trigger=ImportRun.Trigger.ADMIN,
            dry_run=True,
            started_at=now - timedelta(minutes=minutes),
        )

    killed, young = running(45), running(5)
    holder = running(90)  # a long real run, its lock kept fresh: not touched
    source.claim(holder, now=now, stale_after=timedelta(minutes=30))

    services.run_due(now)

    for run in (killed, young, holder):
        run.refresh_from_db()
    assert killed.status == Status.FAILED and "abandoned" in killed.error
    assert young.status == holder.status == Status.RUNNING
