"""Throughput of an API-key-authenticated request through the whole Django stack.

Prints the median over several runs of GET /api/v1/whoami/ with `X-Api-Key`, on a
throw-away SQLite database, in-process (Django's test client: no network, no server),
so the figure is the cost of middleware + key lookup + permission + JSON.

    .venv/bin/python bench/api_auth.py [--requests 2000] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="bench-api-")
    try:
        measure(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure(args: argparse.Namespace, tmp: str) -> None:
    os.environ.pop("DATABASE_URL", None)
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "VAR_DIR": tmp,
            "LOG_LEVEL": "ERROR",
        }
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client

    from portal import services

    call_command("migrate", verbosity=0)
    _, plaintext = services.api_key_create(name="bench", scopes=["portal:read"])
    client = Client(HTTP_X_API_KEY=plaintext, HTTP_HOST="127.0.0.1")
    assert client.get("/api/v1/whoami/").status_code == 200

    rates = []
    for _ in range(args.runs):
        started = time.perf_counter()
        for _ in range(args.requests):
            client.get("/api/v1/whoami/")
        rates.append(args.requests / (time.perf_counter() - started))
    median = statistics.median(rates)
    print(
        f"GET /api/v1/whoami/ with an API key: median {median:.0f} req/s "
        f"({1000 / median:.2f} ms/request) over {args.runs} runs of {args.requests}; "
        f"runs: {', '.join(f'{r:.0f}' for r in rates)}"
    )


if __name__ == "__main__":
    main()
