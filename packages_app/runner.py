"""The one runner of package runs, for the command line and the workers alike.

The child runs in its own session (so its whole process group can be signalled),
in the package directory, with an environment built from scratch: the package's
variables, its secret references resolved from the portal's environment, the
parameters and ``PORTAL_RUN_ID`` (the run's UUID, a marker found again by the
sweep). stdout and stderr share one pipe that the runner drains into the run's log
file chunk by chunk, never holding the output in memory, up to the package's cap.

On timeout or cancel: SIGTERM to the group, a grace period, SIGKILL to the group,
then a sweep of every process that still carries the run's marker (one that left
the group with setsid). The same clean-up runs when the child exits while its
descendants linger, so no process of a run outlives it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import select
import signal
import socket
import subprocess
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.utils import timezone

from packages_app.models import PackageRun, runs_dir

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
# fcntl's F_SETPIPE_SZ: a 1 MiB pipe lets one read take 1 MiB instead of 64 KiB.
F_SETPIPE_SZ = 1031
HEAD_BYTES = 64 * 1024
TAIL_BYTES = 64 * 1024
# How long the descendants of a child that exited may keep the pipe open.
ORPHAN_GRACE = 1.0
# How often the runner asks the database whether the run was cancelled.
CANCEL_POLL = 0.5
# Variables of the portal's environment a package inherits; nothing else leaks in
# (DATABASE_URL, SECRET_KEY... stay with the portal).
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER")
TRUNCATED_MARKER = (
    "\n[portal] output beyond {cap} bytes was cut here; the run went on "
    "(see output_bytes for the full size)\n"
)


class RunSetupError(Exception):
    """The run could not start; the message says why, in one line."""


class RunInterrupted(BaseException):
    """The process running the runner was told to stop (SIGTERM, SIGHUP)."""


def _text(data: bytes | bytearray) -> str:
    # PostgreSQL text cannot hold NUL characters.
    return bytes(data).decode("utf-8", "replace").replace("\x00", "\ufffd")


class LogSink:
    """Writes output to the log file up to ``cap`` bytes; keeps a head and a tail."""

    def __init__(self, path: Path, cap: int, echo: BinaryIO | None = None):
        self.path = path
        self.file = path.open("wb")
        self.cap = cap
        self.echo = echo
        self.written = 0
        self.total = 0
        self.truncated = False
        self.head = bytearray()
        self.tail = bytearray()

    def write(self, data: bytes) -> int:
        self.total += len(data)
        if self.echo is not None:
            self.echo.write(data)
            self.echo.flush()
        if len(self.head) < HEAD_BYTES:
            self.head += data[: HEAD_BYTES - len(self.head)]
        self.tail += data[-TAIL_BYTES:]
        if len(self.tail) > 2 * TAIL_BYTES:
            del self.tail[:-TAIL_BYTES]
        if not self.truncated:
            room = self.cap - self.written
            if len(data) <= room:
                self.file.write(data)
                self.written += len(data)
            else:
                self.file.write(data[:room])
                self.file.write(TRUNCATED_MARKER.format(cap=self.cap).encode())
                self.written = self.cap
                self.truncated = True
        return len(data)

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    def fields(self) -> dict:
        """The run's log columns as they stand."""
        return {
            "output_bytes": self.total,
            "log_truncated": self.truncated,
            "log_head": _text(self.head),
            "log_tail": _text(self.tail[-TAIL_BYTES:]),
        }


def effective_parameters(run: PackageRun, started_at) -> dict:
    """Package defaults, overridden by the run's, plus the dynamic parameters."""
    return {
        **run.package.parameters,
        **run.parameters,
        "run_id": run.pk,
        "scheduled_for": run.scheduled_for.isoformat() if run.scheduled_for else None,
        "started_at": started_at.isoformat(),
    }


def build_argv(run: PackageRun, python: Path, parameters: dict) -> list[str]:
    package = run.package
    argv = [arg.replace("{python}", str(python)) for arg in package.command]
    if not os.path.isabs(argv[0]) and os.sep in argv[0]:
        argv[0] = str(Path(package.directory) / argv[0])
    if package.parameters_as_argument:
        argv.append(json.dumps(parameters))
    return argv


def build_env(run: PackageRun, parameters: dict, parameters_file: Path) -> dict:
    package = run.package
    env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
    env.update(package.environment)
    missing = [name for name in package.secret_env if name not in os.environ]
    if missing:
        raise RunSetupError(
            "Secret reference(s) not set in the portal's environment: "
            + ", ".join(missing)
        )
    env.update({name: os.environ[name] for name in package.secret_env})
    env.update(
        {
            "PORTAL_RUN_ID": str(run.uuid),
            "PORTAL_PACKAGE": package.slug,
            "PORTAL_PARAMETERS": json.dumps(parameters),
            "PORTAL_PARAMETERS_FILE": str(parameters_file),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def sweep(marker: str) -> list[int]:
    """SIGKILL every process whose environment carries ``PORTAL_RUN_ID=marker``."""
    needle = f"PORTAL_RUN_ID={marker}".encode()
    killed = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                pass
    return killed


def kill_run_processes(pgid: int | None, marker: str) -> None:
    """SIGKILL what is left of a run: its process group, then any stray by marker."""
    if pgid:
        _signal_group(pgid, signal.SIGKILL)
    strays = sweep(marker)
    if strays:
        logger.warning(
            "killed %d process(es) of run %s outside its group", len(strays), marker
        )


@dataclass
class Ending:
    status: str
    exit_code: int | None = None
    signal_name: str = ""
    error: str = ""


def _describe_exit(code: int) -> Ending:
    if code == 0:
        return Ending(PackageRun.Status.SUCCEEDED, exit_code=0)
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (possibly the out-of-memory killer)" if -code == signal.SIGKILL else ""
        return Ending(
            PackageRun.Status.FAILED, signal_name=name, error=f"Killed by {name}{hint}."
        )
    return Ending(
        PackageRun.Status.FAILED, exit_code=code, error=f"Exited with code {code}."
    )


class Supervisor:
    """Drains the pipe, watches the deadline and cancel requests, kills, reaps."""

    def __init__(
        self, run: PackageRun, proc: subprocess.Popen, pipe: int, sink: LogSink
    ):
        self.run = run
        self.proc = proc
        self.pipe: int | None = pipe
        self.sink = sink
        self.grace = settings.PACKAGES_KILL_GRACE
        self.heartbeat = settings.PACKAGES_HEARTBEAT
        self.reason: str | None = None  # "timeout" or "cancel" once killing
        self.term_sent_at: float | None = None
        self.kill_sent = False
        self.exit_status: int | None = None
        self.rusage = None
        self.exited_at: float | None = None
        self.peak_rss_kb = 0
        # One reusable buffer: a fresh 1 MiB bytes object per read costs an mmap
        # and munmap each time in a new process (half the throughput).
        self.buffer = bytearray(CHUNK)
        self.view = memoryview(self.buffer)
        try:
            fcntl.fcntl(pipe, F_SETPIPE_SZ, CHUNK)
        except OSError:
            pass  # above /proc/sys/fs/pipe-max-size: keep the default
        # Readable when the child exits, so the reap needs no polling delay.
        try:
            self.pidfd: int | None = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            self.pidfd = None

    def _read(self, wait: float) -> None:
        fds = [fd for fd in (self.pipe, self.pidfd) if fd is not None]
        if self.exit_status is not None and self.pidfd in fds:
            fds.remove(self.pidfd)
        if not fds:
            time.sleep(wait)
            return
        ready, _, _ = select.select(fds, [], [], wait)
        if self.pipe is None or self.pipe not in ready:
            return
        n = os.readv(self.pipe, [self.buffer])
        if n:
            self.sink.write(self.view[:n])
        else:
            os.close(self.pipe)
            self.pipe = None

    def _sample_memory(self) -> None:
        """The child's own peak RSS (VmHWM). wait4's ru_maxrss is no use here: a
        vforked child inherits the runner's high-water mark at exec."""
        try:
            with open(f"/proc/{self.proc.pid}/status", "rb") as status:
                for line in status:
                    if line.startswith(b"VmHWM:"):
                        self.peak_rss_kb = max(self.peak_rss_kb, int(line.split()[1]))
                        return
        except (OSError, ValueError, IndexError):
            pass

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def _reap(self, now: float) -> None:
        if self.exit_status is not None:
            return
        self._sample_memory()
        pid, status, rusage = os.wait4(self.proc.pid, os.WNOHANG)
        if pid:
            self.exit_status = status
            self.rusage = rusage
            self.exited_at = now
            # Reaped here, with its rusage; Popen must not try again.
            self.proc.returncode = os.waitstatus_to_exitcode(status)

    def _start_kill(self, reason: str, now: float) -> None:
        self.reason = reason
        self.term_sent_at = now
        _signal_group(self.run.pgid, signal.SIGTERM)

    def _cancel_requested(self) -> bool:
        return PackageRun.objects.filter(
            pk=self.run.pk, cancel_requested_at__isnull=False
        ).exists()

    def _beat(self) -> None:
        self.sink.flush()
        fields = self.sink.fields()
        PackageRun.objects.filter(pk=self.run.pk).update(
            heartbeat_at=timezone.now(),
            output_bytes=fields["output_bytes"],
            log_tail=fields["log_tail"],
        )

    def supervise(self) -> Ending:
        started = time.monotonic()
        deadline = started + self.run.timeout
        next_beat = started + self.heartbeat
        next_cancel_check = started + CANCEL_POLL
        while True:
            now = time.monotonic()
            self._read(0.1 if self.pipe is not None else 0.05)
            now = time.monotonic()
            self._reap(now)
            if self.exit_status is not None:
                if self.pipe is None:
                    break
                # The child is gone but a descendant still holds the pipe.
                if now - self.exited_at > ORPHAN_GRACE:
                    kill_run_processes(self.run.pgid, str(self.run.uuid))
                if now - self.exited_at > ORPHAN_GRACE + 5:
                    os.close(self.pipe)
                    self.pipe = None
                    break
            elif self.reason is None:
                if now >= deadline:
                    self._start_kill("timeout", now)
                elif now >= next_cancel_check:
                    next_cancel_check = now + CANCEL_POLL
                    if self._cancel_requested():
                        self._start_kill("cancel", now)
            elif not self.kill_sent and now - self.term_sent_at >= self.grace:
                self.kill_sent = True
                kill_run_processes(self.run.pgid, str(self.run.uuid))
            if now >= next_beat:
                next_beat = now + self.heartbeat
                self._beat()
        # Whatever the ending, nothing of the run may survive it.
        kill_run_processes(self.run.pgid, str(self.run.uuid))
        return self._ending()

    def drain(self, limit: float = 2.0) -> None:
        """After a kill: keep what the run wrote before it died, then reap it."""
        deadline = time.monotonic() + limit
        while self.pipe is not None and time.monotonic() < deadline:
            self._read(0.1)
        if self.pipe is not None:
            os.close(self.pipe)
            self.pipe = None
        while self.exit_status is None and time.monotonic() < deadline:
            self._reap(time.monotonic())

    def _ending(self) -> Ending:
        code = os.waitstatus_to_exitcode(self.exit_status)
        if self.reason == "timeout":
            how = "SIGKILL after the grace period" if self.kill_sent else "SIGTERM"
            return Ending(
                PackageRun.Status.TIMED_OUT,
                exit_code=code if code >= 0 else None,
                signal_name=signal.Signals(-code).name if code < 0 else "",
                error=f"Timed out after {self.run.timeout} s; stopped with {how}.",
            )
        if self.reason == "cancel":
            return Ending(
                PackageRun.Status.CANCELLED,
                exit_code=code if code >= 0 else None,
                signal_name=signal.Signals(-code).name if code < 0 else "",
                error="Cancelled.",
            )
        return _describe_exit(code)

    def resource_fields(self) -> dict:
        if self.rusage is None:
            return {}
        return {
            "cpu_user": round(self.rusage.ru_utime, 3),
            "cpu_system": round(self.rusage.ru_stime, 3),
            # A child too quick to be sampled: None beats the runner's own peak.
            "max_rss_kb": self.peak_rss_kb or None,
        }


def _execute_pipeline(run: PackageRun, sink: LogSink) -> PackageRun:
    """A package with a git source runs its pipeline; the transcript is its log."""
    from packages_app import pipelines, services
    from packages_app.models import PipelineRun

    try:
        pipeline = pipelines.run_for_package(run, sink.write)
    except services.PipelineRefused as exc:
        raise RunSetupError(f"The pipeline could not start: {exc}") from exc
    sink.close()
    if pipeline.status == PipelineRun.Status.SUCCESSFUL:
        status = PackageRun.Status.SUCCEEDED
    elif pipeline.status == PipelineRun.Status.STOPPED:
        status = PackageRun.Status.CANCELLED
    elif pipeline.timed_out:
        status = PackageRun.Status.TIMED_OUT
    else:
        status = PackageRun.Status.FAILED
    run.finish(status, error=pipeline.error, **sink.fields())
    return run


def execute(
    run: PackageRun,
    *,
    echo: BinaryIO | None = None,
    ensure_env: Callable | None = None,
) -> PackageRun:
    """Run a claimed (RUNNING) run to its end and record the outcome on it."""
    from packages_app import envs

    ensure_env = ensure_env or envs.ensure_env
    package = run.package
    run_dir = runs_dir() / str(run.pk)
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "output.log"
    sink = LogSink(log_path, package.max_log_bytes, echo)
    PackageRun.objects.filter(pk=run.pk).update(log_path=str(log_path))
    run.log_path = str(log_path)
    proc = None
    supervisor = None
    try:
        if package.is_pipeline:
            return _execute_pipeline(run, sink)
        try:
            python = ensure_env(package, log=sink)
        except envs.EnvBuildError as exc:
            raise RunSetupError(
                f"Building the package environment failed: {exc}"
            ) from exc
        parameters = effective_parameters(run, run.started_at or timezone.now())
        parameters_file = run_dir / "parameters.json"
        parameters_file.write_text(json.dumps(parameters, indent=2))
        argv = build_argv(run, python, parameters)
        env = build_env(run, parameters, parameters_file)
        if not Path(package.directory).is_dir():
            raise RunSetupError(
                f"The package directory {package.directory} does not exist."
            )
        read_end, write_end = os.pipe()
        try:
            proc = subprocess.Popen(
                argv,
                cwd=package.directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=write_end,
                stderr=write_end,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            os.close(read_end)
            raise RunSetupError(
                f"Cannot start {argv[0]}: {exc.strerror or exc}"
            ) from exc
        finally:
            os.close(write_end)
        run.start(
            pid=proc.pid,
            host=socket.gethostname(),
            log_path=str(log_path),
            now=timezone.now(),
        )
        supervisor = Supervisor(run, proc, read_end, sink)
        try:
            ending = supervisor.supervise()
        finally:
            supervisor.close()
        sink.close()
        run.finish(
            ending.status,
            exit_code=ending.exit_code,
            signal_name=ending.signal_name,
            error=ending.error,
            **supervisor.resource_fields(),
            **sink.fields(),
        )
    except RunSetupError as exc:
        sink.write(f"\n[portal] {exc}\n".encode())
        sink.close()
        run.finish(PackageRun.Status.FAILED, error=str(exc), **sink.fields())
    except BaseException as exc:
        # The runner itself failed, or was interrupted (Ctrl-C, a stopping worker):
        # leave nothing running behind, and say what happened on the run.
        if proc is not None:
            kill_run_processes(proc.pid, str(run.uuid))
        if supervisor is not None and not sink.file.closed:
            supervisor.drain()
        if not sink.file.closed:
            sink.close()
        if isinstance(exc, KeyboardInterrupt | RunInterrupted):
            status = PackageRun.Status.CANCELLED
            error = f"Interrupted: the runner got {exc or 'SIGINT (Ctrl-C)'}."
        else:
            status = PackageRun.Status.FAILED
            error = "The runner failed: " + traceback.format_exc()
        run.finish(status, error=error, **sink.fields())
        if not isinstance(exc, Exception):
            raise
    return run
