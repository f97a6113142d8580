"""``check_affirmations --loop`` runs passes until SIGTERM, then stops cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.fixtures.processes import ROOT, migrate, portal_env, wait_for


def test_the_loop_runs_until_sigterm(tmp_path):
    env = portal_env(tmp_path, PYTHONUNBUFFERED="1")
    manage = [sys.executable, str(ROOT / "manage.py")]
    migrate(env)
    log = tmp_path / "loop.log"
    with open(log, "w") as out:
        loop = subprocess.Popen(
            [*manage, "check_affirmations", "--loop", "--interval", "1"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "checking every 1 s" in log.read_text(), timeout=30)
        loop.send_signal(signal.SIGTERM)
        assert loop.wait(timeout=15) == 0
    finally:
        if loop.poll() is None:
            loop.kill()
            loop.wait()
    assert log.read_text().rstrip().endswith("stopped")
