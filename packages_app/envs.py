"""Build and cache one virtualenv per package, keyed by its requirements file.

An env lives in ``PACKAGES_ENVS_DIR/<slug>-<key>``, where the key hashes the
requirements file and the portal's Python version, so editing the file or
upgrading Python gives a new env and never changes one in use. Workers build
under a file lock, into a temporary folder that is renamed into place and only
then marked complete; a half-built env is never used.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from django.conf import settings

if TYPE_CHECKING:
    from packages_app.models import Package

# Seconds each installer step (create the venv, install the requirements) may
# take before its whole process group is killed.
STEP_TIMEOUT = 30 * 60
MARKER = ".portal-complete"
KEY_CHARS = 16
TRUE_WORDS = {"1", "true", "yes", "on"}


class EnvBuildError(Exception):
    """The env could not be built; one line here, the installer output is in the log."""


def envs_dir() -> Path:
    return Path(settings.PACKAGES_ENVS_DIR)


def env_key(package: Package) -> str:
    """A hash of the requirements file's bytes and of the Python that builds the env.

    Only this file is hashed: a change in a file it includes (``-r``, ``-c``) or a
    new release of an unpinned requirement needs ``build_package_env --force``.
    """
    if not package.requirements_file:
        raise EnvBuildError(f"Package {package.slug} has no requirements file.")
    path = Path(package.directory) / package.requirements_file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EnvBuildError(
            f"Cannot read the requirements file {path}: {exc.strerror or exc}."
        ) from exc
    version = ".".join(str(part) for part in sys.version_info[:3])
    digest = hashlib.sha256(f"{sys.implementation.name}-{version}\n".encode())
    digest.update(data)
    return digest.hexdigest()


def env_path(package: Package) -> Path:
    return envs_dir() / f"{package.slug}-{env_key(package)[:KEY_CHARS]}"


def ensure_env(
    package: Package, *, log: BinaryIO | None = None, force: bool = False
) -> Path:
    """Return the Python of the package's env, building the env first if needed.

    Without a requirements file, ``{python}`` is the portal's own interpreter.
    Raises EnvBuildError with a one-line message; the details are in ``log``.
    """
    python, _built = _ensure(package, log=log, force=force)
    return python


def build_env(package: Package, *, log: BinaryIO, force: bool = False) -> Path:
    """Like ensure_env, but says in the log what it did (for build_package_env)."""
    if not package.requirements_file:
        _say(
            log,
            f"{package.slug} has no requirements file; it uses the portal's Python.",
        )
    python, built = _ensure(package, log=log, force=force)
    if package.requirements_file and not built:
        _say(log, f"The env of {package.slug} is up to date.")
    return python


def _ensure(
    package: Package, *, log: BinaryIO | None, force: bool
) -> tuple[Path, bool]:
    if not package.requirements_file:
        return Path(sys.executable), False
    key = env_key(package)
    env = envs_dir() / f"{package.slug}-{key[:KEY_CHARS]}"
    python = env / "bin" / "python"
    if not force and _is_complete(env, key):
        return python, False
    try:
        env.parent.mkdir(parents=True, exist_ok=True)
        with _locked(env.with_name(f"{env.name}.lock"), log):
            # The worker we waited for has probably built it already.
            if not force and _is_complete(env, key):
                return python, False
            _build(package, env, key, log)
    except OSError as exc:
        raise EnvBuildError(f"Cannot build the env {env}: {exc}") from exc
    return python, True


def _is_complete(env: Path, key: str) -> bool:
    try:
        return (env / MARKER).read_text() == key
    except OSError:
        return False


@contextmanager
def _locked(path: Path, log: BinaryIO | None) -> Iterator[None]:
    # flock, not fcntl/lockf: it is per open file, so it also keeps two threads
    # of one worker apart, and the kernel drops it when a builder dies.
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(log, f"Waiting for another worker to finish building {path.stem}.")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _build(package: Package, env: Path, key: str, log: BinaryIO | None) -> None:
    """Build into a temporary folder next to ``env``, then swap it into place."""
    requirements = Path(package.directory) / package.requirements_file
    # We hold the lock, so these can only be left by a builder that died.
    for leftover in env.parent.glob(f".{env.name}.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=f".{env.name}.tmp-", dir=env.parent))
    try:
        staging = work / "env"
        uv = _find_uv()
        _say(
            log,
            f"Building {env.name} for {package.slug} from {package.requirements_file}"
            f" with {'uv' if uv else 'venv and pip'}.",
        )
        environ = dict(os.environ)
        if uv:
            create = [uv, "venv", "--python", sys.executable, str(staging)]
            install = [
                uv,
                "pip",
                "install",
                "--python",
                str(staging / "bin" / "python"),
                *_uv_index_args(environ),
                "-r",
                str(requirements),
            ]
        else:
            create = [sys.executable, "-m", "venv", str(staging)]
            install = [
                str(staging / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "-r",
                str(requirements),
            ]
        _run(create, what=f"Creating the env of {package.slug}", log=log, env=environ)
        # From the package folder, so relative paths in the file mean what they
        # mean to someone running `pip install -r` there.
        _run(
            install,
            what=f"Installing {package.requirements_file} for {package.slug}",
            log=log,
            env=environ,
            cwd=package.directory,
        )
        _relocate(staging, env)
        if env.exists():  # forced rebuild, or a crash before the marker
            env.rename(work / "old")
        staging.rename(env)
        (env / MARKER).write_text(key)
        _say(log, f"Built {env}.")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _find_uv() -> str | None:
    """uv on PATH, or the one installed beside the portal's interpreter (it is in
    requirements.txt, and a venv's bin/ is often not on PATH)."""
    beside = Path(sys.executable).with_name("uv")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("uv")


def _uv_index_args(environ: Mapping[str, str]) -> list[str]:
    """Translate pip's index variables into uv options (uv reads only UV_*).

    So one PIP_FIND_LINKS/PIP_NO_INDEX setting serves either installer; uv's own
    variables win when both are set.
    """
    args: list[str] = []
    if not ({"UV_INDEX_URL", "UV_DEFAULT_INDEX"} & environ.keys()):
        if url := environ.get("PIP_INDEX_URL", "").strip():
            args += ["--index-url", url]
    if not ({"UV_EXTRA_INDEX_URL", "UV_INDEX"} & environ.keys()):
        for url in environ.get("PIP_EXTRA_INDEX_URL", "").split():
            args += ["--extra-index-url", url]
    if "UV_FIND_LINKS" not in environ:
        for location in environ.get("PIP_FIND_LINKS", "").split():
            args += ["--find-links", location]
    if environ.get("PIP_NO_INDEX", "").strip().lower() in TRUE_WORDS:
        args.append("--no-index")
    return args


def _relocate(staging: Path, env: Path) -> None:
    """Point the scripts of a venv built at ``staging`` to its final path.

    The interpreter finds its prefix relative to itself, but installers write
    the absolute build path into script shebangs and activate scripts.
    """
    old, new = str(staging).encode(), str(env).encode()
    paths = [staging / "pyvenv.cfg"]
    for path in (staging / "bin").iterdir():
        if path.is_symlink() or not path.is_file():
            continue
        with open(path, "rb") as handle:
            is_script = handle.read(2) == b"#!"
        # Leave compiled executables alone: a replace would corrupt them.
        if is_script or path.name.startswith("activate"):
            paths.append(path)
    for path in paths:
        data = path.read_bytes()
        if old in data:
            path.write_bytes(data.replace(old, new))


def _run(
    argv: list[str],
    *,
    what: str,
    log: BinaryIO | None,
    env: Mapping[str, str],
    cwd: str | None = None,
) -> None:
    """Run one installer step, streaming its output to ``log`` as it comes."""
    _say(log, "$ " + shlex.join(argv))
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL if log is None else subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Its own process group, so a timeout also kills pip's children.
            start_new_session=True,
        )
    except OSError as exc:
        raise EnvBuildError(
            f"{what} failed: cannot start {argv[0]}: {exc.strerror or exc}."
        ) from exc
    pump = None
    if log is not None and proc.stdout is not None:
        pump = threading.Thread(target=_copy, args=(proc.stdout, log), daemon=True)
        pump.start()
    try:
        returncode = proc.wait(timeout=STEP_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise EnvBuildError(f"{what} timed out after {STEP_TIMEOUT} s.") from None
    finally:
        if proc.poll() is None:
            _kill_group(proc)
            proc.wait()
        if pump is not None:
            pump.join(timeout=5)
            if pump.is_alive():
                # A grandchild still holds the pipe open; it is in the group.
                _kill_group(proc)
                pump.join(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        raise EnvBuildError(
            f"{what} failed: {Path(argv[0]).name} was killed by {name}."
        )
    if returncode != 0:
        raise EnvBuildError(
            f"{what} failed: {Path(argv[0]).name} exited with code {returncode}."
        )


def _copy(stream: BinaryIO, log: BinaryIO) -> None:
    for chunk in iter(lambda: stream.read1(65536), b""):
        try:
            log.write(chunk)
            log.flush()
        except (OSError, ValueError):
            pass  # keep draining, or the installer blocks on a full pipe


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _say(log: BinaryIO | None, line: str) -> None:
    if log is not None:
        log.write(f"{line}\n".encode())
        log.flush()
