"""Set-up shared by the PostgreSQL benchmarks: a throw-away database, a free
loopback port, Django pointed at the checkout."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Processes a benchmark started (servers, samplers): cleanup() stops them by PID.
STARTED: list[subprocess.Popen] = []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def setup_django(root: Path = ROOT) -> None:
    """Django set up in this process, from the checkout at ``root``."""
    sys.path.insert(0, str(root))
    import django

    django.setup()


def admin_dsn(database_url: str) -> tuple[str, str]:
    """The server's maintenance database URL and the bench database's name."""
    base, _, name = database_url.rpartition("/")
    return f"{base}/postgres", name.split("?")[0]


def database_exec(database_url: str, sql: str) -> None:
    import psycopg2

    url, _ = admin_dsn(database_url)
    conn = psycopg2.connect(url)
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(sql)
    finally:
        conn.close()


def create_database(database_url: str) -> None:
    _, name = admin_dsn(database_url)
    database_exec(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    database_exec(database_url, f'CREATE DATABASE "{name}"')


def drop_database(database_url: str) -> None:
    _, name = admin_dsn(database_url)
    database_exec(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after its closing one.
    head, _, tail = text.rpartition(")")
    return [head.split("(", 1)[1], *tail.split()]


CLK_TCK = os.sysconf("SC_CLK_TCK")


def postgres_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields and fields[0] == "postgres":
                pids.append(int(entry))
    return pids


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """utime + stime of each process that still exists."""
    times = {}
    for pid in pids:
        fields = _stat(pid)
        if fields:
            times[pid] = (int(fields[12]) + int(fields[13])) / CLK_TCK
    return times


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(after[pid] - before.get(pid, 0.0) for pid in after)


def started_at(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[20]) if fields else None


def children_of(ppid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields and int(fields[2]) == ppid:
                pids.append(int(entry))
    return pids


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM (gunicorn: graceful stop), then SIGKILL; by PID only."""
    if proc.poll() is not None:
        return
    children = {pid: started_at(pid) for pid in children_of(proc.pid)}
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for pid, started in children.items():  # workers normally leave with it
        if started is not None and started_at(pid) == started:  # not a new PID
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def cleanup(tmp: str, database_url: str) -> None:
    for proc in STARTED:
        stop(proc, timeout=10)
    try:
        from django.db import connections

        connections.close_all()
    except Exception:
        pass
    try:
        drop_database(database_url)
    except Exception as exc:
        print(f"(cleanup: could not drop the database: {exc})", file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)


def _stop(signum, frame) -> None:
    raise SystemExit(f"stopped by {signal.Signals(signum).name}")
