"""Runs a pipeline: its steps in order, each line through an executor.

The rules the original broke, kept here: a line's **exit code** decides; the first
failed step (unless ``allow_failure``) fails the run and the steps after it become
ABORTED; a step or pipeline timeout kills the line and fails with "timed out"; a
cancel kills it and ends the run STOPPED; containers are removed and the workspace
deleted in every case. Output is stored in chunks as it comes, batched so that a
chatty command costs a few writes (and callbacks) per second, not one per line.
"""

from __future__ import annotations

import codecs
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from packages_app import containers, gitsource
from packages_app.callbacks import CallbackSender
from packages_app.models import (
    PipelineCommand,
    PipelineOutput,
    PipelineRun,
    PipelineStatus,
    PipelineStep,
)
from packages_app.serializers import (
    pipeline_command_json,
    pipeline_run_json,
    pipeline_step_json,
)

logger = logging.getLogger(__name__)

FLUSH_EVERY = 0.25  # seconds between stored chunks (and callbacks) of one command
FLUSH_BYTES = 64 * 1024
CANCEL_CHECK_EVERY = 0.5
HEARTBEAT_EVERY = 2.0


def workspaces_dir() -> Path:
    return Path(settings.PIPELINE_WORKSPACES_DIR)


def choose_executor(run: PipelineRun):
    """The executor the setting asks for; ``auto`` says in the run log what it chose."""
    wanted = settings.PIPELINE_EXECUTOR
    if wanted == "local":
        return containers.LocalExecutor()
    if wanted == "docker":
        return containers.DockerExecutor()
    ok, about = containers.docker_available()
    if ok:
        run.append_log(f"executor: docker ({about})")
        return containers.DockerExecutor()
    run.append_log(
        f"executor: local — the container engine does not answer ({about}); "
        "step images are not used"
    )
    return containers.LocalExecutor()


class OutputRecorder:
    """A command's output: decoded, capped, stored in chunks, sent to the callback."""

    def __init__(
        self,
        command: PipelineCommand,
        step: PipelineStep,
        callbacks,
        tee: Callable[[bytes], object] | None = None,
    ):
        self.command, self.step, self.callbacks, self.tee = (
            command,
            step,
            callbacks,
            tee,
        )
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.limit = settings.PIPELINE_MAX_OUTPUT_BYTES
        self.pending: list[str] = []
        self.pending_bytes = 0
        self.kept = 0
        self.dropped = 0
        self.seq = 0
        self.last_flush = time.monotonic()

    def __call__(self, data: bytes) -> None:
        if not data:
            if self.pending and time.monotonic() - self.last_flush >= FLUSH_EVERY:
                self.flush()
            return
        if self.tee is not None:
            self.tee(data)
        room = self.limit - self.kept
        if room <= 0:
            self.dropped += len(data)
            return
        if len(data) > room:
            self.dropped += len(data) - room
            data = data[:room]
        self.kept += len(data)
        self._add(self.decoder.decode(data))
        if (
            self.pending_bytes >= FLUSH_BYTES
            or time.monotonic() - self.last_flush >= FLUSH_EVERY
        ):
            self.flush()

    def _add(self, text: str) -> None:
        if text:
            text = text.replace("\x00", "\ufffd")  # databases refuse NUL in text
            self.pending.append(text)
            self.pending_bytes += len(text)

    def flush(self) -> None:
        self.last_flush = time.monotonic()
        if not self.pending:
            return
        text = "".join(self.pending)
        self.pending, self.pending_bytes = [], 0
        PipelineOutput.objects.create(command=self.command, seq=self.seq, text=text)
        offset = self.seq
        self.seq += 1
        if self.callbacks.active:
            payload = pipeline_command_json(self.command, self.step, output=[text])
            payload["output_offset"] = offset
            self.callbacks.send("cmd", payload)

    def close(self) -> None:
        self._add(self.decoder.decode(b"", final=True))
        if self.dropped:
            self.command.output_truncated = True
            self._add(
                f"\n[output cut at {self.limit} bytes: {self.dropped} more bytes "
                "were not kept]\n"
            )
        self.flush()
        self.command.output_bytes = self.kept + self.dropped


class Watch:
    """Answers "should this line stop?": pipeline deadline, step deadline, cancel.

    Also writes the run's heartbeat. The cancel check reads the database at most
    twice a second; ``extra_cancel`` lets a package run's cancel stop its pipeline.
    """

    def __init__(
        self, run: PipelineRun, deadline: float, extra_cancel: Callable[[], bool]
    ):
        self.run, self.deadline, self.extra_cancel = run, deadline, extra_cancel
        self.step_deadline = deadline
        self.why_timeout = ""
        self.last_check = self.last_beat = 0.0
        self.cancelled = False

    def for_step(self, timeout: int | None) -> None:
        now = time.monotonic()
        self.step_deadline = min(
            self.deadline, now + timeout if timeout else self.deadline
        )
        self.why_timeout = (
            f"timed out after {timeout} s (step timeout)"
            if timeout and now + timeout < self.deadline
            else "timed out (pipeline timeout)"
        )

    def pipeline_timed_out(self) -> bool:
        return time.monotonic() >= self.deadline

    def __call__(self) -> str:
        now = time.monotonic()
        if now - self.last_beat >= HEARTBEAT_EVERY:
            self.last_beat = now
            self.run.beat(timezone.now())
        if not self.cancelled and now - self.last_check >= CANCEL_CHECK_EVERY:
            self.last_check = now
            self.cancelled = self.run.cancel_requested() or self.extra_cancel()
        if self.cancelled:
            return "cancelled"
        if now >= self.step_deadline:
            return "timeout"
        return ""


def ensure_workspace(run: PipelineRun) -> Path:
    """The clone made at request time; cloned again (same commit) when this host
    does not have it (a worker on another machine)."""
    path = workspace_path(run)
    if (path / ".git").is_dir():
        return path
    shutil.rmtree(path, ignore_errors=True)
    run.append_log(f"workspace missing on {socket.gethostname()}: cloning again")
    checkout = gitsource.clone(run.url, run.commit or run.ref, path)
    run.workspace = str(checkout.path)
    PipelineRun.objects.filter(pk=run.pk).update(workspace=run.workspace)
    return path


def execute(
    run: PipelineRun,
    *,
    executor=None,
    extra_cancel: Callable[[], bool] = lambda: False,
    deadline_seconds: float | None = None,
    extra_env: dict[str, str] | None = None,
    tee: Callable[[bytes], object] | None = None,
) -> PipelineRun:
    """Run a PENDING pipeline run to its end, in this thread.

    ``extra_env`` reaches every step without being stored (a package's secrets);
    ``tee`` gets a transcript as it happens (a package run's log). Afterwards
    ``run.timed_out`` tells a timeout from other failures.
    """
    run.timed_out = False
    callbacks = CallbackSender(
        {
            "run": run.pipeline_callback_url or settings.PIPELINE_CALLBACK_URL,
            "step": run.step_callback_url or settings.STEP_CALLBACK_URL,
            "cmd": run.cmd_callback_url or settings.CMD_CALLBACK_URL,
        }
    )
    executor = executor or choose_executor(run)
    if not run.begin(
        executor=executor.name, host=socket.gethostname(), now=timezone.now()
    ):
        run.refresh_from_db()
        return run
    callbacks.send("run", pipeline_run_json(run, steps=False))
    budget = deadline_seconds or run.timeout or settings.PIPELINE_TIMEOUT
    watch = Watch(run, time.monotonic() + budget, extra_cancel)
    status, error = PipelineStatus.SUCCESSFUL, ""
    try:
        workspace = ensure_workspace(run)
        for step in run.steps.all():
            if status != PipelineStatus.SUCCESSFUL:
                step.set_status(PipelineStatus.ABORTED)
                callbacks.send("step", pipeline_step_json(step, run, commands=False))
                continue
            outcome = _run_step(
                run, step, workspace, executor, watch, callbacks, extra_env or {}, tee
            )
            if outcome == "cancelled":
                status, error = PipelineStatus.STOPPED, "Cancelled."
            elif outcome == "timeout" and watch.pipeline_timed_out():
                status, run.timed_out = PipelineStatus.FAILED, True
                error = f"Timed out after {budget:g} s (pipeline timeout)."
            elif outcome and not step.allow_failure:
                status = PipelineStatus.FAILED
                error = f"Step {step.step_no} ({step.name}) failed: {step.error}"
    except Exception as exc:
        logger.exception("pipeline run %s failed in the portal", run.uuid)
        status, error = PipelineStatus.FAILED, f"Internal error: {exc}"
        for step in run.steps.filter(status=PipelineStatus.IN_PROGRESS):
            step.set_status(PipelineStatus.FAILED, error="Internal error.")
        for step in run.steps.filter(status=PipelineStatus.PENDING):
            step.set_status(PipelineStatus.ABORTED)
    finally:
        shutil.rmtree(workspace_path(run), ignore_errors=True)
    run.finish(status, error=error)
    callbacks.send("run", pipeline_run_json(run, steps=False))
    callbacks.close()
    if callbacks.failed or callbacks.dropped:
        run.append_log(
            f"callbacks: {callbacks.sent} sent, {callbacks.failed} failed, "
            f"{callbacks.dropped} dropped"
        )
    return run


def workspace_path(run: PipelineRun) -> Path:
    return Path(run.workspace) if run.workspace else workspaces_dir() / str(run.uuid)


def _run_step(run, step, workspace, executor, watch, callbacks, extra_env, tee) -> str:
    """Runs one step; returns "" on success, else "failed", "timeout" or "cancelled"."""
    step.set_status(PipelineStatus.IN_PROGRESS)
    if tee is not None:
        tee(f"== step {step.step_no}: {step.name} ({step.image})\n".encode())
    callbacks.send("step", pipeline_step_json(step, run, commands=False))
    watch.for_step(step.timeout)
    ctx = containers.StepContext(
        run_id=str(run.uuid),
        step_no=step.step_no,
        image=step.image,
        workspace=workspace,
        environment={**run.environment, **step.environment, **extra_env},
        network=step.network,
    )
    outcome, error = "", ""
    try:
        container_id = executor.start(ctx)
        if container_id:
            step.container_id = container_id
            PipelineStep.objects.filter(pk=step.pk).update(container_id=container_id)
        for command in step.commands.all():
            result = _run_command(command, step, executor, watch, callbacks, tee)
            if result.reason == "cancelled":
                outcome, error = "cancelled", "Cancelled."
            elif result.reason == "timeout":
                outcome, error = "timeout", watch.why_timeout
            elif result.exit_code != 0:
                outcome = "failed"
                error = f"Command {command.cmd_no} exited with code {result.exit_code}."
            if outcome:
                break
    except containers.StepError as exc:
        outcome, error = "failed", str(exc)
    except Exception as exc:  # the engine failed under the step (container gone…)
        logger.exception("step %s of run %s failed in the executor", step.pk, run.uuid)
        outcome, error = "failed", f"The executor failed: {exc}"
    finally:
        executor.stop()
    if tee is not None and error:
        tee(f"[step {step.step_no}] {error}\n".encode())
    final = {
        "": PipelineStatus.SUCCESSFUL,
        "cancelled": PipelineStatus.STOPPED,
    }.get(outcome, PipelineStatus.FAILED)
    step.set_status(final, error=error)
    callbacks.send("step", pipeline_step_json(step, run, commands=False))
    return outcome


def _run_command(
    command, step, executor, watch, callbacks, tee
) -> containers.ExecResult:
    command.started_at = timezone.now()
    PipelineCommand.objects.filter(pk=command.pk).update(started_at=command.started_at)
    if tee is not None:
        tee(f"$ {command.instruction}\n".encode())
    recorder = OutputRecorder(command, step, callbacks, tee)
    result = executor.exec(command.instruction, recorder, watch)
    recorder.close()
    command.exit_code = result.exit_code
    command.finished_at = timezone.now()
    PipelineCommand.objects.filter(pk=command.pk).update(
        exit_code=command.exit_code,
        finished_at=command.finished_at,
        output_bytes=command.output_bytes,
        output_truncated=command.output_truncated,
    )
    if callbacks.active:
        payload = pipeline_command_json(command, step, output=[])
        payload["output_offset"] = recorder.seq
        callbacks.send("cmd", payload)
    return result


def run_for_package(package_run, tee: Callable[[bytes], object]) -> PipelineRun:
    """A package with a git source: its pipeline as the package run's body.

    The package's timeout bounds the whole pipeline; cancelling the package run
    stops it; the package's environment is the pipeline's, and its secrets reach
    the steps without being stored. Raises ``services.PipelineRefused`` when the
    pipeline cannot start (the package run then fails with that reason).
    """
    import json

    from packages_app import services
    from packages_app.models import PackageRun
    from packages_app.runner import effective_parameters

    package = package_run.package
    run = services.pipeline_prepare(
        url=package.git_url,
        ref=package.git_ref,
        environment=package.environment,
        trigger=PipelineRun.Trigger.PACKAGE,
        triggered_by=f"package {package.slug} run #{package_run.pk}",
    )
    PackageRun.objects.filter(pk=package_run.pk).update(pipeline_run=run)
    package_run.pipeline_run = run
    secrets = {
        name: os.environ[name] for name in package.secret_env if name in os.environ
    }
    parameters = effective_parameters(package_run, package_run.started_at)
    tee(f"[portal] pipeline {run.name} {run.uuid} at {run.commit[:12]}\n".encode())

    def cancelled() -> bool:
        # Called twice a second: also the package run's heartbeat.
        runs = PackageRun.objects.filter(pk=package_run.pk)
        runs.update(heartbeat_at=timezone.now())
        return runs.filter(cancel_requested_at__isnull=False).exists()

    return execute(
        run,
        extra_cancel=cancelled,
        deadline_seconds=package_run.timeout,
        extra_env={**secrets, "PORTAL_PARAMETERS": json.dumps(parameters)},
        tee=tee,
    )
