"""Requests the API must refuse cleanly, whatever the app: no 500s, no redirects."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_a_deeply_nested_json_body_is_a_400_not_a_500(api_client, make_api_key):
    _, key = make_api_key("fleet:write")
    api_client.credentials(HTTP_X_API_KEY=key)
    response = api_client.post(
        "/api/v1/fleet/tasks/",
        "[" * 100_000 + "]" * 100_000,
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["detail"]


def test_api_routes_match_without_the_trailing_slash(api_client, make_api_key):
    _, key = make_api_key("packages:read")
    api_client.credentials(HTTP_X_API_KEY=key)
    with_slash = api_client.get("/api/v1/packages/")
    without = api_client.get("/api/v1/packages")
    assert with_slash.status_code == without.status_code == 200
    assert without.json() == with_slash.json()


# "\ud800" alone: json.loads keeps it in the string, and neither database can
# store it (UTF-8 cannot encode it), so it was a 500 at the INSERT.
LONE = '"x\\ud800y"'
PAIR = '"x\\ud83d\\ude00y"'  # a valid pair: one character, stored


@pytest.mark.parametrize(
    ("path", "scope", "body"),
    [
        ("/api/v1/affirmations/affirm/", "affirmations:write", '{"name": %s}'),
        (
            "/api/v1/fleet/tasks/",
            "fleet:write",
            '{"task_type": "wait", "task_version": 1, "task_data": {"k": %s}}',
        ),
    ],
)
def test_a_lone_surrogate_escape_is_a_400_and_a_pair_is_stored(
    api_client, make_api_key, path, scope, body
):
    _, key = make_api_key(scope)
    api_client.credentials(HTTP_X_API_KEY=key)
    refused = api_client.post(path, body % LONE, content_type="application/json")
    assert refused.status_code == 400, refused.content
    assert "unpaired surrogate" in refused.json()["detail"]
    stored = api_client.post(path, body % PAIR, content_type="application/json")
    assert stored.status_code == 201, stored.content


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/affirmative/store", '{"events": [{"name": "n", "data": %s}]}'),
        (
            "/fleet/tasks",
            '{"protocol": 1, "agent_id": "6f0b4d3c-1d2e-4f5a-9b8c-7d6e5f4a3b2c",'
            ' "agent_name": %s, "agent_time": "2026-12-04T10:00:00+00:00",'
            ' "agent_capabilities": {}, "max_tasks": 1}',
        ),
    ],
)
def test_the_protocol_views_refuse_a_lone_surrogate_escape(
    client, settings, path, body
):
    settings.AFFIRMATIONS_OPEN_COMPAT = True
    refused = client.post(path, body % LONE, content_type="application/json")
    assert refused.status_code == 400, refused.content
    assert "unpaired surrogate" in refused.json()["error"]
    stored = client.post(path, body % PAIR, content_type="application/json")
    assert stored.status_code == 200, stored.content
