"""Demo importer: a dummy sink (lines go to the log) and one disabled Apteligent
source with its credentials by reference, so the quick start shows the pages
without calling the internet."""

from __future__ import annotations

from django.utils import timezone

from importers.models import GraphiteSink, ImportSource
from portal import demo

SINK_NAME = "demo-log"
SOURCE_NAME = "apteligent-demo"
DEMO_CREDENTIALS = {
    "username": "APTELIGENT_USERNAME",
    "password": "APTELIGENT_PASSWORD",
    "client_id": "APTELIGENT_CLIENT_ID",
}


@demo.register("importers", order=50)
def seed_importers(stdout) -> None:
    """Create the sink and the source once (matched by name); an edited one is
    left alone. The source stays disabled: the scheduler never runs it."""
    sink = GraphiteSink.objects.filter(name=SINK_NAME).first()
    if sink is None:
        sink = GraphiteSink(
            name=SINK_NAME, protocol=GraphiteSink.Protocol.DUMMY, host="", port=None
        )
        sink.full_clean()
        sink.save()
    source = ImportSource.objects.filter(name=SOURCE_NAME).first()
    state = "exists"
    if source is None:
        source = ImportSource(
            name=SOURCE_NAME,
            kind="apteligent_daily",
            base_url="",  # the kind's default: the real Apteligent API
            credentials=DEMO_CREDENTIALS,
            prefix="mobile.apteligent",
            sink=sink,
            enabled=False,
        )
        source.full_clean()
        source.save()
        source.reschedule(timezone.now())
        state = "created"
    variables = ", ".join(sorted(DEMO_CREDENTIALS.values()))
    stdout.write(
        f"  importer {source.name} ({state}, disabled) -> sink {sink.name}: set "
        f"{variables}, enable it, or try a dry run from the admin\n"
    )
