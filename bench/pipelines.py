"""A three-step pipeline through the portal vs the same containers done directly.

On a throw-away SQLite database under a temporary VAR_DIR, with a fixture
repository (three steps on ``localhost/busybox``, four instructions in all) served
by a real ``git daemon`` on 127.0.0.1, prints every run and the medians of:

- direct, the baseline: the docker SDK alone. ``git clone --depth 1`` of the
  git:// URL (a subprocess), then for each step a container created and started
  exactly as ``containers.DockerExecutor`` does (same image, entrypoint loop,
  ``init=True``, ``network_mode="none"``, the clone bind-mounted at the same
  working dir, same labels), each instruction as ``api.exec_create`` +
  ``api.exec_start(stream=True, demux=True)`` with its output consumed +
  ``api.exec_inspect`` for the exit code, then ``remove(force=True)``; timed with
  and without the clone;
- portal: ``services.pipeline_prepare(url="git://...")`` (clone, parse, DB rows)
  then ``pipelines.execute(run, executor=DockerExecutor(client))`` (no engine
  auto-detection), the run checked SUCCESSFUL with the expected output; timed as
  prepare + execute (vs direct with the clone) and execute alone (vs direct
  without it).

Then the ratios portal / direct (goal <= 1.3), the per-step overhead in ms
((portal execute - direct without clone) / 3), and, from extra runs that are not
counted, where the portal's time goes (clone, parse, DB, container start/stop,
execs), phase by phase.

    .venv/bin/python bench/pipelines.py [--runs N] [--phases N]

One warm-up run of each path first (not counted); then ``--runs`` (default 5) runs
of each, interleaved direct/portal; then ``--phases`` (default 3; 0 skips them)
instrumented runs of each path for the breakdown. DOCKER_HOST defaults to
podman's socket of ``scripts/setup-containers.sh``, which is run when the engine
does not answer.
The script stops the git daemon it started, removes every container it or the
portal made for it, and removes its temporary folder.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures.gitdaemon import (  # noqa: E402 - needs ROOT on the path
    GIT_ENV,
    make_repo,
    start_git_daemon,
)

DEFAULT_DOCKER_HOST = "unix:///run/portal-podman/podman.sock"
IMAGE = "localhost/busybox"
GOAL = 1.3
# The fixture pipeline: three steps, four instructions; and what each one prints.
STEPS = [
    ("write", ["echo hello > a.txt", "cat a.txt"]),
    ("count", ["wc -c a.txt"]),
    ("list", ["ls -la"]),
]
EXPECTED = [["", "hello\n"], ["6 a.txt\n"], None]  # None: not compared
PIPELINE_YML = "pipelines:\n  steps:\n" + "".join(
    f"    - step:\n        name: {name}\n        image: {IMAGE}\n        script:\n"
    + "".join(f"          - {line}\n" for line in script)
    for name, script in STEPS
)
# Every process this script starts itself, and every run id whose containers it
# (or the portal, for it) made: stopped and removed on the way out.
STARTED: list[subprocess.Popen] = []
RUN_IDS: list[str] = []


def portal_env(var_dir: str) -> None:
    """Point this process at the throw-away portal, before django.setup()."""
    for name in (
        "DATABASE_URL",
        "REDIS_URL",
        "PIPELINE_WORKSPACES_DIR",
        "PIPELINE_CALLBACK_URL",
        "STEP_CALLBACK_URL",
        "CMD_CALLBACK_URL",
        "PIPELINE_PULL_IMAGES",
    ):
        os.environ.pop(name, None)
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "VAR_DIR": var_dir,
            "LOG_LEVEL": "ERROR",
            "PIPELINE_GIT_SCHEMES": "git,file",
            "PIPELINE_EXECUTOR": "docker",
        }
    )


def setup_django() -> None:
    import django

    django.setup()


def med(values: list[float]) -> float:
    return statistics.median(values)


def fmt(values: list[float], spec: str = ".3f") -> str:
    return ", ".join(format(v, spec) for v in values)


# --- Engine, repository, git daemon ------------------------------------------------


def ping(host: str) -> str:
    """ "" when the engine at host answers, else why not."""
    import docker

    try:
        client = docker.DockerClient(base_url=host, timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ""


def docker_host() -> str:
    """DOCKER_HOST (default: podman's socket), set up when it does not answer."""
    host = os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
    if not ping(host):
        return host
    setup = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup-containers.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = setup.stdout.strip().splitlines()
    if setup.returncode != 0 or not lines or not lines[-1].startswith("DOCKER_HOST="):
        raise SystemExit(f"no container engine: {setup.stderr.strip()[-2000:]}")
    host = lines[-1].split("=", 1)[1]
    if reason := ping(host):
        raise SystemExit(f"the container engine at {host} does not answer: {reason}")
    return host


def step_container(client, dest: Path, run_id: str, step_no: int):
    """A step's container made as DockerExecutor.start makes it (not started)."""
    from packages_app.containers import WORKDIR

    return client.containers.create(
        IMAGE,
        entrypoint=["/bin/sh", "-c", "while :; do sleep 3600; done"],
        command=[],
        init=True,
        detach=True,
        network_mode="none",
        working_dir=WORKDIR,
        environment={"PIPELINE_WORKSPACE": WORKDIR},
        volumes={str(dest): {"bind": WORKDIR, "mode": "rw"}},
        labels={"portal.pipeline.run": run_id},
        name=f"fxq-{run_id}-{step_no}",
    )


# --- The two paths -----------------------------------------------------------------


def direct(client, url: str, tmp: Path) -> tuple[float, float]:
    """The docker SDK alone; (seconds with the clone, seconds without it)."""
    from packages_app.containers import WORKDIR

    run_id = f"bench-{uuid.uuid4()}"
    RUN_IDS.append(run_id)
    dest = tmp / "direct" / run_id
    api = client.api
    outputs: list[list[str]] = []
    begun = time.perf_counter()
    subprocess.run(
        ["git", "clone", "--quiet", "--depth", "1", "--", url, str(dest)],
        env={**os.environ, **GIT_ENV},
        check=True,
    )
    cloned = time.perf_counter()
    try:
        for step_no, (_, script) in enumerate(STEPS, start=1):
            container = step_container(client, dest, run_id, step_no)
            try:
                container.start()
                texts = []
                for line in script:
                    exec_id = api.exec_create(
                        container.id,
                        ["/bin/sh", "-c", line],
                        stdout=True,
                        stderr=True,
                        workdir=WORKDIR,
                    )["Id"]
                    chunks = []
                    for out, err in api.exec_start(exec_id, stream=True, demux=True):
                        chunks.extend(part for part in (out, err) if part)
                    code = api.exec_inspect(exec_id).get("ExitCode")
                    if code != 0:
                        raise SystemExit(f"direct: {line!r} exited with {code}")
                    texts.append(b"".join(chunks).decode())
                outputs.append(texts)
            finally:
                container.remove(force=True)
        ended = time.perf_counter()
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    check_outputs("direct", outputs)
    return ended - begun, ended - cloned


def portal(client, url: str) -> tuple[float, float]:
    """prepare + execute; (seconds for both, seconds for execute alone)."""
    from packages_app import containers, pipelines, services
    from packages_app.models import PipelineRun

    begun = time.perf_counter()
    run = services.pipeline_prepare(url=url, triggered_by="bench")
    RUN_IDS.append(str(run.uuid))
    prepared = time.perf_counter()
    run = pipelines.execute(run, executor=containers.DockerExecutor(client))
    ended = time.perf_counter()
    run.refresh_from_db()
    if run.status != PipelineRun.Status.SUCCESSFUL:
        raise SystemExit(f"portal run {run.uuid}: {run.status} {run.error}")
    check_outputs(
        f"portal run {run.uuid}",
        [
            ["".join(c.text for c in cmd.chunks.all()) for cmd in step.commands.all()]
            for step in run.steps.all()
        ],
    )
    return ended - begun, ended - prepared


def check_outputs(who: str, outputs: list[list[str]]) -> None:
    shape = [len(script) for _, script in STEPS]
    if [len(texts) for texts in outputs] != shape:
        raise SystemExit(f"{who}: {outputs!r} is not {shape} commands")
    for texts, expected in zip(outputs, EXPECTED, strict=True):
        if expected is not None and [t.strip() for t in texts] != [
            e.strip() for e in expected
        ]:
            raise SystemExit(f"{who}: output {texts!r}, expected {expected!r}")


# --- Where the portal's time goes -----------------------------------------------------


class Timings:
    def __init__(self):
        self.spent: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.phase = ""

    def add(self, name: str, seconds: float) -> None:
        self.spent[name] += seconds
        self.calls[name] += 1

    @contextmanager
    def timed(self, name: str):
        begun = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - begun)

    def wrap(self, owner, attr: str, name: str, patched: list) -> None:
        original = getattr(owner, attr)

        def timed(*args, **kwargs):
            with self.timed(name):
                return original(*args, **kwargs)

        patched.append((owner, attr, owner.__dict__.get(attr, _MISSING)))
        setattr(owner, attr, timed)


_MISSING = object()


@contextmanager
def instrumented(timings: Timings):
    """Wrap the portal's phases in timers (for the phase runs only)."""
    from django.db import connection

    from packages_app import containers, gitsource, pipeline_spec, pipelines
    from packages_app.models import PipelineRun

    patched: list = []
    t = timings
    docker_executor = containers.DockerExecutor
    for owner, attr, name in (
        (gitsource, "clone", "clone"),
        (pipeline_spec, "load", "parse"),
        (docker_executor, "start", "start"),
        (docker_executor, "_image", "image"),
        (docker_executor, "exec", "exec"),
        (docker_executor, "stop", "stop"),
        (pipelines.Watch, "__call__", "watch"),
        (PipelineRun, "cancel_requested", "cancel"),
        (PipelineRun, "beat", "beat"),
        (pipelines.OutputRecorder, "flush", "flush"),
        (pipelines, "ensure_workspace", "workspace"),
    ):
        t.wrap(owner, attr, name, patched)

    def sql_timer(execute, sql, params, many, context):
        with t.timed(f"sql-{t.phase}"):
            return execute(sql, params, many, context)

    try:
        with connection.execute_wrapper(sql_timer):
            yield
    finally:
        for owner, attr, old in reversed(patched):
            if old is _MISSING:
                delattr(owner, attr)
            else:
                setattr(owner, attr, old)


def bench_phases(client, url: str, runs: int) -> None:
    from packages_app import containers, pipelines, services
    from packages_app.models import PipelineRun

    t = Timings()
    with instrumented(t):
        for _ in range(runs):
            t.phase = "prepare"
            with t.timed("prepare"):
                run = services.pipeline_prepare(url=url, triggered_by="bench phases")
            RUN_IDS.append(str(run.uuid))
            t.phase = "execute"
            with t.timed("execute"):
                run = pipelines.execute(run, executor=containers.DockerExecutor(client))
            if run.status != PipelineRun.Status.SUCCESSFUL:
                raise SystemExit(f"portal run {run.uuid}: {run.status} {run.error}")

    def ms(name: str) -> float:
        return t.spent[name] / runs * 1000

    def row(label: str, name: str, indent: int = 3) -> None:
        calls = t.calls[name] / runs
        print(f"{' ' * indent}{label}: {ms(name):.1f} ms ({calls:g} calls)")

    print(
        f"3. Where the portal's time goes: {runs} instrumented runs (not counted "
        "above); ms per run (mean), calls per run; indented lines are part of "
        "the line above"
    )
    row("pipeline_prepare", "prepare")
    row(
        "gitsource.clone (init, fetch --depth 1, checkout, rev-parse, remote)",
        "clone",
        5,
    )
    row("pipeline_spec.load", "parse", 5)
    row("SQL (run, 3 steps, 4 commands)", "sql-prepare", 5)
    rest = ms("prepare") - ms("clone") - ms("parse") - ms("sql-prepare")
    print(f"     the rest: {rest:.1f} ms")
    row("pipelines.execute", "execute")
    row("executor.start: image check + container create + start", "start", 5)
    row("image check (images.get)", "image", 7)
    row("executor.exec", "exec", 5)
    row("should_stop (Watch)", "watch", 7)
    row("cancel check (DB read)", "cancel", 9)
    row("heartbeat (DB write)", "beat", 9)
    row("output flush (DB write)", "flush", 7)
    row("executor.stop: container remove(force=True)", "stop", 5)
    row("ensure_workspace", "workspace", 5)
    outside = ms("execute") - ms("start") - ms("exec") - ms("stop")
    print(
        f"     outside the executor (statuses, command rows, workspace removal): "
        f"{outside:.1f} ms, {outside / len(STEPS):.1f} ms per step"
    )
    row("all SQL of execute (included above)", "sql-execute", 5)
    print(flush=True)


def bench_direct_phases(client, url: str, tmp: Path, runs: int) -> None:
    """The direct path's own phases, to set against the portal's."""
    from packages_app.containers import WORKDIR

    t = Timings()
    api = client.api
    for _ in range(runs):
        run_id = f"bench-{uuid.uuid4()}"
        RUN_IDS.append(run_id)
        dest = tmp / "direct" / run_id
        with t.timed("clone"):
            subprocess.run(
                ["git", "clone", "--quiet", "--depth", "1", "--", url, str(dest)],
                env={**os.environ, **GIT_ENV},
                check=True,
            )
        try:
            for step_no, (_, script) in enumerate(STEPS, start=1):
                with t.timed("start"):
                    container = step_container(client, dest, run_id, step_no)
                    container.start()
                for line in script:
                    with t.timed("exec"):
                        exec_id = api.exec_create(
                            container.id,
                            ["/bin/sh", "-c", line],
                            stdout=True,
                            stderr=True,
                            workdir=WORKDIR,
                        )["Id"]
                        for _ in api.exec_start(exec_id, stream=True, demux=True):
                            pass
                        api.exec_inspect(exec_id)
                with t.timed("stop"):
                    container.remove(force=True)
        finally:
            shutil.rmtree(dest, ignore_errors=True)
    print(f"   direct, for comparison ({runs} runs; ms per run (mean), calls per run):")
    for label, name in (
        ("git clone --depth 1", "clone"),
        ("container create + start", "start"),
        ("exec create + start (stream) + inspect", "exec"),
        ("container remove(force=True)", "stop"),
    ):
        print(
            f"     {label}: {t.spent[name] / runs * 1000:.1f} ms "
            f"({t.calls[name] / runs:g} calls)"
        )
    print(flush=True)


# --- Main --------------------------------------------------------------------------


def bench(client, url: str, tmp: Path, runs: int) -> None:
    # One warm-up of each (page cache, image layers, first queries), not counted.
    direct(client, url, tmp)
    portal(client, url)
    d_clone, d_exec, p_all, p_exec = [], [], [], []
    for number in range(1, runs + 1):
        with_clone, without = direct(client, url, tmp)
        both, execute_only = portal(client, url)
        d_clone.append(with_clone)
        d_exec.append(without)
        p_all.append(both)
        p_exec.append(execute_only)
        print(
            f"   run {number}: direct {with_clone:.3f} s with the clone, "
            f"{without:.3f} s without; portal {both:.3f} s prepare + execute, "
            f"{execute_only:.3f} s execute",
            flush=True,
        )
    n_lines = sum(len(script) for _, script in STEPS)
    print()
    print(
        f"1. Three steps, {n_lines} instructions, {IMAGE}, network none "
        "(s; medians of interleaved runs)"
    )
    print(
        f"   direct, git clone --depth 1 + SDK: median {med(d_clone):.3f} s; "
        f"runs: {fmt(d_clone)}"
    )
    print(
        f"   portal, pipeline_prepare + execute: median {med(p_all):.3f} s; "
        f"runs: {fmt(p_all)}"
    )
    ratio = med(p_all) / med(d_clone)
    print(
        f"   => WITH THE CLONE: portal / direct = {ratio:.2f}x; goal <= {GOAL}x: "
        f"{'MET' if ratio <= GOAL else 'NOT MET'}"
    )
    print(
        f"   direct, SDK only (no clone): median {med(d_exec):.3f} s; "
        f"runs: {fmt(d_exec)}"
    )
    print(
        f"   portal, pipelines.execute only: median {med(p_exec):.3f} s; "
        f"runs: {fmt(p_exec)}"
    )
    ratio = med(p_exec) / med(d_exec)
    print(
        f"   => WITHOUT THE CLONE: portal / direct = {ratio:.2f}x; goal <= {GOAL}x: "
        f"{'MET' if ratio <= GOAL else 'NOT MET'}"
    )
    prepare = [a - e for a, e in zip(p_all, p_exec, strict=True)]
    clone = [c - e for c, e in zip(d_clone, d_exec, strict=True)]
    print(
        f"   context: portal pipeline_prepare median {med(prepare) * 1000:.0f} ms "
        f"vs direct git clone median {med(clone) * 1000:.0f} ms"
    )
    per_step = (med(p_exec) - med(d_exec)) / len(STEPS) * 1000
    print(
        f"2. => PER-STEP OVERHEAD: {per_step:.0f} ms ((portal execute - direct "
        f"without clone) / {len(STEPS)}, medians)"
    )
    print(flush=True)


def cleanup(tmp: str, client) -> None:
    for proc in STARTED:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if client is not None:
        left = 0
        for run_id in RUN_IDS:
            try:
                found = client.containers.list(
                    all=True, filters={"label": f"portal.pipeline.run={run_id}"}
                )
                for container in found:
                    container.remove(force=True)
                    left += 1
            except Exception as exc:
                print(f"(cleanup: containers of {run_id}: {exc})", file=sys.stderr)
        if left:
            print(f"(cleanup: removed {left} leftover containers)", file=sys.stderr)
        client.close()
    shutil.rmtree(tmp, ignore_errors=True)


def _stop(signum, frame) -> None:
    raise SystemExit(f"stopped by {signal.Signals(signum).name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each path")
    parser.add_argument(
        "--phases",
        type=int,
        default=3,
        help="instrumented runs for the phase breakdown (0: none)",
    )
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-pipelines-")
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)
    portal_env(tmp)
    begun = time.perf_counter()
    client = None
    try:
        host = docker_host()
        os.environ["DOCKER_HOST"] = host
        setup_django()
        import docker
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        client = docker.DockerClient(base_url=host, timeout=60)
        served = Path(tmp) / "served"
        commit = make_repo(
            served / "three-steps",
            {
                "fxq-pipeline.yml": PIPELINE_YML,
                "README": "A three-step pipeline for bench/pipelines.py.\n",
            },
        )
        daemon, port = start_git_daemon(served, Path(tmp) / "git-daemon.log")
        STARTED.append(daemon)
        url = f"git://127.0.0.1:{port}/three-steps"
        version = client.version()
        engine = (version.get("Platform") or {}).get("Name") or "engine"
        print(
            f"bench/pipelines.py: Python {platform.python_version()}, "
            f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, {engine} "
            f"{version.get('Version', '')} at {host}; {url} at {commit[:12]}; "
            f"temp dir {tmp}; runs: {args.runs} of each, interleaved"
        )
        print(flush=True)
        bench(client, url, Path(tmp), args.runs)
        if args.phases:
            bench_phases(client, url, args.phases)
            bench_direct_phases(client, url, Path(tmp), args.phases)
        print(f"total {time.perf_counter() - begun:.0f} s")
    finally:
        cleanup(tmp, client)


if __name__ == "__main__":
    main()
