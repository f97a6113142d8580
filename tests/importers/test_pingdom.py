"""The Pingdom kinds (importers.sources.pingdom) against the fake API: results
since the last run, pages, backfill windows, hourly averages, strict shapes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from importers.sources import pingdom
from importers.sources.base import SourceError
from importers.sources.pingdom import fetch_response_times, fetch_results
from tests.importers.fakes import SAMPLE_NOW

NOW = int(SAMPLE_NOW.timestamp())
WEB, API = 85975, 161748
PATHS = {WEB: "ops.pingdom.Web_20shop", API: "ops.pingdom.API_20_2f_20health"}
UP = {"up": 1, "down": 0, "unconfirmed_down": 0}


def _at(hour, minute=0):
    return int(datetime(2026, 11, 22, hour, minute, tzinfo=UTC).timestamp())


def _expected(fake, since=None, until=None):
    """The points of the fake's results in [since, until]."""
    points = {}
    for check, path in PATHS.items():
        for result in fake.results_of(check):
            stamp = result["time"]
            if since is not None and not since <= stamp <= until:
                continue
            if result["status"] == "up":
                points[(f"{path}.responsetime", stamp)] = result["responsetime"]
            if result["status"] in UP:
                points[(f"{path}.up", stamp)] = UP[result["status"]]
    return points


def _table(points):
    table = {(path, stamp): value for path, value, stamp in points}
    assert len(table) == len(points)
    return table


# --- results --------------------------------------------------------------------


def test_it_sends_the_results_of_the_last_hour_on_a_first_run(fake_pingdom):
    ctx = fake_pingdom.context()

    points = fetch_results(ctx)

    assert _table(points) == _expected(fake_pingdom)
    statuses = {r["status"] for r in fake_pingdom.results_of(WEB)}
    assert statuses == {"up", "down", "unconfirmed_down", "unknown"}
    newest = {check: fake_pingdom.results_of(check)[0]["time"] for check in PATHS}
    assert ctx.state == {"results": {str(c): t for c, t in newest.items()}}
    call = fake_pingdom.calls("/results/")[0]
    assert call.query == {
        "from": str(NOW - 3600),
        "to": str(NOW),
        "limit": "1000",
        "offset": "0",
    }
    assert call.headers["authorization"] == f"Bearer {fake_pingdom.token}"


def test_it_sends_each_result_once_across_runs(fake_pingdom):
    state: dict = {}
    first = fetch_results(fake_pingdom.context(state=state))
    marks = dict(state["results"])
    fake_pingdom.now = SAMPLE_NOW + timedelta(minutes=5)

    second = fetch_results(fake_pingdom.context(state=state))

    first_keys, second_keys = set(_table(first)), set(_table(second))
    assert first_keys.isdisjoint(second_keys)
    assert {stamp for _, stamp in second_keys} == {
        r["time"]
        for check in PATHS
        for r in fake_pingdom.results_of(check)[:5]
        if r["status"] != "unknown"  # no point at all
    }
    calls = fake_pingdom.calls("/results/")[-2:]
    assert {c.query["from"] for c in calls} == {str(t + 1) for t in marks.values()}
    assert state["results"] == {
        str(check): fake_pingdom.results_of(check)[0]["time"] for check in PATHS
    }


def test_it_pages_through_many_results(fake_pingdom):
    fake_pingdom.result_minutes = 2500
    since = SAMPLE_NOW - timedelta(minutes=2600)

    points = fetch_results(fake_pingdom.context(since=since))

    assert _table(points) == _expected(fake_pingdom)
    offsets = [c.query["offset"] for c in fake_pingdom.calls("/results/")]
    assert offsets == ["0", "1000", "2000"] * 2


def test_it_backfills_the_window(fake_pingdom):
    state = {"results": {str(WEB): NOW}}
    ctx = fake_pingdom.context(
        state=state,
        since=datetime(2026, 11, 22, 6, 20, tzinfo=UTC),
        until=datetime(2026, 11, 22, 6, 30, tzinfo=UTC),
    )

    points = fetch_results(ctx)

    assert _table(points) == _expected(fake_pingdom, _at(6, 20), _at(6, 30) - 1)
    assert {path.split(".")[-1] for path, _, _ in points} == {"up", "responsetime"}
    assert len({stamp for _, _, stamp in points}) > 15
    call = fake_pingdom.calls("/results/")[0]
    assert (call.query["from"], call.query["to"]) == (
        str(_at(6, 20)),
        str(_at(6, 30) - 1),
    )
    # a backfill never moves a mark back
    assert state["results"] == {str(WEB): NOW, str(API): _at(6, 29) + 23}


def test_it_refuses_more_results_than_pingdom_pages(fake_pingdom, monkeypatch):
    monkeypatch.setattr(pingdom, "RESULTS_MAX_OFFSET", 1000)
    fake_pingdom.result_minutes = 2500
    fake_pingdom.results[API] = []  # a check with few results goes through
    ctx = fake_pingdom.context(since=SAMPLE_NOW - timedelta(days=2))

    assert fetch_results(ctx) == []

    [error] = ctx.errors
    assert error.startswith(
        f"check Web shop ({WEB}): GET /results/{WEB}: more than 1000 results between"
    )
    assert ctx.state == {"results": {}}


def test_it_refuses_a_result_of_another_shape(fake_pingdom):
    fake_pingdom.results[WEB] = [{"time": NOW - 60, "status": "sideways"}]
    ctx = fake_pingdom.context()

    points = fetch_results(ctx)

    assert ctx.errors == [
        f"check Web shop ({WEB}): unrecognised answer from GET /results/{WEB}: "
        "results[0].status 'sideways' is not one Pingdom sends"
    ]
    # the other check's results are sent and its mark moves
    assert {path.split(".")[2] for path, _, _ in points} == {"API_20_2f_20health"}
    assert list(ctx.state["results"]) == [str(API)]


def test_it_refuses_an_up_result_without_response_time(fake_pingdom):
    fake_pingdom.results[WEB] = [{"time": NOW - 60, "status": "up"}]
    ctx = fake_pingdom.context()

    fetch_results(ctx)

    [error] = ctx.errors
    assert error.startswith(f"check Web shop ({WEB}): ")
    assert error.endswith(r"no results[0].responsetime")


def test_it_refuses_a_check_list_of_another_shape(fake_pingdom):
    fake_pingdom.fail_next("wrong_shape", path="/checks")

    with pytest.raises(SourceError) as caught:
        fetch_results(fake_pingdom.context())

    assert str(caught.value) == "unrecognised answer from GET /checks: no checks"


def test_it_keeps_checks_with_the_same_name_apart(fake_pingdom):
    fake_pingdom.checks[1]["name"] = "Web shop"

    points = fetch_results(fake_pingdom.context())

    assert {path.split(".")[2] for path, _, _ in points} == {
        "Web_20shop-85975",
        "Web_20shop-161748",
    }


# --- response times -------------------------------------------------------------


def _average(fake, check, start):
    times = [
        r["responsetime"]
        for r in fake.results_of(check)
        if start <= r["time"] < start + 3600 and r["status"] == "up"
    ]
    return round(sum(times) / len(times))


def test_it_sends_the_average_of_the_last_completed_hour(fake_pingdom):
    fake_pingdom.result_minutes = 240
    ctx = fake_pingdom.context()

    points = fetch_response_times(ctx)

    assert _table(points) == {
        (f"{path}.avgresponse", _at(5)): _average(fake_pingdom, check, _at(5))
        for check, path in PATHS.items()
    }
    assert ctx.state == {"response_times": {str(WEB): _at(6), str(API): _at(6)}}
    call = fake_pingdom.calls("/summary.average/")[0]
    assert call.path == f"/api/3.1/summary.average/{API}"
    assert call.query == {"from": str(_at(5)), "to": str(_at(6) - 1)}


def test_it_catches_up_missed_hours_once(fake_pingdom):
    fake_pingdom.result_minutes = 240
    state = {"response_times": {str(WEB): _at(3), str(API): _at(3)}}

    points = fetch_response_times(fake_pingdom.context(state=state))
    again = fetch_response_times(fake_pingdom.context(state=state))

    assert _table(points) == {
        (f"{path}.avgresponse", hour): _average(fake_pingdom, check, hour)
        for check, path in PATHS.items()
        for hour in (_at(3), _at(4), _at(5))
    }
    assert again == []
    assert len(fake_pingdom.calls("/summary.average/")) == 6


def test_it_backfills_the_hours_inside_the_window(fake_pingdom):
    fake_pingdom.result_minutes = 240
    ctx = fake_pingdom.context(
        since=datetime(2026, 11, 22, 2, 30, tzinfo=UTC),
        until=datetime(2026, 11, 22, 5, 30, tzinfo=UTC),
    )

    points = fetch_response_times(ctx)

    assert {stamp for _, _, stamp in points} == {_at(3), _at(4)}
    assert len(points) == 4


def test_it_refuses_a_summary_of_another_shape(fake_pingdom):
    # the first summary call is API / health's (checks by name)
    fake_pingdom.fail_next("wrong_shape", path="/summary.average/")
    ctx = fake_pingdom.context()

    points = fetch_response_times(ctx)

    assert ctx.errors == [
        f"check API / health ({API}): unrecognised answer from "
        f"GET /summary.average/{API}: no summary"
    ]
    assert [path for path, _, _ in points] == [f"{PATHS[WEB]}.avgresponse"]
    assert ctx.state == {"response_times": {str(WEB): _at(6)}}


# --- One check failing ------------------------------------------------------------


@pytest.mark.parametrize(
    ("fetch", "key"),
    [(fetch_results, "results"), (fetch_response_times, "response_times")],
)
def test_a_check_that_fails_is_noted_and_the_others_go_on(fake_pingdom, fetch, key):
    fake_pingdom.fail_next("404", times=5, path=f"/{WEB}")
    beats = []
    ctx = fake_pingdom.context(
        heartbeat=lambda: beats.append(len(fake_pingdom.calls()))
    )

    points = fetch(ctx)

    [error] = ctx.errors
    assert error.startswith(f"check Web shop ({WEB}): GET /")
    assert f"/{WEB}: HTTP 404" in error
    assert fake_pingdom.token not in error
    assert points
    assert {path.split(".")[2] for path, _, _ in points} == {"API_20_2f_20health"}
    assert list(ctx.state[key]) == [str(API)]  # only its mark moved
    # a heartbeat before each check: after the check list, then after the first
    # check's calls
    assert beats == [1, 2]


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        ({"mode": "401"}, r"unauthorized \(HTTP 401\)"),
        ({"mode": "429", "retry_after": "3600"}, "next try would be in 3600 s"),
    ],
)
def test_a_failure_of_the_whole_source_still_fails_the_kind(
    fake_pingdom, failure, message
):
    fake_pingdom.fail_next(path="/results/", **failure)
    ctx = fake_pingdom.context()

    with pytest.raises(SourceError, match=message):
        fetch_results(ctx)

    assert ctx.errors == []
