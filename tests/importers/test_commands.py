"""``run_importer NAME`` and ``run_importers --due``: their output, one-line errors
for bad input, and two ``run_importers --due`` processes at once never running a
source twice (real child processes, on SQLite and on PostgreSQL).

The child processes register their fake kind through the
``IMPORTERS_EXTRA_KINDS`` setting: the test writes a small module (the kind's
fetch blocks until a gate file appears) into its temporary directory, puts that
directory on the children's ``PYTHONPATH`` and names the kind in the variable.
"""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from importers.models import GraphiteSink, ImportRun, ImportSource
from importers.sources import KINDS, Kind
from tests.fixtures.processes import ROOT, portal_env, stop_process, wait_for

FAKE_POINTS = [("app.crashes", 3, 1_700_000_000), ("app.crashes", 4, 1_700_000_060)]


@pytest.fixture
def fake(monkeypatch) -> list:
    """Kinds ``fake`` (can backfill) and ``fake_live`` (cannot), no credentials;
    returns the list of the contexts they were called with."""
    contexts: list = []

    def fetch(ctx):
        contexts.append(ctx)
        return list(FAKE_POINTS)

    for key, backfill in (("fake", True), ("fake_live", False)):
        monkeypatch.setitem(
            KINDS,
            key,
            Kind(
                key=key,
                label=key.replace("_", " ").capitalize(),
                api="fake",
                credential_roles=(),
                default_base_url="http://127.0.0.1:9/",
                backfill=backfill,
                default_interval_minutes=5,
                fetch=fetch,
            ),
        )
    return contexts


@pytest.fixture
def log_sink(db) -> GraphiteSink:
    return GraphiteSink.objects.create(name="log", protocol="dummy", host="")


def run(*args: str) -> tuple[str, str, int]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command(*args, stdout=out, stderr=err)
    except SystemExit as exc:
        return out.getvalue(), err.getvalue(), int(exc.code)
    return out.getvalue(), err.getvalue(), 0


def refused(*args: str) -> CommandError:
    with pytest.raises(CommandError) as exc:
        call_command(*args, stdout=io.StringIO(), stderr=io.StringIO())
    assert "\n" not in str(exc.value)
    return exc.value


# --- run_importer -------------------------------------------------------------------


def test_it_runs_a_source_and_prints_a_summary(fake, log_sink):
    source = ImportSource.objects.create(name="daily", kind="fake", sink=log_sink)

    out, _, code = run("run_importer", "daily")

    assert code == 0
    assert out.startswith(f"daily: run #{source.runs.get().pk} succeeded: 2 fetched, ")
    run_ = source.runs.get()
    assert (run_.trigger, run_.points_sent) == (ImportRun.Trigger.COMMAND, 2)


def test_a_dry_run_prints_the_exact_lines(fake, log_sink):
    source = ImportSource.objects.create(name="daily", kind="fake", sink=log_sink)

    out, err, code = run("run_importer", "daily", "--dry-run")

    assert code == 0
    assert out == "app.crashes 3 1700000000\napp.crashes 4 1700000060\n"
    assert "dry run #" in err
    source.refresh_from_db()
    assert source.last_run is None and source.state == {}


def test_it_passes_a_backfill_window(fake, log_sink):
    ImportSource.objects.create(name="daily", kind="fake", sink=log_sink)

    _, _, code = run(
        "run_importer",
        "daily",
        "--since",
        "2026-03-01",
        "--until",
        "2026-03-02T12:00:00+02:00",
    )

    assert code == 0
    assert fake[0].since == datetime(2026, 3, 1, tzinfo=UTC)
    assert fake[0].until == datetime(2026, 3, 2, 10, tzinfo=UTC)


def test_a_failed_run_exits_1(fake, log_sink, monkeypatch):
    ImportSource.objects.create(name="daily", kind="fake", sink=log_sink)
    monkeypatch.setitem(KINDS, "fake", replace(KINDS["fake"], fetch=lambda ctx: 1 / 0))

    out, _, code = run("run_importer", "daily")

    assert code == 1
    assert "failed" in out and "ZeroDivisionError: division by zero" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "Unknown import source: 'nope' (known: daily, live)."),
        (["daily", "--since", "yesterday"], "--since: 'yesterday' is not an ISO 8601"),
        (
            ["daily", "--since", "2026-03-02", "--until", "2026-03-01"],
            "--since (2026-03-02T00:00:00+00:00) must be before --until",
        ),
        (["daily", "--until", "2026-03-01"], "A backfill needs a start (--since)."),
        (["live", "--since", "2026-03-01"], "live: Fake live cannot backfill"),
    ],
)
def test_bad_input_is_one_line(fake, log_sink, args, message):
    ImportSource.objects.create(name="daily", kind="fake", sink=log_sink)
    ImportSource.objects.create(name="live", kind="fake_live", sink=log_sink)

    error = refused("run_importer", *args)

    assert str(error).startswith(message)
    assert error.returncode == 2
    assert not ImportRun.objects.exists() and fake == []


def test_it_refuses_a_source_that_is_running(fake, log_sink):
    source = ImportSource.objects.create(name="daily", kind="fake", sink=log_sink)
    holder = ImportRun.objects.create(source=source, trigger="schedule")
    source.claim(holder, now=timezone.now(), stale_after=timedelta(hours=1))

    error = refused("run_importer", "daily")

    assert str(error).startswith(f"daily is already running (run #{holder.pk}, since ")
    assert error.returncode == 4


# --- run_importers --due ------------------------------------------------------------


def test_it_runs_the_due_sources_one_line_each(fake, log_sink):
    ImportSource.objects.create(name="a-due", kind="fake", sink=log_sink)
    ImportSource.objects.create(name="b-off", kind="fake", sink=log_sink, enabled=False)
    busy = ImportSource.objects.create(name="c-busy", kind="fake", sink=log_sink)
    holder = ImportRun.objects.create(source=busy, trigger="command")
    busy.claim(holder, now=timezone.now(), stale_after=timedelta(hours=1))

    out, _, code = run("run_importers", "--due")

    lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    assert lines[0].startswith("a-due: run #") and "succeeded" in lines[0]
    assert lines[1].startswith("c-busy: skipped — c-busy is already running")
    holder.finish(ImportRun.Status.FAILED)
    busy.release(holder)
    ImportSource.objects.filter(pk=busy.pk).update(
        next_due_at=timezone.now() + timedelta(minutes=5)
    )
    out, _, _ = run("run_importers", "--due")
    assert out == "nothing due\n"


def test_it_wants_to_be_told_due(db):
    assert str(refused("run_importers")).startswith("Say --due")


# --- Two schedulers at once (real processes) -----------------------------------------

BLOCKING_KIND_MODULE = """
import os
import threading
from pathlib import Path

from importers.sources import Kind

GATE = Path({gate!r})
STARTED = Path({started!r})


def fetch(ctx):
    # Record the start, then hold the source until the test opens the gate.
    with STARTED.open("a") as log:
        log.write(f"{{ctx.name}} {{os.getpid()}}\\n")
    pause = threading.Event()
    for _ in range(1200):
        if GATE.exists():
            break
        pause.wait(0.05)
    return [("test.blocking." + ctx.name, 1, int(ctx.now.timestamp()))]


BLOCKING = Kind(
    key="test_blocking",
    label="Test: blocks until a file appears",
    api="test",
    credential_roles=(),
    default_base_url="http://127.0.0.1:9/",
    backfill=False,
    default_interval_minutes=60,
    fetch=fetch,
)
"""


def database_url() -> str:
    """The URL of the database this test uses (the test database), for children."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    user = quote(db["USER"] or "", safe="")
    password = f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else ""
    host = db["HOST"] or "127.0.0.1"
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgres://{user}{password}@{host}{port}/{db['NAME']}"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_schedulers_at_once_run_each_source_once(tmp_path: Path):
    gate, started = tmp_path / "gate", tmp_path / "started.log"
    (tmp_path / "blocking_kinds.py").write_text(
        BLOCKING_KIND_MODULE.format(gate=str(gate), started=str(started))
    )
    sink = GraphiteSink.objects.create(name="log", protocol="dummy", host="")
    names = ["s1", "s2", "s3"]
    for name in names:
        # never scheduled: all due at once, taken in name order
        ImportSource.objects.create(name=name, kind="test_blocking", sink=sink)
    env = portal_env(
        tmp_path,
        DATABASE_URL=database_url(),
        IMPORTERS_EXTRA_KINDS="blocking_kinds.BLOCKING",
        PYTHONPATH=str(tmp_path),
        LOG_LEVEL="WARNING",
    )
    outputs = [tmp_path / "out-1.txt", tmp_path / "out-2.txt"]
    procs = []
    try:
        for output in outputs:
            with output.open("w") as stream:
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            str(ROOT / "manage.py"),
                            "run_importers",
                            "--due",
                        ],
                        env=env,
                        cwd=ROOT,
                        stdout=stream,
                        stderr=subprocess.STDOUT,
                    )
                )

        def both_blocked() -> list[str] | None:
            lines = started.read_text().splitlines() if started.exists() else []
            return lines if len(lines) >= 2 else None

        # each process holds one source: the one that came second skipped s1
        first_two = wait_for(both_blocked, timeout=90, interval=0.1)
        assert sorted(line.split()[0] for line in first_two) == ["s1", "s2"]
        assert len({line.split()[1] for line in first_two}) == 2  # two processes
        gate.touch()
        for proc in procs:
            assert proc.wait(timeout=90) == 0, [o.read_text() for o in outputs]
    finally:
        gate.touch()
        for proc in procs:
            stop_process(proc)

    fetched = [line.split()[0] for line in started.read_text().splitlines()]
    assert sorted(fetched) == names  # every source exactly once
    text = "".join(output.read_text() for output in outputs)
    assert "s1: skipped — s1 is already running" in text
    for name in names:
        assert ImportRun.objects.filter(source__name=name).count() == 1
        source = ImportSource.objects.get(name=name)
        assert source.last_run.status == ImportRun.Status.SUCCEEDED
        assert source.running_since is None
        assert source.next_due_at > source.last_run.started_at


def test_the_blocking_module_builds_a_kind(tmp_path, monkeypatch):
    """The module text the children import is valid Python and a Kind."""
    (tmp_path / "blocking_kinds_check.py").write_text(
        textwrap.dedent(
            BLOCKING_KIND_MODULE.format(
                gate=str(tmp_path / "gate"), started=str(tmp_path / "log")
            )
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "gate").touch()

    import blocking_kinds_check

    kind = blocking_kinds_check.BLOCKING
    assert isinstance(kind, Kind) and kind.key == "test_blocking"
