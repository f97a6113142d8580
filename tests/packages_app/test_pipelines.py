"""Pipelines end to end: a real repository, a real clone, each executor for real.

The ``docker`` executor drives podman's Docker-compatible API (the ``docker_host``
fixture sets it up, or skips loudly); the ``local`` executor runs each line as a
subprocess. The same cases run on both, with the same statuses and output.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.utils import timezone

from packages_app import containers, pipelines, services
from packages_app.models import PipelineOutput, PipelineRun
from tests.fixtures.gitdaemon import make_repo
from tests.fixtures.processes import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

S = PipelineRun.Status
IMAGE = "localhost/busybox"


@pytest.fixture(autouse=True)
def _pipeline_settings(settings, tmp_path):
    settings.PIPELINE_WORKSPACES_DIR = tmp_path / "workspaces"
    settings.PIPELINE_GIT_SCHEMES = ["git"]
    settings.PIPELINE_CALLBACK_URL = ""
    settings.STEP_CALLBACK_URL = ""
    settings.CMD_CALLBACK_URL = ""


@pytest.fixture(params=["local", "docker"])
def executor_factory(request):
    """Makes a fresh executor of each kind (the docker one needs the engine)."""
    if request.param == "local":
        return containers.LocalExecutor
    client = request.getfixturevalue("docker_client")
    return lambda: containers.DockerExecutor(client)


def pipeline_file(*steps: dict, timeout: int | None = None) -> str:
    body = {"steps": [{"step": {"image": IMAGE, **step}} for step in steps]}
    if timeout:
        body["timeout"] = timeout
    return json.dumps({"pipelines": body})  # JSON is YAML


@pytest.fixture
def repo(git_daemon, tmp_path):
    """A repository holding the given fxq-pipeline.yml, served by the real git
    daemon on 127.0.0.1; returns its git:// URL."""
    count = iter(range(1000))

    def make(text: str, **files: str) -> str:
        name = f"quants/{tmp_path.name}-{next(count)}.git"
        make_repo(git_daemon.base / name, {"fxq-pipeline.yml": text, **files})
        return git_daemon.url(name)

    return make


def has_output(run: PipelineRun):
    return PipelineOutput.objects.filter(command__step__run=run).exists


def run_pipeline(url: str, executor, **kwargs) -> PipelineRun:
    run = services.pipeline_prepare(url=url, **kwargs)
    pipelines.execute(run, executor=executor)
    run.refresh_from_db()
    return run


def outputs(run: PipelineRun) -> list[list[str]]:
    """Each command's whole output, step by step."""
    return [
        [
            "".join(c.text for c in command.chunks.all())
            for command in step.commands.all()
        ]
        for step in run.steps.all()
    ]


def test_hello_world(repo, executor_factory, settings):
    url = repo(pipeline_file({"name": "Hello", "script": ["echo Hello World"]}))
    run = run_pipeline(url, executor_factory())
    assert run.status == S.SUCCESSFUL, run.error
    step = run.steps.get()
    assert step.status == S.SUCCESSFUL and step.image == "localhost/busybox:latest"
    command = step.commands.get()
    assert command.exit_code == 0
    assert outputs(run) == [["Hello World\n"]]
    assert run.duration is not None and run.started_at <= run.finished_at
    # The workspace is gone and nothing of the step is left on the engine.
    assert not Path(settings.PIPELINE_WORKSPACES_DIR, str(run.uuid)).exists()


def test_steps_share_the_workspace_and_see_their_environment(repo, executor_factory):
    url = repo(
        pipeline_file(
            {"name": "write", "script": ["echo from-step-1 > shared.txt"]},
            {
                "name": "read",
                "environment": {"GREETING": "hi there"},
                "script": ["cat shared.txt", 'echo "$GREETING/$RUN_WIDE"'],
            },
            {"name": "list", "script": ["ls data"]},
        ),
        **{"data/input.csv": "a,b\n"},
    )
    run = run_pipeline(url, executor_factory(), environment={"RUN_WIDE": "yes"})
    assert run.status == S.SUCCESSFUL, run.error
    assert outputs(run) == [[""], ["from-step-1\n", "hi there/yes\n"], ["input.csv\n"]]


def test_a_failing_step_fails_the_run_and_aborts_the_rest(repo, executor_factory):
    url = repo(
        pipeline_file(
            {"name": "ok", "script": ["echo fine"]},
            {"name": "bad", "script": ["echo before; exit 3", "echo not run"]},
            {"name": "later", "script": ["echo never"]},
        )
    )
    run = run_pipeline(url, executor_factory())
    assert run.status == S.FAILED
    assert "Step 2 (bad) failed" in run.error and "code 3" in run.error
    ok, bad, later = run.steps.all()
    assert (ok.status, bad.status, later.status) == (S.SUCCESSFUL, S.FAILED, S.ABORTED)
    first, second = bad.commands.all()
    assert first.exit_code == 3 and second.exit_code is None
    assert second.started_at is None and not later.commands.get().started_at


def test_allow_failure_lets_the_run_go_on(repo, executor_factory):
    url = repo(
        pipeline_file(
            {"name": "flaky", "allow_failure": True, "script": ["exit 1"]},
            {"name": "next", "script": ["echo still here"]},
        )
    )
    run = run_pipeline(url, executor_factory())
    assert run.status == S.SUCCESSFUL
    flaky, nxt = run.steps.all()
    assert flaky.status == S.FAILED and nxt.status == S.SUCCESSFUL
    assert outputs(run)[1] == ["still here\n"]


def test_stderr_is_output_not_failure(repo, executor_factory):
    # The original's successor failed any step that wrote to stderr.
    url = repo(pipeline_file({"name": "warn", "script": ["echo warning >&2"]}))
    run = run_pipeline(url, executor_factory())
    assert run.status == S.SUCCESSFUL
    assert outputs(run) == [["warning\n"]]


def test_step_timeout_kills_and_fails(repo, executor_factory):
    url = repo(
        pipeline_file(
            {"name": "slow", "timeout": 1, "script": ["echo start; sleep 30"]},
            {"name": "after", "script": ["echo never"]},
        )
    )
    began = time.monotonic()
    run = run_pipeline(url, executor_factory())
    assert time.monotonic() - began < 12
    assert run.status == S.FAILED
    slow, after = run.steps.all()
    assert slow.status == S.FAILED and "timed out after 1 s" in slow.error
    assert after.status == S.ABORTED
    assert outputs(run)[0] == ["start\n"]


def test_pipeline_timeout(repo, executor_factory):
    url = repo(pipeline_file({"name": "slow", "script": ["sleep 30"]}, timeout=1))
    run = run_pipeline(url, executor_factory())
    assert run.status == S.FAILED
    assert "pipeline timeout" in run.error
    assert "timed out" in run.steps.get().error


def test_cancel_stops_a_running_pipeline(repo, executor_factory):
    url = repo(
        pipeline_file(
            {"name": "long", "script": ["echo working; sleep 30"]},
            {"name": "after", "script": ["echo never"]},
        )
    )
    run = services.pipeline_prepare(url=url)
    executor = executor_factory()
    worker = threading.Thread(
        target=pipelines.execute, args=(run,), kwargs={"executor": executor}
    )
    began = time.monotonic()
    worker.start()
    wait_for(has_output(run), timeout=20)
    assert services.pipeline_cancel(PipelineRun.objects.get(pk=run.pk))
    worker.join(20)
    assert not worker.is_alive()
    assert time.monotonic() - began < 15
    run.refresh_from_db()
    assert run.status == S.STOPPED
    long, after = run.steps.all()
    assert long.status == S.STOPPED and after.status == S.ABORTED


def test_cancel_of_a_pending_run_ends_it_at_once(repo):
    run = services.pipeline_prepare(
        url=repo(pipeline_file({"name": "a", "script": ["true"]}))
    )
    assert services.pipeline_cancel(run)
    run.refresh_from_db()
    assert run.status == S.STOPPED and run.steps.get().status == S.ABORTED
    # A worker picking it up afterwards does nothing.
    pipelines.execute(run, executor=containers.LocalExecutor())
    run.refresh_from_db()
    assert run.status == S.STOPPED and run.started_at is None


def test_output_is_stored_in_chunks_as_it_comes(repo, executor_factory):
    url = repo(
        pipeline_file(
            {
                "name": "ticks",
                "script": ["for i in 1 2 3 4; do echo tick $i; sleep 0.4; done"],
            }
        )
    )
    run = services.pipeline_prepare(url=url)
    worker = threading.Thread(
        target=pipelines.execute, args=(run,), kwargs={"executor": executor_factory()}
    )
    worker.start()
    # Output appears while the command still runs.
    wait_for(has_output(run), timeout=20)
    assert PipelineRun.objects.get(pk=run.pk).status == S.IN_PROGRESS
    worker.join(30)
    run.refresh_from_db()
    command = run.steps.get().commands.get()
    chunks = [c.text for c in command.chunks.all()]
    assert len(chunks) >= 2
    assert "".join(chunks) == "".join(f"tick {i}\n" for i in range(1, 5))


def test_output_cap(repo, executor_factory, settings):
    settings.PIPELINE_MAX_OUTPUT_BYTES = 4096
    url = repo(
        pipeline_file({"name": "chatty", "script": ["yes 0123456789 | head -c 100000"]})
    )
    run = run_pipeline(url, executor_factory())
    assert run.status == S.SUCCESSFUL
    command = run.steps.get().commands.get()
    text = "".join(c.text for c in command.chunks.all())
    assert command.output_truncated and command.output_bytes == 100000
    assert text.startswith("0123456789\n") and "output cut at 4096 bytes" in text
    assert len(text) < 4096 + 200


def test_missing_image_fails_the_step_clearly(repo, docker_client, settings):
    settings.PIPELINE_PULL_IMAGES = False
    url = repo(
        pipeline_file(
            {"name": "nope", "image": "example.invalid/none:1", "script": ["true"]},
            {"name": "after", "script": ["true"]},
        )
    )
    run = run_pipeline(url, containers.DockerExecutor(docker_client))
    assert run.status == S.FAILED
    step = run.steps.first()
    assert (
        'The image "example.invalid/none:1" is not on the container engine'
        in step.error
    )
    assert "PIPELINE_PULL_IMAGES" in step.error
    assert run.steps.last().status == S.ABORTED


def test_containers_have_no_network_and_are_removed(repo, docker_client):
    url = repo(
        pipeline_file(
            {"name": "net", "script": ["ls /sys/class/net", "cat /proc/1/comm"]}
        )
    )
    run = run_pipeline(url, containers.DockerExecutor(docker_client))
    assert run.status == S.SUCCESSFUL, run.error
    interfaces, init = outputs(run)[0]
    assert interfaces.split() == ["lo"]  # network_mode="none": loopback only
    assert init.strip() in {"catatonit", "tini", "docker-init", "podman-init"}
    left = docker_client.containers.list(
        all=True, filters={"label": f"portal.pipeline.run={run.uuid}"}
    )
    assert left == []


def test_local_executor_does_not_leak_the_portal_environment(repo, monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "do-not-leak")
    url = repo(pipeline_file({"name": "env", "script": ["env"]}))
    run = run_pipeline(url, containers.LocalExecutor())
    text = outputs(run)[0][0]
    assert "do-not-leak" not in text and "PIPELINE_WORKSPACE=" in text


def test_local_executor_kills_background_leftovers(repo):
    url = repo(pipeline_file({"name": "bg", "script": ["sleep 60 & echo started"]}))
    began = time.monotonic()
    run = run_pipeline(url, containers.LocalExecutor())
    assert run.status == S.SUCCESSFUL
    assert time.monotonic() - began < 10
    assert outputs(run) == [["started\n"]]


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - the stdlib's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.received.append((self.path, self.headers["X-Pipeline-Event"], body))
        self.send_response(500 if self.path == "/broken" else 200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


def test_callbacks_report_run_step_and_output(repo, receiver, executor_factory):
    url = repo(
        pipeline_file(
            {"name": "one", "script": ["echo a", "echo b"]},
            {"name": "two", "script": ["exit 2"]},
        )
    )
    run = run_pipeline(
        url,
        executor_factory(),
        callback_urls={
            "run": receiver.url + "/run",
            "step": receiver.url + "/step",
            "cmd": receiver.url + "/cmd",
        },
    )
    got = receiver.received
    runs = [body["status"] for path, _, body in got if path == "/run"]
    assert runs == [S.IN_PROGRESS, S.FAILED]
    steps = [
        (body["step_no"], body["status"]) for path, _, body in got if path == "/step"
    ]
    assert steps == [
        (1, S.IN_PROGRESS),
        (1, S.SUCCESSFUL),
        (2, S.IN_PROGRESS),
        (2, S.FAILED),
    ]
    cmd_output = "".join(
        "".join(body["output"]) for path, _, body in got if path == "/cmd"
    )
    assert cmd_output == "a\nb\n"
    final_cmds = [
        body for path, _, body in got if path == "/cmd" and body["exit_code"] == 2
    ]
    assert final_cmds and final_cmds[0]["step_id"] == str(run.steps.last().uuid)
    assert {event for _, event, _ in got} == {"run", "step", "cmd"}


def test_a_failing_callback_is_logged_never_fatal(repo, receiver, caplog, settings):
    settings.PIPELINE_CALLBACK_RETRIES = 1
    url = repo(pipeline_file({"name": "one", "script": ["echo a"]}))
    run = run_pipeline(
        url, containers.LocalExecutor(), callback_urls={"run": receiver.url + "/broken"}
    )
    assert run.status == S.SUCCESSFUL
    # Two run callbacks, each tried twice (one retry), all answered 500.
    assert [path for path, _, _ in receiver.received] == ["/broken"] * 4
    assert "run callback to" in caplog.text and "HTTP 500" in caplog.text
    assert "2 failed" in run.log


def test_lost_pipeline_runs_are_failed_by_the_reconciler(repo, settings):
    run = services.pipeline_prepare(
        url=repo(pipeline_file({"name": "a", "script": ["true"]}))
    )
    run.begin(executor="local", host="elsewhere", now=timezone.now())
    stale = timezone.now() - timezone.timedelta(
        seconds=settings.PACKAGES_LOST_AFTER + 5
    )
    PipelineRun.objects.filter(pk=run.pk).update(heartbeat_at=stale)
    assert [r.pk for r in services.pipelines_reconcile()] == [run.pk]
    run.refresh_from_db()
    assert run.status == S.FAILED and "Lost" in run.error
    assert run.steps.get().status == S.ABORTED
    assert not Path(run.workspace).exists()


def test_auto_uses_local_and_says_so_when_the_engine_does_not_answer(
    repo, settings, monkeypatch, tmp_path
):
    settings.PIPELINE_EXECUTOR = "auto"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    run = services.pipeline_prepare(
        url=repo(pipeline_file({"name": "a", "script": ["echo ok"]}))
    )
    pipelines.execute(run)
    run.refresh_from_db()
    assert run.status == S.SUCCESSFUL and run.executor == "local"
    assert "executor: local" in run.log and "does not answer" in run.log
    assert outputs(run) == [["ok\n"]]


def test_auto_uses_the_engine_when_it_answers(repo, settings, monkeypatch, docker_host):
    settings.PIPELINE_EXECUTOR = "auto"
    monkeypatch.setenv("DOCKER_HOST", docker_host)
    run = services.pipeline_prepare(
        url=repo(pipeline_file({"name": "a", "script": ["echo ok"]}))
    )
    pipelines.execute(run)
    run.refresh_from_db()
    assert run.status == S.SUCCESSFUL and run.executor == "docker"
    assert "executor: docker" in run.log


def test_callback_urls_from_the_environment(repo, receiver, settings):
    settings.PIPELINE_CALLBACK_URL = receiver.url + "/env-run"
    run = run_pipeline(
        repo(pipeline_file({"name": "a", "script": ["true"]})),
        containers.LocalExecutor(),
    )
    assert run.status == S.SUCCESSFUL
    assert [path for path, _, _ in receiver.received] == ["/env-run", "/env-run"]


def test_callbacks_never_slow_a_step(repo, settings):
    """A receiver that never answers: the run ends on time, the callbacks give up
    within their timeout and retries, and nothing fails."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(50)
    settings.PIPELINE_CALLBACK_TIMEOUT = 1
    settings.PIPELINE_CALLBACK_RETRIES = 0
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/cb"
    began = time.monotonic()
    try:
        run = run_pipeline(
            repo(pipeline_file({"name": "a", "script": ["echo 1", "echo 2"]})),
            containers.LocalExecutor(),
            callback_urls={"run": url, "step": url, "cmd": url},
        )
    finally:
        silent.close()
    assert run.status == S.SUCCESSFUL
    # Callbacks go out from a thread; close() waits at most 10 s for them.
    assert time.monotonic() - began < 14
    assert "failed" in run.log or "dropped" in run.log


def test_docker_executor_without_an_engine_fails_the_step_clearly(
    repo, monkeypatch, tmp_path
):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    url = repo(pipeline_file({"name": "a", "script": ["true"]}))
    run = run_pipeline(url, containers.DockerExecutor())
    assert run.status == S.FAILED
    assert "container engine does not answer" in run.steps.get().error


class _BrokenEngine(containers.LocalExecutor):
    """An engine that fails under the second step's first exec."""

    def exec(self, instruction, on_output, should_stop):
        if instruction == "explode":
            raise RuntimeError("container vanished")
        return super().exec(instruction, on_output, should_stop)


def test_an_executor_failure_fails_that_step_and_the_run(repo):
    url = repo(
        pipeline_file(
            {"name": "ok", "script": ["echo fine"]},
            {"name": "broken", "script": ["explode"]},
            {"name": "later", "script": ["true"]},
        )
    )
    run = run_pipeline(url, _BrokenEngine())
    assert run.status == S.FAILED
    ok, broken, later = run.steps.all()
    assert ok.status == S.SUCCESSFUL and later.status == S.ABORTED
    assert broken.status == S.FAILED and "container vanished" in broken.error


def test_a_worker_without_the_clone_clones_the_same_commit_again(repo):
    """The request cloned on one host; the worker runs on another (no workspace)."""
    import shutil

    url = repo(
        pipeline_file({"name": "a", "script": ["cat fxq-pipeline.yml >/dev/null"]})
    )
    run = services.pipeline_prepare(url=url)
    shutil.rmtree(run.workspace)
    pipelines.execute(run, executor=containers.LocalExecutor())
    run.refresh_from_db()
    assert run.status == S.SUCCESSFUL, run.error
    assert "cloning again" in run.log
    assert not Path(run.workspace).exists()
