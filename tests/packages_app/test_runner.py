"""The runner with real child processes: exits, signals, timeouts, output, params."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from packages_app import runner, services
from packages_app.models import PackageRun
from tests.fixtures.processes import wait_for

Status = PackageRun.Status


def run_now(package, **kwargs) -> PackageRun:
    run = services.run_create(package=package, trigger="cli", **kwargs)
    return services.run_execute(run)


def marker_processes(marker: str) -> list[int]:
    needle = f"PORTAL_RUN_ID={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_it_records_a_success_with_its_output(make_package):
    package = make_package(
        """
        import sys
        print("hello from churn")
        print("to stderr", file=sys.stderr)
        """
    )
    run = run_now(package)
    assert run.status == Status.SUCCEEDED
    assert run.exit_code == 0
    assert run.duration is not None and run.duration < 10
    assert run.cpu_user is not None
    # too quick to be sampled for its peak memory, or sampled: never the runner's own
    assert run.max_rss_kb is None or run.max_rss_kb < 40 * 1024
    log = Path(run.log_path).read_text()
    assert "hello from churn" in log and "to stderr" in log
    assert "hello from churn" in run.log_head and "to stderr" in run.log_tail
    assert run.output_bytes == len(log.encode())
    assert run.pid and run.pgid == run.pid and run.host


def test_exit_3_is_a_failure_with_code_3(make_package):
    run = run_now(make_package("raise SystemExit(3)"))
    assert run.status == Status.FAILED
    assert run.exit_code == 3
    assert run.error == "Exited with code 3."


def test_a_child_killed_by_sigkill_fails_with_the_signal_named(make_package):
    run = run_now(
        make_package("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    )
    assert run.status == Status.FAILED
    assert run.exit_code is None
    assert run.signal_name == "SIGKILL"
    assert "out-of-memory killer" in run.error


TREE = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the child ignores SIGTERM
# a grandchild that holds the pipe and ignores SIGTERM too
IGNORE = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
subprocess.Popen([sys.executable, "-c", IGNORE + "time.sleep(300)"])
# and one that escapes the process group with its own session
quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"],
                 start_new_session=True, **quiet)
print("tree started", flush=True)
while True:
    signal.pause()  # SIGTERM is ignored; only SIGKILL ends this
"""


def test_timeout_kills_the_whole_tree_in_time(make_package, settings):
    settings.PACKAGES_KILL_GRACE = 1
    package = make_package(TREE, timeout=1)
    started = time.monotonic()
    run = run_now(package)
    elapsed = time.monotonic() - started
    assert run.status == Status.TIMED_OUT
    assert "Timed out after 1 s" in run.error and "SIGKILL" in run.error
    assert run.signal_name == "SIGKILL"
    # timeout + grace + 1 s
    assert elapsed < 1 + 1 + 1, elapsed
    assert "tree started" in run.log_tail
    assert marker_processes(str(run.uuid)) == []


def test_a_descendant_left_behind_after_a_success_is_killed(make_package):
    package = make_package(
        """
        import subprocess, sys
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        print("main done")
        """
    )
    run = run_now(package)
    assert run.status == Status.SUCCEEDED
    assert marker_processes(str(run.uuid)) == []


def test_huge_output_is_capped_with_a_marker_and_memory_stays_bounded(make_package):
    package = make_package(
        """
        import sys
        chunk = b"x" * 1024 * 1024
        for _ in range(200):
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.write(b"\\nthe end\\n")
        """,
        max_log_bytes=1024 * 1024,
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run = run_now(package)
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert run.status == Status.SUCCEEDED
    assert run.output_bytes == 200 * 1024 * 1024 + len(b"\nthe end\n")
    assert run.log_truncated is True
    log = Path(run.log_path).read_bytes()
    assert len(log) < 1024 * 1024 + 200
    assert b"output beyond 1048576 bytes was cut here" in log
    # the tail still shows how the run ended
    assert "the end" in run.log_tail
    assert len(run.log_tail) <= runner.TAIL_BYTES
    # 200 MB went through; the runner's own memory grew by far less
    assert grown_kb < 50 * 1024, grown_kb


PARAMS_PROBE = """
import json, os, sys
out = {
    "argv": sys.argv[1:],
    "env": json.loads(os.environ["PORTAL_PARAMETERS"]),
    "file": json.load(open(os.environ["PORTAL_PARAMETERS_FILE"])),
    "run_id": os.environ["PORTAL_RUN_ID"],
    "secret": os.environ.get("CHURN_DB_PASSWORD"),
    "leaked": [k for k in ("DATABASE_URL", "SECRET_KEY") if k in os.environ],
    "unbuffered": os.environ.get("PYTHONUNBUFFERED"),
    "region": os.environ.get("REGION"),
}
open("probe.json", "w").write(json.dumps(out))
"""


def test_parameters_reach_the_package_by_argv_env_and_file(
    make_package, package_dir, monkeypatch
):
    monkeypatch.setenv("CHURN_DB_PASSWORD", "s3cret-value")
    monkeypatch.setenv("SECRET_KEY", "portal-secret")
    package = make_package(
        PARAMS_PROBE,
        parameters={"model": "v1", "days": 30},
        environment={"REGION": "eu"},
        secret_env=["CHURN_DB_PASSWORD"],
    )
    run = run_now(package, parameters={"days": 7})
    assert run.status == Status.SUCCEEDED, run.error
    probe = json.loads((package_dir / "probe.json").read_text())
    expected = {"model": "v1", "days": 7, "run_id": run.pk, "scheduled_for": None}
    assert len(probe["argv"]) == 1
    for source in (json.loads(probe["argv"][0]), probe["env"], probe["file"]):
        assert {k: source[k] for k in expected} == expected
        assert source["started_at"].startswith(run.started_at.date().isoformat())
    assert probe["run_id"] == str(run.uuid)
    assert probe["secret"] == "s3cret-value"
    assert probe["leaked"] == []  # the portal's own secrets stay with the portal
    assert probe["unbuffered"] == "1"
    assert probe["region"] == "eu"
    assert "s3cret-value" not in probe["argv"][0]
    assert "s3cret-value" not in Path(run.log_path).read_text()


def test_parameters_argument_can_be_switched_off(make_package, package_dir):
    package = make_package(PARAMS_PROBE, parameters_as_argument=False)
    run_now(package)
    assert json.loads((package_dir / "probe.json").read_text())["argv"] == []


def test_a_missing_secret_fails_the_run_before_it_starts(make_package, monkeypatch):
    monkeypatch.delenv("NOPE_TOKEN", raising=False)
    run = run_now(make_package("print('never')", secret_env=["NOPE_TOKEN"]))
    assert run.status == Status.FAILED
    assert run.pid is None
    assert "NOPE_TOKEN" in run.error


def test_a_command_that_cannot_start_fails_clearly(make_package, package_dir):
    package = make_package("")
    package.command = ["./does-not-exist.sh"]
    package.save()
    run = run_now(package)
    assert run.status == Status.FAILED
    assert run.error.startswith(f"Cannot start {package_dir}/does-not-exist.sh")


@pytest.mark.django_db(transaction=True)
def test_cancel_stops_a_running_run(make_package):
    import threading

    package = make_package("import time; print('working', flush=True); time.sleep(60)")
    run = services.run_create(package=package, trigger="cli")
    result = {}
    thread = threading.Thread(
        target=lambda: result.setdefault("run", services.run_execute(run))
    )
    started = time.monotonic()
    thread.start()
    try:
        wait_for(
            lambda: PackageRun.objects.filter(pk=run.pk, pid__isnull=False).exists(),
            timeout=20,
        )
        assert services.run_cancel(PackageRun.objects.get(pk=run.pk)) is True
    finally:
        thread.join(timeout=30)
    assert result["run"].status == Status.CANCELLED
    assert time.monotonic() - started < 15
    assert marker_processes(str(run.uuid)) == []


def test_cancelling_a_queued_run_is_immediate(make_package):
    run = services.run_create(package=make_package("print(1)"), trigger="admin")
    assert services.run_cancel(run) is True
    run.refresh_from_db()
    assert run.status == Status.CANCELLED
    # and a worker picking it up later does nothing
    assert services.run_execute(run).status == Status.CANCELLED
    assert run.pid is None


def test_a_worker_killed_mid_run_is_reconciled_as_lost(make_package, time_machine):
    """The worker died: its run stays RUNNING with a stale heartbeat and an
    orphaned child; the reconciler marks it lost and kills the child."""
    package = make_package("")
    run = services.run_create(package=package, trigger="schedule")
    assert services.run_claim(run)
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)"],
        env={**os.environ, "PORTAL_RUN_ID": str(run.uuid)},
        start_new_session=True,
    )
    run.start(pid=child.pid, host=os.uname().nodename, log_path="", now=run.started_at)
    try:
        time_machine.move_to(run.started_at + timedelta(minutes=5))
        lost = services.runs_reconcile()
        assert [r.pk for r in lost] == [run.pk]
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    run.refresh_from_db()
    assert run.status == Status.LOST
    assert "No heartbeat since" in run.error
    # a second reconciler finds nothing more to do
    assert services.runs_reconcile() == []


def test_peak_memory_is_the_childs_own(make_package):
    small = make_package("import time; time.sleep(0.5)", slug="small")
    big = make_package(
        "import time; block = bytearray(150 * 1024 * 1024); time.sleep(0.5)",
        slug="big",
    )
    small_run, big_run = run_now(small), run_now(big)
    # not the runner's own high-water mark (this test process is far bigger)
    assert small_run.max_rss_kb < 40 * 1024
    assert big_run.max_rss_kb > 150 * 1024


def test_a_run_lost_by_another_hosts_reconciler_is_cleaned_up_here(make_package):
    """Another host marked this host's run lost; our reconciler kills its orphan."""
    run = services.run_create(package=make_package(""), trigger="schedule")
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)"],
        env={**os.environ, "PORTAL_RUN_ID": str(run.uuid)},
        start_new_session=True,
    )
    try:
        PackageRun.objects.filter(pk=run.pk).update(host=os.uname().nodename)
        run.refresh_from_db()
        run.finish(Status.LOST, error="marked lost elsewhere")
        services.runs_reconcile()
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
