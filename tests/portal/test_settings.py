"""Settings come from the environment; bad values stop start-up with one line each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from portal.lib.env import Env

ROOT = Path(__file__).resolve().parents[2]
PRINT_SETTINGS = """
import json, django
django.setup()
from django.conf import settings as s
opts = s.DATABASES["default"].get("OPTIONS", {})
print(json.dumps({
    "engine": s.DATABASES["default"]["ENGINE"],
    "db_name": str(s.DATABASES["default"]["NAME"]),
    "db_options": {k: str(v) for k, v in opts.items()},
    "q": {k: v for k, v in s.Q_CLUSTER.items()},
    "cache": s.CACHES["default"]["BACKEND"],
    "email_backend": s.EMAIL_BACKEND,
    "email_tls": s.EMAIL_USE_TLS,
    "debug": s.DEBUG,
    "hosts": s.ALLOWED_HOSTS,
    "tz": s.TIME_ZONE,
    "cronjobs": s.CRONJOBS,
}))
"""


def run_python(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            ("DATABASE_URL", "REDIS_URL", "EMAIL_", "Q_", "DEBUG", "SECRET")
        )
    }
    clean.update({"DJANGO_SETTINGS_MODULE": "portal.settings", **env})
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def load_settings(tmp_path, **env: str) -> dict:
    result = run_python({"VAR_DIR": str(tmp_path), **env}, "-c", PRINT_SETTINGS)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_it_runs_on_embedded_defaults(tmp_path):
    s = load_settings(tmp_path)
    assert s["engine"] == "django.db.backends.sqlite3"
    assert s["db_name"] == str(tmp_path / "portal.sqlite3")
    assert s["db_options"]["transaction_mode"] == "IMMEDIATE"
    assert "journal_mode=WAL" in s["db_options"]["init_command"]
    assert "busy_timeout" in s["db_options"]["init_command"]
    assert s["q"]["orm"] == "default" and "redis" not in s["q"]
    assert s["q"]["max_attempts"] == 1
    assert s["q"]["timeout"] < s["q"]["retry"]
    assert s["cache"].endswith("DatabaseCache")
    assert s["email_backend"].endswith("console.EmailBackend")
    assert s["tz"] == "UTC"
    assert ["17 3 * * *", "portal.tasks.prune_task_history"] in s["cronjobs"]


def test_it_reads_postgres_redis_and_smtp(tmp_path):
    s = load_settings(
        tmp_path,
        DATABASE_URL="postgres://u:p@db.example:5432/portal",
        REDIS_URL="redis://127.0.0.1:6379/3",
        EMAIL_HOST="smtp.example",
        EMAIL_USE_TLS="yes",
        DEBUG="0",
        SECRET_KEY="s" * 50,
        ALLOWED_HOSTS="portal.example, ops.example",
    )
    assert s["engine"] == "django.db.backends.postgresql"
    assert s["db_name"] == "portal"
    assert s["q"]["redis"] == "redis://127.0.0.1:6379/3" and "orm" not in s["q"]
    assert s["cache"].endswith("RedisCache")
    assert s["email_backend"].endswith("smtp.EmailBackend")
    assert s["email_tls"] is True
    assert s["debug"] is False
    assert s["hosts"] == ["portal.example", "ops.example"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"Q_WORKERS": "many"}, "(portal.E001) Q_WORKERS: 'many' is not an integer."),
        ({"DEBUG": "maybe"}, "(portal.E001) DEBUG: 'maybe' is not a boolean"),
        ({"DATABASE_URL": "oracle://x/y"}, "(portal.E001) DATABASE_URL:"),
        ({"REDIS_URL": "127.0.0.1:6379"}, "(portal.E001) REDIS_URL:"),
        ({"DEBUG": "0"}, "(portal.E002) SECRET_KEY must be set when DEBUG is off."),
        (
            {"Q_TIMEOUT": "600", "Q_RETRY": "600"},
            "(portal.E003) Q_TIMEOUT (600s) must be below",
        ),
        (
            {"EMAIL_USE_TLS": "1", "EMAIL_USE_SSL": "1"},
            "EMAIL_USE_TLS and EMAIL_USE_SSL are mutually exclusive",
        ),
    ],
)
def test_it_refuses_to_start_with_bad_values(tmp_path, env, expected):
    result = run_python({"VAR_DIR": str(tmp_path), **env}, "manage.py", "check")
    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_wsgi_entry_point_fails_fast_with_one_line(tmp_path):
    result = run_python(
        {"VAR_DIR": str(tmp_path), "DEBUG": "0"}, "-c", "import portal.wsgi"
    )
    assert result.returncode == 3
    assert result.stderr.strip() == (
        "portal.E002: SECRET_KEY must be set when DEBUG is off."
    )


def test_env_reader_collects_errors_instead_of_raising():
    env = Env(
        environ={"A": "12", "B": "x", "C": "on", "D": "a, b,,c", "E": "-3", "F": "nah"}
    )
    assert env.int("A", 1) == 12
    assert env.int("B", 7) == 7
    assert env.bool("C", False) is True
    assert env.list("D") == ["a", "b", "c"]
    assert env.int("E", 5, min_value=0) == 5
    assert env.bool("F", True) is True
    assert env.int("MISSING", 9) == 9
    assert [name for name, _ in env.errors] == ["B", "E", "F"]
    assert env.errors[1] == ("E", "-3 is below the minimum of 0")


def test_gunicorn_refuses_to_start_instead_of_respawning(tmp_path):
    from tests.fixtures.processes import free_port

    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    result = run_python(
        {"VAR_DIR": str(tmp_path), "DEBUG": "0"},
        "-c",
        "import sys, runpy; sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')",
        gunicorn,
        "portal.wsgi",
        "--bind",
        f"127.0.0.1:{free_port()}",
    )
    assert result.returncode == 3
    assert "portal.E002: SECRET_KEY must be set when DEBUG is off." in result.stderr
    assert "Worker failed to boot" in result.stderr
