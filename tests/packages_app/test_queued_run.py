"""A queued run, end to end: run_package --queue → django-q2 → a real worker."""

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
    slug="hello", directory={directory!r}, timeout=60,
    command=["{{python}}", "-c", "import sys; print('hello', sys.argv[1])"],
)
"""
STATUS = """
from packages_app.models import PackageRun
run = PackageRun.objects.get(pk={pk})
print(run.status, run.trigger, run.log_head.strip().replace(" ", "_"))
"""


def test_a_queued_run_is_executed_by_a_worker(tmp_path):
    env = portal_env(tmp_path, LOG_LEVEL="WARNING")
    manage = [sys.executable, str(ROOT / "manage.py")]
    migrate(env)
    shell(env, SETUP.format(directory=str(tmp_path)))
    cluster = subprocess.Popen(
        [*manage, "qcluster"],
        env=env,
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        queued = subprocess.run(
            [*manage, "run_package", "hello", "--queue", "--param", "n=1"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert queued.returncode == 0, queued.stderr
        pk = int(queued.stdout.strip())
        status = wait_for(
            lambda: (
                (s := shell(env, STATUS.format(pk=pk)).split())[0]
                not in ("queued", "running")
                and s
            ),
            timeout=60,
            interval=0.5,
        )
        assert status[0] == "succeeded" and status[1] == "cli"
        assert status[2].startswith("hello_{")  # the parameters as argv[1]
    finally:
        cluster.send_signal(signal.SIGTERM)
        try:
            cluster.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.pid, signal.SIGKILL)
            cluster.wait()
