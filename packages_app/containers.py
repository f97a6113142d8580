"""Where a pipeline step's script lines run: a container, or a local subprocess.

Both executors have one shape: ``start(step)`` prepares the step, ``exec(line, …)``
runs ``/bin/sh -c <line>`` and gives its output as it comes (and ``b""`` a few
times a second while it is silent, so batched output is not held back) and its
exit code,
``stop()`` removes what ``start`` made (always called, idempotent).

``exec`` polls ``should_stop()`` a few times a second from the calling thread (so a
cancel check may use the database); when it answers a reason ("timeout",
"cancelled"), the line is killed and the result carries that reason instead of an
exit code. Output is read by a helper thread, so a silent command never blocks the
polling and a chatty one never waits for the database.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from packages_app.runner import _signal_group, kill_run_processes

logger = logging.getLogger(__name__)

WORKDIR = "/opt/fxquants/pipeline"
POLL = 0.1
_EOF = object()


class StepError(Exception):
    """The step could not start (missing image, engine error); one readable line."""


@dataclass
class ExecResult:
    exit_code: int | None
    reason: str = ""  # "", "timeout" or "cancelled"


@dataclass
class StepContext:
    run_id: str
    step_no: int
    image: str
    workspace: Path
    environment: dict[str, str] = field(default_factory=dict)
    network: str = "none"


def _pump(items: queue.Queue, on_output: Callable[[bytes], None]) -> bool:
    """Hand over what the reader queued; True once the reader is done."""
    while True:
        try:
            item = items.get_nowait()
        except queue.Empty:
            return False
        if item is _EOF:
            return True
        on_output(item)


def _wait(
    items: queue.Queue,
    on_output: Callable[[bytes], None],
    should_stop: Callable[[], str],
    finished: Callable[[], bool] = lambda: False,
) -> str:
    """Pass output along until the reader ends (""), or a stop reason comes."""
    while True:
        try:
            item = items.get(timeout=POLL)
        except queue.Empty:
            item = None
        if item is _EOF:
            return ""
        if item is None:
            on_output(b"")  # a tick: output held back for batching goes out now
        else:
            on_output(item)
            if _pump(items, on_output):
                return ""
        if finished():
            return "finished"
        if reason := should_stop():
            return reason


# --- Docker SDK (docker, or podman's Docker-compatible API) ---------------------


def docker_client(timeout: int = 60):
    """A client for the engine at DOCKER_HOST (or the default socket)."""
    import docker

    return docker.from_env(timeout=timeout)


def docker_available() -> tuple[bool, str]:
    """Whether the engine answers, and what it is (or why not)."""
    try:
        client = docker_client(timeout=3)
        version = client.version()
        client.close()
    except Exception as exc:  # any failure means "not usable": say why
        return False, str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    name = (version.get("Platform") or {}).get("Name") or "engine"
    return True, f"{name} {version.get('Version', '')}".strip()


class DockerExecutor:
    """One container per step, kept alive while its lines run as ``exec``s."""

    name = "docker"

    def __init__(self, client=None):
        self.client = client  # made at the first start: that may fail, clearly
        self.container = None

    def _image(self, image: str) -> None:
        import docker

        try:
            self.client.images.get(image)
            return
        except docker.errors.ImageNotFound:
            if not settings.PIPELINE_PULL_IMAGES:
                raise StepError(
                    f'The image "{image}" is not on the container engine, and pulling '
                    "is off (PIPELINE_PULL_IMAGES)."
                ) from None
        try:
            self.client.images.pull(image)
        except docker.errors.APIError as exc:
            raise StepError(f'The image "{image}" could not be pulled: {exc}') from None

    def start(self, ctx: StepContext) -> str:
        import docker
        import requests

        try:
            if self.client is None:
                self.client = docker_client()
            self._image(ctx.image)
        except (requests.RequestException, docker.errors.DockerException) as exc:
            if isinstance(exc, docker.errors.APIError):
                raise
            raise StepError(
                f"The container engine does not answer (DOCKER_HOST): {exc}"
            ) from None
        try:
            self.container = self.client.containers.create(
                ctx.image,
                # Alive between execs; the init (catatonit, tini) makes a stop quick.
                entrypoint=["/bin/sh", "-c", "while :; do sleep 3600; done"],
                command=[],
                init=True,
                detach=True,
                # Always explicit: without it the container lands on a bridge network.
                network_mode=ctx.network,
                working_dir=WORKDIR,
                environment={**ctx.environment, "PIPELINE_WORKSPACE": WORKDIR},
                volumes={str(ctx.workspace): {"bind": WORKDIR, "mode": "rw"}},
                labels={"portal.pipeline.run": ctx.run_id},
                name=f"fxq-{ctx.run_id}-{ctx.step_no}",
            )
            self.container.start()
        except docker.errors.APIError as exc:
            raise StepError(
                f"The container could not start: {exc.explanation or exc}"
            ) from None
        except (requests.RequestException, docker.errors.DockerException) as exc:
            raise StepError(
                f"The container engine does not answer (DOCKER_HOST): {exc}"
            ) from None
        return self.container.id

    def exec(
        self,
        instruction: str,
        on_output: Callable[[bytes], None],
        should_stop: Callable[[], str],
    ) -> ExecResult:
        api = self.client.api
        exec_id = api.exec_create(
            self.container.id,
            ["/bin/sh", "-c", instruction],
            stdout=True,
            stderr=True,
            workdir=WORKDIR,
        )["Id"]
        stream = api.exec_start(exec_id, stream=True, demux=True)
        items: queue.Queue = queue.Queue()

        def read() -> None:
            try:
                for out, err in stream:
                    if out:
                        items.put(out)
                    if err:
                        items.put(err)
            except Exception as exc:  # the container was killed under the stream
                logger.debug("exec stream ended: %s", exc)
            finally:
                items.put(_EOF)

        reader = threading.Thread(target=read, daemon=True, name="exec-reader")
        reader.start()
        reason = _wait(items, on_output, should_stop)
        if reason:
            self.kill()
            reader.join(timeout=5)
            _pump(items, on_output)
            return ExecResult(None, reason)
        reader.join(timeout=5)
        return ExecResult(api.exec_inspect(exec_id).get("ExitCode"))

    def kill(self) -> None:
        if self.container is not None:
            try:
                self.container.kill()
            except Exception as exc:  # already gone or stopped
                logger.debug("kill: %s", exc)

    def stop(self) -> None:
        if self.container is None:
            return
        try:
            self.container.remove(force=True)
        except Exception as exc:
            logger.warning("could not remove container %s: %s", self.container.id, exc)
        self.container = None


def remove_run_containers(run_id: str, client=None) -> int:
    """Remove every container left of a run (a lost worker's, say), by label."""
    try:
        client = client or docker_client(timeout=10)
        found = client.containers.list(
            all=True, filters={"label": f"portal.pipeline.run={run_id}"}
        )
    except Exception as exc:
        logger.info("no container engine to clean up run %s: %s", run_id, exc)
        return 0
    for container in found:
        try:
            container.remove(force=True)
        except Exception as exc:
            logger.warning("could not remove %s: %s", container.id, exc)
    return len(found)


# --- Local subprocesses ------------------------------------------------------------

BASE_PATH = "/usr/local/bin:/usr/bin:/bin"


class LocalExecutor:
    """Each line as ``/bin/sh -c`` in the workspace, in its own process group.

    The image is not used. The environment is a clean one (never the portal's own,
    which holds its secrets): PATH, HOME, LANG, the run's and the step's variables.
    A line that leaves background processes behind has them killed when it ends,
    like the package runner does, since they would hold the output pipe open.
    """

    name = "local"

    def __init__(self):
        self.ctx: StepContext | None = None

    def start(self, ctx: StepContext) -> str:
        if not ctx.workspace.is_dir():
            raise StepError(f"The workspace {ctx.workspace} is missing.")
        self.ctx = ctx
        return ""

    def _env(self) -> dict[str, str]:
        ctx = self.ctx
        return {
            "PATH": BASE_PATH,
            "HOME": str(ctx.workspace),
            "LANG": "C.UTF-8",
            **ctx.environment,
            "PIPELINE_WORKSPACE": str(ctx.workspace),
            "PORTAL_RUN_ID": ctx.run_id,
        }

    def exec(
        self,
        instruction: str,
        on_output: Callable[[bytes], None],
        should_stop: Callable[[], str],
    ) -> ExecResult:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", instruction],
            cwd=self.ctx.workspace,
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        items: queue.Queue = queue.Queue()

        def read() -> None:
            fd = proc.stdout.fileno()
            try:
                while data := os.read(fd, 65536):
                    items.put(data)
            except OSError:
                pass
            finally:
                items.put(_EOF)

        reader = threading.Thread(target=read, daemon=True, name="local-reader")
        reader.start()
        reason = _wait(items, on_output, should_stop, lambda: proc.poll() is not None)
        if reason and reason != "finished":
            self._kill(proc)
            proc.wait()
            reader.join(timeout=2)
            _pump(items, on_output)
            proc.stdout.close()
            return ExecResult(None, reason)
        proc.wait()
        # Background leftovers of the line keep the pipe open: end them, then drain.
        _signal_group(proc.pid, signal.SIGKILL)
        reader.join(timeout=2)
        _pump(items, on_output)
        proc.stdout.close()
        return ExecResult(proc.returncode)

    def _kill(self, proc: subprocess.Popen) -> None:
        grace = min(settings.PACKAGES_KILL_GRACE, 2)
        _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        kill_run_processes(proc.pid, self.ctx.run_id)

    def kill(self) -> None:
        if self.ctx is not None:
            kill_run_processes(None, self.ctx.run_id)

    def stop(self) -> None:
        self.kill()
        self.ctx = None
