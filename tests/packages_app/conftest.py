"""Fixtures for the packages app: a package folder with real scripts."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from packages_app.models import Package


@pytest.fixture(autouse=True)
def _runs_dir(settings, tmp_path):
    settings.PACKAGES_RUNS_DIR = tmp_path / "runs"
    settings.PACKAGES_ENVS_DIR = tmp_path / "envs"
    settings.PACKAGES_KILL_GRACE = 1
    settings.PACKAGES_HEARTBEAT = 1


@pytest.fixture
def package_dir(tmp_path) -> Path:
    directory = tmp_path / "pkg"
    directory.mkdir()
    return directory


@pytest.fixture
def make_package(db, package_dir):
    """A package whose command runs ``script`` (Python source) with {python}."""

    def make(script: str, *, slug: str = "churn", **fields) -> Package:
        (package_dir / f"{slug}.py").write_text(textwrap.dedent(script))
        values = {
            "slug": slug,
            "directory": str(package_dir),
            "command": ["{python}", f"{slug}.py"],
            "timeout": 30,
            **fields,
        }
        return Package.objects.create(**values)

    return make


PYTHON = sys.executable
