"""The Apteligent kinds (importers.sources.apteligent) against the fake API:
exact paths, values and timestamps, high-water marks, grouping, filters."""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ValidationError

from importers.graphite import metric_name
from importers.sources import validate_app_settings, validate_carrier_map
from importers.sources.apteligent import (
    CARRIER_GRAPHS,
    DAILY_GRAPHS,
    GROUPED_GRAPHS,
    SERVICE_GRAPHS,
    _graph_days,
    fetch_daily,
    fetch_grouped_appversion,
    fetch_grouped_carrier,
    fetch_live,
    fetch_services,
)
from importers.sources.base import SourceError
from tests.importers.fakes import (
    ANDROID,
    APPVERSION_PIES,
    DAILY,
    IOS,
    SAMPLE_NOW,
    SERVICE_PIE,
    sample,
)

APPS = {IOS: "apps.AcmeShop-iOS", ANDROID: "apps.AcmeShop-Android"}
# SAMPLE_NOW rounded down to 10 and to 15 minutes.
AT_0640 = int(datetime(2026, 11, 22, 6, 40, tzinfo=UTC).timestamp())
AT_0630 = int(datetime(2026, 11, 22, 6, 30, tzinfo=UTC).timestamp())
US_CARRIERS = {
    "US": [
        ["^AT&T", "ATT"],
        ["^Verizon", "Verizon"],
        ["^(T-Mobile|Sprint)$", "T-Mobile"],
        [".*", "Other"],
    ]
}


def _table(points):
    """{(path, timestamp): value}, checking that no point is there twice."""
    table = {(path, stamp): value for path, value, stamp in points}
    assert len(table) == len(points)
    return table


def _stamp(year, month, day, zone="UTC"):
    return int(datetime(year, month, day, tzinfo=ZoneInfo(zone)).timestamp())


def _marks(day, graphs=DAILY_GRAPHS):
    """An app's daily marks: ``day`` for each graph."""
    return dict.fromkeys(graphs, day)


# --- daily ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "midnight"),
    [
        # 2026-11-21 00:00 local, the start of the completed day (the sample's
        # points[0]): the day before in UTC east of Greenwich, the same day west.
        ("Europe/Helsinki", datetime(2026, 11, 20, 22, 0, tzinfo=UTC)),
        ("Asia/Kolkata", datetime(2026, 11, 20, 18, 30, tzinfo=UTC)),
        ("America/New_York", datetime(2026, 11, 21, 5, 0, tzinfo=UTC)),
        (None, datetime(2026, 11, 21, 0, 0, tzinfo=UTC)),
    ],
)
def test_it_stamps_the_completed_day_at_the_apps_local_midnight(
    fake_apteligent, zone, midnight
):
    settings = {app: {"timezone": zone} for app in APPS} if zone else {}
    ctx = fake_apteligent.context(app_settings=settings)

    points = fetch_daily(ctx)

    stamp = int(midnight.timestamp())
    assert _table(points) == {
        (f"{APPS[app]}.daily.{graph}", stamp): DAILY[app][graph][-2]
        for app in APPS
        for graph in DAILY_GRAPHS
    }
    assert ctx.state == {
        "daily": {IOS: _marks("2026-11-21"), ANDROID: _marks("2026-11-21")}
    }
    assert ctx.errors == []
    graph_calls = fake_apteligent.calls("/errorMonitoring/graph")
    assert len(graph_calls) == 16
    # apps by name: Android first
    assert graph_calls[0].json == {
        "params": {"graph": "crashPercent", "duration": 2880, "appId": ANDROID}
    }
    assert ctx.calls == 1 + 1 + 16  # token, apps, graphs


def test_it_holds_back_a_day_not_over_in_the_apps_zone(fake_apteligent):
    # 22:42 on 2026-11-21 in Los Angeles: the 21st is over at the API (a UTC
    # day) but not in the app's zone, so the newest day sent is the 20th (the
    # first run sends the newest day over in both; the 21st waits for the
    # local midnight).
    settings = {app: {"timezone": "America/Los_Angeles"} for app in APPS}
    ctx = fake_apteligent.context(app_settings=settings)

    points = fetch_daily(ctx)

    stamp = _stamp(2026, 11, 20, "America/Los_Angeles")
    assert _table(points) == {
        (f"{APPS[app]}.daily.{graph}", stamp): DAILY[app][graph][0]
        for app in APPS
        for graph in DAILY_GRAPHS
    }
    assert ctx.state == {
        "daily": {IOS: _marks("2026-11-20"), ANDROID: _marks("2026-11-20")}
    }


def test_it_sends_each_day_once(fake_apteligent):
    state: dict = {}
    fetch_daily(fake_apteligent.context(state=state))
    calls = len(fake_apteligent.calls())

    again = fetch_daily(fake_apteligent.context(state=state))

    assert again == []
    # yesterday is sent: the run asks only for a token and the app list
    assert [c.path for c in fake_apteligent.calls()[calls:]] == [
        "/v1.0/token",
        "/v1.0/apps",
    ]

    fake_apteligent.now = SAMPLE_NOW + timedelta(days=1)
    next_day = fetch_daily(fake_apteligent.context(state=state))

    assert {stamp for _, _, stamp in next_day} == {_stamp(2026, 11, 22)}
    assert len(next_day) == 16
    assert state["daily"] == {IOS: _marks("2026-11-22"), ANDROID: _marks("2026-11-22")}


def test_it_fetches_the_days_missed_after_a_gap(fake_apteligent):
    state = {"daily": {IOS: "2026-11-19", ANDROID: "2026-11-19"}}

    points = fetch_daily(fake_apteligent.context(state=state))

    table = _table(points)
    assert table[("apps.AcmeShop-iOS.daily.crashes", _stamp(2026, 11, 20))] == 178
    assert table[("apps.AcmeShop-iOS.daily.crashes", _stamp(2026, 11, 21))] == 186
    assert len(table) == 2 * 2 * len(DAILY_GRAPHS)
    assert fake_apteligent.calls("/errorMonitoring/graph")[0].json["params"][
        "duration"
    ] == (3 * 1440)
    # an older state's single mark per app counts for every graph
    assert state["daily"] == {IOS: _marks("2026-11-21"), ANDROID: _marks("2026-11-21")}


def test_it_backfills_the_days_in_the_window(fake_apteligent):
    state = {"daily": {IOS: "2026-11-21"}}
    ctx = fake_apteligent.context(
        state=state,
        since=datetime(2026, 11, 20, tzinfo=UTC),
        until=datetime(2026, 11, 21, tzinfo=UTC),
    )

    points = fetch_daily(ctx)

    assert _table(points) == {
        (f"{APPS[app]}.daily.{graph}", _stamp(2026, 11, 20)): DAILY[app][graph][0]
        for app in APPS
        for graph in DAILY_GRAPHS
    }
    assert fake_apteligent.calls("/errorMonitoring/graph")[0].json["params"][
        "duration"
    ] == (3 * 1440)
    # a backfill never moves a mark back (the iOS one, of an older state, is
    # left as it was)
    assert state["daily"] == {IOS: "2026-11-21", ANDROID: _marks("2026-11-20")}


def test_it_refuses_a_daily_backfill_beyond_30_days(fake_apteligent):
    ctx = fake_apteligent.context(since=SAMPLE_NOW - timedelta(days=40))

    with pytest.raises(SourceError, match="at most 30 days back"):
        fetch_daily(ctx)


def test_it_skips_days_without_data(fake_apteligent):
    fake_apteligent.daily[IOS]["rating"] = [None, None, None]

    points = fetch_daily(fake_apteligent.context())

    paths = {path for path, _, _ in points}
    assert "apps.AcmeShop-iOS.daily.rating" not in paths
    assert "apps.AcmeShop-Android.daily.rating" in paths
    assert len(points) == 2 * len(DAILY_GRAPHS) - 1


def test_it_refuses_a_graph_of_another_shape(fake_apteligent):
    # the first graph call is Android's (apps by name)
    fake_apteligent.fail_next("wrong_shape", path="/errorMonitoring/graph")
    ctx = fake_apteligent.context()

    points = fetch_daily(ctx)

    assert ctx.errors == [
        f"app AcmeShop-Android ({ANDROID}): unrecognised answer from "
        "POST /errorMonitoring/graph: no data"
    ]
    # the other app's points are kept and only its marks move
    assert {path.split(".")[1] for path, _, _ in points} == {"AcmeShop-iOS"}
    assert len(points) == len(DAILY_GRAPHS)
    assert ctx.state == {"daily": {IOS: _marks("2026-11-21")}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"start": "2026-11-21T06:00:00"}, "is not a midnight"),
        ({"start": "yesterday"}, "is not a date"),
        ({"interval": 3600}, "data.interval is 3600, not one day"),
        ({"series": []}, "data.series is empty"),
        ({"series": [{"points": [1, "2"]}]}, "points[1] is a string, not a number"),
        ({"series": [{"points": [True]}]}, "points[0] is a boolean, not a number"),
    ],
)
def test_it_is_strict_about_daily_graphs(change, message):
    answer = sample("errorMonitoring-graph")
    answer["data"].update(change)

    with pytest.raises(SourceError) as caught:
        _graph_days(answer, "POST /errorMonitoring/graph")

    assert message in str(caught.value)


def test_it_reads_the_sample_graph_oldest_day_first():
    days = _graph_days(sample("errorMonitoring-graph"), "here")

    assert [(day.isoformat(), value) for day, value in days] == [
        ("2026-11-21", 186),
        ("2026-11-22", 267),
    ]


def _final(app, graph, day):
    """The complete value of a day in ``test_it_sends_each_completed_day_once...``."""
    return 1000 * day.day + 10 * DAILY_GRAPHS.index(graph) + (app == IOS)


def _running_days(fake):
    """Each day's value grows while the day runs at the API (a UTC day) and is
    ``_final`` once it is over."""

    def value(app, graph, day):
        day_start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        elapsed = (fake.now - day_start).total_seconds()
        if elapsed < 86_400:
            return int(_final(app, graph, day) * elapsed / 86_400)  # so far
        return _final(app, graph, day)

    return value


@pytest.mark.parametrize(
    ("zone", "first_run"),
    [
        # 00:30 in Helsinki and 04:00 in Kolkata on the 22nd: the UTC 21st, the
        # API's day in progress, is over in the app's zone but not at the API.
        ("Europe/Helsinki", datetime(2026, 11, 21, 22, 30, tzinfo=UTC)),
        ("Asia/Kolkata", datetime(2026, 11, 21, 22, 30, tzinfo=UTC)),
        # 22:00 on the 21st in New York: the UTC 21st is over at the API but not
        # in the app's zone; the 22nd is the API's day in progress.
        ("America/New_York", datetime(2026, 11, 22, 3, 0, tzinfo=UTC)),
    ],
)
def test_it_sends_each_completed_day_once_with_its_final_value(
    fake_apteligent, zone, first_run
):
    fake_apteligent.daily_value = _running_days(fake_apteligent)
    tz = ZoneInfo(zone)
    settings = {app: {"timezone": zone} for app in APPS}
    state: dict = {}
    sent = {}  # (path, stamp): (value, run time)
    runs = [first_run + timedelta(hours=hours) for hours in range(49)]

    for now in runs:
        fake_apteligent.now = now
        ctx = fake_apteligent.context(app_settings=settings, state=state)
        points = fetch_daily(ctx)
        assert ctx.errors == []
        for path, value, stamp in points:
            assert (path, stamp) not in sent, f"{path} at {stamp} sent twice"
            sent[(path, stamp)] = (value, now)

    days = {}  # the day each stamp is the local midnight of
    for day in (date(2026, 11, 20) + timedelta(days=n) for n in range(5)):
        days[_stamp(day.year, day.month, day.day, zone)] = day
    sent_days = set()
    for (path, stamp), (value, now) in sent.items():
        app = IOS if path.startswith(APPS[IOS]) else ANDROID
        graph = path.rsplit(".", 1)[1]
        day = days[stamp]
        sent_days.add(day)
        # the final value, sent by the first run once the day is over both at
        # the API (UTC) and in the app's zone
        assert value == _final(app, graph, day), (path, day, now)
        over = max(
            datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC),
            datetime.combine(day + timedelta(days=1), datetime.min.time(), tz),
        )
        assert now == min(run for run in runs if run >= over), (path, day, now)
    # the first run sends the 20th only: neither the 21st, whose running value
    # the old code sent at 00:30 in Helsinki, nor a day in progress
    first = {days[stamp] for (_, stamp), (_, now) in sent.items() if now == first_run}
    assert first == {date(2026, 11, 20)}
    # every day is sent with every graph of both apps, none lost
    assert len(sent) == len(sent_days) * len(DAILY_GRAPHS) * 2
    in_progress = first_run.date()
    assert in_progress in sent_days
    assert sent_days == {
        date(2026, 11, 20) + timedelta(days=n) for n in range(len(sent_days))
    }


def test_it_never_sends_the_last_point_of_a_graph(fake_apteligent):
    # Whatever its date says: the API's last point is its day in progress (here
    # the API's clock is a day behind the fake's).
    fake_apteligent.now = SAMPLE_NOW + timedelta(days=1)
    real_graph = fake_apteligent._graph

    def a_day_behind(params):
        status, headers, body = real_graph(params)
        answer = json.loads(body)
        start = datetime.fromisoformat(answer["data"]["start"]) - timedelta(days=1)
        answer["data"]["start"] = start.isoformat()
        return status, headers, json.dumps(answer).encode()

    fake_apteligent._graph = a_day_behind
    ctx = fake_apteligent.context()

    points = fetch_daily(ctx)

    # the 22nd is asked for (two days back from the 23rd) but is the last point
    assert {stamp for _, _, stamp in points} == {_stamp(2026, 11, 21)}


def test_it_sends_a_graph_that_was_null_on_a_later_run(fake_apteligent):
    fake_apteligent.daily[IOS]["rating"] = [4.5, None, 4.4]  # the 21st: no data yet
    state: dict = {}

    first = fetch_daily(fake_apteligent.context(state=state))

    assert len(first) == 2 * len(DAILY_GRAPHS) - 1
    assert "rating" not in state["daily"][IOS]
    # an hour later the API has the value
    fake_apteligent.daily[IOS]["rating"][1] = 4.6
    fake_apteligent.now = SAMPLE_NOW + timedelta(hours=1)
    calls = len(fake_apteligent.calls("/errorMonitoring/graph"))

    second = fetch_daily(fake_apteligent.context(state=state))

    assert second == [("apps.AcmeShop-iOS.daily.rating", 4.6, _stamp(2026, 11, 21))]
    # only the graph still missing is asked for
    asked = [c.json["params"] for c in fake_apteligent.calls("/errorMonitoring/graph")][
        calls:
    ]
    assert asked == [{"graph": "rating", "duration": 2880, "appId": IOS}]
    assert state["daily"][IOS] == _marks("2026-11-21")

    third = fetch_daily(fake_apteligent.context(state=state))

    assert third == []
    assert len(fake_apteligent.calls("/errorMonitoring/graph")) == calls + 1


def test_it_gives_up_on_a_day_still_null_once_the_next_day_is_over(fake_apteligent):
    fake_apteligent.daily[IOS]["rating"] = [None, None, None]  # an app not rated
    state = {"daily": {IOS: "2026-11-20", ANDROID: "2026-11-20"}}
    fetch_daily(fake_apteligent.context(state=state))
    assert state["daily"][IOS]["rating"] == "2026-11-20"  # the 21st: asked again

    def asked_after(runs):
        fake_apteligent.now += timedelta(hours=runs)
        calls = len(fake_apteligent.calls("/errorMonitoring/graph"))
        points = fetch_daily(fake_apteligent.context(state=state))
        graph_calls = fake_apteligent.calls("/errorMonitoring/graph")[calls:]
        return points, [c.json["params"] for c in graph_calls]

    points, asked = asked_after(1)
    assert points == []
    assert asked == [{"graph": "rating", "duration": 2880, "appId": IOS}]

    # the next day is over: the 21st counts as a day without data, the 22nd is
    # asked again until the 23rd is over
    points, asked = asked_after(24)
    assert "apps.AcmeShop-iOS.daily.rating" not in {path for path, _, _ in points}
    assert state["daily"][IOS]["rating"] == "2026-11-21"
    assert {"graph": "rating", "duration": 3 * 1440, "appId": IOS} in asked
    points, asked = asked_after(1)
    assert (points, asked) == (
        [],
        [{"graph": "rating", "duration": 2880, "appId": IOS}],
    )


# --- One app failing --------------------------------------------------------------


def _break_ios(fake, key):
    """Make the API answer 404 to every call of the kind about the iOS app."""
    if key == "live":
        fake.fail_next("404", times=5, path=f"/liveStats/periodic/{IOS}")
    else:
        table = {
            "daily": fake.daily,
            "appversion": fake.appversion_pies,
            "carrier": fake.carrier_pies,
            "services": fake.service_pies,
        }[key]
        del table[IOS]


KIND_FETCHES = {
    "daily": (fetch_daily, "POST /errorMonitoring/graph"),
    "live": (fetch_live, f"POST /liveStats/periodic/{IOS}"),
    "appversion": (fetch_grouped_appversion, "POST /errorMonitoring/pie"),
    "carrier": (fetch_grouped_carrier, "POST /errorMonitoring/pie"),
    "services": (fetch_services, "POST /performanceManagement/pie"),
}


@pytest.mark.parametrize("key", list(KIND_FETCHES))
def test_an_app_that_fails_is_noted_and_the_others_go_on(fake_apteligent, key):
    fetch, where = KIND_FETCHES[key]
    _break_ios(fake_apteligent, key)
    beats = []
    ctx = fake_apteligent.context(
        services_whitelist=["api.acmeshopios.example"],
        heartbeat=lambda: beats.append(len(fake_apteligent.calls())),
    )

    points = fetch(ctx)

    [error] = ctx.errors
    assert error.startswith(f"app AcmeShop-iOS ({IOS}): {where}: HTTP 404")
    assert "\n" not in error
    assert fake_apteligent.password not in error
    assert points
    assert {path.split(".")[1] for path, _, _ in points} == {"AcmeShop-Android"}
    # only the other app's marks moved
    assert all(IOS not in marks for marks in ctx.state.values())
    if key in ("daily", "live"):
        assert ANDROID in ctx.state[key]
    # a heartbeat before each app: after the token and the app list, then after
    # Android's calls (apps by name)
    assert len(beats) == 2
    assert beats[0] == 2 and beats[1] > 2


def test_a_failed_app_is_tried_again_by_the_next_run(fake_apteligent):
    saved = fake_apteligent.daily.pop(IOS)
    state: dict = {}
    fetch_daily(fake_apteligent.context(state=state))
    fake_apteligent.daily[IOS] = saved
    ctx = fake_apteligent.context(state=state)

    points = fetch_daily(ctx)

    assert ctx.errors == []
    assert {path.split(".")[1] for path, _, _ in points} == {"AcmeShop-iOS"}
    assert len(points) == len(DAILY_GRAPHS)
    assert state["daily"] == {IOS: _marks("2026-11-21"), ANDROID: _marks("2026-11-21")}


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        # the token refused again after a renewal: no app could be fetched
        ({"mode": "401", "times": 2}, r"unauthorized \(HTTP 401\)"),
        # the rate limit: every other call would wait too
        ({"mode": "429", "retry_after": "3600"}, "next try would be in 3600 s"),
    ],
)
def test_a_failure_of_the_whole_source_still_fails_the_kind(
    fake_apteligent, failure, message
):
    fake_apteligent.fail_next(path="/errorMonitoring/pie", **failure)
    ctx = fake_apteligent.context()

    with pytest.raises(SourceError, match=message):
        fetch_grouped_appversion(ctx)

    assert ctx.errors == []


# --- Apps -----------------------------------------------------------------------


@pytest.mark.parametrize("entry", [IOS, "AcmeShop-iOS"])
def test_it_skips_blacklisted_apps_by_id_or_name(fake_apteligent, entry):
    points = fetch_daily(fake_apteligent.context(app_blacklist=[entry]))

    assert {path.split(".")[1] for path, _, _ in points} == {"AcmeShop-Android"}
    params = [c.json["params"] for c in fake_apteligent.calls("/errorMonitoring")]
    assert {p["appId"] for p in params} == {ANDROID}


def test_it_keeps_apps_with_the_same_name_apart(fake_apteligent):
    fake_apteligent.apps[ANDROID]["appName"] = "AcmeShop-iOS"

    points = fetch_grouped_appversion(fake_apteligent.context())

    assert {path.split(".")[1] for path, _, _ in points} == {
        f"AcmeShop-iOS-{IOS}",
        f"AcmeShop-iOS-{ANDROID}",
    }


def test_it_sanitises_app_names(fake_apteligent):
    fake_apteligent.apps[IOS]["appName"] = "Acme Shop/iOS.beta"

    points = fetch_grouped_appversion(fake_apteligent.context())

    assert "Acme_20Shop_2fiOS_2ebeta" in {path.split(".")[1] for path, _, _ in points}


def test_it_refuses_an_app_list_of_another_shape(fake_apteligent):
    fake_apteligent.apps[IOS] = ["not", "an", "object"]

    with pytest.raises(SourceError, match=f"from GET /apps: app {IOS} is a list"):
        fetch_live(fake_apteligent.context())


def test_it_refuses_a_bad_time_zone_before_any_call(fake_apteligent):
    ctx = fake_apteligent.context(app_settings={IOS: {"timezone": "Mars/Olympus"}})

    with pytest.raises(SourceError, match="bad config: .*unknown time zone"):
        fetch_daily(ctx)

    assert fake_apteligent.calls() == []


# --- live -----------------------------------------------------------------------


def test_it_sends_the_live_buckets(fake_apteligent):
    ctx = fake_apteligent.context()

    points = fetch_live(ctx)

    expected = {}
    for app, factor in ((IOS, 1), (ANDROID, 2)):
        for bucket in sample("liveStats-periodic")["periodic_data"]:
            stamp = bucket["time"] // 1000
            for name, key in (
                ("appLoads", "app_loads"),
                ("crashes", "app_errors"),
                ("exceptions", "app_exceptions"),
            ):
                expected[(f"{APPS[app]}.live.{name}", stamp)] = bucket[key] * factor
    assert _table(points) == expected
    assert expected[("apps.AcmeShop-iOS.live.appLoads", 1795329460)] == 47
    assert ctx.state == {"live": {IOS: 1795329750, ANDROID: 1795329750}}
    (call, _) = fake_apteligent.calls("/liveStats/periodic/")
    assert call.path == f"/v1.0/liveStats/periodic/{ANDROID}"
    assert call.query == {"app_version": "total", "initialize": "1"}


def test_it_sends_each_live_bucket_once_across_runs(fake_apteligent):
    first = fetch_live(fake_apteligent.context())
    # the caller persists the state as JSON, and a new process reads it back
    state = json.loads(json.dumps({"live": {IOS: 1795329750, ANDROID: 1795329750}}))
    fake_apteligent.now = SAMPLE_NOW + timedelta(seconds=60)

    second = fetch_live(fake_apteligent.context(state=state))

    first_stamps = {stamp for _, _, stamp in first}
    second_stamps = {stamp for _, _, stamp in second}
    assert second_stamps == set(range(1795329760, 1795329820, 10))
    assert len(second) == 6 * 3 * 2
    # neither lost nor repeated: one bucket every 10 s
    assert first_stamps | second_stamps == set(range(1795329460, 1795329820, 10))
    assert state["live"] == {IOS: 1795329810, ANDROID: 1795329810}


def test_it_holds_back_the_bucket_still_filling(fake_apteligent):
    state: dict = {}
    early = fake_apteligent.context(state=state, now=SAMPLE_NOW - timedelta(seconds=5))

    first = fetch_live(early)

    assert max(stamp for _, _, stamp in first) == 1795329740
    second = fetch_live(fake_apteligent.context(state=state))
    assert {stamp for _, _, stamp in second} == {1795329750}
    assert _table(second)[("apps.AcmeShop-iOS.live.appLoads", 1795329750)] == 108


def test_it_refuses_live_stats_of_another_shape(fake_apteligent):
    fake_apteligent.fail_next("wrong_shape", path="/liveStats/")
    ctx = fake_apteligent.context()

    points = fetch_live(ctx)

    assert ctx.errors == [
        f"app AcmeShop-Android ({ANDROID}): unrecognised answer from "
        f"POST /liveStats/periodic/{ANDROID}: no periodic_data"
    ]
    assert {path.split(".")[1] for path, _, _ in points} == {"AcmeShop-iOS"}
    assert ctx.state == {"live": {IOS: 1795329750}}


def test_it_refuses_to_backfill_live_stats(fake_apteligent):
    ctx = fake_apteligent.context(since=SAMPLE_NOW - timedelta(hours=1))

    with pytest.raises(SourceError, match="apteligent_live cannot backfill"):
        fetch_live(ctx)


# --- grouped by app version -------------------------------------------------------


def test_it_sends_the_app_version_pies_as_given(fake_apteligent):
    points = fetch_grouped_appversion(fake_apteligent.context())

    table = _table(points)
    assert table == {
        (
            f"{APPS[app]}.groupedby.appversion.{metric_name(label)}.{graph}",
            AT_0640,
        ): value
        for app in APPS
        for graph in GROUPED_GRAPHS
        for label, value in APPVERSION_PIES[app][graph].items()
    }
    assert table[("apps.AcmeShop-iOS.groupedby.appversion.1_2e3_2e1.crashes", AT_0640)]
    params = fake_apteligent.calls("/errorMonitoring/pie")[0].json["params"]
    assert params == {
        "graph": "crashes",
        "duration": 1440,
        "appId": ANDROID,
        "groupBy": "appVersion",
    }


# --- grouped by carrier ---------------------------------------------------------


def test_it_groups_carriers_and_recomputes_the_percentages(fake_apteligent):
    ctx = fake_apteligent.context(
        carrier_map=US_CARRIERS, app_settings={IOS: {"country": "US"}}
    )

    points = fetch_grouped_carrier(ctx)

    ios = {
        path.removeprefix("apps.AcmeShop-iOS.groupedby.carrier."): value
        for path, value, stamp in points
        if path.startswith("apps.AcmeShop-iOS.")
    }
    assert ios == {
        # AT&T: 0 affected users at 0 %: its users are unknown, no percentage
        "ATT.crashes": 1,
        "ATT.appLoads": 50,
        "ATT.affectedUsers": 0,
        "ATT.crashPercent": 2.0,
        "Verizon.crashes": 24,
        "Verizon.appLoads": 600,
        "Verizon.affectedUsers": 12,
        "Verizon.crashPercent": 4.0,
        "Verizon.affectedUserPercent": 4.0,  # 12 of 300 users
        # T-Mobile and Sprint
        "T-Mobile.crashes": 40,
        "T-Mobile.appLoads": 1000,
        "T-Mobile.affectedUsers": 19,
        "T-Mobile.crashPercent": 4.0,
        "T-Mobile.affectedUserPercent": 4.75,  # 19 of 200 + 200 users
        # Cricket Wireless, Wifi and unknown
        "Other.crashes": 92,
        "Other.appLoads": 3300,
        "Other.affectedUsers": 63,
        "Other.crashPercent": pytest.approx(100 * 92 / 3300),
        "Other.affectedUserPercent": pytest.approx(100 * 63 / 2200),
    }
    assert {stamp for _, _, stamp in points} == {AT_0640}
    # crashPercent is recomputed, never asked for
    graphs = [c.json["params"]["graph"] for c in fake_apteligent.calls("/pie")]
    assert graphs == list(CARRIER_GRAPHS) * 2
    assert {c.json["params"]["groupBy"] for c in fake_apteligent.calls("/pie")} == {
        "carrier"
    }


def test_it_puts_every_carrier_in_other_for_an_app_without_country(fake_apteligent):
    ctx = fake_apteligent.context(carrier_map=US_CARRIERS)

    points = fetch_grouped_carrier(ctx)

    android = {
        path.removeprefix("apps.AcmeShop-Android.groupedby.carrier."): value
        for path, value, _ in points
        if path.startswith("apps.AcmeShop-Android.")
    }
    assert android == {
        "Other.crashes": 157,
        "Other.appLoads": 4950,
        "Other.affectedUsers": 94,
        "Other.crashPercent": pytest.approx(100 * 157 / 4950),
        # AT&T's users cannot be derived: no affectedUserPercent for Other
    }


def test_it_refuses_a_carrier_map_without_catch_all(fake_apteligent):
    ctx = fake_apteligent.context(carrier_map={"US": [["^AT&T", "ATT"]]})

    with pytest.raises(SourceError, match="bad config: US: the last rule must be"):
        fetch_grouped_carrier(ctx)

    assert fake_apteligent.calls() == []


def test_it_refuses_a_pie_of_another_shape(fake_apteligent):
    fake_apteligent.carrier_pies[IOS]["crashes"] = {"": 1}
    ctx = fake_apteligent.context()

    points = fetch_grouped_carrier(ctx)

    [error] = ctx.errors
    assert error.startswith(f"app AcmeShop-iOS ({IOS}): unrecognised answer from ")
    assert "data.slices[0].label is a string" in error
    assert {path.split(".")[1] for path, _, _ in points} == {"AcmeShop-Android"}


# --- services -------------------------------------------------------------------


def test_it_sends_only_whitelisted_services(fake_apteligent):
    whitelist = ["api.acmeshopios.example", "auth.acmeshopios.example"]

    points = fetch_services(fake_apteligent.context(services_whitelist=whitelist))

    assert _table(points) == {
        (f"{APPS[app]}.services.{metric_name(service)}.{graph}", AT_0630): SERVICE_PIE[
            graph
        ][service]
        for app in APPS
        for service in whitelist
        for graph in SERVICE_GRAPHS
    }
    assert (
        "apps.AcmeShop-iOS.services.api_2eacmeshopios_2eexample.latency",
        237.0,
        AT_0630,
    ) in points
    assert fake_apteligent.calls("/performanceManagement/pie")[0].json == {
        "params": {
            "appIds": [ANDROID],
            "graph": "dataIn",
            "duration": 15,
            "groupBy": "service",
        }
    }


def test_it_imports_no_service_when_the_whitelist_is_empty(fake_apteligent, caplog):
    # Only whitelisted labels are services to import (the API counts Wi-Fi
    # hotspots as services): an empty whitelist imports none, without a call.
    caplog.set_level(logging.INFO, logger="importers.sources.apteligent")
    ctx = fake_apteligent.context()

    assert fetch_services(ctx) == []

    assert fake_apteligent.calls() == []
    assert ctx.errors == []
    assert [r.getMessage() for r in caplog.records] == [
        "fake apteligent: the services whitelist is empty: no service is imported"
    ]
    assert caplog.records[0].levelno == logging.INFO


# --- Config validators ----------------------------------------------------------


def accepts(validator, value) -> bool:
    try:
        validator(value)
    except ValidationError:
        return False
    return True


def test_it_accepts_a_carrier_map():
    assert accepts(validate_carrier_map, US_CARRIERS)
    assert accepts(validate_carrier_map, {})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([["^AT&T", "ATT"]], "must be an object"),
        ({"US": []}, "US: must be a non-empty list"),
        ({"US": [["^AT&T", "ATT"]]}, 'the last rule must be the catch-all [".*"'),
        ({"US": [["(", "Broken"], [".*", "Other"]]}, "US, rule 1: bad regex '('"),
        ({"US": [["^AT&T"], [".*", "Other"]]}, "US, rule 1: must be [regex, group]"),
        ({"US": [["^AT&T", ""], [".*", "Other"]]}, "US, rule 1: the group name is"),
        ({"": [[".*", "Other"]]}, "must be a non-empty string"),
    ],
)
def test_it_rejects_a_bad_carrier_map(value, message):
    with pytest.raises(ValidationError) as caught:
        validate_carrier_map(value)

    assert any(message in text for text in caught.value.messages)


def test_it_accepts_app_settings():
    assert accepts(
        validate_app_settings,
        {IOS: {"timezone": "Europe/Helsinki", "country": "FI"}, ANDROID: {}},
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "must be an object"),
        ({IOS: "Europe/Helsinki"}, "must be an object with timezone and country"),
        ({IOS: {"timezone": "Mars/Olympus"}}, "unknown time zone 'Mars/Olympus'"),
        ({IOS: {"timezone": "../etc/passwd"}}, "unknown time zone"),
        ({IOS: {"country": 46}}, "country must be a string"),
        ({IOS: {"gmtOffset": 2}}, "unknown key(s) gmtOffset"),
    ],
)
def test_it_rejects_bad_app_settings(value, message):
    with pytest.raises(ValidationError) as caught:
        validate_app_settings(value)

    assert any(message in text for text in caught.value.messages)


@pytest.mark.parametrize(
    ("interval_minutes", "minutes"), [(None, 15), (5, 5), (60, 60)]
)
def test_services_points_are_stamped_at_the_sources_interval(
    fake_apteligent, interval_minutes, minutes
):
    ctx = fake_apteligent.context(
        interval_minutes=interval_minutes, services_whitelist=["Hotel WiFi Login"]
    )

    points = fetch_services(ctx)

    now = int(ctx.now.timestamp())
    assert points
    assert {stamp for _, _, stamp in points} == {now - now % (minutes * 60)}
