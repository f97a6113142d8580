"""Every kind end to end: fetched from the fake APIs, sent with GraphiteClient to
a real carbon-cache 1.1.10 by plaintext and by pickle, and read back from whisper.

The session's carbon keeps one-second slots for an hour, and whisper drops
older points: the fakes serve data around the real time. A daily point (an
app's local midnight) and an hourly average (the hour before the last) are
older than that hour, so those two kinds go to a second carbon of this module
that keeps one-minute slots for a week.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from importers.graphite import GraphiteClient
from importers.sources import KIND_CHOICES, KINDS
from importers.sources.base import Point
from tests.fixtures.carbon import Carbon, start_carbon
from tests.fixtures.processes import wait_for
from tests.importers.fakes import ANDROID, IOS

OLDER_THAN_AN_HOUR = {"apteligent_daily", "pingdom_response_times"}


def uses_carbon(test):
    """The tests that talk to carbon share one carbon-cache: one worker runs them."""
    return pytest.mark.slow(pytest.mark.xdist_group("carbon")(test))


@pytest.fixture(scope="module")
def carbon_days(tmp_path_factory) -> Iterator[Carbon]:
    """A carbon-cache keeping one-minute slots for a week."""
    server = start_carbon(tmp_path_factory.mktemp("carbon-days"), retentions="1m:7d")
    try:
        yield server
    finally:
        server.stop()


def test_it_registers_the_seven_kinds():
    assert list(KINDS) == [
        "apteligent_daily",
        "apteligent_live",
        "apteligent_grouped_appversion",
        "apteligent_grouped_carrier",
        "apteligent_services",
        "pingdom_results",
        "pingdom_response_times",
    ]
    assert KIND_CHOICES == [(key, kind.label) for key, kind in KINDS.items()]
    for key, kind in KINDS.items():
        assert kind.key == key
        assert callable(kind.fetch)
        assert kind.default_interval_minutes > 0
        if kind.api == "apteligent":
            assert kind.credential_roles == ("username", "password", "client_id")
            assert kind.default_base_url == "https://developers.crittercism.com/v1.0"
        else:
            assert kind.api == "pingdom"
            assert kind.credential_roles == ("token",)
            assert kind.default_base_url == "https://api.pingdom.com/api/3.1"
    assert {key for key, kind in KINDS.items() if kind.backfill} == {
        "apteligent_daily",
        "pingdom_results",
        "pingdom_response_times",
    }


def _series(points: list[Point]) -> dict[str, dict[int, float | int]]:
    series: dict[str, dict[int, float | int]] = {}
    for path, value, stamp in points:
        assert stamp not in series.setdefault(path, {}), (path, stamp)
        series[path][stamp] = value
    return series


def _stored(sink: Carbon, expected: dict[str, dict[int, float | int]]) -> dict:
    """What whisper holds for the metrics, once every expected slot is written."""

    def complete():
        sink.check_running()
        found = sink.read(expected)
        if all(
            found[metric] is not None and stamps.keys() <= found[metric].keys()
            for metric, stamps in expected.items()
        ):
            return found
        return None

    return wait_for(complete, timeout=30, interval=0.25)


@uses_carbon
@pytest.mark.parametrize("protocol", ["plaintext", "pickle"])
@pytest.mark.parametrize("key", list(KINDS))
def test_it_stores_every_kinds_points_in_carbon(
    request, carbon, fake_apteligent, fake_pingdom, key, protocol
):
    kind = KINDS[key]
    sink = (
        request.getfixturevalue("carbon_days") if key in OLDER_THAN_AN_HOUR else carbon
    )
    now = datetime.now(UTC)
    fake = fake_apteligent if kind.api == "apteligent" else fake_pingdom
    fake.now = now
    fake_pingdom.result_minutes = 180 if key == "pingdom_response_times" else 30
    ctx = fake.context(
        prefix=f"kinds.{protocol}.{key.replace('_', '-')}",
        now=now,
        app_settings={
            IOS: {"timezone": "Europe/Helsinki", "country": "US"},
            ANDROID: {"timezone": "America/New_York"},
        },
        carrier_map={"US": [["^Verizon", "Verizon"], [".*", "Other"]]},
        services_whitelist=["api.acmeshopios.example", "Hotel WiFi Login"],
    )

    points = kind.fetch(ctx)
    port = sink.line_port if protocol == "plaintext" else sink.pickle_port
    with GraphiteClient("127.0.0.1", port, protocol=protocol) as client:
        result = client.send(points)

    assert points
    assert ctx.errors == []  # no app or check failed
    assert (result.sent, result.rejected, result.error) == (len(points), 0, "")
    expected = _series(points)
    stored = _stored(sink, expected)
    assert stored == expected
