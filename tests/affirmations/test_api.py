"""The affirmations API: affirm (one, or a batch all or nothing), checks, a check's
evaluations and affirmations by name, with API-key scopes and admin roles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth.models import Permission

from affirmations.models import Affirmation, Check, Evaluation
from tests.affirmations.test_evaluation import make_check

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
BASE = "/api/v1/affirmations/"
AFFIRM = BASE + "affirm/"


@pytest.fixture
def writer(api_client, make_api_key):
    _, key = make_api_key("affirmations:write", name="cron")
    api_client.credentials(HTTP_X_API_KEY=key)
    return api_client


@pytest.fixture
def reader(api_client, make_api_key):
    _, key = make_api_key("affirmations:read", name="grafana")
    api_client.credentials(HTTP_X_API_KEY=key)
    return api_client


def evaluate(check: Check, occurrence: datetime, observed: int) -> Evaluation:
    return Evaluation.objects.create(
        owner=check,
        occurrence=occurrence,
        window_start=occurrence - check.lookback,
        window_end=occurrence,
        observed=observed,
        passed=check.passes(observed),
        evaluated_at=occurrence + check.grace,
        min_count=check.min_count,
        max_count=check.max_count,
    )


# --- Affirm ---------------------------------------------------------------------


@time_machine.travel(NOW, tick=False)
def test_it_affirms_one_event(writer):
    sent = NOW - timedelta(seconds=30)

    response = writer.post(
        AFFIRM,
        {"name": "backup_done", "data": "3 GB", "time": sent.isoformat()},
        format="json",
        REMOTE_ADDR="10.0.0.9",
    )

    assert response.status_code == 201, response.content
    affirmation = Affirmation.objects.get()
    assert response.json()["id"] == affirmation.pk
    assert response.json()["occurred_at"] == "2026-12-04T11:59:30Z"
    assert (affirmation.name, affirmation.data) == ("backup_done", "3 GB")
    assert affirmation.source == Affirmation.Source.API
    assert affirmation.occurred_at == sent
    assert affirmation.remote_addr == "10.0.0.9"


def test_it_affirms_without_trailing_slash(writer):
    response = writer.post(AFFIRM.rstrip("/"), {"name": "x"}, format="json")
    assert response.status_code == 201
    assert Affirmation.objects.get().data == ""


def test_it_affirms_a_batch(writer):
    body = {"events": [{"name": "a"}, {"name": "b", "data": "2"}]}

    response = writer.post(AFFIRM, body, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["stored"] == 2
    ids = response.json()["ids"]
    assert [Affirmation.objects.get(pk=pk).name for pk in ids] == ["a", "b"]
    assert Affirmation.objects.count() == 2


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([{"name": "a"}, {"data": "no name"}], "item 1: name: This field is required."),
        ([{"name": "a"}, {"name": "a", "time": "soon"}], "item 1: time: "),
        ([{"name": "a"}, "b"], "item 1: Must be an object"),
        ([{"name": "a"}, {"name": 5}], "item 1: name: Not a valid string."),
        ([{"name": "a", "data": {"k": 1}}], "item 0: data: Not a valid string."),
        # The model's own validation, through the service.
        ([{"name": "a"}, {"name": "a"}, {"name": " b"}], "item 2: name: "),
    ],
)
def test_it_stores_nothing_from_a_batch_with_a_bad_item(writer, events, message):
    response = writer.post(AFFIRM, {"events": events}, format="json")

    assert response.status_code == 400
    assert response.json()["events"][0].startswith(message)
    assert not Affirmation.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": ["x"]}, "name"),
        ({"name": "x", "data": "a\x00b"}, "data"),
        ({"name": "x", "time": "not a time"}, "time"),
        ({"events": []}, "events"),
        ({"events": "a"}, "events"),
        ({"events": [{"name": "x"}] * 1001}, "events"),
        (["x"], "non_field_errors"),
    ],
)
def test_it_refuses_bad_input(writer, body, field):
    response = writer.post(AFFIRM, body, format="json")

    assert response.status_code == 400
    assert field in response.json()
    assert not Affirmation.objects.exists()


def test_it_refuses_a_read_key_to_affirm(reader):
    response = reader.post(AFFIRM, {"name": "x"}, format="json")
    assert response.status_code == 403
    assert "affirmations:write" in response.json()["detail"]


def test_it_refuses_anonymous_callers(api_client):
    response = api_client.post(AFFIRM, {"name": "x"}, format="json")
    assert response.status_code == 401


def test_it_lets_staff_with_the_permission_affirm(api_client, viewer_user):
    api_client.force_authenticate(viewer_user)
    assert api_client.post(AFFIRM, {"name": "x"}, format="json").status_code == 403
    viewer_user.user_permissions.add(Permission.objects.get(codename="add_affirmation"))
    viewer_user = type(viewer_user).objects.get(pk=viewer_user.pk)  # perm cache
    api_client.force_authenticate(viewer_user)

    response = api_client.post(AFFIRM, {"name": "x"}, format="json")

    assert response.status_code == 201
    assert Affirmation.objects.get().user == viewer_user


# --- Checks and evaluations ----------------------------------------------------------


def test_it_lists_checks_with_status_and_last_results(reader):
    check = make_check(name="orders_exported", min_count=3)
    make_check(name="zzz_other")
    hour = NOW.replace(minute=0)
    for hours, observed in [(2, 4), (1, 1)]:
        evaluate(check, hour - timedelta(hours=hours), observed)

    response = reader.get(BASE + "checks/")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == 2
    first = body["results"][0]
    assert first["key"] == check.key
    assert first["status"] == "new"
    assert first["rule"] == "≥ 3 in 20 min"
    assert first["lookback_seconds"] == 1200
    assert first["next_due_at"] is not None
    assert [r["passed"] for r in first["last_results"]] == [False, True]
    assert body["results"][1]["last_results"] == []


def test_it_lists_checks_in_a_fixed_number_of_queries(
    reader, django_assert_max_num_queries
):
    for i in range(5):
        evaluate(make_check(name=f"job_{i}"), NOW, 1)

    # The key lookup, count, page, the prefetched evaluations (and the key's touch).
    with django_assert_max_num_queries(6):
        response = reader.get(BASE + "checks/")

    assert len(response.json()["results"]) == 5


def test_it_shows_one_check_by_key(reader):
    check = make_check(name="orders_exported")

    response = reader.get(f"{BASE}checks/{check.key}/")

    assert response.status_code == 200
    assert response.json()["name"] == "orders_exported"
    assert response.json()["schedule"] == "0 * * * *"
    assert reader.get(BASE + "checks/af-unknown/").status_code == 404


def test_it_pages_a_checks_evaluations_newest_first(reader):
    check = make_check(name="orders_exported")
    other = make_check(name="other")
    hour = NOW.replace(minute=0)
    for hours in range(3):
        evaluate(check, hour - timedelta(hours=hours), hours)
    evaluate(other, hour, 9)

    response = reader.get(f"{BASE}checks/{check.key}/evaluations/?limit=2")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == 3
    assert [row["observed"] for row in body["results"]] == [0, 1]
    assert body["results"][0]["check_key"] == check.key
    assert body["next"] is not None
    missing = reader.get(BASE + "checks/af-unknown/evaluations/")
    assert missing.status_code == 404


def test_it_refuses_a_key_without_the_scope_to_read(api_client, make_api_key):
    _, key = make_api_key("fleet:write")
    api_client.credentials(HTTP_X_API_KEY=key)

    response = api_client.get(BASE + "checks/")

    assert response.status_code == 403
    assert "affirmations:read" in response.json()["detail"]


def test_it_lets_viewers_read_checks(api_client, viewer_user):
    make_check(name="orders_exported")
    api_client.force_authenticate(viewer_user)
    assert viewer_user.has_perm("affirmations.view_check")

    response = api_client.get(BASE + "checks/")

    assert response.status_code == 200
    assert response.json()["count"] == 1


# --- Affirmations -------------------------------------------------------------------


def test_it_lists_affirmations_of_a_name_newest_first(reader):
    for minutes, name in [(3, "x"), (1, "x"), (2, "y"), (0, "x")]:
        Affirmation.objects.create(
            name=name,
            data=str(minutes),
            source="api",
            occurred_at=NOW - timedelta(minutes=minutes),
        )

    response = reader.get(BASE + "affirmations/", {"name": "x"})

    assert response.status_code == 200
    assert [row["data"] for row in response.json()["results"]] == ["0", "1", "3"]
    everything = reader.get(BASE + "affirmations/").json()
    assert everything["count"] == 4


def test_it_refuses_a_bad_affirmations_filter(reader):
    response = reader.get(BASE + "affirmations/", {"source": "carrier-pigeon"})
    assert response.status_code == 400
    assert "source" in response.json()
