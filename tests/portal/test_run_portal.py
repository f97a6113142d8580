"""The quick start's server: web and django-q2 cluster together, Ctrl-C stops both."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from tests.fixtures.processes import ROOT, free_port, migrate, portal_env, wait_for

pytestmark = pytest.mark.slow


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)
    except (urllib.error.URLError, ConnectionError):
        return 0, {}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_it_serves_with_a_live_cluster_and_stops_on_ctrl_c(tmp_path):
    env = portal_env(tmp_path)
    manage = [sys.executable, str(ROOT / "manage.py")]
    migrate(env)
    port = free_port()
    log = tmp_path / "run_portal.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*manage, "run_portal", "--addr", f"127.0.0.1:{port}"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}/healthz"
        status, body = wait_for(
            lambda: (r := get_json(url))[0] == 200 and r, timeout=90, interval=0.5
        )
        assert body["checks"]["cluster"]["clusters"] >= 1
        assert body["checks"]["broker"]["ok"] is True
        children = [
            int(p) for p in re.findall(r"started \w+ \(pid (\d+)\)", log.read_text())
        ]
        assert len(children) == 2

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert not any(alive(pid) for pid in children)
        output = log.read_text()
        assert "stopped." in output
        # both stopped gracefully, none had to be killed
        assert "killing it" not in output
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_it_rejects_a_bad_address(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "run_portal", "--addr", "nowhere"],
        env=portal_env(tmp_path),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "CommandError: --addr must be host:port, not 'nowhere'" in result.stderr
    assert "Traceback" not in result.stderr
