"""Demo packages: tiny scripts that succeed, fail and time out (never run here);
and a demo pipeline: a local git repository, a package using it, one finished run."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

from django.conf import settings

from packages_app.models import Package, PipelineRun
from portal import demo

SCRIPTS = {
    "churn.py": """
        # Demo: prints its progress for a few seconds, then succeeds.
        import json, sys, time

        params = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
        steps = int(params.get("steps", 10))
        print(f"churn: scoring segment {params.get('segment', 'all')!r}", flush=True)
        for step in range(1, steps + 1):
            time.sleep(0.5)
            print(f"step {step}/{steps}: {step * 1000} customers scored", flush=True)
        print("done", flush=True)
    """,
    "nightly_scoring.py": """
        # Demo: fails with exit code 2, as a package with a missing input would.
        import sys

        print("nightly-scoring: loading the model", flush=True)
        print("ERROR: model file models/latest.pkl not found", file=sys.stderr)
        sys.exit(2)
    """,
    "slow_report.py": """
        # Demo: sleeps past its 5 s timeout, so the runner kills it.
        import time

        print("slow-report: this takes a while...", flush=True)
        for second in range(30):
            print(f"still working ({second} s)", flush=True)
            time.sleep(1)
    """,
}

PACKAGES = [
    {
        "slug": "churn",
        "description": "Demo: customer churn scores; succeeds after a few seconds.",
        "command": ["{python}", "churn.py"],
        "timeout": 60,
        "parameters": {"segment": "all", "steps": 10},
        "schedule": "0 * * * *",
    },
    {
        "slug": "nightly-scoring",
        "description": "Demo: the nightly scoring; fails with exit code 2.",
        "command": ["{python}", "nightly_scoring.py"],
        "timeout": 300,
        "schedule": "30 2 * * *",
        "max_retries": 1,
    },
    {
        "slug": "slow-report",
        "description": "Demo: sleeps 30 s with a 5 s timeout, so it times out.",
        "command": ["{python}", "slow_report.py"],
        "timeout": 5,
        "concurrency": Package.Concurrency.SKIP,
    },
]


@demo.register("packages", order=10)
def seed_packages(stdout) -> None:
    """Write the demo scripts and create their packages; edits made since are kept."""
    folder = Path(settings.VAR_DIR) / "demo-packages"
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in SCRIPTS.items():
        script = folder / name
        text = textwrap.dedent(source).lstrip()
        if not script.exists() or script.read_text() != text:
            script.write_text(text)
    for fields in PACKAGES:
        package = Package.objects.filter(slug=fields["slug"]).first()
        state = "exists"
        if package is None:
            package = Package(
                directory=str(folder), recipients=["ops@localhost"], **fields
            )
            package.full_clean()
            package.save()
            state = "created"
        stdout.write(
            f"  package {package.slug:<16} {' '.join(package.command)}  ({state})\n"
        )


PIPELINE_FILE = """\
# Demo pipeline: the FX Quants format, plus the portal's extensions.
pipelines:
  timeout: 120
  steps:
    - step:
        name: Hello World With Bash
        image: localhost/busybox
        script:
          - echo Hello World
          - echo "report of $(date -u +%F)" > report.txt
    - step:
        name: Read the shared workspace
        image: localhost/busybox
        environment:
          GREETING: hello from step 2
        script:
          - cat report.txt
          - echo "$GREETING"
    - step:
        name: A flaky check that may fail
        image: localhost/busybox
        allow_failure: true
        timeout: 30
        script:
          - echo "this step fails, and the run goes on"; exit 1
"""
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Ops Portal demo",
    "GIT_AUTHOR_EMAIL": "demo@localhost",
    "GIT_COMMITTER_NAME": "Ops Portal demo",
    "GIT_COMMITTER_EMAIL": "demo@localhost",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": "/nonexistent",
    "PATH": "/usr/local/bin:/usr/bin:/bin",
}


def _demo_repository(folder: Path) -> Path:
    """A local git repository holding the demo pipeline (made once)."""
    repo = folder / "hello-pipeline"
    if (repo / ".git").is_dir():
        return repo
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "fxq-pipeline.yml").write_text(PIPELINE_FILE)
    for args in (
        ["init", "--quiet", "--initial-branch=main"],
        ["add", "fxq-pipeline.yml"],
        ["commit", "--quiet", "-m", "Demo pipeline"],
    ):
        subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, check=True)
    return repo


@demo.register("pipelines", order=15)
def seed_pipelines(stdout) -> None:
    """A demo repository, a package with it as its git source, and one finished run
    (through the local executor, which needs no container engine)."""
    from packages_app import containers, pipelines, services

    if "file" not in settings.PIPELINE_GIT_SCHEMES:
        stdout.write(
            "  pipelines: skipped (the demo repository is a local path: add "
            '"file" to PIPELINE_GIT_SCHEMES, as scripts/run.sh does)\n'
        )
        return
    repo = _demo_repository(Path(settings.VAR_DIR) / "demo-pipelines")
    package = Package.objects.filter(slug="hello-pipeline").first()
    if package is None:
        package = Package(
            slug="hello-pipeline",
            description="Demo: a package whose source is a git repository; "
            "run_package runs its fxq-pipeline.yml.",
            git_url=str(repo),
            timeout=120,
            recipients=["ops@localhost"],
        )
        package.full_clean()
        package.save()
    stdout.write(f"  package {package.slug:<16} git source {repo}\n")
    if not PipelineRun.objects.exists():
        run = services.pipeline_prepare(
            url=str(repo),
            trigger=PipelineRun.Trigger.ADMIN,
            triggered_by="seed_demo",
        )
        pipelines.execute(run, executor=containers.LocalExecutor())
        stdout.write(f"  pipeline run {run.name} {run.uuid}: {run.status}\n")
    stdout.write(
        f"  try: curl -X POST -H 'Content-Type: application/json' "
        f'-d \'{{"url": "{repo}"}}\' {settings.SITE_URL}/api/request\n'
    )
