"""The package runner's three speed goals: overhead, output throughput, kill latency.

On a throw-away SQLite database under a temporary VAR_DIR (with
PACKAGES_KILL_GRACE=2), prints the median of several runs of, and every run's value:

1. Overhead of a run of ``/bin/true`` over running ``/bin/true`` directly, in ms:
   - process: ``python manage.py run_package <slug> --no-notify`` as a whole
     process vs ``subprocess.run(["/bin/true"])``;
   - in-process: ``services.run_execute(services.run_create(...))`` vs
     ``subprocess.run(["/bin/true"])``.
2. Output throughput of a package writing 1 GiB of zeros to stdout through
   ``services.run_execute`` into its log (``max_log_bytes`` = 2 GiB), vs the same
   command with its stdout redirected to a file on the same filesystem (goal:
   >= 80 %): in this process (after its earlier runs), and in a fresh Python
   process doing one run (``--child output``), which is what ``run_package`` and a
   worker's first run are; for context, ``manage.py run_package`` with its echo to
   /dev/null, and ``head | cat > file`` (the pipe without the runner). The runner's
   peak memory is the ``ru_maxrss`` (from ``os.wait4``) of those child processes,
   forked by a small launcher (see LAUNCHER), next to the baseline of a child that
   only runs ``django.setup()`` (goal: peak < 100 MB).
3. Kill latency: a package that ignores SIGTERM and sleeps, timeout 1 s: the time
   from the deadline (the run's ``started_at`` + timeout) until ``run_execute``
   returns, after the sweep, with no process carrying ``PORTAL_RUN_ID=<uuid>`` left
   (checked in /proc) (goal: < grace + 0.5 s).

    .venv/bin/python bench/packages.py [--runs N] [--quick]

``--runs N`` replaces every default count (10 overhead, 3 throughput, 5 kill);
``--quick`` is a smoke run: 100 MiB instead of 1 GiB, and 3/1/1 runs. The script
deletes each 1 GiB file after its run, stops every process it started and removes
its temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import setup_django

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20
GiB = 1 << 30
KILL_GRACE = 2
KILL_TIMEOUT = 1
SLEEPER = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "time.sleep(300)"
)
# Every process this script starts itself, stopped on the way out.
STARTED: list[subprocess.Popen] = []


def portal_env(var_dir: str) -> None:
    """Point this process (and the children it starts) at the throw-away portal."""
    for name in ("DATABASE_URL", "PACKAGES_RUNS_DIR", "PACKAGES_ENVS_DIR", "REDIS_URL"):
        os.environ.pop(name, None)
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "VAR_DIR": var_dir,
            "LOG_LEVEL": "ERROR",
            "PACKAGES_KILL_GRACE": str(KILL_GRACE),
        }
    )


def output_command(size: int) -> list[str]:
    return ["/bin/sh", "-c", f"head -c {size} /dev/zero"]


_PACKAGES: dict = {}


def new_run(slug: str):
    from packages_app import services
    from packages_app.models import Package, PackageRun

    if slug not in _PACKAGES:
        _PACKAGES[slug] = Package.objects.get(slug=slug)
    return services.run_create(
        package=_PACKAGES[slug],
        trigger=PackageRun.Trigger.CLI,
        triggered_by="bench",
        notify=False,
    )


def drop_run_files(pk: int) -> None:
    """Delete a run's folder (its log may be 1 GiB), and let the disk settle."""
    from packages_app.models import runs_dir

    shutil.rmtree(runs_dir() / str(pk), ignore_errors=True)
    os.sync()


def processes_with_marker(uuid: str) -> list[int]:
    """Pids whose environment carries PORTAL_RUN_ID=uuid (looked up, not killed)."""
    needle = f"PORTAL_RUN_ID={uuid}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def start(argv: list[str], **kwargs) -> subprocess.Popen:
    proc = subprocess.Popen(argv, **kwargs)
    STARTED.append(proc)
    return proc


# Linux carries a process's peak RSS across exec, and Python starts children with
# vfork: the ru_maxrss of a child started from this process is at least this
# process's own RSS (~57 MiB with Django loaded), whatever the child uses. So the
# children whose memory is measured are forked by a small launcher (python -I -S),
# and inherit its ~5 MiB instead; the launcher reports their ru_maxrss from
# os.wait4 on its stderr.
LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execv(sys.argv[1], sys.argv[1:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
sys.stderr.write("\\nlauncher-maxrss-kb=%d\\n" % usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status) % 256)
"""


def run_measured(argv: list[str], *, capture: bool = False) -> tuple[bytes, float]:
    """Run argv (in ROOT) through the launcher; its stdout and ru_maxrss (MiB)."""
    proc = start(
        [sys.executable, "-I", "-S", "-c", LAUNCHER, *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # so that cleanup() can stop it with its child
    )
    out, err = proc.communicate()
    lines = err.decode(errors="replace").splitlines()
    marks = [line for line in lines if line.startswith("launcher-maxrss-kb=")]
    if proc.returncode != 0 or not marks:
        raise SystemExit(
            f"{argv} exited with {proc.returncode}: {err.decode()[-2000:]}"
        )
    return out or b"", int(marks[-1].split("=")[1]) / 1024


def vm_hwm_kb() -> int:
    """This process's own peak RSS (VmHWM, of its address space only), KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def med(values: list[float]) -> float:
    return statistics.median(values)


def fmt(values: list[float], spec: str = ".1f") -> str:
    return ", ".join(format(v, spec) for v in values)


# --- Children -----------------------------------------------------------------


def child(mode: str, slug: str) -> None:
    """Runs in a child process started by this script; prints one JSON line."""
    setup_django()
    result: dict = {}
    if mode == "output":
        from packages_app import services

        run = new_run(slug)
        started = time.perf_counter()
        run = services.run_execute(run)
        result = {
            "pk": run.pk,
            "seconds": time.perf_counter() - started,
            "status": run.status,
            "output_bytes": run.output_bytes,
        }
    result["vm_hwm_kb"] = vm_hwm_kb()
    print(json.dumps(result), flush=True)


def run_child(mode: str, slug: str) -> tuple[dict, float]:
    """``--child mode slug`` through the launcher; its JSON and ru_maxrss (MiB)."""
    out, maxrss = run_measured(
        [sys.executable, __file__, "--child", mode, slug], capture=True
    )
    return json.loads(out), maxrss


# --- Figures ------------------------------------------------------------------


def bench_overhead(runs: int) -> None:
    from packages_app import services
    from packages_app.models import PackageRun

    env = dict(os.environ)

    def direct() -> float:
        started = time.perf_counter()
        subprocess.run(["/bin/true"], check=True)
        return (time.perf_counter() - started) * 1000

    def whole_process() -> float:
        started = time.perf_counter()
        proc = start(
            [sys.executable, "manage.py", "run_package", "true", "--no-notify"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _, err = proc.communicate()
        elapsed = (time.perf_counter() - started) * 1000
        if proc.returncode != 0:
            raise SystemExit(f"run_package failed ({proc.returncode}): {err.decode()}")
        return elapsed

    def create_and_execute() -> float:
        started = time.perf_counter()
        run = services.run_execute(new_run("true"))
        elapsed = (time.perf_counter() - started) * 1000
        if run.status != PackageRun.Status.SUCCEEDED:
            raise SystemExit(f"run {run.pk} of true: {run.status} {run.error}")
        drop_run_files(run.pk)
        return elapsed

    # One warm-up of each (page cache, .pyc, first queries), not counted.
    direct(), whole_process(), create_and_execute()
    process, process_direct, inproc, inproc_direct = [], [], [], []
    for _ in range(runs):
        process_direct.append(direct())
        process.append(whole_process())
    for _ in range(runs):
        inproc_direct.append(direct())
        inproc.append(create_and_execute())
    p_diff = med(process) - med(process_direct)
    i_diff = med(inproc) - med(inproc_direct)
    slow = sum(1 for v in inproc if v >= 50)
    print("1. Overhead of running /bin/true as a package (ms)")
    print(
        "   direct, subprocess.run(['/bin/true']): median "
        f"{med(process_direct):.2f} ms; runs: {fmt(process_direct, '.2f')}"
    )
    print(
        f"   process, manage.py run_package true --no-notify: median "
        f"{med(process):.0f} ms; runs: {fmt(process, '.0f')}"
    )
    print(f"   => PROCESS OVERHEAD: {p_diff:.0f} ms (median minus median)")
    print(
        "   direct, subprocess.run(['/bin/true']): median "
        f"{med(inproc_direct):.2f} ms; runs: {fmt(inproc_direct, '.2f')}"
    )
    print(
        "   in-process, services.run_execute(services.run_create(...)): median "
        f"{med(inproc):.1f} ms; runs: {fmt(inproc, '.1f')}"
    )
    print(
        f"   => IN-PROCESS OVERHEAD: {i_diff:.1f} ms (median minus median); "
        f"min {min(inproc):.1f} ms; {slow} of {runs} runs took >= 50 ms"
    )
    print(flush=True)


def bench_output(runs: int, size: int, tmp: Path) -> None:
    from packages_app import services
    from packages_app.models import PackageRun

    command = output_command(size)
    pipe_cat = ["/bin/sh", "-c", f"head -c {size} /dev/zero | cat"]
    target = tmp / "direct.out"

    def direct(argv: list[str]) -> float:
        try:
            with target.open("wb") as out:
                started = time.perf_counter()
                subprocess.run(argv, stdout=out, check=True)
                elapsed = time.perf_counter() - started
            if target.stat().st_size != size:
                raise SystemExit(f"{argv}: wrote {target.stat().st_size} bytes")
            return elapsed
        finally:
            target.unlink(missing_ok=True)
            os.sync()

    def check(run) -> None:
        log = Path(run.log_path)
        logged = log.stat().st_size if log.exists() else None
        if (
            run.status != PackageRun.Status.SUCCEEDED
            or run.output_bytes != size
            or logged != size
            or run.log_truncated
        ):
            raise SystemExit(
                f"run {run.pk}: {run.status}, {run.output_bytes} bytes, log "
                f"{logged} bytes, truncated {run.log_truncated}: {run.error}"
            )

    def in_process() -> float:
        run = new_run("output")
        try:
            started = time.perf_counter()
            run = services.run_execute(run)
            elapsed = time.perf_counter() - started
            check(run)
            return elapsed
        finally:
            drop_run_files(run.pk)

    def fresh_child() -> tuple[float, float, float]:
        """bench/packages.py --child output: a new Python doing one run in-process."""
        info, maxrss = run_child("output", "output")
        run = PackageRun.objects.get(pk=info["pk"])
        try:
            check(run)
        finally:
            drop_run_files(run.pk)
        return info["seconds"], maxrss, info["vm_hwm_kb"] / 1024

    def run_package() -> tuple[float, float]:
        """manage.py run_package output --no-notify > /dev/null (echoes the output)."""
        last = PackageRun.objects.order_by("-pk").values_list("pk", flat=True).first()
        new = PackageRun.objects.filter(pk__gt=last or 0)
        try:
            _, maxrss = run_measured(
                [sys.executable, "manage.py", "run_package", "output", "--no-notify"]
            )
            run = new.get()
            check(run)
        finally:
            for pk in new.values_list("pk", flat=True):
                drop_run_files(pk)
        return run.duration, maxrss

    def baseline() -> tuple[float, float]:
        info, maxrss = run_child("baseline", "output")
        return maxrss, info["vm_hwm_kb"] / 1024

    def rate(seconds: float) -> float:
        return size / MiB / seconds

    direct_r, inproc_r, cat_r, child_r, cli_r = [], [], [], [], []
    base_m, base_hwm, child_m, child_hwm, cli_m = [], [], [], [], []
    _, floor = run_measured(["/bin/true"])
    for _ in range(runs):
        direct_r.append(rate(direct(command)))
        inproc_r.append(rate(in_process()))
        cat_r.append(rate(direct(pipe_cat)))
        seconds, maxrss, hwm = fresh_child()
        child_r.append(rate(seconds))
        child_m.append(maxrss)
        child_hwm.append(hwm)
        maxrss, hwm = baseline()
        base_m.append(maxrss)
        base_hwm.append(hwm)
        seconds, maxrss = run_package()
        cli_r.append(rate(seconds))
        cli_m.append(maxrss)

    def ratio(values: list[float]) -> str:
        value = med(values) / med(direct_r) * 100
        return f"{value:.0f} % of direct ({'MET' if value >= 80 else 'NOT MET'})"

    label = f"{size // MiB} MiB" if size % GiB else f"{size // GiB} GiB"
    print(f"2. Output throughput: {label} of zeros on stdout (MiB/s; 1 MiB = 2^20 B)")
    print(
        f"   direct, `head -c {size} /dev/zero` > file: median "
        f"{med(direct_r):.0f} MiB/s; runs: {fmt(direct_r, '.0f')}"
    )
    print(
        "   in-process, services.run_execute in this process (after its earlier "
        f"runs) into the run's log: median {med(inproc_r):.0f} MiB/s; runs: "
        f"{fmt(inproc_r, '.0f')}"
    )
    print(f"   => IN-PROCESS RATIO: {ratio(inproc_r)}; goal >= 80 %")
    print(
        "   fresh process, a new Python doing one run through services.run_execute "
        f"(as run_package does): median {med(child_r):.0f} MiB/s; runs: "
        f"{fmt(child_r, '.0f')}"
    )
    print(f"   => FRESH-PROCESS RATIO: {ratio(child_r)}; goal >= 80 %")
    print(
        "   context: manage.py run_package output --no-notify > /dev/null (echoes "
        f"the output), from the run's duration: median {med(cli_r):.0f} MiB/s; "
        f"runs: {fmt(cli_r, '.0f')}; {ratio(cli_r)}"
    )
    print(
        f"   context: `head -c {size} /dev/zero | cat` > file (the pipe, no runner): "
        f"median {med(cat_r):.0f} MiB/s; runs: {fmt(cat_r, '.0f')}"
    )
    print(
        "   runner peak memory (MiB; goal < 100 MB = 95.4 MiB): ru_maxrss from "
        "os.wait4 of a child forked by a small launcher (floor: the launcher's "
        f"own {floor:.1f} MiB, measured on /bin/true), and the child's own VmHWM"
    )
    print(
        "     baseline, a new Python doing django.setup() only: median "
        f"{med(base_m):.1f} MiB; runs: {fmt(base_m)}; VmHWM {fmt(base_hwm)}"
    )
    print(
        f"     a new Python doing the {label} run in-process: median "
        f"{med(child_m):.1f} MiB; runs: {fmt(child_m)}; VmHWM {fmt(child_hwm)}"
    )
    print(
        f"     manage.py run_package output > /dev/null: median {med(cli_m):.1f} MiB;"
        f" runs: {fmt(cli_m)}"
    )
    print(
        "     (for comparison: this script's own VmHWM is "
        f"{vm_hwm_kb() / 1024:.1f} MiB, which is what ru_maxrss of a child it "
        "started directly would report at least)"
    )
    peak = max(med(child_m), med(cli_m))
    print(
        f"   => PEAK MEMORY: {med(child_m):.1f} MiB, the run in a new Python "
        f"({med(child_m) - med(base_m):+.1f} MiB over its django.setup() baseline); "
        f"{med(cli_m):.1f} MiB, run_package; goal < 100 MB: "
        f"{'MET' if peak * MiB < 100e6 else 'NOT MET'}"
    )
    print(flush=True)


def bench_kill(runs: int) -> None:
    from django.conf import settings

    from packages_app import services

    grace = settings.PACKAGES_KILL_GRACE
    assert grace == KILL_GRACE, grace
    returned, recorded = [], []
    for _ in range(runs):
        run = new_run("sleeper")
        uuid = str(run.uuid)
        try:
            run = services.run_execute(run)
            now = time.time()
            left = processes_with_marker(uuid)
        finally:
            drop_run_files(run.pk)
        deadline = run.started_at.timestamp() + run.timeout
        if left:
            raise SystemExit(f"run {run.pk}: processes {left} still carry its marker")
        if run.status != "timed_out" or run.signal_name != "SIGKILL":
            raise SystemExit(
                f"run {run.pk}: {run.status} {run.signal_name} {run.error}"
            )
        returned.append(now - deadline)
        recorded.append(run.finished_at.timestamp() - deadline)
    goal = grace + 0.5
    print(
        f"3. Kill latency: a package ignoring SIGTERM, timeout {KILL_TIMEOUT} s, "
        f"grace {grace} s (s beyond the deadline = the run's started_at + timeout)"
    )
    print(
        "   until services.run_execute returned (after the sweep; then /proc showed "
        f"no process with the run's PORTAL_RUN_ID): median {med(returned):.3f} s; "
        f"runs: {fmt(returned, '.3f')}"
    )
    print(
        f"   the run's own finished_at: median {med(recorded):.3f} s; "
        f"runs: {fmt(recorded, '.3f')}"
    )
    print(
        f"   => KILL LATENCY: {med(returned):.3f} s beyond the deadline "
        f"({med(returned) - grace:.3f} s beyond the grace; worst run "
        f"{max(returned):.3f} s); goal < grace + 0.5 = {goal:.1f} s: "
        f"{'MET' if max(returned) < goal else 'NOT MET'}"
    )
    print(flush=True)


# --- Main ---------------------------------------------------------------------


def create_packages(tmp: Path, size: int) -> None:
    from packages_app.models import Package

    directory = tmp / "package"
    directory.mkdir()
    for slug, command, timeout, extra in (
        ("true", ["/bin/true"], 60, {}),
        ("output", output_command(size), 3600, {"max_log_bytes": 2 * GiB}),
        ("sleeper", ["{python}", "-c", SLEEPER], KILL_TIMEOUT, {}),
    ):
        package = Package(
            slug=slug,
            directory=str(directory),
            command=command,
            timeout=timeout,
            parameters_as_argument=False,
            **extra,
        )
        package.full_clean()
        package.save()


def cleanup(tmp: str) -> None:
    for proc in STARTED:
        if proc.returncode is None and proc.poll() is None:
            try:  # the launcher leads its own session, with the child it forked
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.kill()
            proc.wait()
    try:
        from packages_app import runner
        from packages_app.models import PackageRun

        for uuid in PackageRun.objects.values_list("uuid", flat=True):
            runner.sweep(str(uuid))
    except Exception as exc:  # the database may be what failed
        print(f"(cleanup: could not sweep the runs' processes: {exc})", file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)


def _stop(signum, frame) -> None:
    raise SystemExit(f"stopped by {signal.Signals(signum).name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, help="runs of every figure")
    parser.add_argument("--quick", action="store_true", help="smoke run: 100 MiB")
    parser.add_argument(
        "--child", nargs=2, metavar=("MODE", "SLUG"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    if args.quick:
        counts, size = (3, 1, 1), 100 * MiB
    else:
        counts, size = (10, 3, 5), GiB
    if args.runs:
        counts = (args.runs,) * 3
    tmp = tempfile.mkdtemp(prefix="bench-packages-")
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)
    portal_env(tmp)
    begun = time.perf_counter()
    try:
        setup_django()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        create_packages(Path(tmp), size)
        print(
            f"bench/packages.py: Python {platform.python_version()}, "
            f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, temp dir {tmp}; "
            f"runs: overhead {counts[0]}, throughput {counts[1]}, kill {counts[2]}"
        )
        print(flush=True)
        bench_overhead(counts[0])
        bench_output(counts[1], size, Path(tmp))
        bench_kill(counts[2])
        print(f"total {time.perf_counter() - begun:.0f} s")
    finally:
        cleanup(tmp)


if __name__ == "__main__":
    main()
