"""The Apteligent (formerly Crittercism) kinds: daily, live, grouped, services.

Every kind first lists the apps (``GET /apps``) and skips those whose id or
name is in ``app_blacklist``. ``<app>`` below is the app's name, or
``<name>-<id>`` when two apps share a name; every level goes through
``metric_name`` (``"AcmeShop iOS"`` -> ``AcmeShop_20iOS``).

- daily: ``<prefix>.<app>.daily.<graph>``. The graph's ``data.start`` is the
  first day of ``data.series[0].points`` (oldest first, one a day); the point
  of day D is stamped at 00:00 of D in the app's time zone (``app_settings``,
  else UTC), the start of the day it describes. Only completed days count (D
  before today in the app's zone: the last point is today so far). The state
  keeps, per app, the newest day sent (``state["daily"][app_id] = "YYYY-MM-DD"``):
  a day is sent once, and once yesterday is sent the app costs no call until
  its next local midnight. After a gap the missed days are fetched too (a
  longer ``duration``, at most 30 days). A backfill sends every completed day
  whose stamp is in ``[since, until)``, up to 30 days back.
- live: ``<prefix>.<app>.live.{appLoads,crashes,exceptions}`` from
  ``app_loads``, ``app_errors``, ``app_exceptions`` of each 10 s bucket, at the
  bucket's time. Windows overlap: only buckets newer than the app's mark
  (``state["live"][app_id]``, Unix seconds of the newest bucket sent) are sent,
  and not the bucket still filling (its end after ``ctx.now``), which the next
  run sends once complete.
- grouped by app version: ``<prefix>.<app>.groupedby.appversion.<version>.<graph>``,
  the API's value for each graph of ``GROUPED_GRAPHS`` (nothing is summed).
- grouped by carrier: ``<prefix>.<app>.groupedby.carrier.<group>.<graph>``. A
  carrier's group is the first rule of ``carrier_map[<app's country>]`` whose
  regex matches it (``re.search``); an app with no country, or a country with no
  rules, puts every carrier in ``Other``. Per group: ``crashes``, ``appLoads``
  and ``affectedUsers`` are the sums over its carriers; ``crashPercent`` is
  ``100 * crashes / appLoads`` of those sums (over the carriers present in
  both pies); ``affectedUserPercent`` is ``100 * affectedUsers / users`` where
  each carrier's users are derived from the API's own figures
  (``affectedUsers * 100 / affectedUserPercent``), and it is left out for a
  group where some carrier's users cannot be derived (a percentage of 0).
  Percentages are never summed.
- services: ``<prefix>.<app>.services.<service>.<graph>`` for the service
  labels in ``services_whitelist``; an empty whitelist keeps every service.

Grouped and services points are stamped at the run's time rounded down to the
source's interval in minutes, or, for a source on a cron, the kind's (10 and 15
minutes): the values are rolling windows ending now.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from importers import http
from importers.sources.base import (
    FetchContext,
    Point,
    SourceError,
    as_dict,
    as_list,
    as_number,
    as_str,
    backfill_window,
    bad_shape,
    checked_config,
    dig,
    floor_epoch,
    int_mark,
    metric_path,
    slices,
    unique_levels,
    zone,
)

API = "apteligent"
DEFAULT_BASE_URL = "https://developers.crittercism.com/v1.0"
CREDENTIAL_ROLES = ("username", "password", "client_id")
APPS_ATTRIBUTES = "appName,linkToAppStore,appVersions,latestVersionString,iconURL"

DAILY_GRAPHS = (
    "crashPercent",
    "mau",
    "dau",
    "rating",
    "appLoads",
    "crashes",
    "affectedUsers",
    "affectedUserPercent",
)
DAILY_MAX_DAYS = 30
DAY_SECONDS = 86_400
LIVE_STEP = 10  # seconds a live bucket covers, when a window has one bucket
GROUPED_GRAPHS = (
    "crashes",
    "crashPercent",
    "appLoads",
    "affectedUsers",
    "affectedUserPercent",
)
# What the carrier groups are computed from (crashPercent is recomputed).
CARRIER_GRAPHS = ("crashes", "appLoads", "affectedUsers", "affectedUserPercent")
ADDITIVE_GRAPHS = ("crashes", "appLoads", "affectedUsers")
GROUPED_DURATION = 1440
GROUPED_INTERVAL = 10
SERVICE_GRAPHS = ("dataIn", "dataOut", "latency", "volume", "errors")
SERVICES_DURATION = 15
SERVICES_INTERVAL = 15
OTHER = "Other"


@dataclass(frozen=True)
class App:
    """An app to import, with its metric level and its settings."""

    id: str
    name: str
    level: str
    zone: ZoneInfo
    country: str


@contextmanager
def _api(ctx: FetchContext, client: http.ApiClient | None) -> Iterator[http.ApiClient]:
    if client is not None:
        yield client
        return
    with http.apteligent_client(ctx) as api:
        yield api


def list_apps(api: http.ApiClient, ctx: FetchContext) -> list[App]:
    """The account's apps minus the blacklist, by name."""
    where = "GET /apps"
    answer = as_dict(
        api.get("/apps", params={"attributes": APPS_ATTRIBUTES}), where, "the answer"
    )
    names: dict[str, str] = {}
    for app_id, info in answer.items():
        info = as_dict(info, where, f"app {app_id}")
        names[app_id] = dig(info, "appName", where, as_str, at=f"app {app_id}")
    blacklist = set(ctx.app_blacklist)
    kept = {
        app_id: name
        for app_id, name in names.items()
        if app_id not in blacklist and name not in blacklist
    }
    levels = unique_levels(kept)
    apps = []
    for app_id in sorted(kept, key=lambda key: (kept[key], key)):
        settings = ctx.app_settings.get(app_id, {})
        apps.append(
            App(
                id=app_id,
                name=kept[app_id],
                level=levels[app_id],
                zone=zone(settings.get("timezone", "UTC")),
                country=settings.get("country", ""),
            )
        )
    return apps


# --- daily ----------------------------------------------------------------------


def fetch_daily(ctx: FetchContext, client: http.ApiClient | None = None) -> list[Point]:
    """Each app's completed days, stamped at the app's local midnight."""
    checked_config(ctx)
    window = backfill_window(ctx, "apteligent_daily", backfill=True)
    marks = ctx.state.setdefault("daily", {})
    points: list[Point] = []
    with _api(ctx, client) as api:
        for app in list_apps(api, ctx):
            today = ctx.now.astimezone(app.zone).date()
            mark = _day_mark(marks.get(app.id))
            if window:
                # Completed days back from today whose midnight can be >= since.
                days = (today - window[0].astimezone(app.zone).date()).days
                if days > DAILY_MAX_DAYS:
                    raise SourceError(
                        f"a daily backfill reaches at most {DAILY_MAX_DAYS} days "
                        f"back; since is {days} days before today"
                    )
                if days < 1:
                    continue
            elif mark is not None and mark >= today - timedelta(days=1):
                continue  # yesterday is sent: nothing new before the next midnight
            else:
                days = 1 if mark is None else (today - mark).days - 1
                days = min(max(days, 1), DAILY_MAX_DAYS)
            newest = _daily_app(ctx, api, app, today, mark, window, days, points)
            if newest is not None and (mark is None or newest > mark):
                marks[app.id] = newest.isoformat()
    return points


def _daily_app(
    ctx: FetchContext,
    api: http.ApiClient,
    app: App,
    today: date,
    mark: date | None,
    window: tuple[datetime, datetime] | None,
    days: int,
    points: list[Point],
) -> date | None:
    newest = None
    # ``days`` completed days, and today so far.
    duration = (days + 1) * 1440
    where = "POST /errorMonitoring/graph"
    for graph in DAILY_GRAPHS:
        answer = api.post(
            "/errorMonitoring/graph",
            json_body={
                "params": {"graph": graph, "duration": duration, "appId": app.id}
            },
        )
        for day, value in _graph_days(answer, where):
            if day >= today:
                continue  # today (or later) is not over yet
            stamp = local_midnight(day, app.zone)
            if window:
                if not window[0].timestamp() <= stamp < window[1].timestamp():
                    continue
            elif mark is not None and day <= mark:
                continue
            if value is None:
                continue  # no data for that day
            points.append((metric_path(ctx, app.level, "daily", graph), value, stamp))
            newest = day if newest is None else max(newest, day)
    return newest


def local_midnight(day: date, tz: ZoneInfo) -> int:
    """Unix seconds of the first instant of ``day`` in ``tz``.

    Where a DST change skips midnight, fold=0 reads 00:00 with the offset
    before the change, which is the first instant of the day after it.
    """
    return int(datetime.combine(day, time(0), tzinfo=tz).timestamp())


def _graph_days(answer: Any, where: str) -> list[tuple[date, int | float | None]]:
    """``[(day, value or None)]`` of ``data.series[0].points``, oldest first."""
    start_text = dig(answer, "data.start", where, as_str)
    try:
        start = datetime.fromisoformat(start_text)
    except ValueError:
        raise bad_shape(where, f"data.start {start_text!r} is not a date") from None
    if start.time() != time(0):
        raise bad_shape(where, f"data.start {start_text!r} is not a midnight")
    interval = dig(answer, "data.interval", where, as_number)
    if interval != DAY_SECONDS:
        raise bad_shape(where, f"data.interval is {interval!r}, not one day (86400)")
    series = dig(answer, "data.series", where, as_list)
    if not series:
        raise bad_shape(where, "data.series is empty")
    values = dig(series[0], "points", where, as_list, at="data.series[0]")
    result = []
    for i, value in enumerate(values):
        if value is not None:
            value = as_number(value, where, f"data.series[0].points[{i}]")
        result.append((start.date() + timedelta(days=i), value))
    return result


def _day_mark(value: Any) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


# --- live -----------------------------------------------------------------------


def fetch_live(ctx: FetchContext, client: http.ApiClient | None = None) -> list[Point]:
    """Each app's completed 10 s buckets newer than the last one sent."""
    checked_config(ctx)
    backfill_window(ctx, "apteligent_live", backfill=False)
    marks = ctx.state.setdefault("live", {})
    now = ctx.now.timestamp()
    points: list[Point] = []
    with _api(ctx, client) as api:
        for app in list_apps(api, ctx):
            path = f"/liveStats/periodic/{quote(app.id, safe='')}"
            answer = api.post(path, params={"app_version": "total", "initialize": 1})
            buckets = _buckets(answer, f"POST {path}")
            times = [bucket[0] for bucket in buckets]
            step = min(
                (b - a for a, b in zip(times, times[1:], strict=False)),
                default=LIVE_STEP,
            )
            mark = int_mark(marks.get(app.id))
            newest = None
            for stamp, loads, errors, exceptions in buckets:
                if mark is not None and stamp <= mark:
                    continue  # sent by an earlier run
                if stamp + step > now:
                    continue  # still filling: sent by the next run
                for name, value in (
                    ("appLoads", loads),
                    ("crashes", errors),
                    ("exceptions", exceptions),
                ):
                    points.append(
                        (metric_path(ctx, app.level, "live", name), value, stamp)
                    )
                newest = stamp
            if newest is not None:
                marks[app.id] = newest
    return points


def _buckets(
    answer: Any, where: str
) -> list[tuple[int, int | float, int | float, int | float]]:
    """``periodic_data`` as ``[(unix seconds, loads, errors, exceptions)]``, by time."""
    answer = as_dict(answer, where, "the answer")
    if "success" in answer and not answer["success"]:
        raise bad_shape(where, f"success is {answer['success']!r}")
    items = dig(answer, "periodic_data", where, as_list)
    buckets = {}
    for i, item in enumerate(items):
        fields = [
            dig(item, key, where, as_number, at=f"periodic_data[{i}]")
            for key in ("time", "app_loads", "app_errors", "app_exceptions")
        ]
        millis = fields[0]
        if millis <= 0:
            raise bad_shape(where, f"periodic_data[{i}].time is {millis!r}")
        stamp = int(millis // 1000)
        if stamp in buckets:
            raise bad_shape(where, f"two buckets at {stamp}")
        buckets[stamp] = (stamp, fields[1], fields[2], fields[3])
    return [buckets[stamp] for stamp in sorted(buckets)]


# --- grouped --------------------------------------------------------------------


def fetch_grouped_appversion(
    ctx: FetchContext, client: http.ApiClient | None = None
) -> list[Point]:
    """Each app's pies grouped by app version, as the API gives them."""
    checked_config(ctx)
    backfill_window(ctx, "apteligent_grouped_appversion", backfill=False)
    stamp = floor_epoch(ctx.now, ctx.interval_minutes or GROUPED_INTERVAL)
    points: list[Point] = []
    with _api(ctx, client) as api:
        for app in list_apps(api, ctx):
            for graph in GROUPED_GRAPHS:
                pie = _pie(api, app, graph, "appVersion")
                for label in sorted(pie):
                    path = metric_path(
                        ctx, app.level, "groupedby", "appversion", label, graph
                    )
                    points.append((path, pie[label], stamp))
    return points


def fetch_grouped_carrier(
    ctx: FetchContext, client: http.ApiClient | None = None
) -> list[Point]:
    """Each app's pies by carrier, summed into the groups of its country."""
    checked_config(ctx, carriers=True)
    backfill_window(ctx, "apteligent_grouped_carrier", backfill=False)
    stamp = floor_epoch(ctx.now, ctx.interval_minutes or GROUPED_INTERVAL)
    points: list[Point] = []
    with _api(ctx, client) as api:
        for app in list_apps(api, ctx):
            pies = {graph: _pie(api, app, graph, "carrier") for graph in CARRIER_GRAPHS}
            rules = [
                (re.compile(pattern), group)
                for pattern, group in ctx.carrier_map.get(app.country, [])
            ]
            groups = carrier_groups(pies, rules)
            for group in sorted(groups):
                for graph, value in groups[group].items():
                    path = metric_path(
                        ctx, app.level, "groupedby", "carrier", group, graph
                    )
                    points.append((path, value, stamp))
    return points


def carrier_groups(
    pies: dict[str, dict[str, int | float]],
    rules: list[tuple[re.Pattern[str], str]],
) -> dict[str, dict[str, int | float]]:
    """``{group: {graph: value}}`` from per-carrier pies (see the module docstring)."""
    members: dict[str, list[str]] = {}
    for label in sorted({label for pie in pies.values() for label in pie}):
        group = next((g for regex, g in rules if regex.search(label)), OTHER)
        members.setdefault(group, []).append(label)
    crashes, loads = pies["crashes"], pies["appLoads"]
    affected, affected_pct = pies["affectedUsers"], pies["affectedUserPercent"]
    groups: dict[str, dict[str, int | float]] = {}
    for group, labels in members.items():
        values: dict[str, int | float] = {}
        for graph in ADDITIVE_GRAPHS:
            present = [pies[graph][label] for label in labels if label in pies[graph]]
            if present:
                values[graph] = sum(present)
        both = [label for label in labels if label in crashes and label in loads]
        total_loads = sum(loads[label] for label in both)
        if total_loads > 0:
            values["crashPercent"] = (
                100 * sum(crashes[label] for label in both) / total_loads
            )
        with_users = [label for label in labels if label in affected]
        users = [
            affected[label] * 100 / affected_pct[label]
            for label in with_users
            if affected_pct.get(label, 0) > 0
        ]
        # A carrier whose users cannot be derived would skew the group: none then.
        if with_users and len(users) == len(with_users) and sum(users) > 0:
            values["affectedUserPercent"] = (
                100 * sum(affected[label] for label in with_users) / sum(users)
            )
        if values:
            groups[group] = values
    return groups


def _pie(
    api: http.ApiClient, app: App, graph: str, group_by: str
) -> dict[str, int | float]:
    answer = api.post(
        "/errorMonitoring/pie",
        json_body={
            "params": {
                "graph": graph,
                "duration": GROUPED_DURATION,
                "appId": app.id,
                "groupBy": group_by,
            }
        },
    )
    return slices(answer, "POST /errorMonitoring/pie")


# --- services -------------------------------------------------------------------


def fetch_services(
    ctx: FetchContext, client: http.ApiClient | None = None
) -> list[Point]:
    """Each app's service pies of the last 15 minutes, whitelisted services only."""
    checked_config(ctx)
    backfill_window(ctx, "apteligent_services", backfill=False)
    stamp = floor_epoch(ctx.now, ctx.interval_minutes or SERVICES_INTERVAL)
    keep = set(ctx.services_whitelist)
    points: list[Point] = []
    with _api(ctx, client) as api:
        for app in list_apps(api, ctx):
            for graph in SERVICE_GRAPHS:
                answer = api.post(
                    "/performanceManagement/pie",
                    json_body={
                        "params": {
                            "appIds": [app.id],
                            "graph": graph,
                            "duration": SERVICES_DURATION,
                            "groupBy": "service",
                        }
                    },
                )
                pie = slices(answer, "POST /performanceManagement/pie")
                for label in sorted(pie):
                    if keep and label not in keep:
                        continue  # e.g. a Wi-Fi hotspot the API counts as a service
                    path = metric_path(ctx, app.level, "services", label, graph)
                    points.append((path, pie[label], stamp))
    return points
