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
