"""Fleet load: simulated SLAMon agents against the portal under gunicorn, PostgreSQL.

Sets up its own portal: a fresh PostgreSQL database (``fleet_bench``, migrated,
dropped at the end), a temporary VAR_DIR, DEBUG=0, FLEET_OPEN_BPMS=1, and gunicorn
(``portal.wsgi:application``) as a child on a free loopback port. Then, for each
agent count and repeat, on emptied fleet tables:

1. register the agents (one poll each with ``max_tasks`` 0, not timed);
2. create ``--tasks`` tasks through ``POST /fleet/task`` from ``--creators``
   keep-alive connections: the *create rate*;
3. the agents drain the queue: each polls ``POST /fleet/tasks`` with
   ``max_tasks`` (``--max-tasks``), posts the result of each task it got at once
   (``POST /fleet/tasks/response``) and polls again, never sleeping on
   ``return_time``; *completed tasks/s* is the task count over the time from the
   start until the last result was recorded. Poll and result-post latencies are
   the agents' own (client side, p50/p99 in ms). The agents run as threads in
   ``--procs`` processes, each over its own persistent HTTP/1.1 connection
   (http.client; a server that closes after every response, like the sync
   worker, costs a reconnect per request);
4. the run is checked twice: from the agents' records (every created task id
   received exactly once across all agents, every result answered 200
   ``recorded``) and from the database (every task completed, with exactly one
   attempt, held by the agent that received it). A task received twice is a
   *double assignment*; one never received or not completed is *lost*. Any of
   them, or any HTTP error, makes the script exit 1 (after cleaning up).

Also printed, over each drain: the CPU time of the gunicorn processes, of all
PostgreSQL processes, of the load generator and the rest of the machine's busy
time ("other": the kernel, other processes), each per completed task, and how busy
the two cores were: the load generator shares them with the server, so these say
whether a figure is bound by CPU and whose.

Profiles (one more run each, with the largest agent count; not counted):

- ``--py-spy PATH``: py-spy (e.g. ``pip install py-spy`` into a temporary venv)
  samples every gunicorn worker through the drain, keeping only the thread
  holding the GIL (``--gil``: Python's own CPU, not the waits); the samples are
  shared out by layer (ORM query building, Django's request machinery, psycopg2,
  gunicorn, JSON, portal code), in ms of gunicorn CPU per task;
- ``--profile``: every request a worker handles runs under cProfile (wall
  clock, so under full load a wait for the CPU counts where it falls); prints
  the time per kind of request by layer, the psycopg2 calls per request (round
  trips, the connection health check's ``SELECT 1`` included), the top
  functions, and the SQL statements of one create, poll and result in-process.

    .venv/bin/python bench/fleet_load.py [--agents 1,10,50] [--tasks 2000]
        [--repeat 3] [--server sync:4] [--max-tasks 10]
        [--py-spy PATH] [--profile] [--root CHECKOUT]

``--server`` takes one or more comma-separated gunicorn setups, ``sync:W`` (W sync
workers) or ``gthread:WxT`` (W workers of T threads); each gets its own gunicorn
and every scenario. The default, 4 sync workers, did best on two cores (see
docs/benchmarks.md): no keep-alive, but no threads contending for the GIL
either. ``--root`` serves another checkout (a worktree with a change to compare)
with this venv. The script stops every process it started, by PID, and drops its
database even when interrupted.
"""

from __future__ import annotations

import argparse
import http.client
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
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from _common import (
    CLK_TCK,
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

# The checkout served and migrated (--root: e.g. a worktree with a patch to compare).
ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/fleet_bench"
JSON_HEADERS = {"Content-Type": "application/json"}
TASK_TYPE, TASK_VERSION = "wait", 1
# A run whose queue is not drained by then has lost tasks.
DRAIN_TIMEOUT = 120.0
BARRIER_TIMEOUT = 300.0

# Written next to the temporary VAR_DIR with --profile: every request a worker
# handles runs under a cProfile.Profile of its own thread and kind of request;
# each worker dumps its profiles when it exits (gunicorn's worker_exit hook).
PROFILE_CONFIG = """
import cProfile, json, os, pstats, threading

OUT = {out!r}
_profiles = {{}}
_counts = {{}}
_lock = threading.Lock()
_local = threading.local()


def _kind(path):
    path = path.rstrip("/")
    if path.endswith("/tasks"):
        return "poll"
    if path.endswith("/tasks/response"):
        return "result"
    if path.endswith("/task"):
        return "create"
    return "other"


def post_worker_init(worker):
    app = worker.wsgi

    def profiled(environ, start_response):
        kind = _kind(environ.get("PATH_INFO", ""))
        mine = getattr(_local, "profiles", None)
        if mine is None:
            mine = _local.profiles = {{}}
        prof = mine.get(kind)
        if prof is None:
            prof = mine[kind] = cProfile.Profile()
            with _lock:
                _profiles.setdefault(kind, []).append(prof)
        with _lock:
            _counts[kind] = _counts.get(kind, 0) + 1
        return prof.runcall(app, environ, start_response)

    worker.wsgi = profiled


def worker_exit(server, worker):
    with _lock:
        for kind, profs in _profiles.items():
            stats = pstats.Stats(profs[0])
            for prof in profs[1:]:
                stats.add(prof)
            stats.dump_stats(os.path.join(OUT, f"{{kind}}-{{os.getpid()}}.pstats"))
        with open(os.path.join(OUT, f"counts-{{os.getpid()}}.json"), "w") as f:
            json.dump(_counts, f)
"""


# --- Set-up ---------------------------------------------------------------------


def portal_env(var_dir: str, database_url: str) -> None:
    """Point this process (and gunicorn) at the throw-away portal."""
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
            "FLEET_OPEN_BPMS": "1",
            "LOG_LEVEL": "WARNING",
        }
    )


@dataclass
class Server:
    spec: str
    argv: list[str]
    port: int = 0
    proc: subprocess.Popen | None = None


def server_argv(spec: str) -> list[str]:
    kind, _, size = spec.partition(":")
    if kind == "sync":
        return ["--worker-class", "sync", "--workers", str(int(size or 3))]
    if kind == "gthread":
        workers, _, threads = (size or "3x4").partition("x")
        return [
            "--worker-class",
            "gthread",
            "--workers",
            str(int(workers)),
            "--threads",
            str(int(threads or 4)),
        ]
    raise SystemExit(f"--server: {spec!r} is not sync:W or gthread:WxT")


def start_server(spec: str, tmp: str, config: str | None = None) -> Server:
    server = Server(spec=spec, argv=server_argv(spec), port=free_port())
    argv = [
        str(VENV_BIN / "gunicorn"),
        "portal.wsgi:application",
        "--chdir",
        str(ROOT),
        "--bind",
        f"127.0.0.1:{server.port}",
        "--error-logfile",
        str(Path(tmp) / "gunicorn.log"),
        "--log-level",
        "warning",
        *server.argv,
    ]
    if config:
        argv += ["--config", config]
    server.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    STARTED.append(server.proc)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            log = (Path(tmp) / "gunicorn.log").read_text(errors="replace")
            raise SystemExit(f"gunicorn exited ({server.proc.returncode}):\n{log}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            conn.request("GET", "/fleet/status")
            response = conn.getresponse()
            response.read()
            conn.close()
            if response.status == 200:
                # Every worker up, so that no run pays for a boot.
                workers = int(server.argv[3])
                while len(server_pids(server)) < 1 + workers:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"gunicorn did not start {workers} workers")
                    time.sleep(0.05)
                return server
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"gunicorn did not answer /fleet/status on port {server.port}")


# --- /proc accounting -------------------------------------------------------------


def server_pids(server: Server) -> list[int]:
    return [server.proc.pid, *children_of(server.proc.pid)]


# --- The load generator (child processes) -----------------------------------------


class Connection(http.client.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.request("POST", path, body, JSON_HEADERS)
        response = self.getresponse()
        return response.status, response.read()


@dataclass
class Report:
    """What one load process saw, sent back to the coordinator."""

    received: dict[str, list[str]] = field(default_factory=dict)  # agent → task ids
    create_ms: list[float] = field(default_factory=list)
    poll_ms: list[float] = field(default_factory=list)
    result_ms: list[float] = field(default_factory=list)
    empty_polls: int = 0
    errors: list[str] = field(default_factory=list)
    last_result_at: float = 0.0
    cpu_seconds: float = 0.0


def create_tasks(port: int, task_ids: list[str], report: Report, lock) -> None:
    conn = Connection("127.0.0.1", port, timeout=60)
    test_id = str(uuid.uuid4())
    latencies = []
    try:
        for task_id in task_ids:
            body = json.dumps(
                {
                    "task_id": task_id,
                    "test_id": test_id,
                    "task_type": TASK_TYPE,
                    "task_version": TASK_VERSION,
                    "task_data": {"time": 0},
                }
            ).encode()
            started = time.perf_counter()
            status, data = conn.post("/fleet/task", body)
            latencies.append((time.perf_counter() - started) * 1000)
            if status != 200:
                with lock:
                    report.errors.append(f"create {task_id}: {status} {data[:200]!r}")
    except OSError as exc:
        with lock:
            report.errors.append(f"create: {exc!r}")
    finally:
        conn.close()
    with lock:
        report.create_ms.extend(latencies)


def poll_body(agent_id: str, max_tasks: int) -> bytes:
    return json.dumps(
        {
            "protocol": 1,
            "agent_id": agent_id,
            "agent_name": f"bench agent {agent_id[:8]}",
            "agent_time": "2026-12-04T10:00:00+00:00",
            "agent_capabilities": {TASK_TYPE: {"version": TASK_VERSION}},
            "max_tasks": max_tasks,
        }
    ).encode()


def run_agent(
    conn: Connection,
    agent_id: str,
    *,
    max_tasks: int,
    total: int,
    done,
    deadline: float,
    report: Report,
    lock,
) -> None:
    """Poll, post every result at once, poll again, until all tasks are done."""
    body = poll_body(agent_id, max_tasks)
    received, poll_ms, result_ms, errors = [], [], [], []
    empty = 0
    last = 0.0
    perf = time.perf_counter
    while time.monotonic() < deadline:
        started = perf()
        try:
            status, data = conn.post("/fleet/tasks", body)
        except OSError as exc:
            errors.append(f"poll {agent_id}: {exc!r}")
            conn.close()
            continue
        poll_ms.append((perf() - started) * 1000)
        if status != 200:
            errors.append(f"poll {agent_id}: {status} {data[:200]!r}")
            continue
        tasks = json.loads(data)["tasks"]
        if not tasks:
            empty += 1
            if done.value >= total:
                break
            continue
        for task in tasks:
            task_id = task["task_id"]
            received.append(task_id)
            result = (
                b'{"protocol":1,"task_id":"%s","task_data":{"time":0}}'
                % task_id.encode()
            )
            for _attempt in range(2):  # a result may be posted again: idempotent
                started = perf()
                try:
                    status, data = conn.post("/fleet/tasks/response", result)
                    break
                except OSError as exc:
                    conn.close()
                    status, data = 0, repr(exc).encode()
            finished = perf()
            result_ms.append((finished - started) * 1000)
            with done.get_lock():  # counted either way: the checks find the rest
                done.value += 1
            if status != 200 or b'"recorded"' not in data:
                errors.append(f"result {task_id}: {status} {data[:200]!r}")
                continue
            last = finished
    else:
        errors.append(f"agent {agent_id}: queue not drained in {DRAIN_TIMEOUT:.0f} s")
    with lock:
        report.received[agent_id] = received
        report.poll_ms.extend(poll_ms)
        report.result_ms.extend(result_ms)
        report.empty_polls += empty
        report.errors.extend(errors)
        report.last_result_at = max(report.last_result_at, last)


def load_process(
    port: int,
    agent_ids: list[str],
    create_shares: list[list[str]],
    *,
    max_tasks: int,
    total: int,
    done,
    barrier,
    queue,
) -> None:
    report = Report()
    lock = threading.Lock()

    def threads(target, items) -> None:
        def guarded(item) -> None:
            try:
                target(item)
            except Exception as exc:  # the run fails, with the reason
                with lock:
                    report.errors.append(f"load thread: {exc!r}")

        workers = [threading.Thread(target=guarded, args=(i,)) for i in items]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    try:
        conns = {a: Connection("127.0.0.1", port, timeout=60) for a in agent_ids}
        for agent_id, conn in conns.items():  # register every agent, not timed
            status, data = conn.post("/fleet/tasks", poll_body(agent_id, 0))
            if status != 200:
                report.errors.append(f"register {agent_id}: {status} {data[:200]!r}")
            conn.close()  # idle until the drain: a fresh connection then
        barrier.wait(BARRIER_TIMEOUT)  # A: agents registered; creation starts
        threads(lambda ids: create_tasks(port, ids, report, lock), create_shares)
        barrier.wait(BARRIER_TIMEOUT)  # B: tasks created
        barrier.wait(BARRIER_TIMEOUT)  # C: the queue is checked; drain starts
        cpu = os.times()
        deadline = time.monotonic() + DRAIN_TIMEOUT
        threads(
            lambda agent_id: run_agent(
                conns[agent_id],
                agent_id,
                max_tasks=max_tasks,
                total=total,
                done=done,
                deadline=deadline,
                report=report,
                lock=lock,
            ),
            agent_ids,
        )
        after = os.times()
        report.cpu_seconds = after.user + after.system - cpu.user - cpu.system
    except Exception as exc:  # reported, so that the coordinator does not hang
        report.errors.append(f"load process: {exc!r}")
        barrier.abort()
    queue.put(report)


# --- One run ----------------------------------------------------------------------


@dataclass
class RunResult:
    agents: int
    create_rate: float
    completed_rate: float
    poll_p50: float
    poll_p99: float
    result_p50: float
    result_p99: float
    create_p50: float
    polls: int
    empty_polls: int
    double: int
    lost: int
    problems: list[str]
    cpu_server_ms: float  # per completed task
    cpu_postgres_ms: float
    cpu_load_ms: float
    cpu_other_ms: float  # the rest of the busy time: kernel, other processes
    busy: float  # share of all cores busy over the drain


def split(items: list, parts: int) -> list[list]:
    return [items[i::parts] for i in range(parts)]


def reset_tables() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE fleet_task, fleet_agent RESTART IDENTITY CASCADE")


def run_once(
    server: Server,
    *,
    agents: int,
    tasks: int,
    procs: int,
    creators: int,
    args,
    on_drain=None,
) -> RunResult:
    """One run; ``on_drain()``, if given, is called as the drain starts and what
    it returns is called as the drain ends (e.g. to start and stop a sampler)."""
    from django.db import connections

    from fleet.models import Task

    reset_tables()
    connections.close_all()  # nothing of it may be shared with the forked children
    procs = max(1, min(procs, agents))
    task_ids = [str(uuid.uuid4()) for _ in range(tasks)]
    agent_ids = [str(uuid.uuid4()) for _ in range(agents)]
    creator_shares = split(split(task_ids, max(creators, procs)), procs)
    ctx = mp.get_context("fork")
    done = ctx.Value("i", 0)
    barrier = ctx.Barrier(procs + 1)
    queue = ctx.Queue()
    children = [
        ctx.Process(
            target=load_process,
            args=(server.port, share, creator_shares[i]),
            kwargs={
                "max_tasks": args.max_tasks,
                "total": tasks,
                "done": done,
                "barrier": barrier,
                "queue": queue,
            },
        )
        for i, share in enumerate(split(agent_ids, procs))
    ]
    for child in children:
        child.start()
    problems: list[str] = []
    reports: list[Report] = []
    server_before = server_after = pg_before = pg_after = {}
    busy_before = busy_after = (0, 0)
    create_seconds = drain_started = 0.0
    try:
        barrier.wait(BARRIER_TIMEOUT)  # A
        created_at = time.perf_counter()
        barrier.wait(BARRIER_TIMEOUT)  # B
        create_seconds = time.perf_counter() - created_at
        pending = Task.objects.filter(state=Task.State.PENDING).count()
        if pending != tasks:
            problems.append(f"{pending} tasks pending after creating {tasks}")
        connections.close_all()
        server_before = cpu_seconds(server_pids(server))
        pg_before = cpu_seconds(postgres_pids())
        busy_before = machine_busy()
        drain_ended = on_drain() if on_drain else None
        barrier.wait(BARRIER_TIMEOUT)  # C
        drain_started = time.perf_counter()
        reports = [queue.get(timeout=DRAIN_TIMEOUT + 60) for _ in children]
        if drain_ended:
            drain_ended()
        server_after = cpu_seconds(server_pids(server))
        pg_after = cpu_seconds(postgres_pids())
        busy_after = machine_busy()
    except Exception as exc:
        problems.append(f"run aborted: {exc!r}")
    finally:
        for child in children:
            child.join(30)
            if child.is_alive():
                child.kill()
                child.join()

    report = Report()
    for part in reports:
        report.received.update(part.received)
        report.create_ms += part.create_ms
        report.poll_ms += part.poll_ms
        report.result_ms += part.result_ms
        report.empty_polls += part.empty_polls
        report.errors += part.errors
        report.last_result_at = max(report.last_result_at, part.last_result_at)
        report.cpu_seconds += part.cpu_seconds
    problems += report.errors[:20]
    if len(report.errors) > 20:
        problems.append(f"... and {len(report.errors) - 20} more errors")

    # The agents' records: every task id received exactly once, by one agent.
    holder: dict[str, str] = {}
    times_received: Counter[str] = Counter()
    for agent_id, ids in report.received.items():
        for task_id in ids:
            times_received[task_id] += 1
            holder[task_id] = agent_id
    created = set(task_ids)
    double = {t for t, n in times_received.items() if n > 1}
    unknown = set(times_received) - created
    never = created - set(times_received)
    if unknown:
        problems.append(f"{len(unknown)} task ids received that were never created")
    # The database: every task completed once, by the agent that received it.
    lost_db: set[str] = set()
    rows = Task.objects.values_list("uuid", "state", "attempts", "agent__uuid")
    seen = set()
    for task_uuid, state, attempts, agent_uuid in rows:
        task_id = str(task_uuid)
        seen.add(task_id)
        if attempts > 1:
            double.add(task_id)
        if state != Task.State.COMPLETED or attempts != 1:
            lost_db.add(task_id)
        elif task_id in holder and str(agent_uuid) != holder[task_id]:
            problems.append(f"task {task_id} completed by another agent than got it")
    lost_db |= created - seen
    lost = (never | lost_db) - double
    connections.close_all()
    if double:
        problems.append(f"{len(double)} tasks handed out more than once")
    if lost:
        problems.append(f"{len(lost)} tasks lost (never received or not completed)")

    completed_seconds = (
        report.last_result_at - drain_started if report.last_result_at else 0.0
    )
    completed = tasks - len(lost) - len(double)
    per_task = 1000 / max(completed, 1)
    busy = busy_after[0] - busy_before[0]
    total = busy_after[1] - busy_before[1]
    return RunResult(
        agents=agents,
        create_rate=tasks / create_seconds if create_seconds else 0.0,
        completed_rate=completed / completed_seconds if completed_seconds else 0.0,
        poll_p50=percentile(report.poll_ms, 50),
        poll_p99=percentile(report.poll_ms, 99),
        result_p50=percentile(report.result_ms, 50),
        result_p99=percentile(report.result_ms, 99),
        create_p50=percentile(report.create_ms, 50),
        polls=len(report.poll_ms),
        empty_polls=report.empty_polls,
        double=len(double),
        lost=len(lost),
        problems=problems,
        cpu_server_ms=delta(server_before, server_after) * per_task,
        cpu_postgres_ms=delta(pg_before, pg_after) * per_task,
        cpu_load_ms=report.cpu_seconds * per_task,
        cpu_other_ms=max(
            0.0,
            busy / CLK_TCK * per_task
            - (delta(server_before, server_after) + delta(pg_before, pg_after))
            * per_task
            - report.cpu_seconds * per_task,
        ),
        busy=busy / total if total else 0.0,
    )


# --- Output -----------------------------------------------------------------------

COLUMNS = [
    ("agents", "agents", "{:d}"),
    ("create/s", "create_rate", "{:.0f}"),
    ("completed/s", "completed_rate", "{:.0f}"),
    ("poll p50 ms", "poll_p50", "{:.1f}"),
    ("poll p99 ms", "poll_p99", "{:.1f}"),
    ("result p50 ms", "result_p50", "{:.1f}"),
    ("result p99 ms", "result_p99", "{:.1f}"),
    ("double", "double", "{:d}"),
    ("lost", "lost", "{:d}"),
]
CPU_COLUMNS = [
    ("polls", "polls", "{:d}"),
    ("empty", "empty_polls", "{:d}"),
    ("CPU ms/task: gunicorn", "cpu_server_ms", "{:.2f}"),
    ("postgres", "cpu_postgres_ms", "{:.2f}"),
    ("load gen", "cpu_load_ms", "{:.2f}"),
    ("other", "cpu_other_ms", "{:.2f}"),
    ("cores busy", "busy", "{:.0%}"),
]


def line(result: RunResult, columns) -> str:
    return "  ".join(
        spec.format(getattr(result, name)).rjust(len(title))
        for title, name, spec in columns
    )


def header(columns) -> str:
    return "  ".join(title for title, _, _ in columns)


def median_result(results: list[RunResult]) -> RunResult:
    values = {}
    for name in RunResult.__dataclass_fields__:
        sample = getattr(results[0], name)
        if name == "problems":
            values[name] = [p for r in results for p in r.problems]
        elif name in ("double", "lost"):
            values[name] = max(getattr(r, name) for r in results)
        elif isinstance(sample, int):
            values[name] = int(statistics.median(getattr(r, name) for r in results))
        else:
            values[name] = statistics.median(getattr(r, name) for r in results)
    return RunResult(**values)


# --- Profile ----------------------------------------------------------------------

CATEGORIES = [
    "SQL: psycopg2 calls (round trip, PostgreSQL)",
    "ORM (django.db, Python)",
    "JSON (encode/decode)",
    "portal code (fleet/, portal/)",
    "Django request/response, middleware, URLs",
    "other (stdlib, logging, ...)",
]


def category(func: tuple[str, int, str]) -> str | None:
    """The category of a function; None for a builtin of no category of its own
    (its time goes to its callers')."""
    filename, _, name = func
    if filename == "~":
        if "psycopg2" in name:
            return CATEGORIES[0]
        if "_json" in name or "json" in name:
            return CATEGORIES[2]
        return None
    path = filename.replace(os.sep, "/")
    if "psycopg2" in path:
        return CATEGORIES[0]
    if "/json/" in path:
        return CATEGORIES[2]
    if "/django/db/" in path:
        return CATEGORIES[1]
    if path.startswith(str(ROOT)) and "site-packages" not in path:
        return CATEGORIES[3]
    if "/django/" in path or "/whitenoise/" in path:
        return CATEGORIES[4]
    return CATEGORIES[5]


def split_by_category(stats: pstats.Stats) -> dict[str, float]:
    """Self time by category; a builtin's self time goes to its callers'
    categories, in proportion to the time each caller spent in it."""
    totals: dict[str, float] = defaultdict(float)
    for func, (_, _, tottime, _, callers) in stats.stats.items():
        cat = category(func)
        if cat is not None:
            totals[cat] += tottime
            continue
        weights = {c: v[2] for c, v in callers.items()}
        weight = sum(weights.values())
        for caller, share in weights.items():
            caller_cat = category(caller) or CATEGORIES[5]
            totals[caller_cat] += tottime * (share / weight if weight else 0)
        if not weights:
            totals[CATEGORIES[5]] += tottime
    return totals


def sql_calls(stats: pstats.Stats) -> dict[str, int]:
    """psycopg2's round trips: statements (``execute``), commits, connections."""
    calls: dict[str, int] = Counter()
    for (filename, _, name), (_, ncalls, _, _, _) in stats.stats.items():
        if filename == "~" and "psycopg2" in name:
            for kind in ("execute", "commit", "_connect"):
                if f"'{kind}'" in name or f".{kind}>" in name:
                    calls[kind.lstrip("_")] += ncalls
    return calls


def request_time(stats: pstats.Stats) -> float:
    """Cumulative time in Django's WSGI handler (the whole request)."""
    best = 0.0
    for (filename, _, name), (_, _, _, cumtime, _) in stats.stats.items():
        if name == "__call__" and filename.endswith("django/core/handlers/wsgi.py"):
            best = max(best, cumtime)
    return best


def report_profile(out: Path) -> None:
    counts: Counter[str] = Counter()
    for path in out.glob("counts-*.json"):
        counts.update(json.loads(path.read_text()))
    print("\nWhere a gunicorn worker's request time goes (cProfile, wall clock):")
    for kind in ("poll", "result", "create"):
        files = sorted(out.glob(f"{kind}-*.pstats"))
        if not files or not counts[kind]:
            continue
        stats = pstats.Stats(*map(str, files))
        n = counts[kind]
        total = request_time(stats)
        print(f"\n{kind}: {n} requests, {total / n * 1000:.2f} ms each under cProfile")
        by_cat = split_by_category(stats)
        accounted = sum(by_cat.values())
        for name in CATEGORIES:
            spent = by_cat.get(name, 0.0)
            print(
                f"  {name:<46} {spent / n * 1000:6.3f} ms  "
                f"{spent / accounted if accounted else 0:4.0%}"
            )
        calls = sql_calls(stats)
        print(
            "  psycopg2 calls per request: "
            + ", ".join(f"{name} {c / n:.2f}" for name, c in sorted(calls.items()))
        )
        print("  top functions by own time:")
        stats.stream = sys.stdout
        stats.strip_dirs().sort_stats("tottime").print_stats(10)


def print_queries() -> None:
    """The SQL of one poll (with a task), one result and one create, in-process."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    reset_tables()
    client = Client(HTTP_HOST="127.0.0.1")
    agent_id, task_id = str(uuid.uuid4()), str(uuid.uuid4())
    create = {
        "task_id": task_id,
        "test_id": str(uuid.uuid4()),
        "task_type": TASK_TYPE,
        "task_version": TASK_VERSION,
        "task_data": {"time": 0},
    }
    result = {"protocol": 1, "task_id": task_id, "task_data": {"time": 0}}
    client.post("/fleet/tasks", poll_body(agent_id, 0), "application/json")
    print(
        "\nSQL per request (in-process, Django's query log; each request also "
        "pays the connection health check's SELECT 1, not logged):"
    )
    for name, path, body in (
        ("create", "/fleet/task", json.dumps(create)),
        ("poll", "/fleet/tasks", poll_body(agent_id, 10)),
        ("result", "/fleet/tasks/response", json.dumps(result)),
    ):
        with CaptureQueriesContext(connection) as queries:
            response = client.post(path, body, "application/json")
        assert response.status_code == 200, response.content
        print(f"  {name}: {len(queries)} statements")
        for query in queries:
            print(f"    {query['sql'][:150]}")
    reset_tables()


# --- Main -------------------------------------------------------------------------


def run_server(spec: str, tmp: str, args, agent_counts: list[int]) -> bool:
    server = start_server(spec, tmp)
    ok = True
    results: dict[int, list[RunResult]] = defaultdict(list)
    try:
        print(f"\n== gunicorn {spec} ({' '.join(server.argv)}), port {server.port}")
        print(f"   run  {header(COLUMNS)}  |  {header(CPU_COLUMNS)}", flush=True)
        for agents in agent_counts:
            for repeat in range(args.repeat):
                result = run_once(
                    server,
                    agents=agents,
                    tasks=args.tasks,
                    procs=args.procs,
                    creators=args.creators,
                    args=args,
                )
                results[agents].append(result)
                print(
                    f"   {repeat + 1:3d}  {line(result, COLUMNS)}  |  "
                    f"{line(result, CPU_COLUMNS)}",
                    flush=True,
                )
                for problem in result.problems:
                    print(f"        FAIL: {problem}")
                ok = ok and not result.problems
    finally:
        stop(server.proc)
    print(f"\n   medians of {args.repeat} runs, gunicorn {spec}, {args.tasks} tasks:")
    print(f"   {header(COLUMNS)}  |  {header(CPU_COLUMNS)}")
    for runs in results.values():
        med = median_result(runs)
        print(f"   {line(med, COLUMNS)}  |  {line(med, CPU_COLUMNS)}")
    return ok


def run_profile(spec: str, tmp: str, args, agents: int) -> bool:
    out = Path(tmp) / "profile"
    out.mkdir()
    config = Path(tmp) / "gunicorn_profile.py"
    config.write_text(PROFILE_CONFIG.format(out=str(out)))
    server = start_server(spec, tmp, config=str(config))
    try:
        result = run_once(
            server,
            agents=agents,
            tasks=args.tasks,
            procs=args.procs,
            creators=args.creators,
            args=args,
        )
    finally:
        stop(server.proc)
    print(f"\n== profiled run, gunicorn {spec}, {agents} agents (not counted)")
    print(f"   {header(COLUMNS)}  |  {header(CPU_COLUMNS)}")
    print(f"   {line(result, COLUMNS)}  |  {line(result, CPU_COLUMNS)}")
    for problem in result.problems:
        print(f"        FAIL: {problem}")
    report_profile(out)
    print_queries()
    return not result.problems


# Where a sample's time goes: the first frame from the leaf up that matches. Frames
# of the standard library (logging, uuid, datetime, ...) match nothing: their time
# goes to their caller's layer. py-spy names files relative to sys.path.
SAMPLE_LAYERS = [
    ("json/", "JSON (encode/decode)"),
    ("psycopg2/", "SQL: psycopg2 and Django's cursor (CPU only)"),
    ("django/db/backends/", "SQL: psycopg2 and Django's cursor (CPU only)"),
    ("django/db/", "ORM: building queries, model instances"),
    ("fleet/", "portal code (fleet/, portal/)"),
    ("portal/", "portal code (fleet/, portal/)"),
    ("django/", "Django request/response, middleware, URLs"),
    ("whitenoise/", "Django request/response, middleware, URLs"),
    ("gunicorn/", "gunicorn: HTTP parsing, socket I/O, worker loop"),
    ("concurrent/futures/", "gunicorn: HTTP parsing, socket I/O, worker loop"),
    ("selectors.py", "gunicorn: HTTP parsing, socket I/O, worker loop"),
]


def sample_layer(frames: list[str]) -> str:
    for frame in reversed(frames):
        filename = frame.rpartition("(")[2]
        for prefix, layer in SAMPLE_LAYERS:
            if filename.startswith(prefix) or f"/{prefix}" in filename:
                return layer
    return "other (stdlib, interpreter)"


def report_samples(path: Path, result: RunResult) -> None:
    """py-spy's raw output (``frame;frame;... count`` a line): the gunicorn
    workers' on-CPU samples by layer, in ms per completed task."""
    layers: Counter[str] = Counter()
    inside: Counter[str] = Counter()
    for text in path.read_text(errors="replace").splitlines():
        stack, _, count = text.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        layers[sample_layer(frames)] += int(count)
        for frame in frames:
            if frame.startswith("fleet/") or "(fleet/" in frame:
                name = frame.split(" (")[0]
                if name in ("poll", "task_response", "task_create", "status"):
                    inside[name] += int(count)
    total = sum(layers.values())
    if not total:
        print("   py-spy recorded no samples")
        return
    print(
        f"\n   py-spy: {total} samples of gunicorn worker threads holding the GIL; "
        f"{result.cpu_server_ms:.2f} ms of gunicorn CPU per task shared out:"
    )
    for layer, count in layers.most_common():
        share = count / total
        print(f"     {layer:<52} {share:4.0%}  {share * result.cpu_server_ms:.2f} ms")
    print(
        "   by view (whole request inside Django): "
        + ", ".join(f"{name} {n / total:.0%}" for name, n in inside.most_common())
    )


def run_py_spy(spec: str, tmp: str, args, agents: int) -> bool:
    """A run with py-spy sampling every gunicorn worker through the drain."""
    server = start_server(spec, tmp)
    out = Path(tmp) / "py-spy.txt"

    def start_sampling():
        sampler = subprocess.Popen(
            [
                args.py_spy,
                "record",
                "--pid",
                str(server.proc.pid),
                "--subprocesses",
                "--gil",
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(out),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        STARTED.append(sampler)
        time.sleep(1.0)  # attached to every worker before the drain starts

        def stop_sampling():
            sampler.send_signal(signal.SIGINT)
            try:
                sampler.wait(30)
            except subprocess.TimeoutExpired:
                sampler.kill()
                sampler.wait()

        return stop_sampling

    try:
        result = run_once(
            server,
            agents=agents,
            tasks=args.tasks,
            procs=args.procs,
            creators=args.creators,
            args=args,
            on_drain=start_sampling,
        )
    finally:
        stop(server.proc)
    print(f"\n== py-spy run, gunicorn {spec}, {agents} agents (not counted)")
    print(f"   {header(COLUMNS)}  |  {header(CPU_COLUMNS)}")
    print(f"   {line(result, COLUMNS)}  |  {line(result, CPU_COLUMNS)}")
    for problem in result.problems:
        print(f"        FAIL: {problem}")
    if out.exists():
        report_samples(out, result)
    else:
        print("   py-spy wrote nothing (can it ptrace here?)")
    return not result.problems


def main() -> None:
    global ROOT
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", default="1,10,50", help="agent counts, e.g. 1,50")
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per agent count")
    parser.add_argument(
        "--server",
        default="sync:4",
        help="gunicorn setups: sync:W or gthread:WxT, comma-separated",
    )
    parser.add_argument("--max-tasks", type=int, default=10, help="max_tasks a poll")
    parser.add_argument("--procs", type=int, default=2, help="load processes")
    parser.add_argument(
        "--creators", type=int, default=4, help="connections creating tasks"
    )
    parser.add_argument("--profile", action="store_true", help="profile the server")
    parser.add_argument(
        "--py-spy", metavar="PATH", help="sample the server with this py-spy binary"
    )
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument(
        "--root", type=Path, default=ROOT, help="the checkout to serve (A/B runs)"
    )
    args = parser.parse_args()
    ROOT = args.root.resolve()
    agent_counts = [int(n) for n in args.agents.split(",")]
    specs = args.server.split(",")
    for spec in specs:
        server_argv(spec)

    tmp = tempfile.mkdtemp(prefix="bench-fleet-")
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)
    ok = True
    begun = time.perf_counter()
    try:
        create_database(args.database_url)
        portal_env(tmp, args.database_url)
        setup_django(ROOT)
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        print(
            f"bench/fleet_load.py: Python {platform.python_version()}, "
            f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
            f"{args.tasks} tasks a run, max_tasks {args.max_tasks}, "
            f"{args.procs} load processes, {args.creators} creator connections; "
            f"database {args.database_url}"
        )
        for spec in specs:
            ok = run_server(spec, tmp, args, agent_counts) and ok
        if args.py_spy:
            ok = run_py_spy(specs[0], tmp, args, max(agent_counts)) and ok
        if args.profile:
            ok = run_profile(specs[0], tmp, args, max(agent_counts)) and ok
        print(f"\ntotal {time.perf_counter() - begun:.0f} s")
    finally:
        cleanup(tmp, args.database_url)
    if not ok:
        print("FAILED: see the FAIL lines above", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
