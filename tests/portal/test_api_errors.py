"""One exception handler: validation errors are 400 JSON naming the field."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.urls("tests.portal.urls_errors")


@pytest.fixture
def client_(api_client, admin_user):
    api_client.force_authenticate(admin_user)
    return api_client


def test_service_validation_error_names_the_field(client_):
    response = client_.post("/service-error/", {}, format="json")
    assert response.status_code == 400
    assert response.json() == {"cron": ["'61 * * * *' is not a valid cron expression."]}


def test_error_without_a_field_is_a_non_field_error(client_):
    response = client_.post("/plain-error/", {}, format="json")
    assert response.status_code == 400
    assert response.json() == {"non_field_errors": ["The package is disabled."]}


def test_serializer_errors_name_the_field(client_):
    response = client_.post("/echo/", {"count": 0}, format="json")
    assert response.status_code == 400
    assert response.json() == {
        "count": ["Ensure this value is greater than or equal to 1."]
    }


def test_malformed_json_is_a_400_not_a_500(client_):
    response = client_.post("/echo/", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("JSON parse error")


@pytest.mark.urls("portal.urls")
def test_unknown_api_paths_are_json_404s(client):
    response = client.get("/api/v1/no-such-thing/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
    page = client.get("/no-such-page/")
    assert page.status_code == 404
    assert page["Content-Type"].startswith("text/html")
