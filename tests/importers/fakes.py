"""Fake Apteligent and Pingdom APIs on 127.0.0.1, for the importer tests.

A pytest plugin (``tests.importers.fakes``): the fixtures ``fake_apteligent``
and ``fake_pingdom`` start a fake per test (a ``ThreadingHTTPServer`` on a
free port, in a thread) and stop it after. Each fake:

- answers like the real API, in the shapes of the samples in ``samples/``
  (copied from the spec), with data computed from its tables and its ``now``
  (``SAMPLE_NOW`` unless a test sets another), so a test can set ``now`` to
  the real time and get recent data; Apteligent's days are UTC days, as the
  real API's are taken to be (see ``importers.sources.apteligent``): a daily
  graph's last point is the UTC day of ``now``, still in progress;
- checks authentication (Apteligent: the password grant with HTTP basic auth
  ``(client_id, "")``, then a Bearer token it issued; Pingdom: the Bearer
  token) and the shape of each request, answering 400/401/404 otherwise;
- records every request in ``requests`` (``Recorded``; ``calls(path)`` filters);
- fails the next calls on demand: ``fail_next(mode, times=1, path=None, ...)``
  with ``mode`` one of ``"401"``, ``"429"`` (``retry_after=``, ``req_limit=``),
  ``"500"`` (or any 5xx code, with ``retry_after=`` and ``req_limit=`` too),
  ``"malformed"`` (truncated JSON), ``"not_json"``
  (an HTML page), ``"wrong_shape"`` (valid JSON of another shape), ``"echo"``
  (400 echoing the request's headers and body: secrets included) and ``"slow"``
  (answers normally after ``delay`` seconds); ``path`` limits it to requests
  whose path contains that text.
"""

from __future__ import annotations

import base64
import copy
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest

from importers.sources.base import FetchContext

SAMPLES = Path(__file__).parent / "samples"
# The time the samples were taken: the live sample's last bucket (06:42:30) has
# just completed.
SAMPLE_NOW = datetime(2026, 11, 22, 6, 42, 40, tzinfo=UTC)

IOS = "538bbf61c04a71ec21c50296"
ANDROID = "ebed9ba7a4148eda88de48b2"


def sample(name: str) -> Any:
    """The parsed sample ``samples/<name>.json``."""
    return json.loads((SAMPLES / f"{name}.json").read_text())


# --- Apteligent data ------------------------------------------------------------

# Per app and graph, one value a day, oldest first; the last one is "today so
# far" (the UTC day of the fake's now). The iOS crashes end like the sample
# ([186, 267] from 2026-11-21).
DAILY: dict[str, dict[str, list[int | float | None]]] = {
    IOS: {
        "crashPercent": [0.81, 0.93, 1.12],
        "mau": [51234, 52011, 52400],
        "dau": [19876, 20113, 8021],
        "rating": [4.5, 4.5, 4.4],
        "appLoads": [22001, 20000, 23845],
        "crashes": [178, 186, 267],
        "affectedUsers": [160, 171, 230],
        "affectedUserPercent": [0.8, 0.85, 1.1],
    },
    ANDROID: {
        "crashPercent": [1.5, 1.25, 0.5],
        "mau": [1234001, 1234567, 1234600],
        "dau": [301000, 302511, 99000],
        "rating": [3.9, 4.0, 4.1],
        "appLoads": [420000, 431200, 100000],
        "crashes": [6300, 5390, 500],
        "affectedUsers": [4100, 3987, 400],
        "affectedUserPercent": [1.36, 1.32, 0.4],
    },
}

# Pies by app version: {app: {graph: {label: value}}}; the iOS crashes are the
# sample's.
APPVERSION_PIES: dict[str, dict[str, dict[str, int | float]]] = {
    IOS: {
        "crashes": {"1.3.1": 55, "1.4.1": 49, "1.3.0": 43, "1.4.0": 27},
        "appLoads": {"1.3.1": 2000, "1.4.1": 1500, "1.3.0": 1000, "1.4.0": 900},
        "crashPercent": {"1.3.1": 2.75, "1.4.1": 3.27, "1.3.0": 4.3, "1.4.0": 3.0},
        "affectedUsers": {"1.3.1": 40, "1.4.1": 45, "1.3.0": 30, "1.4.0": 20},
        "affectedUserPercent": {"1.3.1": 4.0, "1.4.1": 6.0, "1.3.0": 5.0, "1.4.0": 4.4},
    },
    ANDROID: {
        "crashes": {"2.4.1": 310, "2.4.0": 120},
        "appLoads": {"2.4.1": 10000, "2.4.0": 6000},
        "crashPercent": {"2.4.1": 3.1, "2.4.0": 2.0},
        "affectedUsers": {"2.4.1": 250, "2.4.0": 100},
        "affectedUserPercent": {"2.4.1": 5.0, "2.4.0": 2.5},
    },
}

# Pies by carrier (both apps): the sample's carriers and crashes. Users per
# carrier (affectedUsers * 100 / affectedUserPercent): Cricket 1000, Wifi 1000,
# Verizon 300, T-Mobile 200, Sprint 200, unknown 200; AT&T has 0 affected users
# at 0 %, so its users cannot be derived.
CARRIER_PIE: dict[str, dict[str, int | float]] = {
    "crashes": {
        "Cricket Wireless": 40,
        "Wifi": 39,
        "Verizon Wireless": 24,
        "T-Mobile": 22,
        "Sprint": 18,
        "unknown": 13,
        "AT&T": 1,
    },
    "appLoads": {
        "Cricket Wireless": 1000,
        "Wifi": 2000,
        "Verizon Wireless": 600,
        "T-Mobile": 400,
        "Sprint": 600,
        "unknown": 300,
        "AT&T": 50,
    },
    "crashPercent": {
        "Cricket Wireless": 4.0,
        "Wifi": 1.95,
        "Verizon Wireless": 4.0,
        "T-Mobile": 5.5,
        "Sprint": 3.0,
        "unknown": 4.33,
        "AT&T": 2.0,
    },
    "affectedUsers": {
        "Cricket Wireless": 30,
        "Wifi": 20,
        "Verizon Wireless": 12,
        "T-Mobile": 10,
        "Sprint": 9,
        "unknown": 13,
        "AT&T": 0,
    },
    "affectedUserPercent": {
        "Cricket Wireless": 3.0,
        "Wifi": 2.0,
        "Verizon Wireless": 4.0,
        "T-Mobile": 5.0,
        "Sprint": 4.5,
        "unknown": 6.5,
        "AT&T": 0.0,
    },
}

# Service pies (both apps): the sample's services; latency is the sample's.
_SERVICES = [
    "auth.acmeshopios.example",
    "192.168.1.1",
    "cdn.acmeshopios.example",
    "graph.facebook.com",
    "Hotel WiFi Login",
    "api.acmeshopios.example",
]
SERVICE_PIE: dict[str, dict[str, int | float]] = {
    "latency": dict(
        zip(_SERVICES, [834.0, 828.0, 670.0, 632.0, 336.0, 237.0], strict=True)
    ),
    "dataIn": dict(
        zip(_SERVICES, [1.5e6, 2048, 9.25e7, 30500, 512, 4.4e6], strict=True)
    ),
    "dataOut": dict(
        zip(_SERVICES, [2.0e5, 1024, 1.1e4, 8000, 256, 9.9e5], strict=True)
    ),
    "volume": dict(zip(_SERVICES, [1200, 3, 5400, 310, 2, 8800], strict=True)),
    "errors": dict(zip(_SERVICES, [4, 0, 12, 1, 2, 31], strict=True)),
}


# --- Plumbing -------------------------------------------------------------------


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode()))


@dataclass
class Failure:
    mode: str
    path: str | None = None
    retry_after: str | None = None
    req_limit: str | None = None
    delay: float = 2.0


Answer = tuple[int, dict[str, str], bytes]


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Answer:
    return (
        status,
        {"Content-Type": "application/json", **(headers or {})},
        json.dumps(payload).encode(),
    )


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeApi/1.0"

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        request = Recorded(
            method=method,
            path=unquote(parts.path),
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
        )
        try:
            status, headers, payload = self.server.fake.handle(request)  # type: ignore[attr-defined]
        except Exception as exc:  # a bug of the fake: a 500 the test will see
            status, headers, payload = _json(500, {"fake error": repr(exc)})
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            pass  # the client gave up (a timeout test)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FakeApi:
    """A loopback HTTP server answering through ``route()``; see the module."""

    prefix = ""

    def __init__(self) -> None:
        self.now = SAMPLE_NOW
        self.requests: list[Recorded] = []
        self.failures: list[Failure] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.fake = self  # type: ignore[attr-defined]
        # A short poll: shutdown() waits up to one interval.
        self.thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.02},
            daemon=True,
        )

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stopping.set()  # wakes up "slow" answers
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def fail_next(
        self,
        mode: str,
        times: int = 1,
        *,
        path: str | None = None,
        retry_after: str | None = None,
        req_limit: str | None = None,
        delay: float = 2.0,
    ) -> None:
        """Make the next ``times`` requests (whose path contains ``path``) fail."""
        with self._lock:
            self.failures.extend(
                Failure(mode, path, retry_after, req_limit, delay) for _ in range(times)
            )

    def calls(self, path: str = "") -> list[Recorded]:
        """The requests received so far whose path contains ``path``."""
        with self._lock:
            return [request for request in self.requests if path in request.path]

    def handle(self, request: Recorded) -> Answer:
        with self._lock:
            self.requests.append(request)
            failure = next(
                (f for f in self.failures if f.path is None or f.path in request.path),
                None,
            )
            if failure is not None:
                self.failures.remove(failure)
        if failure is not None:
            if failure.mode == "slow":
                self._stopping.wait(failure.delay)
            else:
                return self._failure(failure, request)
        if not request.path.startswith(self.prefix + "/"):
            return _json(404, {"message": "not found"})
        return self.route(request, request.path[len(self.prefix) :])

    def route(self, request: Recorded, path: str) -> Answer:
        raise NotImplementedError

    def _failure(self, failure: Failure, request: Recorded) -> Answer:
        mode = failure.mode
        if mode == "401":
            return _json(401, {"error": "invalid_token"})
        headers = {}
        if failure.retry_after is not None:
            headers["Retry-After"] = failure.retry_after
        if failure.req_limit is not None:
            headers["Req-Limit-Short"] = failure.req_limit
        if mode == "429":
            return _json(429, {"error": "rate limit exceeded"}, headers)
        if mode.isdigit():
            headers["Content-Type"] = "text/plain"
            return int(mode), headers, b"Internal Server Error"
        if mode == "malformed":
            return 200, {"Content-Type": "application/json"}, b'{"data": {"slices": ['
        if mode == "not_json":
            return 200, {"Content-Type": "text/html"}, b"<html>Maintenance</html>"
        if mode == "wrong_shape":
            return _json(200, {"unexpected": ["shape"]})
        if mode == "echo":
            echoed = {
                "authorization": request.headers.get("authorization", ""),
                "body": request.body.decode(),
                "headers": request.headers,
            }
            return _json(400, {"request": echoed, "message": "bad request"})
        raise ValueError(f"unknown failure mode {mode!r}")


def _bad(message: str) -> Answer:
    return _json(400, {"message": message})


def _floor(moment: datetime, seconds: int) -> int:
    stamp = int(moment.timestamp())
    return stamp - stamp % seconds


# --- Apteligent -----------------------------------------------------------------


class FakeApteligent(FakeApi):
    """The Apteligent API v1.0: token, apps, graphs, pies, live stats."""

    prefix = "/v1.0"

    def __init__(self) -> None:
        super().__init__()
        self.username = "ops@acme.example"
        self.password = "pw-Xq7!secret"
        self.client_id = "cid-5f0e9a1b"
        self.expires_in = 3600
        self.tokens: list[str] = []  # issued, in order
        self._valid: set[str] = set()
        self.apps: dict[str, Any] = sample("apps")
        self.daily = copy.deepcopy(DAILY)
        # When set, ``daily_value(app_id, graph, day)`` is the value of each
        # day instead of the ``daily`` lists (None: no data that day); it may
        # read ``now`` to give a day in progress its value so far.
        self.daily_value: Callable[[str, str, date], int | float | None] | None = None
        # {app id: periodic_data}; an app missing here gets the sample's buckets,
        # shifted so that the last one has just completed at ``now``.
        self.live: dict[str, list[dict[str, int]]] = {}
        self.appversion_pies = copy.deepcopy(APPVERSION_PIES)
        self.carrier_pies = {app: copy.deepcopy(CARRIER_PIE) for app in (IOS, ANDROID)}
        self.service_pies = {app: copy.deepcopy(SERVICE_PIE) for app in (IOS, ANDROID)}

    def credentials(self) -> dict[str, str]:
        return {
            "username": self.username,
            "password": self.password,
            "client_id": self.client_id,
        }

    def context(self, **overrides: Any) -> FetchContext:
        """A context for this fake: its URL, credentials and now; prefix ``apps``."""
        options: dict[str, Any] = {
            "name": "fake apteligent",
            "base_url": self.base_url,
            "credentials": self.credentials(),
            "prefix": "apps",
            "now": self.now,
            **overrides,
        }
        return FetchContext(**options)

    def revoke_tokens(self) -> None:
        """Every token issued so far is refused from now on (an expiry)."""
        with self._lock:
            self._valid.clear()

    def live_buckets(self, app_id: str) -> list[dict[str, int]]:
        if app_id in self.live:
            return self.live[app_id]
        buckets = sample("liveStats-periodic")["periodic_data"]
        shift = (_floor(self.now, 10) - 10) * 1000 - buckets[-1]["time"]
        factor = 1 if app_id == IOS else 2
        return [
            {
                "time": bucket["time"] + shift,
                "app_loads": bucket["app_loads"] * factor,
                "app_errors": bucket["app_errors"] * factor,
                "app_exceptions": bucket["app_exceptions"] * factor,
            }
            for bucket in buckets
        ]

    def route(self, request: Recorded, path: str) -> Answer:
        if path == "/token" and request.method == "POST":
            return self._token(request)
        token = request.headers.get("authorization", "")
        with self._lock:
            valid = token.startswith("Bearer ") and token[7:] in self._valid
        if not valid:
            return _json(401, {"error": "invalid_token"})
        if path == "/apps" and request.method == "GET":
            if "appName" not in request.query.get("attributes", "").split(","):
                return _bad("attributes must include appName")
            return _json(200, self.apps)
        if request.method != "POST":
            return _json(404, {"message": "not found"})
        if path.startswith("/liveStats/periodic/"):
            return self._live(request, path.removeprefix("/liveStats/periodic/"))
        try:
            params = request.json["params"]
        except (ValueError, KeyError, TypeError):
            return _bad('the body must be JSON {"params": {...}}')
        if path == "/errorMonitoring/graph":
            return self._graph(params)
        if path == "/errorMonitoring/pie":
            return self._pie(params)
        if path == "/performanceManagement/pie":
            return self._services(params)
        return _json(404, {"message": "not found"})

    def _token(self, request: Recorded) -> Answer:
        expected = base64.b64encode(f"{self.client_id}:".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return _json(401, {"error": "invalid_client"})
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return _bad("the token request must be a form")
        form = request.form
        if (
            form.get("grant_type") != "password"
            or form.get("username") != self.username
            or form.get("password") != self.password
        ):
            return _json(400, {"error": "invalid_grant"})
        answer = sample("token")
        with self._lock:
            token = f"tok{len(self.tokens) + 1}-{answer['access_token']}"
            self.tokens.append(token)
            self._valid.add(token)
        answer.update(access_token=token, expires_in=self.expires_in)
        return _json(200, answer)

    def _graph(self, params: dict) -> Answer:
        graph, duration, app_id = (
            params.get(k) for k in ("graph", "duration", "appId")
        )
        if set(params) != {"graph", "duration", "appId"}:
            return _bad(f"unexpected params {sorted(params)}")
        if app_id not in self.daily:
            return _json(404, {"message": "no such app"})
        if graph not in self.daily[app_id]:
            return _bad(f"unknown graph {graph!r}")
        if not isinstance(duration, int) or duration < 1440 or duration % 1440:
            return _bad("duration must be whole days in minutes")
        days = duration // 1440
        # The API's days are UTC days: the last point is the UTC day in progress.
        today = self.now.astimezone(UTC).date()
        start = today - timedelta(days=days - 1)
        if self.daily_value is not None:
            values = [
                self.daily_value(app_id, graph, start + timedelta(days=i))
                for i in range(days)
            ]
        else:
            values = self.daily[app_id][graph][-days:]
            values = [None] * (days - len(values)) + values
        answer = sample("errorMonitoring-graph")
        answer["data"].update(
            start=f"{start.isoformat()}T00:00:00",
            end=f"{(today + timedelta(days=1)).isoformat()}T00:00:00",
        )
        answer["data"]["series"] = [{"name": graph, "points": values}]
        answer["params"] = params
        return _json(200, answer)

    def _pie(self, params: dict) -> Answer:
        if set(params) != {"graph", "duration", "appId", "groupBy"}:
            return _bad(f"unexpected params {sorted(params)}")
        group_by = params["groupBy"]
        tables = {"appVersion": self.appversion_pies, "carrier": self.carrier_pies}
        if group_by not in tables or params["duration"] != 1440:
            return _bad("groupBy must be appVersion or carrier, duration 1440")
        pies = tables[group_by].get(params["appId"])
        if pies is None:
            return _json(404, {"message": "no such app"})
        if params["graph"] not in pies:
            return _bad(f"unknown graph {params['graph']!r}")
        name = f"errorMonitoring-pie-{group_by}"
        return self._slices(name, params, pies[params["graph"]])

    def _services(self, params: dict) -> Answer:
        if set(params) != {"appIds", "graph", "duration", "groupBy"}:
            return _bad(f"unexpected params {sorted(params)}")
        if params["groupBy"] != "service" or params["duration"] != 15:
            return _bad("groupBy must be service, duration 15")
        app_ids = params["appIds"]
        if not isinstance(app_ids, list) or len(app_ids) != 1:
            return _bad("appIds must be a list of one app id")
        pies = self.service_pies.get(app_ids[0])
        if pies is None:
            return _json(404, {"message": "no such app"})
        if params["graph"] not in pies:
            return _bad(f"unknown graph {params['graph']!r}")
        return self._slices(
            "performanceManagement-pie-service", params, pies[params["graph"]]
        )

    def _slices(self, name: str, params: dict, pie: dict[str, int | float]) -> Answer:
        answer = sample(name)
        answer["data"]["slices"] = [
            {"label": label, "value": value} for label, value in pie.items()
        ]
        answer["params"] = params
        return _json(200, answer)

    def _live(self, request: Recorded, app_id: str) -> Answer:
        if request.query != {"app_version": "total", "initialize": "1"}:
            return _bad("expected ?app_version=total&initialize=1")
        if app_id not in self.apps:
            return _json(404, {"message": "no such app"})
        return _json(200, {"success": 1, "periodic_data": self.live_buckets(app_id)})


# --- Pingdom --------------------------------------------------------------------

CHECKS = [
    {
        "id": 85975,
        "name": "Web shop",
        "hostname": "shop.acme.example",
        "status": "up",
        "resolution": 1,
        "type": "http",
        "created": 1700000000,
        "lasttesttime": 1795329600,
        "lastresponsetime": 355,
    },
    {
        "id": 161748,
        "name": "API / health",
        "hostname": "api.acme.example",
        "status": "down",
        "resolution": 1,
        "type": "http",
        "created": 1700000100,
        "lasttesttime": 1795329580,
        "lastresponsetime": 0,
    },
]


def result_status(minute: int) -> str:
    """The status of the fake's result in a given minute (a few are not up)."""
    if minute % 11 == 3:
        return "down"
    if minute % 13 == 5:
        return "unconfirmed_down"
    if minute % 17 == 7:
        return "unknown"
    return "up"


class FakePingdom(FakeApi):
    """The Pingdom API 3.1: checks, raw results, average response times."""

    prefix = "/api/3.1"

    def __init__(self) -> None:
        super().__init__()
        self.token = "pdm-7Ghq2-secret-token"
        self.checks: list[dict[str, Any]] = copy.deepcopy(CHECKS)
        # {check id: results}; a check missing here gets one result a minute
        # for ``result_minutes`` minutes up to ``now`` (see ``results_of``).
        self.results: dict[int, list[dict[str, Any]]] = {}
        self.result_minutes = 30
        # (remaining, seconds until reset) sent on every answer.
        self.req_limit_short = (394, 3589)
        self.req_limit_long = (47950, 2589)

    def credentials(self) -> dict[str, str]:
        return {"token": self.token}

    def context(self, **overrides: Any) -> FetchContext:
        options: dict[str, Any] = {
            "name": "fake pingdom",
            "base_url": self.base_url,
            "credentials": self.credentials(),
            "prefix": "ops",
            "now": self.now,
            **overrides,
        }
        return FetchContext(**options)

    def results_of(self, check_id: int) -> list[dict[str, Any]]:
        """The check's results, newest first."""
        if check_id in self.results:
            return sorted(self.results[check_id], key=lambda r: -r["time"])
        # Each check tests at its own second of the minute.
        second = 7 if check_id == CHECKS[0]["id"] else 23
        last = _floor(self.now, 60) + second
        if last > self.now.timestamp():
            last -= 60
        found = []
        for k in range(self.result_minutes):
            stamp = last - 60 * k
            minute = stamp // 60
            status = result_status(minute)
            found.append(
                {
                    "probeid": 33 + k % 5,
                    "time": stamp,
                    "status": status,
                    "responsetime": 200 + minute % 97 * 3 if status == "up" else 0,
                    "statusdesc": "OK" if status == "up" else "Timeout",
                    "statusdesclong": "OK" if status == "up" else "Timeout (> 30s)",
                }
            )
        return found

    def _limits(self) -> dict[str, str]:
        short, long = self.req_limit_short, self.req_limit_long
        return {
            "Req-Limit-Short": f"Remaining: {short[0]}, Time until reset: {short[1]}",
            "Req-Limit-Long": f"Remaining: {long[0]}, Time until reset: {long[1]}",
        }

    def route(self, request: Recorded, path: str) -> Answer:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _json(
                401,
                {
                    "error": {
                        "statuscode": 401,
                        "statusdesc": "Unauthorized",
                        "errormessage": "Invalid token",
                    }
                },
            )
        if request.method != "GET":
            return _json(405, {"message": "method not allowed"})
        checks = {check["id"]: check for check in self.checks}
        head, _, tail = path.rpartition("/")
        if path == "/checks":
            counts = {"total": len(checks), "limited": len(checks), "filtered": 0}
            payload: Any = {"checks": self.checks, "counts": counts}
        elif head in ("/results", "/summary.average"):
            if not tail.isdigit() or int(tail) not in checks:
                return _json(404, {"message": "no such check"})
            try:
                query = {key: int(value) for key, value in request.query.items()}
            except ValueError:
                return _bad("parameters must be integers")
            if head == "/results":
                answer = self._results(int(tail), query)
                if isinstance(answer, tuple):
                    return answer
                payload = answer
            else:
                payload = self._average(int(tail), query)
        else:
            return _json(404, {"message": "not found"})
        return _json(200, payload, self._limits())

    def _results(self, check_id: int, query: dict[str, int]) -> dict | Answer:
        to = query.get("to", int(self.now.timestamp()))
        since = query.get("from", to - 86400)
        limit, offset = query.get("limit", 1000), query.get("offset", 0)
        if not 0 < limit <= 1000 or not 0 <= offset <= 43200:
            return _bad("limit must be 1..1000, offset 0..43200")
        found = [r for r in self.results_of(check_id) if since <= r["time"] <= to]
        return {
            "results": found[offset : offset + limit],
            "activeprobes": sorted({r["probeid"] for r in found if "probeid" in r}),
        }

    def _average(self, check_id: int, query: dict[str, int]) -> dict:
        since, to = query["from"], query["to"]
        times = [
            r["responsetime"]
            for r in self.results_of(check_id)
            if since <= r["time"] <= to and r.get("status") == "up"
        ]
        average = round(sum(times) / len(times)) if times else 0
        return {
            "summary": {
                "responsetime": {"from": since, "to": to, "avgresponse": average}
            }
        }


# --- Fixtures -------------------------------------------------------------------


@dataclass
class Sleeps:
    """An injectable ``sleep`` that records the delays and returns at once."""

    delays: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)

    @property
    def total(self) -> float:
        return sum(self.delays)


@pytest.fixture
def fake_apteligent() -> Iterator[FakeApteligent]:
    fake = FakeApteligent()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def fake_pingdom() -> Iterator[FakePingdom]:
    fake = FakePingdom()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def locmem_cache(settings) -> Iterator[None]:
    """Django's cache in this process's memory: token-cache tests need no DB."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "importers-tests",
        }
    }
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()
