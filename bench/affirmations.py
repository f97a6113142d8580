"""Affirmations: the checker pass against a large history, PostgreSQL.

Sets up its own portal: a fresh PostgreSQL database (``affirm_bench``, migrated,
dropped at the end), a temporary VAR_DIR, DEBUG=0, Django set up in this process
with DATABASE_URL pointing at it. Then:

1. ``--checks`` checks (ORM ``bulk_create``) over ``--names`` event names
   (``event-0000`` …), lookbacks of 20 min, 1 h, 5 h, 1 d and 3 d in turn, various
   schedules. The first ``--due`` of them run ``0 * * * *`` and are *armed*: their
   ``next_occurrence`` is set with SQL to the top of the hour before the measured
   ``now`` (``now`` is that hour + 10 min; the default grace is 5 min), so each
   pass evaluates exactly one occurrence of each. All others get, with SQL, their
   real next occurrence after ``now`` (not due). One due check in ten is a "must
   not happen" rule (max 0) and one in ten asks for a million events: those fail
   and write a flip, the rest pass.
2. For each size in ``--affirmations`` (cumulative: the table grows to it), the
   affirmations are loaded with ``INSERT … SELECT … FROM generate_series``: names
   in turn, ``occurred_at`` spread evenly over the ``--days`` before ``now`` (a
   golden-ratio sequence, so every size is uniform), ``received_at`` 2 s later.
   The secondary indexes are dropped for the load and rebuilt after it, then
   ``VACUUM (ANALYZE)`` (this PostgreSQL runs with autovacuum off).
3. ``EXPLAIN (ANALYZE, BUFFERS)`` of one evaluation's count (the SQL Django sends,
   3 d lookback); the script fails if the plan does not use the
   ``(name, occurred_at)`` index.
4. ``services.evaluate_due(now=now)``: one first pass (the history's pages not
   yet in shared buffers), then ``--repeat`` timed passes; before each the due
   checks are re-armed (their ``next_occurrence``/``next_due_at``/status reset,
   their evaluations and flips deleted). Every pass must evaluate exactly
   ``--due`` checks with no error. Then one pass under ``CaptureQueriesContext``
   (queries per pass, per due check, and the time Django measured around each
   kind of statement) and one under cProfile (where the pass's time goes); these
   two are not counted.

Ingest (unless ``--skip-ingest``; skipped with a note when the endpoints are not
routed), after the evaluation, on the same database: gunicorn
(``portal.wsgi:application``, ``--workers`` sync workers, 4 by default,
``AFFIRMATIONS_OPEN_COMPAT=1``) as a child on a free loopback port, and an API key
from ``manage.py create_api_key NAME --scope affirmations:write`` (its stdout is the
key alone). ``--clients`` clients (16; threads in ``--procs`` processes) post
``--single-requests`` one-event or ``--batch-requests`` fifty-event requests each
to ``POST /affirmative/store`` (the original's body) and to ``POST
/api/v1/affirmations/affirm/`` (``X-Api-Key``), one after another, each on a
connection of its own (gunicorn's sync workers close it after every answer):
``--http raw`` (the default) writes the request in one piece on a socket and reads
until the close; ``--http httplib`` uses http.client, as the figures before
2026-12-04 evening did (about 0.1 ms more of the shared cores a POST). Printed per
run: events/s (events sent / time until the last response), POST/s, the clients'
p50/p99 latency, events sent and counted back in the database (each run has its
own event names), and the CPU a POST took in gunicorn (master and workers), in
PostgreSQL (every postgres process) and in the load processes, from /proc. A lost
event or a non-2xx answer makes the script exit 1. ``--scenarios 2,4`` runs only
some (1-4: store 1 and 50 events, API 1 and 50). ``--profile-ingest N`` first runs
N fifty-event store POSTs in-process (Django's test client) under cProfile.

    .venv/bin/python bench/affirmations.py [--checks 10000]
        [--affirmations 1000000,10000000] [--due 1000] [--repeat 5]
        [--names 1000] [--days 90] [--top 25] [--skip-ingest]
        [--skip-evaluation] [--clients 16] [--workers 4]
        [--single-requests 200] [--batch-requests 60] [--ingest-repeat 3]
        [--http raw|httplib] [--scenarios 1,2,3,4] [--profile-ingest N]

The script stops every process it started, by PID, and drops its database even
when interrupted.
"""

from __future__ import annotations

import argparse
import cProfile
import http.client
import io
import json
import multiprocessing as mp
import os
import platform
import pstats
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import (
    STARTED,
    _stop,
    children_of,
    cleanup,
    cpu_seconds,
    create_database,
    delta,
    free_port,
    machine_busy,
    percentile,
    postgres_pids,
    setup_django,
    stop,
)

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/affirm_bench"
LOOKBACKS = [
    timedelta(minutes=20),
    timedelta(hours=1),
    timedelta(hours=5),
    timedelta(days=1),
    timedelta(days=3),
]
DUE_SCHEDULE = "0 * * * *"
# Schedules of the checks that are not due at ``now`` (their real next occurrence).
OTHER_SCHEDULES = [
    "*/15 * * * *",
    "0 * * * *",
    "30 2 * * *",
    "0 9 * * 1-5",
    "0 0 * * 0",
    "*/5 * * * *",
    "0 6,18 * * *",
    "15 3 1 * *",
]
LONGEST = "3 d"
GOLDEN = 0.6180339887498949


# --- Set-up ---------------------------------------------------------------------


def portal_env(var_dir: str, database_url: str) -> None:
    """Point this process at the throw-away portal."""
    for name in ("REDIS_URL", "PACKAGES_RUNS_DIR", "PACKAGES_ENVS_DIR", "STATIC_ROOT"):
        os.environ.pop(name, None)
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "DATABASE_URL": database_url,
            "VAR_DIR": var_dir,
            "DEBUG": "0",
            "SECRET_KEY": "bench-" + uuid.uuid4().hex + uuid.uuid4().hex,
            "ALLOWED_HOSTS": "127.0.0.1",
            "LOG_LEVEL": "WARNING",
        }
    )


def sql(statement: str, params=None, *, fetch: bool = False):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if fetch else None


def measured_now() -> datetime:
    """The top of the current UTC hour + 10 min: the armed occurrence (the top of
    the hour) plus the default 5 min grace is due, the next one is not."""
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return hour + timedelta(minutes=10)


def create_checks(*, checks: int, due: int, names: int, now: datetime) -> None:
    from affirmations.models import Check
    from affirmations.schedule import next_occurrence

    rows = []
    for i in range(checks):
        is_due = i < due
        if is_due and i % 10 == 0:
            min_count, max_count = 0, 0  # must not happen: fails
        elif is_due and i % 10 == 1:
            min_count, max_count = 1_000_000, None  # fails
        else:
            min_count, max_count = 1, None
        rows.append(
            Check(
                name=f"event-{i % names:04d}",
                description="bench-due" if is_due else "",
                schedule=(
                    DUE_SCHEDULE
                    if is_due
                    else OTHER_SCHEDULES[i % len(OTHER_SCHEDULES)]
                ),
                lookback=LOOKBACKS[i % len(LOOKBACKS)],
                min_count=min_count,
                max_count=max_count,
                status=Check.Status.PASSING,
            )
        )
    Check.objects.bulk_create(rows, batch_size=1000)
    # Not due: each at its schedule's real next occurrence after now.
    for schedule in OTHER_SCHEDULES:
        occurrence = next_occurrence(schedule, "UTC", now)
        sql(
            "UPDATE affirmations_check SET next_occurrence = %s,"
            " next_due_at = %s + grace WHERE schedule = %s AND description = ''",
            [occurrence, occurrence, schedule],
        )


def arm(*, due: int, now: datetime) -> None:
    """The due checks back at the top of the hour before now; their evaluations
    and flips gone (no other check is evaluated by a pass)."""
    hour = now.replace(minute=0, second=0, microsecond=0)
    sql("DELETE FROM affirmations_flip")
    sql("DELETE FROM affirmations_evaluation")
    sql(
        "UPDATE affirmations_check SET next_occurrence = %s, next_due_at = %s + grace,"
        " status = 'passing', consecutive_failures = 0, last_evaluated_at = NULL,"
        " last_alert_at = NULL, last_error = '' WHERE description = 'bench-due'",
        [hour, hour],
    )
    [(count,)] = sql(
        "SELECT count(*) FROM affirmations_check WHERE next_due_at <= %s",
        [now],
        fetch=True,
    )
    if count != due:
        raise SystemExit(f"armed {count} due checks, expected {due}")


def secondary_indexes() -> list[tuple[str, str]]:
    return sql(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename ="
        " 'affirmations_affirmation' AND indexname NOT LIKE '%_pkey'",
        fetch=True,
    )


def load_affirmations(
    *, first: int, last: int, names: int, days: int, now: datetime
) -> float:
    """Rows first..last (1-based) of the history; returns the seconds it took."""
    started = time.perf_counter()
    indexes = secondary_indexes()
    for name, _ in indexes:
        sql(f'DROP INDEX "{name}"')
    chunk = 1_000_000
    for lo in range(first, last + 1, chunk):
        hi = min(last, lo + chunk - 1)
        sql(
            "INSERT INTO affirmations_affirmation (name, data, truncated, source,"
            " occurred_at, client_time, received_at, remote_addr, note, user_id)"
            " SELECT 'event-' || lpad((g %% %(names)s)::text, 4, '0'), 'ok', false,"
            " 'api', t, NULL, t + interval '2 seconds', '127.0.0.1', '', NULL"
            " FROM generate_series(%(lo)s, %(hi)s) AS g,"
            " LATERAL (SELECT %(now)s::timestamptz - %(days)s * interval '1 day'"
            " * (g * %(golden)s - floor(g * %(golden)s)) AS t) AS x",
            {
                "names": names,
                "lo": lo,
                "hi": hi,
                "now": now,
                "days": days,
                "golden": GOLDEN,
            },
        )
        print(f"   loaded rows {lo:,}..{hi:,} ({time.perf_counter() - started:.0f} s)")
    sql("SET maintenance_work_mem = '1GB'")
    for _, definition in indexes:
        sql(definition)
    sql("VACUUM (ANALYZE) affirmations_affirmation")
    sql("VACUUM (ANALYZE) affirmations_check")
    return time.perf_counter() - started


# --- Measuring ------------------------------------------------------------------


def one_pass(*, due: int, now: datetime) -> float:
    from affirmations import services

    arm(due=due, now=now)
    started = time.perf_counter()
    summary = services.evaluate_due(now=now)
    elapsed = (time.perf_counter() - started) * 1000
    if summary.evaluated != due or summary.errors or summary.skipped:
        raise SystemExit(f"pass: {summary}, expected {due} evaluated and no error")
    return elapsed


def statement_kind(text: str) -> str:
    words = text.split()
    verb = words[0].upper() if words else "?"
    table = next((w.strip('"') for w in words if "affirmations_" in w), "")
    if verb == "SELECT" and "COUNT(" in text.upper():
        return f"SELECT COUNT(*) {table} (the window's count)"
    return f"{verb} {table}".strip()


def captured_pass(*, due: int, now: datetime) -> tuple[float, dict, int]:
    """A pass with every round trip timed: each statement (an execute_wrapper)
    and each COMMIT (psycopg2 sends BEGIN with the first statement, not apart);
    also the query count CaptureQueriesContext sees."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from affirmations import services

    arm(due=due, now=now)
    kinds: dict[str, list[float]] = defaultdict(list)

    def timed(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            kinds[statement_kind(sql)].append((time.perf_counter() - started) * 1000)

    commit = connection._commit

    def timed_commit():
        started = time.perf_counter()
        try:
            return commit()
        finally:
            kinds["COMMIT"].append((time.perf_counter() - started) * 1000)

    connection._commit = timed_commit
    connection.queries_log.clear()  # a deque of 9,000: the count must fit
    try:
        with (
            CaptureQueriesContext(connection) as ctx,
            connection.execute_wrapper(timed),
        ):
            started = time.perf_counter()
            services.evaluate_due(now=now)
            elapsed = (time.perf_counter() - started) * 1000
    finally:
        del connection._commit
    captured = sum(1 for q in ctx.captured_queries if q["sql"] != "BEGIN")
    return elapsed, kinds, captured


def explain_count(*, now: datetime) -> tuple[str, str, float]:
    """EXPLAIN (ANALYZE, BUFFERS) of the count a due check with the longest
    lookback sends; the plan, the index it must use, and its execution ms."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from affirmations.models import Affirmation, Check

    check = (
        Check.objects.filter(description="bench-due", lookback=max(LOOKBACKS))
        .order_by("id")
        .first()
    )
    occurrence = now.replace(minute=0, second=0, microsecond=0)
    start, end = check.window_for(occurrence)
    with CaptureQueriesContext(connection) as ctx:
        Affirmation.objects.in_window(
            check.name, start, end, received_by=occurrence + check.grace
        ).count()
    query = ctx.captured_queries[-1]["sql"]
    rows = sql(f"EXPLAIN (ANALYZE, BUFFERS) {query}", fetch=True)
    plan = "\n".join(row[0] for row in rows)
    [(index,)] = sql(
        "SELECT indexname FROM pg_indexes WHERE tablename = 'affirmations_affirmation'"
        " AND indexdef LIKE '%(name, occurred_at%'",
        fetch=True,
    )
    execution = next(
        (float(line.split()[2]) for line in plan.splitlines() if "Execution" in line),
        float("nan"),
    )
    return plan, index, execution


# Where cProfile's time goes, by layer: (label, test on (file, line, function)).
LAYERS = [
    ("psycopg2: execute, commit (waiting)", lambda f: "psycopg2" in f[2]),
    ("cronsim / zoneinfo", lambda f: "cronsim" in f[0] or "zoneinfo" in f[0]),
    ("Django ORM: query building, compiling", lambda f: "django/db/models" in f[0]),
    ("Django db backend: cursor, transactions", lambda f: "django/db" in f[0]),
    ("Django other", lambda f: "django" in f[0]),
    ("affirmations code", lambda f: "affirmations" in f[0]),
]


def layer_of(func: tuple) -> str:
    for label, test in LAYERS:
        if test(func):
            return label
    return "other (stdlib, builtins)"


def profiled_pass(*, due: int, now: datetime, top: int) -> None:
    from affirmations import services

    arm(due=due, now=now)
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.runcall(services.evaluate_due, now=now)
    elapsed = (time.perf_counter() - started) * 1000
    stats = pstats.Stats(profile)
    layers: dict[str, float] = defaultdict(float)
    for func, (_, _, tottime, _, _) in stats.stats.items():
        layers[layer_of(func)] += tottime * 1000
    total = sum(layers.values())
    print(
        f"   cProfile of one pass: {elapsed:.0f} ms wall under the profiler,"
        f" {total:.0f} ms in functions; own time by layer:"
    )
    for label, ms in sorted(layers.items(), key=lambda item: -item[1]):
        print(
            f"     {label:<46} {ms:7.1f} ms  {ms / total:4.0%}  {ms / due:.3f} ms/check"
        )
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(top)
    print("   top functions by own time:")
    body = out.getvalue().split("ncalls", 1)[-1]
    print("     ncalls" + body.rstrip().replace("\n", "\n     "))


def measure(args, size: int, now: datetime) -> dict:
    print(f"\n== {size:,} affirmations")
    plan, index, explain_ms = explain_count(now=now)
    print(f"   EXPLAIN (ANALYZE, BUFFERS) of the count, {LONGEST} lookback:")
    print("     " + plan.replace("\n", "\n     "))
    if index not in plan:
        raise SystemExit(f"the count does not use {index}")
    first = one_pass(due=args.due, now=now)
    times = [one_pass(due=args.due, now=now) for _ in range(args.repeat)]
    print(
        "   passes (ms): first "
        f"{first:.0f}; then " + ", ".join(f"{t:.0f}" for t in times)
    )
    captured_ms, kinds, captured = captured_pass(due=args.due, now=now)
    queries = sum(len(v) for k, v in kinds.items() if k != "COMMIT")
    trips = sum(len(v) for v in kinds.values())
    sql_ms = sum(sum(v) for v in kinds.values())
    print(
        f"   one pass, every round trip timed: {captured_ms:.0f} ms; {captured}"
        f" queries in CaptureQueriesContext (BEGIN not counted), {queries}"
        f" statements + {trips - queries} commits = {trips} round trips"
        f" ({trips / args.due:.2f} per due check), {sql_ms:.0f} ms waiting on"
        f" them, {captured_ms - sql_ms:.0f} ms in Python"
    )
    [(evaluations, observed, passed, flips)] = sql(
        "SELECT count(*), sum(observed), count(*) FILTER (WHERE passed),"
        " (SELECT count(*) FROM affirmations_flip) FROM affirmations_evaluation",
        fetch=True,
    )
    print(
        f"   its results: {evaluations} evaluations, {passed} passed, observed"
        f" counts summing to {observed:,}, {flips} flips"
    )
    for kind, values in sorted(kinds.items(), key=lambda item: -sum(item[1])):
        print(
            f"     {len(values):6d} × {kind:<52} {sum(values):7.1f} ms"
            f"  {statistics.mean(values):.3f} ms each"
        )
    profiled_pass(due=args.due, now=now, top=args.top)
    return {
        "size": size,
        "first": first,
        "median": statistics.median(times),
        "p90": percentile(times, 90),
        "queries": captured,
        "trips": trips,
        "sql_ms": sql_ms,
        "captured_ms": captured_ms,
        "explain_ms": explain_ms,
    }


def ingest_endpoints() -> list[str]:
    """The ingest endpoints this checkout routes (empty: not built yet)."""
    from django.urls import Resolver404, resolve

    found = []
    for path in (COMPAT_PATH, API_PATH):
        try:
            resolve(path)
            found.append(path)
        except Resolver404:
            pass
    return found


# --- Ingest: gunicorn, 16 clients -------------------------------------------------

COMPAT_PATH = "/affirmative/store"
API_PATH = "/api/v1/affirmations/affirm/"
# (label, path, events per request)
SCENARIOS = [
    ("compat store, 1 event/POST", COMPAT_PATH, 1),
    ("compat store, 50 events/POST", COMPAT_PATH, 50),
    ("API affirm, 1 event/POST", API_PATH, 1),
    ("API affirm, 50 events/POST", API_PATH, 50),
]


def start_server(tmp: str, workers: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    log = Path(tmp) / "gunicorn.log"
    proc = subprocess.Popen(
        [
            str(VENV_BIN / "gunicorn"),
            "portal.wsgi:application",
            "--chdir",
            str(ROOT),
            "--bind",
            f"127.0.0.1:{port}",
            "--error-logfile",
            str(log),
            "--log-level",
            "warning",
            "--worker-class",
            "sync",
            "--workers",
            str(workers),
        ],
        stdin=subprocess.DEVNULL,
    )
    STARTED.append(proc)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gunicorn exited ({proc.returncode}):\n{log.read_text()}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", COMPAT_PATH)
            conn.getresponse().read()
            conn.close()
            while len(children_of(proc.pid)) < workers:
                if time.monotonic() > deadline:
                    raise SystemExit(f"gunicorn did not start {workers} workers")
                time.sleep(0.05)
            return proc, port
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"gunicorn did not answer on port {port}")


def body_for(path: str, name: str, size: int) -> bytes:
    if path == COMPAT_PATH:  # as the original's clients: epoch time, an env key
        now = int(time.time())
        events = [{"name": name, "data": "ok", "time": now} for _ in range(size)]
        return json.dumps({"events": events, "env": "bench"}).encode()
    if size == 1:
        return json.dumps({"name": name, "data": "ok"}).encode()
    return json.dumps({"events": [{"name": name, "data": "ok"}] * size}).encode()


def raw_post(port: int, path: str, headers: dict, body: bytes) -> tuple[int, bytes]:
    """One POST on a connection of its own, as lean as a client can be: the request
    written in one piece, the answer read until gunicorn's sync worker closes the
    connection (it always does), no header parsing beyond the status line."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{head}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    answer = b"".join(chunks)
    return int(answer[9:12]), answer.partition(b"\r\n\r\n")[2]


def httplib_post(conn, path: str, headers: dict, body: bytes) -> tuple[int, bytes]:
    conn.request("POST", path, body, headers)
    response = conn.getresponse()
    data = response.read()
    if response.will_close:
        conn.close()
    return response.status, data


def client(port, path, headers, name, size, requests, transport, go, out) -> None:
    """One client: its requests one after another (``transport``: "raw" sockets, or
    http.client's connection, reopened when the sync worker closes it)."""
    latencies, errors = [], []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    go.wait()
    for _ in range(requests):
        body = body_for(path, name, size)
        started = time.monotonic()
        try:
            if transport == "raw":
                status, data = raw_post(port, path, headers, body)
            else:
                status, data = httplib_post(conn, path, headers, body)
        except OSError as exc:
            errors.append(repr(exc))
            conn.close()
            continue
        latencies.append((time.monotonic() - started) * 1000)
        if status not in (200, 201):
            errors.append(f"{status} {data[:200]!r}")
    conn.close()
    out.append((latencies, errors, time.monotonic()))


def load_process(
    port, path, headers, names, size, requests, transport, ready, go, queue
):
    out: list = []
    threads = [
        threading.Thread(
            target=client,
            args=(port, path, headers, name, size, requests, transport, go, out),
        )
        for name in names
    ]
    cpu = os.times()
    for thread in threads:
        thread.start()
    ready.set()
    for thread in threads:
        thread.join()
    latencies = [ms for lat, _, _ in out for ms in lat]
    errors = [e for _, errs, _ in out for e in errs]
    after = os.times()
    used = after.user + after.system - cpu.user - cpu.system
    queue.put((latencies, errors, max(end for _, _, end in out), used))


def ingest_run(server, port, path, headers, size, args, run) -> dict:
    """``args.clients`` clients over ``args.procs`` processes; the CPU each side
    used per POST from /proc (gunicorn and its workers, every PostgreSQL process,
    the load processes' own os.times())."""
    from affirmations.models import Affirmation

    clients, procs = args.clients, args.procs
    requests = args.single_requests if size == 1 else args.batch_requests
    ctx = mp.get_context("fork")
    names = [f"ingest-{run}-{i:02d}" for i in range(clients)]
    go, queue = ctx.Event(), ctx.Queue()
    workers = []
    for part in range(procs):
        ready = ctx.Event()
        proc = ctx.Process(
            target=load_process,
            args=(port, path, headers, names[part::procs], size, requests, args.http),
            kwargs={"ready": ready, "go": go, "queue": queue},
        )
        proc.start()
        workers.append((proc, ready))
    for _, ready in workers:
        ready.wait(60)
    server_pids = [server.pid, *children_of(server.pid)]
    server_before = cpu_seconds(server_pids)
    pg_before = cpu_seconds(postgres_pids())
    busy_before = machine_busy()
    started = time.monotonic()
    go.set()
    results = [queue.get(timeout=600) for _ in workers]
    server_after = cpu_seconds(server_pids)
    pg_after = cpu_seconds(postgres_pids())
    busy_after = machine_busy()
    for proc, _ in workers:
        proc.join(60)
    latencies = [ms for lat, *_ in results for ms in lat]
    errors = [e for _, errs, *_ in results for e in errs]
    elapsed = max(end for _, _, end, _ in results) - started
    posts = clients * requests
    sent = posts * size
    stored = Affirmation.objects.filter(name__in=names).count()
    per_post = 1000 / posts
    busy = (busy_after[0] - busy_before[0]) / (busy_after[1] - busy_before[1])
    return {
        "events_s": sent / elapsed,
        "requests_s": posts / elapsed,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "sent": sent,
        "stored": stored,
        "errors": errors,
        "cpu_server": delta(server_before, server_after) * per_post,
        "cpu_postgres": delta(pg_before, pg_after) * per_post,
        "cpu_load": sum(used for *_, used in results) * per_post,
        "busy": busy,
    }


def profile_ingest(requests: int, top: int) -> None:
    """cProfile of ``requests`` 50-event POSTs to the store, in-process through
    Django's test client (the whole middleware stack, no gunicorn)."""
    from django.db import connection
    from django.test import Client, override_settings

    client = Client(SERVER_NAME="127.0.0.1")
    bodies = [body_for(COMPAT_PATH, f"profile-{i % 16}", 50) for i in range(requests)]
    profile = cProfile.Profile()
    trips = 0

    def counted(execute, sql, params, many, context):
        nonlocal trips
        trips += 1
        return execute(sql, params, many, context)

    with (
        override_settings(AFFIRMATIONS_OPEN_COMPAT=True),
        connection.execute_wrapper(counted),
    ):
        started = time.perf_counter()
        for body in bodies:
            response = profile.runcall(
                client.post, COMPAT_PATH, body, content_type="application/json"
            )
            if response.status_code != 200:
                raise SystemExit(f"profile: {response.status_code} {response.content}")
        elapsed = (time.perf_counter() - started) * 1000
    stats = pstats.Stats(profile)
    wanted = {
        "json.loads": "loads",
        "parse_store": "parse_store",
        "_row (per event)": "_row",
        "_insert_rows": "_insert_rows",
        "affirm_batch": "affirm_batch",
    }
    cumulative = {}
    for label, function in wanted.items():
        cumulative[label] = sum(
            ct
            for (path, _, name), (_, _, _, ct, _) in stats.stats.items()
            if name == function and ("json" in path or function != "loads")
        )
    print(
        f"   cProfile, {requests} store POSTs of 50 events in-process (test client):"
        f" {elapsed / requests:.2f} ms a POST under the profiler,"
        f" {trips / requests:.1f} statements a POST (no commit counted); cumulative"
        " ms a POST: "
        + ", ".join(f"{k} {v * 1000 / requests:.2f}" for k, v in cumulative.items())
    )
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(top)
    body = out.getvalue().split("ncalls", 1)[-1]
    print("     ncalls" + body.rstrip().replace("\n", "\n     "))


def create_api_key() -> str:
    """``manage.py create_api_key``: the key alone on stdout, notes on stderr."""
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "manage.py"),
            "create_api_key",
            "bench-affirmations",
            "--scope",
            "affirmations:write",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1].strip()


def measure_ingest(args, tmp: str) -> tuple[list[dict], bool]:
    key = create_api_key()
    os.environ["AFFIRMATIONS_OPEN_COMPAT"] = "1"
    proc, port = start_server(tmp, args.workers)
    rows, ok = [], True
    try:
        chosen = {int(n) for n in args.scenarios.split(",")}
        for number, (label, path, size) in enumerate(SCENARIOS, 1):
            if number not in chosen:
                continue
            headers = {"Content-Type": "application/json"}
            if path == API_PATH:
                headers["X-Api-Key"] = key
            runs = []
            for repeat in range(args.ingest_repeat):
                run = f"{size}-{path.count('/')}-{repeat}"
                result = ingest_run(proc, port, path, headers, size, args, run)
                lost = result["sent"] - result["stored"]
                print(
                    f"   {label:<30} run {repeat + 1}: {result['events_s']:8.0f}"
                    f" events/s ({result['requests_s']:.0f} POST/s), p50"
                    f" {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms; sent"
                    f" {result['sent']:,}, stored {result['stored']:,}, errors"
                    f" {len(result['errors'])}; CPU ms a POST: gunicorn"
                    f" {result['cpu_server']:.2f}, PostgreSQL"
                    f" {result['cpu_postgres']:.2f}, load {result['cpu_load']:.2f};"
                    f" cores busy {result['busy']:.0%}"
                )
                for error in result["errors"][:5]:
                    print(f"        FAIL: {error}")
                if result["errors"] or lost:
                    ok = False
                    print(f"        FAIL: {lost} events lost")
                runs.append(result)
            best = sorted(runs, key=lambda r: r["events_s"])[len(runs) // 2]
            rows.append({"label": label, "size": size, **best})
    finally:
        stop(proc)
    return rows, ok


def evaluation(args, sizes: list[int], now: datetime) -> bool:
    create_checks(checks=args.checks, due=args.due, names=args.names, now=now)
    results = []
    loaded = 0
    for size in sizes:
        seconds = load_affirmations(
            first=loaded + 1, last=size, names=args.names, days=args.days, now=now
        )
        print(f"   {size - loaded:,} rows loaded, indexed, analyzed: {seconds:.0f} s")
        loaded = size
        results.append(measure(args, size, now))

    print(f"\n== Checker pass, {args.due:,} due of {args.checks:,} checks (ms)")
    print(
        f"   {'affirmations':>12}  {'first':>6}  {'median':>6}  {'p90':>6}"
        f"  {'queries':>7}  {'q/check':>7}  {'trips':>5}  {'sql ms':>6}"
        f"  {'count ms':>8}"
    )
    for r in results:
        print(
            f"   {r['size']:>12,}  {r['first']:6.0f}  {r['median']:6.0f}"
            f"  {r['p90']:6.0f}  {r['queries']:7d}  {r['queries'] / args.due:7.2f}"
            f"  {r['trips']:5d}  {r['sql_ms']:6.0f}  {r['explain_ms']:8.3f}"
        )
    print(
        "   (queries: CaptureQueriesContext, BEGIN not counted; trips: statements"
        " + commits; sql ms: waiting on them in the timed pass; count ms:"
        f" EXPLAIN ANALYZE execution of one {LONGEST} count)"
    )
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checks", type=int, default=10_000)
    parser.add_argument(
        "--affirmations",
        default="1000000,10000000",
        help="history sizes, ascending, e.g. 1000000,10000000",
    )
    parser.add_argument("--due", type=int, default=1000, help="due checks a pass")
    parser.add_argument("--repeat", type=int, default=5, help="timed passes a size")
    parser.add_argument("--names", type=int, default=1000, help="distinct events")
    parser.add_argument("--days", type=int, default=90, help="history spread")
    parser.add_argument("--top", type=int, default=25, help="profile lines")
    parser.add_argument(
        "--skip-ingest", action="store_true", help="evaluation only (no gunicorn)"
    )
    parser.add_argument(
        "--skip-evaluation", action="store_true", help="ingest only (no history)"
    )
    parser.add_argument("--clients", type=int, default=16, help="ingest clients")
    parser.add_argument("--procs", type=int, default=2, help="load processes")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers")
    parser.add_argument(
        "--single-requests", type=int, default=200, help="1-event POSTs per client"
    )
    parser.add_argument(
        "--batch-requests", type=int, default=60, help="50-event POSTs per client"
    )
    parser.add_argument("--ingest-repeat", type=int, default=3, help="runs each")
    parser.add_argument(
        "--http",
        choices=["raw", "httplib"],
        default="raw",
        help="load clients: raw sockets (lean) or http.client (as earlier figures)",
    )
    parser.add_argument(
        "--scenarios",
        default="1,2,3,4",
        help="which ingest scenarios (1-4: store 1, store 50, API 1, API 50)",
    )
    parser.add_argument(
        "--profile-ingest",
        type=int,
        default=0,
        metavar="N",
        help="cProfile N 50-event store POSTs in-process first",
    )
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    args = parser.parse_args()
    sizes = [int(n) for n in args.affirmations.split(",")]
    if sizes != sorted(sizes) or args.due > args.checks:
        raise SystemExit("--affirmations must ascend; --due at most --checks")

    tmp = tempfile.mkdtemp(prefix="bench-affirm-")
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)
    begun = time.perf_counter()
    ok = True
    try:
        create_database(args.database_url)
        portal_env(tmp, args.database_url)
        setup_django()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        now = measured_now()
        [(buffers,)] = sql("SHOW shared_buffers", fetch=True)
        print(
            f"bench/affirmations.py: Python {platform.python_version()}, "
            f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; {args.checks:,}"
            f" checks ({args.due:,} due), {args.names:,} names, {args.days} days of"
            f" history; now = {now:%Y-%m-%d %H:%M} UTC; shared_buffers {buffers};"
            f" database {args.database_url}"
        )
        if not args.skip_evaluation:
            ok = evaluation(args, sizes, now)
        if not args.skip_ingest:
            found = ingest_endpoints()
            if len(found) < 2:
                print(
                    "\n== Ingest: not measured, the endpoints are not routed yet"
                    f" (found: {', '.join(found) or 'none'})"
                )
            else:
                print(
                    f"\n== Ingest: {args.clients} clients in {args.procs} processes,"
                    f" gunicorn sync:{args.workers}, AFFIRMATIONS_OPEN_COMPAT=1"
                    " (store), an affirmations:write API key (API)"
                )
                if args.profile_ingest:
                    profile_ingest(args.profile_ingest, args.top)
                rows, ingest_ok = measure_ingest(args, tmp)
                ok = ok and ingest_ok
                print(
                    f"\n   {'scenario':<30} {'events/s':>9} {'POST/s':>7}"
                    f" {'p50 ms':>7} {'p99 ms':>7} {'lost':>5}  (median run)"
                )
                for r in rows:
                    print(
                        f"   {r['label']:<30} {r['events_s']:9.0f}"
                        f" {r['requests_s']:7.0f} {r['p50']:7.1f} {r['p99']:7.1f}"
                        f" {r['sent'] - r['stored']:5d}"
                    )
        print(f"\ntotal {time.perf_counter() - begun:.0f} s")
    finally:
        cleanup(tmp, args.database_url)
    if not ok:
        print("FAILED: see the FAIL lines above", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
