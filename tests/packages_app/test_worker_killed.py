"""A worker killed mid-run: real processes on their own SQLite file.

The process running the run (``run_package``, as a worker would) is SIGKILLed
while its package runs; its run stays RUNNING with a heartbeat that stops and
an orphaned package process. The reconciler then marks it lost and kills the
orphan.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.fixtures.processes import ROOT, migrate, portal_env, wait_for
from tests.fixtures.processes import manage_shell as shell

pytestmark = pytest.mark.slow

SETUP = """
from packages_app.models import Package
Package.objects.create(
    slug="slow", directory={directory!r}, timeout=300,
    command=["{{python}}", "-c", "import time; time.sleep(300)"],
)
"""
STATUS = """
from packages_app.models import PackageRun
run = PackageRun.objects.first()
print(run.status, run.pid or 0) if run else print("none", 0)
"""
RECONCILE = """
from datetime import timedelta
from django.utils import timezone
from packages_app import services
lost = services.runs_reconcile(now=timezone.now() + timedelta(minutes=5))
print(",".join(f"{r.pk}:{r.status}" for r in lost))
"""


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting for init to reap it."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_killed_worker_leaves_a_run_that_is_reconciled_as_lost(tmp_path):
    env = portal_env(tmp_path, PACKAGES_HEARTBEAT="1", LOG_LEVEL="WARNING")
    migrate(env)
    shell(env, SETUP.format(directory=str(tmp_path)))
    worker = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "run_package", "slow", "--no-notify"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    package_pid = 0
    try:
        status = wait_for(
            lambda: (
                (s := shell(env, STATUS).split())[0] == "running" and s[1] != "0" and s
            ),
            timeout=60,
            interval=0.5,
        )
        package_pid = int(status[1])
        worker.send_signal(signal.SIGKILL)  # no clean-up of any kind
        worker.wait(timeout=10)
        assert alive(package_pid)  # the package runs on, orphaned

        lost = shell(env, RECONCILE)

        assert lost.endswith(":lost")
        assert shell(env, STATUS).split()[0] == "lost"
        wait_for(lambda: not alive(package_pid), timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
        if package_pid and alive(package_pid):
            os.kill(package_pid, signal.SIGKILL)
