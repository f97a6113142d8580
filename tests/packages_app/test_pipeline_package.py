"""A package whose source is a git repository: ``run_package`` runs its pipeline."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from packages_app.models import Package, PackageRun, PipelineRun
from packages_app.serializers import PackageRunDetailSerializer
from tests.fixtures.gitdaemon import git, make_repo

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture(autouse=True)
def _pipeline_settings(settings, tmp_path):
    settings.PIPELINE_WORKSPACES_DIR = tmp_path / "workspaces"
    settings.PIPELINE_GIT_SCHEMES = ["file"]
    settings.PIPELINE_EXECUTOR = "local"


def git_package(tmp_path, script: list[str], **fields) -> Package:
    repo = tmp_path / "repo"
    pipeline = {
        "pipelines": {
            "steps": [{"step": {"name": "main", "image": "busybox", "script": script}}]
        }
    }
    make_repo(repo, {"fxq-pipeline.yml": json.dumps(pipeline)})
    values = {"slug": "gitpkg", "git_url": str(repo), "timeout": 30, **fields}
    package = Package(**values)
    package.full_clean()
    package.save()
    return package


def run(*args) -> tuple[str, str]:
    out = io.StringIO()
    call_command("run_package", *args, stdout=out)
    return out.getvalue(), ""


def test_run_package_runs_the_pipeline_and_links_it(tmp_path, monkeypatch, mailoutbox):
    monkeypatch.setenv("CHURN_TOKEN", "tok-123")
    git_package(
        tmp_path,
        ['echo "hello $LEVEL"', 'echo "secret-${#CHURN_TOKEN}-chars"'],
        environment={"LEVEL": "debug"},
        secret_env=["CHURN_TOKEN"],
        notify_success=True,
        recipients=["ops@example.com"],
    )
    run("gitpkg")
    package_run = PackageRun.objects.get()
    assert package_run.status == PackageRun.Status.SUCCEEDED, package_run.error
    pipeline = package_run.pipeline_run
    assert pipeline.status == PipelineRun.Status.SUCCESSFUL
    assert pipeline.trigger == "package" and "gitpkg" in pipeline.triggered_by
    detail = PackageRunDetailSerializer(package_run).data
    assert detail["pipeline_run_id"] == str(pipeline.uuid)
    log = package_run.read_log_tail()
    assert "hello debug" in log and "secret-7-chars" in log and "$ echo" in log
    # The secret reached the step but is stored nowhere.
    assert "tok-123" not in json.dumps(pipeline.environment) and "tok-123" not in log
    assert len(mailoutbox) == 1 and "gitpkg" in mailoutbox[0].subject


def test_a_failing_pipeline_fails_the_package_run_and_emails(tmp_path, mailoutbox):
    git_package(tmp_path, ["echo boom; exit 4"], recipients=["ops@example.com"])
    with pytest.raises((SystemExit, CommandError)):
        run("gitpkg")
    package_run = PackageRun.objects.get()
    assert package_run.status == PackageRun.Status.FAILED
    assert "exited with code 4" in package_run.error
    assert "boom" in package_run.read_log_tail()
    assert len(mailoutbox) == 1 and "boom" in mailoutbox[0].body


def test_the_package_timeout_bounds_the_pipeline(tmp_path):
    git_package(tmp_path, ["sleep 30"], timeout=1)
    with pytest.raises((SystemExit, CommandError)):
        run("gitpkg")
    package_run = PackageRun.objects.get()
    assert package_run.status == PackageRun.Status.TIMED_OUT
    assert package_run.duration < 10


def test_a_pipeline_that_cannot_start_fails_the_run_with_the_reason(tmp_path):
    package = git_package(tmp_path, ["true"])
    (tmp_path / "repo" / "fxq-pipeline.yml").write_text("pipelines: [")
    git(tmp_path / "repo", "commit", "--quiet", "--all", "-m", "break")
    with pytest.raises((SystemExit, CommandError)):
        run(package.slug)
    package_run = PackageRun.objects.get()
    assert package_run.status == PackageRun.Status.FAILED
    assert "The pipeline could not start" in package_run.error
    assert "invalid YAML" in package_run.error


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"command": ["true"], "directory": "/tmp"}, "git_url"),
        ({"git_url": "ext::sh -c x"}, "git_url"),
        ({"git_ref": "-bad"}, "git_ref"),
        ({"git_url": "https://user:tok@example.com/o/r.git"}, "git_url"),
    ],
)
def test_model_validation(tmp_path, fields, field):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as caught:
        git_package(tmp_path, ["true"], **fields)
    assert field in caught.value.message_dict
