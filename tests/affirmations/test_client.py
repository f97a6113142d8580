"""The copy-one-file client (affirmations/client.py) and scripts/affirm.sh against a
live server: affirming, retries on connection errors and 5xx (not on 4xx), a real
timeout, and the command lines' exit codes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from affirmations.client import AffirmError, Client
from affirmations.models import Affirmation

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "affirmations" / "client.py"
AFFIRM_SH = ROOT / "scripts" / "affirm.sh"
# Quotes, backslashes, newlines, a tab, a control character, & and non-ASCII.
TRICKY = 'say "hi" \\ back\\slash\nnext\tline \x01 & €😀 $HOME `id`'


@pytest.fixture
def write_key(live_server, transactional_db, make_api_key) -> str:
    _, key = make_api_key("affirmations:write", name="cron")
    return key


def no_sleep(client: Client) -> list[float]:
    """Record the client's backoff instead of waiting it out."""
    waits: list[float] = []
    client._sleep = waits.append
    return waits


class FlakyProxy:
    """A stdlib HTTP server on 127.0.0.1 answering 503 to the first ``failures``
    requests and passing the rest to ``upstream``; ``hang`` makes it never answer
    (until stopped)."""

    def __init__(self, upstream: str, failures: int = 1, hang: bool = False):
        self.requests = 0
        proxy = self
        released = threading.Event()
        self.released = released

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                proxy.requests += 1
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if hang:
                    released.wait(10)
                    return
                if proxy.requests <= failures:
                    self._answer(503, b'{"detail": "Restarting."}')
                    return
                request = urllib.request.Request(
                    upstream + self.path,
                    data=body,
                    headers={k: v for k, v in self.headers.items() if k != "Host"},
                    method="POST",
                )
                try:
                    with urllib.request.urlopen(request, timeout=10) as answer:
                        self._answer(answer.status, answer.read())
                except urllib.error.HTTPError as exc:
                    self._answer(exc.code, exc.read())

            def _answer(self, status: int, body: bytes):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FlakyProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- The Python client ----------------------------------------------------------------


def test_it_affirms_through_the_api(live_server, write_key):
    client = Client(live_server.url + "/", api_key=write_key)

    stored = client.affirm("backup_done", TRICKY)

    affirmation = Affirmation.objects.get()
    assert stored["id"] == affirmation.pk
    assert (affirmation.name, affirmation.data) == ("backup_done", TRICKY)
    assert affirmation.source == Affirmation.Source.API


def test_it_retries_after_a_5xx(live_server, write_key):
    with FlakyProxy(live_server.url, failures=1) as proxy:
        client = Client(proxy.url, api_key=write_key, retries=2)
        waits = no_sleep(client)

        stored = client.affirm("backup_done")

    assert proxy.requests == 2
    assert waits == [0.5]
    assert Affirmation.objects.get().pk == stored["id"]


def test_it_gives_up_after_the_retries_on_5xx(live_server, write_key):
    with FlakyProxy(live_server.url, failures=5) as proxy:
        client = Client(proxy.url, api_key=write_key, retries=2)
        waits = no_sleep(client)

        with pytest.raises(AffirmError, match="after 3 attempt") as caught:
            client.affirm("backup_done")

    assert caught.value.status == 503
    assert "Restarting." in str(caught.value)
    assert proxy.requests == 3
    assert waits == [0.5, 1.0]
    assert not Affirmation.objects.exists()


def test_it_retries_connection_errors_then_raises():
    client = Client(closed_port_url(), api_key="opk_x", retries=2)
    waits = no_sleep(client)

    with pytest.raises(AffirmError, match="after 3 attempt") as caught:
        client.affirm("backup_done")

    assert caught.value.status is None
    assert waits == [0.5, 1.0]


def test_it_does_not_retry_a_refusal(live_server, transactional_db):
    with FlakyProxy(live_server.url, failures=0) as proxy:
        client = Client(proxy.url, api_key="opk_" + "x" * 43, retries=2)
        waits = no_sleep(client)

        with pytest.raises(AffirmError, match="refused: HTTP 401") as caught:
            client.affirm("backup_done")

    assert caught.value.status == 401
    assert "Invalid API key." in str(caught.value)
    assert proxy.requests == 1
    assert waits == []


def test_it_times_out(transactional_db):
    with FlakyProxy("http://unused", hang=True) as proxy:
        client = Client(proxy.url, api_key="opk_x", timeout=0.2, retries=0)

        with pytest.raises(AffirmError, match="after 1 attempt") as caught:
            client.affirm("backup_done")

    assert "timed out" in str(caught.value)


# --- The command lines ----------------------------------------------------------------


def run(args: list[str], key: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "AFFIRM_API_KEY"}
    if key is not None:
        env["AFFIRM_API_KEY"] = key
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)


def test_the_cli_affirms_and_exits_0(live_server, write_key):
    done = run(
        [sys.executable, str(CLIENT), live_server.url, "cli_job", "done"], write_key
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("affirmed 'cli_job'")
    assert Affirmation.objects.get().data == "done"


def test_the_cli_exits_1_with_one_line_when_refused(live_server, transactional_db):
    done = run([sys.executable, str(CLIENT), live_server.url, "cli_job"], None)

    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: affirming 'cli_job' was refused: HTTP 401")
    assert not Affirmation.objects.exists()


def test_the_cli_exits_1_on_bad_usage():
    done = run([sys.executable, str(CLIENT), "http://x"], None)
    assert done.returncode == 1
    assert done.stderr.startswith("usage:")


def test_affirm_sh_is_executable():
    assert os.access(AFFIRM_SH, os.X_OK)


@pytest.mark.skipif(shutil.which("curl") is None, reason="scripts/affirm.sh needs curl")
def test_affirm_sh_affirms_arbitrary_text(live_server, write_key):
    done = run([str(AFFIRM_SH), live_server.url, write_key, "sh_job", TRICKY], None)

    assert done.returncode == 0, done.stderr
    affirmation = Affirmation.objects.get()
    assert (affirmation.name, affirmation.data) == ("sh_job", TRICKY)
    assert json.loads(done.stdout.split(": ", 1)[1])["id"] == affirmation.pk


@pytest.mark.skipif(shutil.which("curl") is None, reason="scripts/affirm.sh needs curl")
def test_affirm_sh_fails_on_a_bad_key(live_server, transactional_db):
    done = run([str(AFFIRM_SH), live_server.url, "opk_wrong", "sh_job"], None)

    assert done.returncode == 22  # curl --fail: an HTTP error
    assert "affirming 'sh_job' failed" in done.stderr
    assert not Affirmation.objects.exists()
