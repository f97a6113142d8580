"""Package virtualenvs: real builds from a local wheel, never the network."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from packages_app import envs
from packages_app.envs import EnvBuildError, ensure_env, env_path
from packages_app.models import Package

DEMO_INIT = """\
VERSION = "1.0"


def main():
    print("portal demo", VERSION)
"""


def make_wheel(folder: Path) -> Path:
    """Write portal-demo-pkg 1.0 (a module and a console script) as a wheel."""
    info = "portal_demo_pkg-1.0.dist-info"
    files = {
        "portal_demo_pkg/__init__.py": DEMO_INIT,
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: portal-demo-pkg\n"
        "Version: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/entry_points.txt": "[console_scripts]\n"
        "portal-demo = portal_demo_pkg:main\n",
    }
    record = []
    for name, text in files.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest())
        record.append(f"{name},sha256={digest.rstrip(b'=').decode()},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    path = folder / "portal_demo_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
    return path


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheelhouse")
    make_wheel(folder)
    return folder


@pytest.fixture(autouse=True)
def offline(monkeypatch, wheelhouse) -> None:
    # pip reads these itself; envs translates them for uv.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheelhouse))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("UV_CACHE_DIR", str(wheelhouse.parent / "uv-cache"))
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "UV_FIND_LINKS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(params=["pip", "uv"])
def builder(request, monkeypatch) -> str:
    if request.param == "pip":
        monkeypatch.setattr(envs, "_find_uv", lambda: None)
    elif envs._find_uv() is None:
        pytest.fail("uv is missing: it is in requirements.txt", pytrace=False)
    return request.param


@pytest.fixture
def envs_dir(settings, tmp_path) -> Path:
    settings.PACKAGES_ENVS_DIR = tmp_path / "envs"
    return settings.PACKAGES_ENVS_DIR


@pytest.fixture
def package(db, tmp_path, envs_dir) -> Package:
    (tmp_path / "requirements.txt").write_text("portal-demo-pkg==1.0\n")
    return Package.objects.create(
        slug="churn",
        directory=str(tmp_path),
        command=["{python}", "main.py"],
        timeout=60,
        requirements_file="requirements.txt",
    )


def run(*argv: str | Path) -> str:
    done = subprocess.run(
        [str(arg) for arg in argv], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def leftovers(envs_dir: Path) -> list[str]:
    return sorted(p.name for p in envs_dir.iterdir() if not p.name.endswith(".lock"))


@pytest.mark.slow
def test_it_builds_an_env_with_the_requirements(package, envs_dir, builder):
    log = io.BytesIO()

    python = ensure_env(package, log=log)

    env = env_path(package)
    assert python == env / "bin" / "python"
    module = run(
        python, "-c", "import portal_demo_pkg; print(portal_demo_pkg.__file__)"
    )
    assert module.startswith(str(env))
    # Built elsewhere and renamed: the scripts must point at the final path.
    assert run(env / "bin" / "portal-demo") == "portal demo 1.0\n"
    assert (env / envs.MARKER).read_text() == envs.env_key(package)
    assert leftovers(envs_dir) == [env.name]
    assert b"Building churn-" in log.getvalue()
    assert b"portal-demo-pkg" in log.getvalue()


@pytest.mark.slow
def test_it_reuses_a_complete_env(package):
    python = ensure_env(package)
    marker = env_path(package) / envs.MARKER
    built_at = marker.stat().st_mtime_ns
    log = io.BytesIO()

    started = time.perf_counter()
    again = ensure_env(package, log=log)
    elapsed = time.perf_counter() - started

    assert again == python
    assert marker.stat().st_mtime_ns == built_at
    assert log.getvalue() == b""  # no installer ran
    assert elapsed < 1.0


def test_it_keys_the_env_on_the_requirements_and_the_python(package, monkeypatch):
    first = env_path(package)
    with monkeypatch.context() as patch:
        patch.setattr(envs.sys, "version_info", (3, 99, 0, "final", 0))
        other_python = env_path(package)
    (Path(package.directory) / "requirements.txt").write_text("portal-demo-pkg\n")

    second = env_path(package)

    assert first.name.startswith("churn-")
    assert len({first, second, other_python}) == 3
    assert first.parent == second.parent


@pytest.mark.slow
def test_it_reports_a_failed_install_and_leaves_nothing(package, envs_dir, builder):
    (Path(package.directory) / "requirements.txt").write_text("nonexistent-pkg==9\n")
    log = io.BytesIO()

    with pytest.raises(EnvBuildError) as failure:
        ensure_env(package, log=log)

    message = str(failure.value)
    assert "Installing requirements.txt for churn failed" in message
    assert "\n" not in message
    assert b"nonexistent-pkg" in log.getvalue()
    if builder == "pip":
        assert (
            b"No matching distribution found for nonexistent-pkg==9" in log.getvalue()
        )
    assert leftovers(envs_dir) == []


def test_it_rejects_a_missing_requirements_file(package, envs_dir):
    package.requirements_file = "missing.txt"

    with pytest.raises(EnvBuildError, match="missing.txt"):
        ensure_env(package)

    assert not envs_dir.exists()


def test_it_kills_an_installer_that_hangs(package, envs_dir, tmp_path, monkeypatch):
    fake_uv = tmp_path / "uv"
    fake_uv.write_text("#!/bin/sh\necho $$\nexec sleep 600\n")
    fake_uv.chmod(0o755)
    monkeypatch.setattr(envs, "_find_uv", lambda: str(fake_uv))
    monkeypatch.setattr(envs, "STEP_TIMEOUT", 0.5)
    log = io.BytesIO()

    with pytest.raises(EnvBuildError, match="timed out after 0.5 s"):
        ensure_env(package, log=log)

    pid = int(log.getvalue().splitlines()[2])  # after "Building" and "$ uv venv"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert leftovers(envs_dir) == []


@pytest.mark.slow
def test_it_builds_once_for_concurrent_callers(package):
    barrier = threading.Barrier(2)
    logs = [io.BytesIO(), io.BytesIO()]
    results: list[object] = [None, None]

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = ensure_env(package, log=logs[i])
        except BaseException as exc:  # reported by the assertion below
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert results == [env_path(package) / "bin" / "python"] * 2
    assert sum(log.getvalue().count(b"Building churn-") for log in logs) == 1


def test_it_uses_the_portal_python_without_requirements(package, envs_dir):
    package.requirements_file = ""

    assert ensure_env(package) == Path(sys.executable)
    assert not envs_dir.exists()


@pytest.mark.slow
def test_it_builds_from_the_command_and_prints_the_python(package):
    out = io.StringIO()
    call_command("build_package_env", "churn", stdout=out)
    marker = env_path(package) / envs.MARKER
    built_at = marker.stat().st_mtime_ns
    forced = io.StringIO()

    call_command("build_package_env", "churn", "--force", stdout=forced)

    python = str(env_path(package) / "bin" / "python")
    assert "portal-demo-pkg" in out.getvalue()
    assert out.getvalue().splitlines()[-1] == python
    assert "Building churn-" in forced.getvalue()
    assert forced.getvalue().splitlines()[-1] == python
    assert marker.stat().st_mtime_ns != built_at
    assert run(python, "-c", "import portal_demo_pkg") == ""
    again = io.StringIO()
    call_command("build_package_env", "churn", stdout=again)
    assert again.getvalue() == f"The env of churn is up to date.\n{python}\n"


def test_it_prints_the_portal_python_from_the_command(package):
    package.requirements_file = ""
    package.save()
    out = io.StringIO()

    call_command("build_package_env", "churn", stdout=out)

    assert "churn has no requirements file" in out.getvalue()
    assert out.getvalue().splitlines()[-1] == sys.executable


def test_it_rejects_an_unknown_package_in_the_command(db):
    with pytest.raises(CommandError, match="No such package: 'nope'"):
        call_command("build_package_env", "nope", stdout=io.StringIO())


def test_it_reports_a_failed_build_in_the_command_in_one_line(package):
    package.requirements_file = "missing.txt"
    package.save()

    with pytest.raises(CommandError, match=r"^Cannot read the requirements file"):
        call_command("build_package_env", "churn", stdout=io.StringIO())


def test_a_run_builds_the_env_first_and_uses_its_python(package, tmp_path):
    from packages_app import services

    (tmp_path / "main.py").write_text(
        "import sys, portal_demo_pkg as pkg\nprint('venv', sys.prefix, pkg.VERSION)\n"
    )
    run = services.run_execute(services.run_create(package=package, trigger="cli"))
    assert run.status == "succeeded", run.error
    log = Path(run.log_path).read_text()
    assert f"venv {env_path(package)} 1.0" in log


def test_a_failed_build_fails_the_run_with_the_installer_output(package, tmp_path):
    from packages_app import services

    (tmp_path / "requirements.txt").write_text("nonexistent-pkg==9\n")
    run = services.run_execute(services.run_create(package=package, trigger="cli"))
    assert run.status == "failed"
    assert run.pid is None  # the package never started
    assert run.error.startswith("Building the package environment failed")
    assert "nonexistent" in Path(run.log_path).read_text()
