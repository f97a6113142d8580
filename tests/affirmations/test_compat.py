"""The original Affirmative's endpoints (/affirmative/..., /k/<key>/affirmative/...)
with its clients' exact bodies, and the one-liner /affirm/<check-key>."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from affirmations.models import Affirmation, Evaluation
from portal.lib.logredact import RedactUrlSecrets
from tests.affirmations.test_evaluation import make_check

pytestmark = pytest.mark.django_db

NOW = datetime(2024, 12, 4, 8, 13, 20, tzinfo=UTC)  # epoch 1733300000
STORE = "/affirmative/store"
# The Python client: requests.post(url + "/store", json=..., timeout=0.1).
PYTHON_BODY = {
    "events": [{"name": "backup_done", "data": "3 GB", "time": 1733300000.5}],
    "env": "prod",
}
# shell_client.sh: time from `date +%s`, a string, and its "env" key.
SHELL_BODY = (
    '{"env": "prod", "events": [{"name": "cron_ran", "data": "ok", '
    '"time": "1733300000", "env": "prod"}]}'
)


@pytest.fixture
def open_compat(settings):
    settings.AFFIRMATIONS_OPEN_COMPAT = True


def post_json(client, path: str, body, **extra):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(path, data, content_type="application/json", **extra)


# --- store ----------------------------------------------------------------------


@pytest.mark.parametrize("path", [STORE, STORE + "/"])
@time_machine.travel(NOW, tick=False)
def test_it_stores_the_python_clients_body(client, open_compat, path):
    response = post_json(client, path, PYTHON_BODY, REMOTE_ADDR="10.0.0.7")

    assert response.status_code == 200, response.content
    assert response.json() == {"stored": 1}
    affirmation = Affirmation.objects.get()
    assert (affirmation.name, affirmation.data) == ("backup_done", "3 GB")
    assert affirmation.source == Affirmation.Source.COMPAT
    assert affirmation.client_time == NOW + timedelta(milliseconds=500)
    assert affirmation.occurred_at == affirmation.client_time
    assert affirmation.remote_addr == "10.0.0.7"


@time_machine.travel(NOW, tick=False)
def test_it_stores_the_shell_clients_body_with_a_string_time(client, open_compat):
    # curl -d without a JSON Content-Type: the original parsed the body anyway.
    response = client.post(
        STORE, SHELL_BODY, content_type="application/x-www-form-urlencoded"
    )

    assert response.status_code == 200, response.content
    affirmation = Affirmation.objects.get()
    assert (affirmation.name, affirmation.data) == ("cron_ran", "ok")
    assert affirmation.client_time == NOW
    assert affirmation.occurred_at == NOW


@time_machine.travel(NOW, tick=False)
def test_it_stores_an_event_without_data_or_time(client, open_compat):
    response = post_json(client, STORE, {"events": [{"name": "x"}]})

    assert response.status_code == 200
    affirmation = Affirmation.objects.get()
    assert affirmation.data == ""
    assert affirmation.client_time is None
    assert affirmation.occurred_at == NOW


def test_it_stores_a_batch_in_one_insert(
    client, open_compat, django_assert_max_num_queries
):
    body = {"events": [{"name": f"job_{i}", "data": str(i)} for i in range(20)]}

    with django_assert_max_num_queries(3):  # the INSERT, inside SAVEPOINT/RELEASE
        response = post_json(client, STORE, body)

    assert response.json() == {"stored": 20}
    assert Affirmation.objects.count() == 20


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("not json", "body"),
        ("[1, 2]", "body"),
        ({"env": "prod"}, "events"),
        ({"events": {"name": "x"}}, "events"),
        ({"events": ["x"]}, "events[0]"),
        ({"events": [{"data": "no name"}]}, "events[0].name"),
        ({"events": [{"name": 5}]}, "events[0].name"),
        ({"events": [{"name": ""}]}, "events[0].name"),
        ({"events": [{"name": "x" * 201}]}, "events[0].name"),
        ({"events": [{"name": "x", "data": 5}]}, "events[0].data"),
        ({"events": [{"name": "x", "data": "a\x00b"}]}, "events[0].data"),
        ({"events": [{"name": "x", "time": "yesterday"}]}, "events[0].time"),
        ({"events": [{"name": "x", "time": True}]}, "events[0].time"),
        ({"events": [{"name": "x", "time": 1e300}]}, "events[0].time"),
        ({"events": [{"name": "x", "time": [1]}]}, "events[0].time"),
    ],
)
def test_it_refuses_bad_input_naming_the_field(client, open_compat, body, field):
    response = post_json(client, STORE, body)

    assert response.status_code == 400, response.content
    assert response.json()["field"] == field
    assert response.json()["error"]
    assert not Affirmation.objects.exists()


def test_it_stores_nothing_from_a_batch_with_one_bad_item(client, open_compat):
    body = {
        "events": [
            {"name": "good_1"},
            {"name": "good_2"},
            {"name": " spaced "},
            {"name": "good_3"},
        ]
    }

    response = post_json(client, STORE, body)

    assert response.status_code == 400
    assert response.json()["field"] == "events[2].name"
    assert "item 2" in response.json()["error"]
    assert not Affirmation.objects.exists()


def test_it_answers_405_to_a_get_on_store(client, open_compat):
    response = client.get(STORE)
    assert response.status_code == 405
    assert response["Allow"] == "POST"


# --- Access -----------------------------------------------------------------------


def test_it_needs_an_api_key_when_closed(client, settings):
    settings.AFFIRMATIONS_OPEN_COMPAT = False

    response = post_json(client, STORE, PYTHON_BODY)

    assert response.status_code == 401
    assert "affirmations:write" in response.json()["error"]
    assert not Affirmation.objects.exists()


def test_it_takes_an_api_key_header_when_closed(client, make_api_key, admin_user):
    _, key = make_api_key("affirmations:write")

    response = post_json(client, STORE, PYTHON_BODY, HTTP_X_API_KEY=key)

    assert response.status_code == 200
    assert Affirmation.objects.get().user == admin_user


def test_it_refuses_a_header_key_without_the_scope(client, make_api_key):
    _, key = make_api_key("affirmations:read")

    response = post_json(client, STORE, PYTHON_BODY, HTTP_X_API_KEY=key)

    assert response.status_code == 403
    assert "affirmations:write" in response.json()["error"]


@pytest.mark.parametrize("suffix", ["store", "store/"])
def test_it_takes_an_api_key_in_the_path(client, make_api_key, suffix):
    _, key = make_api_key("affirmations:write")

    response = post_json(client, f"/k/{key}/affirmative/{suffix}", PYTHON_BODY)

    assert response.status_code == 200, response.content
    assert Affirmation.objects.get().name == "backup_done"


def test_it_refuses_a_path_key_without_the_scope(client, make_api_key):
    _, key = make_api_key("affirmations:read", "fleet:write")

    response = post_json(client, f"/k/{key}/affirmative/store", PYTHON_BODY)

    assert response.status_code == 403
    assert not Affirmation.objects.exists()


def test_a_read_key_in_the_path_reads_events(client, make_api_key):
    _, key = make_api_key("affirmations:read")
    Affirmation.objects.create(name="x", source="api", occurred_at=NOW)

    response = client.get(f"/k/{key}/affirmative/events/x")

    assert response.status_code == 200
    assert len(response.json()) == 1


@pytest.mark.parametrize("bad", ["nonsense", "opk_" + "x" * 43])
def test_it_refuses_a_bad_path_key_even_when_open(client, open_compat, bad):
    response = post_json(client, f"/k/{bad}/affirmative/store", PYTHON_BODY)

    assert response.status_code == 401
    assert response.json()["error"] == "Invalid API key."
    assert not Affirmation.objects.exists()


def test_it_refuses_a_revoked_path_key(client, make_api_key):
    api_key, key = make_api_key("affirmations:write")
    api_key.revoke()

    response = post_json(client, f"/k/{key}/affirmative/store", PYTHON_BODY)

    assert response.status_code == 401


def test_the_path_key_never_reaches_the_logs(client, make_api_key, caplog):
    _, key = make_api_key("affirmations:read")
    bad = key[:-1] + ("A" if key[-1] != "A" else "B")
    request_logger = logging.getLogger("django.request")
    request_logger.addHandler(caplog.handler)  # it does not propagate to root
    try:
        with caplog.at_level("INFO"):
            post_json(client, f"/k/{bad}/affirmative/store", PYTHON_BODY)
            post_json(client, f"/k/{key}/affirmative/store", PYTHON_BODY)
            client.get(f"/k/{key}/affirmative/no-such-endpoint")
    finally:
        request_logger.removeHandler(caplog.handler)
    # Django logged the refusals (401, 403, 404) with their paths, redacted.
    assert "/k/<token>/affirmative/store" in caplog.text
    assert "/k/<token>/affirmative/no-such-endpoint" in caplog.text
    assert key not in caplog.text
    assert bad not in caplog.text


def test_the_log_filter_redacts_path_keys():
    record = logging.LogRecord(
        "django.server", logging.INFO, "", 0, '"POST %s HTTP/1.1" 200', None, None
    )
    record.args = ("/k/opk_secret123/affirmative/store",)

    assert RedactUrlSecrets().filter(record) is True
    assert record.getMessage() == '"POST /k/<token>/affirmative/store HTTP/1.1" 200'


def test_an_unknown_path_under_the_prefixes_answers_json_404(client):
    for path in ["/affirmative/nothing", "/k/abc/nothing", "/affirm/a/b/c"]:
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json() == {"detail": "Not found."}


# --- simplest, events, get_check_history -------------------------------------------


@pytest.mark.parametrize("path", ["/affirmative/simplest", "/affirmative/simplest/"])
def test_simplest_stores_the_form_field_with_data_ok(client, open_compat, path):
    response = client.post(path, {"event_name": "deploy"}, REMOTE_ADDR="10.1.1.1")

    assert response.status_code == 200
    affirmation = Affirmation.objects.get()
    assert (affirmation.name, affirmation.data) == ("deploy", "ok")
    assert affirmation.source == Affirmation.Source.COMPAT
    assert affirmation.remote_addr == "10.1.1.1"


@pytest.mark.parametrize("form", [{}, {"event_name": ""}, {"event_name": "a\nb"}])
def test_simplest_refuses_a_missing_or_bad_name(client, open_compat, form):
    response = client.post("/affirmative/simplest", form)

    assert response.status_code == 400
    assert response.json()["field"] == "event_name"
    assert not Affirmation.objects.exists()


def test_events_lists_one_name_newest_first(client, open_compat):
    for minutes, data in [(3, "old"), (1, "new"), (2, "mid")]:
        Affirmation.objects.create(
            name="x",
            data=data,
            source="api",
            occurred_at=NOW - timedelta(minutes=minutes),
        )
    Affirmation.objects.create(name="other", source="api", occurred_at=NOW)

    response = client.get("/affirmative/events/x")

    assert response.status_code == 200
    rows = response.json()
    assert [row["data"] for row in rows] == ["new", "mid", "old"]
    assert rows[0] == {
        "time": (NOW - timedelta(minutes=1)).isoformat(),
        "data": "new",
        "source": "api",
    }
    limited = client.get("/affirmative/events/x/?limit=2").json()
    assert [row["data"] for row in limited] == ["new", "mid"]


@pytest.mark.parametrize("limit", ["0", "-1", "abc", "²"])
def test_events_refuses_a_bad_limit(client, open_compat, limit):
    response = client.get("/affirmative/events/x", {"limit": limit})
    assert response.status_code == 400
    assert response.json()["field"] == "limit"


def test_events_needs_a_key_when_closed(client, settings):
    settings.AFFIRMATIONS_OPEN_COMPAT = False
    assert client.get("/affirmative/events/x").status_code == 401


def test_check_history_gives_the_last_ten_per_check(client, open_compat):
    check = make_check(name="x")
    idle = make_check(name="y")
    for hour in range(12):
        occurrence = NOW.replace(minute=0, second=0) - timedelta(hours=hour)
        Evaluation.objects.create(
            owner=check,
            occurrence=occurrence,
            window_start=occurrence - timedelta(minutes=20),
            window_end=occurrence,
            observed=hour,
            passed=hour > 0,
            min_count=1,
        )

    response = client.get("/affirmative/get_check_history")

    assert response.status_code == 200
    history = response.json()
    assert history[idle.key] == []
    rows = history[check.key]
    assert len(rows) == 10
    assert [row["observed"] for row in rows] == list(range(10))
    assert rows[0] == {
        "time": NOW.replace(minute=0, second=0).isoformat(),
        "min": 1,
        "max": None,
        "observed": 0,
        "passed": False,
    }


# --- The one-liner -----------------------------------------------------------------


def test_the_one_liner_affirms_a_check_by_get(client):
    check = make_check(name="nightly_backup")

    response = client.get(f"/affirm/{check.key}", {"data": "42 files"})

    assert response.status_code == 200
    affirmation = Affirmation.objects.get()
    assert response.json() == {"affirmed": "nightly_backup", "id": affirmation.pk}
    assert affirmation.data == "42 files"
    assert affirmation.source == Affirmation.Source.ONELINER


def test_the_one_liner_takes_the_body_text_by_post(client):
    check = make_check(name="nightly_backup")

    response = client.post(
        f"/affirm/{check.key}/", 'line 1\nline 2 "quoted"', content_type="text/plain"
    )

    assert response.status_code == 200
    assert Affirmation.objects.get().data == 'line 1\nline 2 "quoted"'


def test_the_one_liner_takes_a_form_field_by_post(client):
    check = make_check(name="nightly_backup")

    response = client.post(f"/affirm/{check.key}", {"data": "a & b"})

    assert response.status_code == 200
    assert Affirmation.objects.get().data == "a & b"


def test_the_one_liner_answers_404_to_an_unknown_key(client):
    make_check(name="nightly_backup")

    response = client.post("/affirm/af-nosuchkey")

    assert response.status_code == 404
    assert response.json()["field"] == "key"
    assert not Affirmation.objects.exists()
