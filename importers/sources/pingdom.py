"""The Pingdom (API 3.1) kinds: raw check results and average response times.

Both list the checks (``GET /checks`` -> ``{"checks": [{"id", "name", ...}]}``);
``<check>`` below is the check's name, or ``<name>-<id>`` when two checks share
it, through ``metric_name``.

- results: ``GET /results/{id}?from=&to=&limit=1000&offset=`` (newest first,
  paged by ``offset``) -> ``{"results": [{"time", "status", "responsetime",
  ...}]}``. Each result gives ``<prefix>.pingdom.<check>.up`` (1 for ``up``, 0
  for ``down`` and ``unconfirmed_down``, nothing for ``unknown``) and, for an
  ``up`` result, ``<prefix>.pingdom.<check>.responsetime`` (ms), at the
  result's time. The state keeps per check the newest result time sent
  (``state["results"][check_id]``); the next run asks from the second after
  it (at most 7 days back; a first run looks back one hour). A backfill sends
  the results in ``[since, until)``.
- response times: ``GET /summary.average/{id}?from=&to=`` ->
  ``{"summary": {"responsetime": {"from", "to", "avgresponse"}}}`` for each
  completed hour (``from`` its first second, ``to`` its last, both inclusive)
  -> ``<prefix>.pingdom.<check>.avgresponse`` stamped at the hour's start. The
  state keeps per check the end of the newest hour sent
  (``state["response_times"][check_id]``); a run sends the completed hours
  after it (at most 24; a first run sends the last completed hour). A backfill
  sends every hour inside ``[since, until)`` (at most 31 days).

Both call ``ctx.heartbeat()`` before each check. A check whose calls or answers
fail (a ``SourceError``) adds one line naming it to ``ctx.errors``: its points
are dropped and its mark stays, so the next run tries it again, while the other
checks' points are returned and their marks move. The check list unreadable, a
bad config or a ``SourceWideError`` (token refused, rate limit spent, API
unreachable) still fail the whole kind.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from importers import http
from importers.sources.base import (
    FetchContext,
    Point,
    SourceError,
    SourceWideError,
    as_list,
    as_number,
    as_str,
    backfill_window,
    bad_shape,
    check_prefix,
    dig,
    floor_epoch,
    int_mark,
    metric_path,
    note_failure,
    unique_levels,
)

API = "pingdom"
DEFAULT_BASE_URL = "https://api.pingdom.com/api/3.1"
CREDENTIAL_ROLES = ("token",)

RESULTS_INTERVAL = 5
RESULTS_LIMIT = 1000  # the most Pingdom returns a page
RESULTS_MAX_OFFSET = 43_200  # the largest offset Pingdom accepts
FIRST_LOOKBACK = 3600
MAX_CATCH_UP = 7 * 86_400
UP_VALUES = {"up": 1, "down": 0, "unconfirmed_down": 0, "unknown": None}

RESPONSE_TIMES_INTERVAL = 60
MAX_CATCH_UP_HOURS = 24
MAX_BACKFILL_HOURS = 31 * 24


@dataclass(frozen=True)
class Check:
    id: int
    name: str
    level: str


def _api(ctx: FetchContext, client: http.ApiClient | None):
    return http.given_or_new(client, http.pingdom_client, ctx)


def list_checks(api: http.ApiClient) -> list[Check]:
    """The account's checks, by name."""
    where = "GET /checks"
    answer = api.get("/checks")
    names: dict[str, str] = {}
    ids: dict[str, int] = {}
    for i, item in enumerate(dig(answer, "checks", where, as_list)):
        check_id = dig(item, "id", where, at=f"checks[{i}]")
        if isinstance(check_id, bool) or not isinstance(check_id, int):
            raise bad_shape(where, f"checks[{i}].id is not an integer")
        name = dig(item, "name", where, as_str, at=f"checks[{i}]")
        if str(check_id) in names:
            raise bad_shape(where, f"check {check_id} is listed twice")
        names[str(check_id)] = name
        ids[str(check_id)] = check_id
    levels = unique_levels(names)
    return [
        Check(id=ids[key], name=names[key], level=levels[key])
        for key in sorted(names, key=lambda key: (names[key], ids[key]))
    ]


def _each_check(
    ctx: FetchContext,
    api: http.ApiClient,
    one_check: Callable[[http.ApiClient, Check], list[Point]],
) -> list[Point]:
    """The points of ``one_check(api, check)`` for every check. A check that fails (a
    ``SourceError``) adds a line to ``ctx.errors`` and the others go on; it must
    move its mark only once nothing more can fail. A ``SourceWideError`` stops
    the kind."""
    points: list[Point] = []
    for check in list_checks(api):
        ctx.heartbeat()
        try:
            points.extend(one_check(api, check))
        except SourceWideError:
            raise
        except SourceError as exc:
            note_failure(ctx, f"check {check.name} ({check.id})", exc, api.redact)
    return points


# --- results --------------------------------------------------------------------


def fetch_results(
    ctx: FetchContext, client: http.ApiClient | None = None
) -> list[Point]:
    """Every check's results since the last one sent (or in the backfill window)."""
    check_prefix(ctx)
    window = backfill_window(ctx, "pingdom_results", backfill=True)
    marks = ctx.state.setdefault("results", {})
    now = int(ctx.now.timestamp())

    def one_check(api: http.ApiClient, check: Check) -> list[Point]:
        key = str(check.id)
        mark = int_mark(marks.get(key))
        if window:
            start = math.ceil(window[0].timestamp())
            end = math.ceil(window[1].timestamp()) - 1
        else:
            start = now - FIRST_LOOKBACK if mark is None else mark + 1
            start = max(start, now - MAX_CATCH_UP)
            end = now
        if start > end:
            return []
        newest = None
        points: list[Point] = []
        for stamp, status, responsetime in _results(api, check, start, end):
            if not start <= stamp <= end:
                continue  # outside what was asked: not ours to send
            if not window and mark is not None and stamp <= mark:
                continue
            if status == "up":
                path = metric_path(ctx, "pingdom", check.level, "responsetime")
                points.append((path, responsetime, stamp))
            up = UP_VALUES[status]
            if up is not None:
                points.append(
                    (metric_path(ctx, "pingdom", check.level, "up"), up, stamp)
                )
            newest = stamp if newest is None else max(newest, stamp)
        if newest is not None and (mark is None or newest > mark):
            marks[key] = newest
        return points

    with _api(ctx, client) as api:
        return _each_check(ctx, api, one_check)


def _results(
    api: http.ApiClient, check: Check, start: int, end: int
) -> list[tuple[int, str, int | float]]:
    """All results of a check in ``[start, end]``, oldest first, every page."""
    path = f"/results/{check.id}"
    where = f"GET {path}"
    found = []
    offset = 0
    while True:
        answer = api.get(
            path,
            params={"from": start, "to": end, "limit": RESULTS_LIMIT, "offset": offset},
        )
        items = dig(answer, "results", where, as_list)
        for i, item in enumerate(items):
            found.append(_result(item, where, f"results[{i}]"))
        if len(items) < RESULTS_LIMIT:
            break
        offset += RESULTS_LIMIT
        if offset > RESULTS_MAX_OFFSET:
            raise SourceError(
                f"{where}: more than {RESULTS_MAX_OFFSET} results between {start} "
                f"and {end}; backfill a shorter window"
            )
    found.sort(key=lambda result: result[0])
    return found


def _result(item: Any, where: str, what: str) -> tuple[int, str, int | float]:
    stamp = dig(item, "time", where, at=what)
    if isinstance(stamp, bool) or not isinstance(stamp, int) or stamp < 0:
        raise bad_shape(where, f"{what}.time is not a Unix time")
    status = dig(item, "status", where, as_str, at=what)
    if status not in UP_VALUES:
        raise bad_shape(where, f"{what}.status {status!r} is not one Pingdom sends")
    responsetime: int | float = 0
    if status == "up":
        responsetime = dig(item, "responsetime", where, as_number, at=what)
    return stamp, status, responsetime


# --- response times -------------------------------------------------------------


def fetch_response_times(
    ctx: FetchContext, client: http.ApiClient | None = None
) -> list[Point]:
    """Every check's average response time of each completed hour not yet sent."""
    check_prefix(ctx)
    window = backfill_window(ctx, "pingdom_response_times", backfill=True)
    step = RESPONSE_TIMES_INTERVAL * 60
    # The end of the newest completed hour.
    last_end = floor_epoch(ctx.now, RESPONSE_TIMES_INTERVAL)
    marks = ctx.state.setdefault("response_times", {})
    if window:
        first = math.ceil(window[0].timestamp() / step) * step
        stop = min(last_end, int(window[1].timestamp()))
        if (stop - first) // step > MAX_BACKFILL_HOURS:
            raise SourceError(
                f"a response-time backfill covers at most "
                f"{MAX_BACKFILL_HOURS} hours (one call per hour and check)"
            )

    def one_check(api: http.ApiClient, check: Check) -> list[Point]:
        key = str(check.id)
        mark = int_mark(marks.get(key))
        if window:
            first = math.ceil(window[0].timestamp() / step) * step
            stop = min(last_end, int(window[1].timestamp()))
        else:
            first = last_end - step if mark is None else mark
            first = max(first, last_end - MAX_CATCH_UP_HOURS * step)
            stop = last_end
        newest_end = None
        points: list[Point] = []
        for start in range(first, stop - step + 1, step):
            path = f"/summary.average/{check.id}"
            answer = api.get(path, params={"from": start, "to": start + step - 1})
            average = _average(answer, f"GET {path}")
            points.append(
                (
                    metric_path(ctx, "pingdom", check.level, "avgresponse"),
                    average,
                    start,
                )
            )
            newest_end = start + step
        if newest_end is not None and (mark is None or newest_end > mark):
            marks[key] = newest_end
        return points

    with _api(ctx, client) as api:
        return _each_check(ctx, api, one_check)


def _average(answer: Any, where: str) -> int | float:
    return dig(answer, "summary.responsetime.avgresponse", where, as_number)
