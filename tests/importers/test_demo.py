"""The importers demo: a dummy sink and a disabled Apteligent source, created once;
nothing of it runs on its own (make run stays offline)."""

from __future__ import annotations

import io

from importers import services
from importers.demo import seed_importers
from importers.models import GraphiteSink, ImportSource
from importers.sources import KINDS
from portal import demo


def test_it_creates_the_sink_and_the_source_once(db):
    first, second = io.StringIO(), io.StringIO()

    seed_importers(first)
    seed_importers(second)

    sink = GraphiteSink.objects.get()
    source = ImportSource.objects.get()
    assert (sink.name, sink.protocol) == ("demo-log", "dummy")
    assert (source.name, source.kind, source.sink) == (
        "apteligent-demo",
        "apteligent_daily",
        sink,
    )
    assert source.enabled is False and source.next_due_at is None
    # the kind's default URL, credentials by variable name only
    assert source.base_url == ""
    assert source.effective_base_url == KINDS["apteligent_daily"].default_base_url
    assert source.credentials == {
        "username": "APTELIGENT_USERNAME",
        "password": "APTELIGENT_PASSWORD",
        "client_id": "APTELIGENT_CLIENT_ID",
    }
    assert "(created, disabled)" in first.getvalue()
    assert "(exists, disabled)" in second.getvalue()
    assert "APTELIGENT_PASSWORD" in first.getvalue()


def test_nothing_of_the_demo_runs_on_its_own(db):
    seed_importers(io.StringIO())

    assert services.run_due() == []


def test_it_leaves_an_edited_demo_source_alone(db):
    seed_importers(io.StringIO())
    ImportSource.objects.update(prefix="edited.prefix")

    seed_importers(io.StringIO())

    assert ImportSource.objects.get().prefix == "edited.prefix"


def test_it_is_registered_after_the_logins():
    seeders = {seeder.key: seeder for seeder in demo.seeders()}

    assert seeders["importers"].func is seed_importers
    assert seeders["importers"].order > seeders["portal"].order
