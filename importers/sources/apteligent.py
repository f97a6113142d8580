"""The Apteligent (formerly Crittercism) kinds: daily, live, grouped, services.

Every kind first lists the apps (``GET /apps``) and skips those whose id or
name is in ``app_blacklist``. ``<app>`` below is the app's name, or
``<name>-<id>`` when two apps share a name; every level goes through
``metric_name`` (``"AcmeShop iOS"`` -> ``AcmeShop_20iOS``).

- daily: ``<prefix>.<app>.daily.<graph>``. The graph's ``data.start`` is the
  first day of ``data.series[0].points`` (oldest first, one a day): point i
  describes day ``start + i``. The API's days are UTC days (an assumption: its
  ``start`` and ``end`` are midnights without an offset, and the sample taken
  at 06:42 UTC ends with that UTC day), so the LAST point is always the UTC day
  in progress, "today so far", and is never sent. The point of day D is stamped
  at 00:00 of D in the app's time zone (``app_settings``, else UTC), the start
  of the day it describes; it is sent once D is over both at the API (its UTC
  midnight has passed: D is not the last point) and in the app's zone (D is
  before the app's local today). East of Greenwich a day is thus sent after
  the UTC midnight that ends it, not at the local one; west of it, after the
  local midnight. The state keeps per app and graph the newest day settled
  (``state["daily"][app_id][graph] = "YYYY-MM-DD"``; an older state's single
  ``"YYYY-MM-DD"`` per app counts for every graph): a day sent, or a day still
  null (no data) once the next day is over. A day whose value is still null is
  asked again by every run until then, so a graph the API fills late is sent
  late rather than never; each value is sent once. A graph whose newest
  completed day is settled costs no call until the next day is over. After a
  gap the missed days are fetched too (a longer ``duration``, at most 30 days).
  A backfill sends every completed day whose stamp is in ``[since, until)``, up
  to 30 days back.
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
  labels in ``services_whitelist`` only (the API counts Wi-Fi hotspots and the
  like as services). An empty whitelist imports no service: the kind logs so
  at INFO and returns no points, without a call.

Grouped and services points are stamped at the run's time rounded down to the
source's interval in minutes, or, for a source on a cron, the kind's (10 and 15
minutes): the values are rolling windows ending now.

Each kind calls ``ctx.heartbeat()`` before each app. An app whose calls or
answers fail (a ``SourceError``) adds one line naming it to ``ctx.errors``: its
points are dropped and its marks stay, so the next run tries it again, while
the other apps' points are returned and their marks move. The app list
unreadable, a bad config or a ``SourceWideError`` (credentials refused, rate
limit spent, API unreachable) still fail the whole kind.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from importers import http
from importers.sources.base import (
    FetchContext,
    Point,
    SourceError,
    SourceWideError,
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
    note_failure,
    slices,
    unique_levels,
    zone,
)

logger = logging.getLogger(__name__)

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


def _api(ctx: FetchContext, client: http.ApiClient | None):
    return http.given_or_new(client, http.apteligent_client, ctx)


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


def _each_app(
    ctx: FetchContext,
    api: http.ApiClient,
    one_app: Callable[[http.ApiClient, App], list[Point]],
) -> list[Point]:
    """The points of ``one_app(api, app)`` for every app. An app that fails (a
    ``SourceError``) adds a line to ``ctx.errors`` and the others go on; it must
    move its marks only once nothing more can fail. A ``SourceWideError``
    stops the kind."""
    points: list[Point] = []
    for app in list_apps(api, ctx):
        ctx.heartbeat()
        try:
            points.extend(one_app(api, app))
        except SourceWideError:
            raise
        except SourceError as exc:
            note_failure(ctx, f"app {app.name} ({app.id})", exc, api.redact)
    return points


# --- daily ----------------------------------------------------------------------


def api_day(moment: datetime) -> date:
    """The day of the API's that ``moment`` falls in: its days are UTC days."""
    return moment.astimezone(UTC).date()


def fetch_daily(ctx: FetchContext, client: http.ApiClient | None = None) -> list[Point]:
    """Each app's completed days, stamped at the app's local midnight."""
    checked_config(ctx)
    window = backfill_window(ctx, "apteligent_daily", backfill=True)
    marks = ctx.state.setdefault("daily", {})
    in_progress = api_day(ctx.now)

    def one_app(api: http.ApiClient, app: App) -> list[Point]:
        # The newest day over both at the API and in the app's zone.
        local_today = ctx.now.astimezone(app.zone).date()
        last = min(in_progress, local_today) - timedelta(days=1)
        first = None
        if window:
            # Days whose local midnight can be >= since.
            first = window[0].astimezone(app.zone).date()
            back = (in_progress - first).days
            if back > DAILY_MAX_DAYS:
                raise SourceWideError(
                    f"a daily backfill reaches at most {DAILY_MAX_DAYS} days "
                    f"back; since is {back} days before today"
                )
        old = _graph_marks(marks.get(app.id))
        new = dict(old)
        points: list[Point] = []
        for graph in DAILY_GRAPHS:
            mark = old.get(graph)
            if first is not None:
                start = first
            elif mark is not None and mark >= last:
                continue  # nothing new for this graph before the next day is over
            else:
                start = last if mark is None else mark + timedelta(days=1)
                start = max(start, in_progress - timedelta(days=DAILY_MAX_DAYS))
            if start > last:
                continue
            newest = _daily_graph(
                ctx, api, app, graph, start, last, mark, window, points
            )
            if newest is not None and (mark is None or newest > mark):
                new[graph] = newest
        # Only now that every call of the app went through.
        if new != old:
            marks[app.id] = {graph: day.isoformat() for graph, day in new.items()}
        return points

    with _api(ctx, client) as api:
        return _each_app(ctx, api, one_app)


def _daily_graph(
    ctx: FetchContext,
    api: http.ApiClient,
    app: App,
    graph: str,
    start: date,
    last: date,
    mark: date | None,
    window: tuple[datetime, datetime] | None,
    points: list[Point],
) -> date | None:
    """Append the graph's values of the days ``start`` to ``last`` to ``points``;
    the newest day settled (sent, or null after the next day is over)."""
    in_progress = api_day(ctx.now)
    # The API's last point is the day in progress: ask for it too.
    duration = ((in_progress - start).days + 1) * 1440
    answer = api.post(
        "/errorMonitoring/graph",
        json_body={"params": {"graph": graph, "duration": duration, "appId": app.id}},
    )
    days = _graph_days(answer, "POST /errorMonitoring/graph")
    newest = None
    for i, (day, value) in enumerate(days):
        if i == len(days) - 1 or day > last:
            continue  # the day in progress, or a day not over in the app's zone
        stamp = local_midnight(day, app.zone)
        if window:
            if not window[0].timestamp() <= stamp < window[1].timestamp():
                continue
        elif mark is not None and day <= mark:
            continue
        if value is None:
            if not window and day < last:
                # Still null once the next day is over: a day without data.
                newest = day if newest is None else max(newest, day)
            continue  # else asked again by the next run
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


def _graph_marks(value: Any) -> dict[str, date]:
    """An app's daily marks, ``{graph: day}``; an older state's single day
    (``"YYYY-MM-DD"``) is every graph's mark."""
    if isinstance(value, str):
        day = _day_mark(value)
        return {} if day is None else dict.fromkeys(DAILY_GRAPHS, day)
    if not isinstance(value, dict):
        return {}
    marks = {}
    for graph, text in value.items():
        day = _day_mark(text)
        if graph in DAILY_GRAPHS and day is not None:
            marks[graph] = day
    return marks


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

    def one_app(api: http.ApiClient, app: App) -> list[Point]:
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
        points: list[Point] = []
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
                points.append((metric_path(ctx, app.level, "live", name), value, stamp))
            newest = stamp
        if newest is not None:
            marks[app.id] = newest
        return points

    with _api(ctx, client) as api:
        return _each_app(ctx, api, one_app)


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

    def one_app(api: http.ApiClient, app: App) -> list[Point]:
        points: list[Point] = []
        for graph in GROUPED_GRAPHS:
            pie = _pie(api, app, graph, "appVersion")
            for label in sorted(pie):
                path = metric_path(
                    ctx, app.level, "groupedby", "appversion", label, graph
                )
                points.append((path, pie[label], stamp))
        return points

    with _api(ctx, client) as api:
        return _each_app(ctx, api, one_app)


def fetch_grouped_carrier(
    ctx: FetchContext, client: http.ApiClient | None = None
) -> list[Point]:
    """Each app's pies by carrier, summed into the groups of its country."""
    checked_config(ctx, carriers=True)
    backfill_window(ctx, "apteligent_grouped_carrier", backfill=False)
    stamp = floor_epoch(ctx.now, ctx.interval_minutes or GROUPED_INTERVAL)

    def one_app(api: http.ApiClient, app: App) -> list[Point]:
        pies = {graph: _pie(api, app, graph, "carrier") for graph in CARRIER_GRAPHS}
        rules = [
            (re.compile(pattern), group)
            for pattern, group in ctx.carrier_map.get(app.country, [])
        ]
        groups = carrier_groups(pies, rules)
        points: list[Point] = []
        for group in sorted(groups):
            for graph, value in groups[group].items():
                path = metric_path(ctx, app.level, "groupedby", "carrier", group, graph)
                points.append((path, value, stamp))
        return points

    with _api(ctx, client) as api:
        return _each_app(ctx, api, one_app)


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
    if not keep:
        logger.info(
            "%s: the services whitelist is empty: no service is imported",
            ctx.name,
        )
        return []

    def one_app(api: http.ApiClient, app: App) -> list[Point]:
        points: list[Point] = []
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
                if label not in keep:
                    continue  # e.g. a Wi-Fi hotspot the API counts as a service
                path = metric_path(ctx, app.level, "services", label, graph)
                points.append((path, pie[label], stamp))
        return points

    with _api(ctx, client) as api:
        return _each_app(ctx, api, one_app)
