"""Demo packages: tiny scripts that succeed, fail and time out (never run here)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from django.conf import settings

from packages_app.models import Package
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
