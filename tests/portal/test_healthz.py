"""GET /healthz: database, broker and worker heartbeat; 200 or 503 with JSON."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from unittest import mock

import pytest
from django.core.cache import cache
from django.db import OperationalError, connection
from django.utils import timezone
from django_q.brokers.redis_broker import Redis

from portal import services


@pytest.fixture(autouse=True)
def _forget_heartbeats(db):
    cache.delete(services.CLUSTER_LAST_SEEN_KEY)


def live_cluster(age_seconds: float = 1.0):
    """What django-q2's Stat.get_all() returns while one cluster is running."""
    stat = SimpleNamespace(timestamp=timezone.now() - timedelta(seconds=age_seconds))
    return mock.patch(
        "django_q.status.Stat.get_all", autospec=True, return_value=[stat]
    )


def test_it_is_up_when_database_broker_and_cluster_are(client):
    with live_cluster():
        response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is True
    assert body["checks"]["broker"]["queued"] == 0
    assert body["checks"]["cluster"]["clusters"] == 1
    assert 0 <= body["checks"]["cluster"]["age_seconds"] < 5
    assert response["Cache-Control"].startswith("max-age=0")


def test_it_is_down_when_no_cluster_ever_reported(client):
    response = client.get("/healthz")
    assert response.status_code == 503
    cluster = response.json()["checks"]["cluster"]
    assert cluster["ok"] is False
    assert "qcluster" in cluster["error"]


def test_it_reports_the_age_of_the_last_heartbeat_after_the_cluster_stops(client):
    with live_cluster():
        assert client.get("/healthz").status_code == 200
    # The cluster's own stats expire within seconds; the last one seen is kept.
    with mock.patch(
        "portal.services.timezone.now",
        return_value=timezone.now() + timedelta(minutes=5),
    ):
        response = client.get("/healthz")
    assert response.status_code == 503
    cluster = response.json()["checks"]["cluster"]
    assert cluster["clusters"] == 0
    assert cluster["age_seconds"] >= 299


def test_it_is_down_when_the_heartbeat_is_too_old(client, settings):
    settings.HEALTH_HEARTBEAT_MAX_AGE = 10
    with live_cluster(age_seconds=30):
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["cluster"]["ok"] is False


def test_it_is_down_when_the_database_is_unreachable(client):
    with (
        live_cluster(),
        mock.patch.object(
            connection,
            "cursor",
            side_effect=OperationalError("could not connect to server\nmore"),
        ),
    ):
        response = client.get("/healthz?checks=database")
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == {
        "ok": False,
        "error": "could not connect to server",
    }


def test_it_is_down_when_the_redis_broker_is_unreachable(client):
    # A real django-q2 Redis broker, pointed at a port where nothing listens.
    import redis

    broker = Redis(list_key="portal-test")
    broker.connection = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    with mock.patch("django_q.brokers.get_broker", return_value=broker):
        response = client.get("/healthz?checks=broker")
    assert response.status_code == 503
    broker_check = response.json()["checks"]["broker"]
    assert broker_check["ok"] is False
    assert "ConnectionError" in broker_check["error"]


def test_it_limits_the_report_to_the_checks_asked_for(client):
    response = client.get("/healthz?checks=database,broker")
    assert response.status_code == 200
    assert set(response.json()["checks"]) == {"database", "broker"}


def test_it_rejects_unknown_checks(client):
    response = client.get("/healthz?checks=database,disk")
    assert response.status_code == 400
    assert response.json()["detail"] == "Unknown check(s): disk."
