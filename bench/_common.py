"""Set-up shared by the PostgreSQL benchmarks: a throw-away database, a free
loopback port, Django pointed at the checkout."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def setup_django() -> None:
    sys.path.insert(0, str(ROOT))
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
